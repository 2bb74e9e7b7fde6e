r"""Annealed importance sampling (AIS) and reverse AIS estimates of :math:`\log Z`.

AIS (Neal, 2001) estimates the ratio of the partition functions of a tractable *base* RBM
:math:`p_0` and the target :math:`p_K` by moving samples through a sequence of intermediate
distributions. Following Salakhutdinov & Murray (2008) the base model has no couplings and
visible biases :math:`b_A` (the logits of the data marginals, or the target's own visible
biases), and the intermediate distribution at inverse temperature :math:`\beta` anneals the
weights and hidden biases:

.. math::

    f_\beta(v) = \mu_v(v)\, e^{((1-\beta) b_A + \beta b)^\top v}
        \prod_j e^{A_h(\beta\, \phi_j(v))},
    \qquad \phi(v) = c + W^\top v,

which is itself an RBM with parameters :math:`(\beta W, (1-\beta) b_A + \beta b, \beta c)`, so
one block-Gibbs sweep at :math:`\beta` leaves :math:`p_\beta \propto f_\beta` invariant. At
:math:`\beta = 0` the layers decouple and the base log-partition function is analytic,

.. math::

    \log Z_0 = \sum_i A_v(b_{A,i}) + \sum_j A_h(0).

For a schedule :math:`0 = \beta_0 < \beta_1 < \dots < \beta_K = 1`, a forward run draws
:math:`v_0 \sim p_0` exactly and :math:`v_k \sim T_{\beta_k}(\cdot \mid v_{k-1})`, and
accumulates the log importance weight

.. math::

    \log w = \sum_{k=1}^{K} \big[\log f_{\beta_k}(v_{k-1}) - \log f_{\beta_{k-1}}(v_{k-1})\big],
    \qquad \mathbb{E}[w] = Z_K / Z_0 .

:math:`\hat Z = Z_0 \cdot \tfrac1n \sum_r w_r` is unbiased, so by Jensen's inequality
:math:`\mathbb{E}[\log \hat Z] \le \log Z`: forward AIS is a *stochastic lower bound* on
:math:`\log Z` and tends to over-estimate log-likelihoods when the chains mix poorly.

Reverse AIS runs the same chain backwards from observed data (Burda, Grosse & Salakhutdinov,
2015, "RAISE"; Grosse, Ghahramani & Adams, 2015). Starting from :math:`v_K = v`, each step
draws :math:`v_{k-1} \sim T_{\beta_k}(\cdot \mid v_k)` and accumulates
:math:`\log r = \log Z_0 + \sum_{k=0}^{K-1} [\log f_{\beta_{k+1}}(v_k) - \log f_{\beta_k}(v_k)]`.
Because the Gibbs sweep is reversible, :math:`f_K(v) / r` is an unbiased estimate of
:math:`p_{\text{fwd}}(v)`, the probability that the forward annealing chain ends at
:math:`v`; its logarithm is a stochastic lower bound on :math:`\log p_{\text{fwd}}(v)`, the
log-likelihood of the annealing model, not of the RBM. For data of a trained RBM it is
typically, but not provably, conservative (below the RBM's log-likelihood). Only when the
starting points are exact model samples is :math:`\mathbb{E}[\log r] \ge \log Z` guaranteed;
then reverse AIS bounds :math:`\log Z` from above in expectation, and the two directions
together sandwich it.

All of it runs as one jit-compiled ``lax.scan`` over the schedule, vectorised over
independent runs (and over the batch axes of batched parameters). Log-weights are accumulated
with Kahan (compensated) summation in the parameters' dtype, so 14,500 float32 increments add
up without drift; pass float64 parameters (with ``jax.enable_x64``) for float64 throughout.

References:
    R. M. Neal, *Annealed importance sampling*, Statistics and Computing 11 (2001).
    R. Salakhutdinov and I. Murray, *On the quantitative analysis of deep belief networks*,
    ICML 2008.
    Y. Burda, R. Grosse and R. Salakhutdinov, *Accurate and conservative estimates of MRF
    log-likelihood using reverse annealing*, AISTATS 2015.
    R. Grosse, Z. Ghahramani and R. P. Adams, *Sandwiching the marginal likelihood using
    bidirectional Monte Carlo*, arXiv:1511.02543 (2015).
"""

from __future__ import annotations

import math
from functools import partial
from statistics import NormalDist
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from .core import RBMParams, at_evaluation_precision, free_energy, gibbs_sweep, hidden_field
from .kernels import tempered_params
from .partition import EXACT_MAX_UNITS, EnumerationTooLarge, enumerated_layer, log_partition
from .units import base_rate_bias, check_data

__all__ = [
    "AISResult",
    "LogLikelihood",
    "ais",
    "reverse_ais",
    "log_likelihood",
    "summarize_log_weights",
    "default_schedule",
    "base_rate_bias",
    "choose_method",
    "estimate_log_z",
]

#: Number of inverse temperatures in Salakhutdinov & Murray's reference schedule.
REFERENCE_NUM_BETAS = 14501


class AISResult(NamedTuple):
    r"""An AIS (or reverse AIS) estimate of :math:`\log Z` with its uncertainty.

    The interval does not account for the bias of an annealing schedule that is too short
    for the model; compare both directions (:func:`ais`, :func:`reverse_ais`) for that.
    """

    log_z: jax.Array
    r"""The estimate of :math:`\log Z`, shape ``params.batch_shape``."""

    stderr: jax.Array
    r"""Its standard error in nats. Forward AIS: the delta-method standard error
    :math:`\hat\sigma_w / (\bar w \sqrt{n})` of :math:`\log \bar w`. Reverse AIS: the standard
    error of the mean over examples."""

    log_z_interval: tuple[jax.Array, jax.Array]
    r"""``(lo, hi)``, a confidence interval for :math:`\log Z`. Forward AIS:
    :math:`\log(\bar w \mp z\,\hat\sigma_w/\sqrt n) + \log Z_0`, computed in log space (``lo``
    is ``-inf`` when the interval for :math:`\bar w` reaches zero). Reverse AIS: ``log_z``
    :math:`\mp z \cdot` ``stderr``."""

    log_weights: jax.Array
    r"""The per-run log importance weights, without :math:`\log Z_0`. Forward: shape
    ``batch_shape + (num_runs,)``, with :math:`\mathbb{E}[e^{\log w}] = Z / Z_0`. Reverse:
    shape ``batch_shape + (num_examples, num_chains)``, the :math:`\log r - \log Z_0` of each
    chain."""

    ess: jax.Array
    r"""Effective sample size :math:`(\sum_r w_r)^2 / \sum_r w_r^2` of the importance weights
    (for reverse AIS, of the weights :math:`1/r`): close to the number of runs when the
    weights are even, close to 1 when one run dominates."""

    log_z_base: jax.Array
    r"""The analytic :math:`\log Z_0` of the base model."""


class LogLikelihood(NamedTuple):
    r"""An average log-likelihood :math:`\frac1N \sum_i \log p(v_i)` with an interval."""

    mean: jax.Array
    """The average log-likelihood over the data, shape ``params.batch_shape``."""

    interval: tuple[jax.Array, jax.Array]
    r"""``(lo, hi)``, the interval implied by the :math:`\log Z` interval (a point when
    :math:`\log Z` is exact). It is the uncertainty of the estimate for *this* data set, not
    of the population average (``per_example`` gives that spread)."""

    stderr: jax.Array
    r"""The standard error carried over from :math:`\log Z` (zero when it is exact)."""

    per_example: jax.Array
    r""":math:`-F(v_i) - \log Z` for every example, shape ``(N,) + batch_shape``."""


# --- schedules and base models -----------------------------------------------------------


def default_schedule(num_betas: int = REFERENCE_NUM_BETAS) -> np.ndarray:
    r"""Salakhutdinov & Murray's piecewise-linear schedule of inverse temperatures.

    The reference schedule takes steps of :math:`10^{-3}` on :math:`[0, 0.5]`, :math:`10^{-4}`
    on :math:`[0.5, 0.9]` and :math:`10^{-5}` on :math:`[0.9, 1]`, 14,501 values in all: most
    of the effort goes where the distributions change fastest, near the target. Other lengths
    keep the same proportions (500 : 4000 : 10000 steps).

    Args:
        num_betas: the number of inverse temperatures, at least 4 (including 0 and 1).

    Returns:
        A float64 numpy array of shape ``(num_betas,)`` rising from 0 to 1.
    """
    num_betas = int(num_betas)
    if num_betas < 4:
        raise ValueError(
            f"default_schedule needs num_betas >= 4, got {num_betas}; for fewer, pass an "
            "explicit array such as numpy.linspace(0, 1, num_betas)"
        )
    steps = num_betas - 1
    s1 = max(1, round(steps * 500 / 14500))
    s2 = max(1, round(steps * 4000 / 14500))
    s3 = steps - s1 - s2
    return np.concatenate(
        [
            np.linspace(0.0, 0.5, s1 + 1),
            np.linspace(0.5, 0.9, s2 + 1)[1:],
            np.linspace(0.9, 1.0, s3 + 1)[1:],
        ]
    )


def _as_schedule(betas) -> np.ndarray:
    if betas is None:
        return default_schedule()
    if isinstance(betas, int | np.integer):
        return default_schedule(betas)
    try:
        betas = np.asarray(betas, dtype=np.float64)
    except jax.errors.TracerArrayConversionError:
        raise ValueError(
            "betas must be a concrete array (the schedule is checked on the host); build it "
            "outside jax.jit"
        ) from None
    if betas.ndim != 1 or betas.shape[0] < 2:
        raise ValueError(f"betas must be a 1-D array of at least 2 values, got {betas.shape}")
    if not np.all(np.isfinite(betas)) or betas[0] != 0.0 or betas[-1] != 1.0:
        raise ValueError(
            f"betas must run from exactly 0 to exactly 1, got {betas[0]} ... {betas[-1]}; "
            "e.g. numpy.linspace(0, 1, 1000) or default_schedule(1000) from numpyro_rbm.ais"
        )
    if np.any(np.diff(betas) < 0):
        raise ValueError("betas must be non-decreasing (0 = base model, 1 = target)")
    return betas


def _check_data(params: RBMParams, data, name: str):
    """The visible layer ``data`` checked against ``params`` (one-hot for Potts units), as a
    JAX array in the parameters' dtype."""
    layer = check_data(data, params.visible_units, name, params.n_visible, layer=True)
    return jnp.asarray(layer, params.weights.dtype)


def _base_bias(params: RBMParams, base_data, pseudocount):
    dtype = params.weights.dtype
    if base_data is None:
        return jnp.asarray(params.visible_bias, dtype)
    base_data = np.asarray(_check_data(params, base_data, "data for the base-rate model"))
    bias = base_rate_bias(base_data, params.visible_units, pseudocount, params.visible_unit_params)
    return jnp.asarray(bias, dtype)


def _check_params(params):
    if not isinstance(params, RBMParams):
        raise TypeError(f"params must be numpyro_rbm.RBMParams, got {type(params).__name__}")
    if not jnp.issubdtype(params.weights.dtype, jnp.floating):
        raise TypeError(f"params must be floating point, got {params.weights.dtype}")


# --- the annealing chain -----------------------------------------------------------------


def _kahan_add(total, compensation, x):
    """One step of compensated summation: ``total + compensation`` tracks the exact sum."""
    y = x - compensation
    t = total + y
    return t, (t - total) - y


def _log_ratio(params, base_bias, beta_from, beta_to, v, phi):
    r""":math:`\log f_{\beta_1}(v) - \log f_{\beta_0}(v)`, given :math:`\phi = c + W^\top v`.

    Taken unit by unit, not as a difference of two whole free energies, to avoid cancelling
    two large numbers in float32.
    """
    # log_partition sums over the last axis: add a length-1 axis (and to unit parameters).
    unit_params = jax.tree.map(lambda x: x[..., None], params.hidden_unit_params)
    a_h = params.hidden_units.bind(unit_params).log_partition
    hidden = jnp.sum(a_h((beta_to * phi)[..., None]) - a_h((beta_from * phi)[..., None]), -1)
    visible = (beta_to - beta_from) * jnp.sum(v * (params.visible_bias - base_bias), -1)
    return visible + hidden


def _transition(key, params, base_bias, beta, v, phi):
    r"""One Gibbs sweep from ``v`` of the intermediate RBM at inverse temperature ``beta``
    (:func:`~numpyro_rbm.kernels.tempered_params`), whose hidden field :math:`\beta\phi` is
    known already."""
    tempered = tempered_params(params, beta, base_bias)
    return gibbs_sweep(key, tempered, v, field_h=beta * phi)[0]


@partial(jax.jit, static_argnames="num_runs")
@at_evaluation_precision
def _forward_log_weights(key, params, base_bias, betas, num_runs):
    key_init, key_steps = jax.random.split(key)
    v = params.visible_layer.sample(
        key_init, jnp.broadcast_to(base_bias, (num_runs, base_bias.shape[-1]))
    )
    zeros = jnp.zeros((num_runs,), betas.dtype)

    def step(carry, xs):
        v, total, comp = carry
        beta_from, beta_to, k = xs
        phi = hidden_field(params, v)
        total, comp = _kahan_add(
            total, comp, _log_ratio(params, base_bias, beta_from, beta_to, v, phi)
        )
        return (_transition(k, params, base_bias, beta_to, v, phi), total, comp), None

    keys = jax.random.split(key_steps, betas.shape[0] - 1)
    (_, total, comp), _ = jax.lax.scan(step, (v, zeros, zeros), (betas[:-1], betas[1:], keys))
    return total - comp


@partial(jax.jit, static_argnames="num_chains")
@at_evaluation_precision
def _reverse_log_weights(key, params, base_bias, betas, data, num_chains):
    v = jnp.broadcast_to(data[:, None, :], (data.shape[0], num_chains, data.shape[-1]))
    zeros = jnp.zeros(v.shape[:-1], betas.dtype)

    def step(carry, xs):
        v, phi, total, comp = carry
        beta_to, beta_from, k = xs  # walking down: beta_to = beta_k, beta_from = beta_{k-1}
        v = _transition(k, params, base_bias, beta_to, v, phi)
        phi = hidden_field(params, v)
        total, comp = _kahan_add(
            total, comp, _log_ratio(params, base_bias, beta_from, beta_to, v, phi)
        )
        return (v, phi, total, comp), None

    down = betas[::-1]
    keys = jax.random.split(key, betas.shape[0] - 1)
    init = (v, hidden_field(params, v), zeros, zeros)
    (_, _, total, comp), _ = jax.lax.scan(step, init, (down[:-1], down[1:], keys))
    return total - comp


def _flatten(params: RBMParams, base_bias):
    """Broadcasts params and base biases to the batch shape, flattened to one leading axis."""
    batch = params.batch_shape
    n_v, n_h = params.n_visible, params.n_hidden

    def flat(x, tail):
        return jnp.broadcast_to(x, batch + tail).reshape((-1,) + tail)

    flat_params = params.replace(
        weights=flat(params.weights, (n_v, n_h)),
        visible_bias=flat(params.visible_bias, (n_v,)),
        hidden_bias=flat(params.hidden_bias, (n_h,)),
        visible_unit_params=jax.tree.map(lambda x: flat(x, (n_v,)), params.visible_unit_params),
        hidden_unit_params=jax.tree.map(lambda x: flat(x, (n_h,)), params.hidden_unit_params),
    )
    return flat_params, flat(base_bias, (n_v,))


def _log_z_base(params, base_bias):
    zeros = jnp.zeros(params.batch_shape + (params.n_hidden,), base_bias.dtype)
    return params.visible_layer.log_partition(base_bias) + params.hidden_layer.log_partition(zeros)


def _z_score(confidence):
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


# --- public estimators -------------------------------------------------------------------


def ais(
    params: RBMParams,
    key,
    *,
    data=None,
    num_runs: int = 100,
    betas=None,
    pseudocount: float = 1.0,
    confidence: float = 0.95,
) -> AISResult:
    r"""Estimates :math:`\log Z` by annealed importance sampling from a base-rate RBM.

    Runs ``num_runs`` independent annealing chains from the base model (zero weights; visible
    biases from ``data`` by :func:`base_rate_bias`, else the target's own) to the target,
    one block-Gibbs sweep per inverse temperature, and combines the importance weights
    :math:`w_r` in log space:

    .. math::

        \log \hat Z = \log Z_0 + \log \tfrac1n \textstyle\sum_r w_r,
        \qquad \widehat{\mathrm{se}} = \frac{\hat\sigma_w}{\bar w \sqrt n}.

    :math:`\hat Z` is unbiased but :math:`\log \hat Z` is biased low: with a schedule too short
    for the model, the estimate falls below :math:`\log Z` by more than the interval shows.
    Check with :func:`reverse_ais`.

    Args:
        params: the target RBM; batched parameters give one estimate per RBM.
        key: a JAX PRNG key.
        data: optional training data ``(N, n_visible)``; its marginals define the base model,
            which usually makes the annealing much easier.
        num_runs: number of independent annealing runs, at least 2.
        betas: the inverse temperatures: an array from 0 to 1, or an int (the length of a
            :func:`default_schedule`); default: the 14,501-value reference schedule.
        pseudocount: smoothing of the data marginals (see :func:`base_rate_bias`).
        confidence: the level of ``log_z_interval``.

    Returns:
        An :class:`AISResult`.
    """
    _check_params(params)
    if int(num_runs) < 2:
        raise ValueError(f"num_runs must be >= 2 to estimate an error, got {num_runs}")
    num_runs = int(num_runs)
    _z_score(confidence)  # fail before the long run, not after
    base_bias = _base_bias(params, data, pseudocount)
    dtype = params.weights.dtype
    betas = jnp.asarray(_as_schedule(betas), dtype)
    flat_params, flat_base = _flatten(params, base_bias)
    keys = jax.random.split(key, flat_base.shape[0])
    log_w = jax.vmap(_forward_log_weights, in_axes=(0, 0, 0, None, None))(
        keys, flat_params, flat_base, betas, num_runs
    )
    log_w = log_w.reshape(params.batch_shape + (num_runs,))
    log_z_base = _log_z_base(
        params, jnp.broadcast_to(base_bias, params.batch_shape + base_bias.shape[-1:])
    )
    return summarize_log_weights(log_w, log_z_base, confidence=confidence)


def summarize_log_weights(log_weights, log_z_base, *, confidence: float = 0.95) -> AISResult:
    r"""Turns forward AIS log-weights into an :class:`AISResult`.

    Useful to pool runs from several :func:`ais` calls (same model and base): concatenate
    their ``log_weights`` along the last axis and summarise them again. In log space,

    .. math::

        \log \hat Z = \log Z_0 + \operatorname{logsumexp}_r(\log w_r) - \log n,
        \qquad \widehat{\mathrm{se}} = \frac{\hat\sigma_w}{\bar w \sqrt n},
        \qquad \mathrm{ESS} = \frac{(\sum_r w_r)^2}{\sum_r w_r^2},

    where the ratio :math:`\hat\sigma_w / \bar w` is computed from weights rescaled by their
    maximum, so no weight overflows.

    Args:
        log_weights: array ``(..., num_runs)`` of log importance weights, ``num_runs >= 2``.
        log_z_base: :math:`\log Z_0` of the base model, broadcastable to ``(...)``.
        confidence: the level of the interval.

    Returns:
        An :class:`AISResult`.
    """
    z = _z_score(confidence)
    log_w = jnp.asarray(log_weights)
    num_runs = log_w.shape[-1]
    if num_runs < 2:
        raise ValueError(f"need at least 2 runs to estimate an error, got {num_runs}")
    lse = logsumexp(log_w, axis=-1)
    log_z = log_z_base + lse - math.log(num_runs)
    w = jnp.exp(log_w - jnp.max(log_w, axis=-1, keepdims=True))
    rel = jnp.std(w, axis=-1, ddof=1) / (jnp.mean(w, axis=-1) * math.sqrt(num_runs))
    # log(mean w -/+ z se) = log(mean w) + log1p(-/+ z rel); no lower end once it reaches 0.
    lo = jnp.where(z * rel < 1, log_z + jnp.log1p(-jnp.minimum(z * rel, 1.0)), -jnp.inf)
    hi = log_z + jnp.log1p(z * rel)
    ess = jnp.exp(2 * lse - logsumexp(2 * log_w, axis=-1))
    return AISResult(log_z, rel, (lo, hi), log_w, ess, jnp.asarray(log_z_base))


def reverse_ais(
    params: RBMParams,
    key,
    data,
    *,
    num_chains: int = 1,
    betas=None,
    base_data=None,
    pseudocount: float = 1.0,
    confidence: float = 0.95,
) -> AISResult:
    r"""Reverse AIS (RAISE): from data, typically a conservative log-likelihood estimate.

    Each of ``num_chains`` chains per example starts at the example :math:`v` and anneals
    from the target down to the base model, accumulating :math:`\log r`. Then
    :math:`e^{-F(v)} / \hat r(v)`, with :math:`1/\hat r(v)` the mean of :math:`1/r` over the
    example's chains, is an unbiased estimate of :math:`p_{\text{fwd}}(v)`, the marginal of
    the forward annealing chain (Burda et al., 2015), and the returned

    .. math::

        \log \hat Z_{\text{rev}} = \frac1N \sum_i \log \hat r(v_i)

    is the :math:`\log Z` for which :func:`log_likelihood` gives the RAISE average
    log-likelihood on ``data``. What is guaranteed depends on the starting points:

    * from exact model samples, :math:`\mathbb{E}[1/\hat r] = 1/Z`, hence
      :math:`\mathbb{E}[\log \hat Z_{\text{rev}}] \ge \log Z`: an upper bound in expectation
      (Grosse, Ghahramani & Adams, 2015);
    * from data, the RAISE log-likelihood is a stochastic lower bound on the log-likelihood
      of the annealing model :math:`p_{\text{fwd}}`, not of the RBM (Burda et al., 2015). It
      is typically conservative (low, so :math:`\log \hat Z_{\text{rev}}` high) for an RBM's
      own training or held-out data, but not provably so.

    Compare with :func:`ais`, which errs low in expectation.

    Args:
        params: the target RBM; batched parameters give one estimate per RBM.
        key: a JAX PRNG key.
        data: the starting points ``(N, n_visible)``, at least 2 examples: held-out data for
            a (typically) conservative log-likelihood, or exact model samples for a bound on
            :math:`\log Z` in expectation.
        num_chains: chains per example.
        betas: the schedule, as in :func:`ais`.
        base_data: data whose marginals define the base model (typically the *training* set,
            as in :func:`ais`); default: the target's own visible biases.
        pseudocount: smoothing of the base-rate marginals.
        confidence: the level of ``log_z_interval`` (mean :math:`\pm z\,` stderr over
            examples).

    Returns:
        An :class:`AISResult`; ``log_weights`` has shape ``batch_shape + (N, num_chains)``.
    """
    _check_params(params)
    data = _check_data(params, data, "data")
    if data.shape[0] < 2:
        raise ValueError("reverse_ais needs at least 2 examples to estimate an error")
    if int(num_chains) < 1:
        raise ValueError(f"num_chains must be >= 1, got {num_chains}")
    num_chains = int(num_chains)
    z = _z_score(confidence)
    base_bias = _base_bias(params, base_data, pseudocount)
    betas = jnp.asarray(_as_schedule(betas), params.weights.dtype)
    flat_params, flat_base = _flatten(params, base_bias)
    keys = jax.random.split(key, flat_base.shape[0])
    log_r = jax.vmap(_reverse_log_weights, in_axes=(0, 0, 0, None, None, None))(
        keys, flat_params, flat_base, betas, data, num_chains
    )
    log_r = log_r.reshape(params.batch_shape + data.shape[:1] + (num_chains,))
    log_z_base = _log_z_base(
        params, jnp.broadcast_to(base_bias, params.batch_shape + base_bias.shape[-1:])
    )

    # Per example, 1/r averages over chains (unbiased for p_fwd(v) / f(v)); then log r is
    # averaged over examples, as log-likelihoods are.
    per_example = -(logsumexp(-log_r, axis=-1) - math.log(num_chains))
    n = data.shape[0]
    log_z = log_z_base + jnp.mean(per_example, axis=-1)
    stderr = jnp.std(per_example, axis=-1, ddof=1) / math.sqrt(n)
    flat_r = log_r.reshape(params.batch_shape + (-1,))
    ess = jnp.exp(2 * logsumexp(-flat_r, axis=-1) - logsumexp(-2 * flat_r, axis=-1))
    return AISResult(
        log_z, stderr, (log_z - z * stderr, log_z + z * stderr), log_r, ess, log_z_base
    )


def choose_method(params: RBMParams, method: str = "auto", max_units=EXACT_MAX_UNITS) -> str:
    r"""How :math:`\log Z` is computed: ``"exact"`` or ``"ais"``. The library's one choice:
    ``"auto"`` enumerates when the smaller discrete layer has at most ``max_units`` units
    (default :data:`~numpyro_rbm.partition.EXACT_MAX_UNITS`, 20: :math:`2^{20}` states, seconds
    at most on a CPU) and anneals otherwise; ``"exact"`` and ``"ais"`` are taken as asked."""
    if method not in ("auto", "exact", "ais"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ais', got {method!r}")
    if method != "auto":
        return method
    try:
        enumerated_layer(params, max_units)
    except EnumerationTooLarge:
        return "ais"
    return "exact"


def estimate_log_z(
    params: RBMParams,
    *,
    method="auto",
    key=None,
    data=None,
    num_runs=100,
    betas=None,
    max_units=EXACT_MAX_UNITS,
):
    r""":math:`\log Z` by the :func:`choose_method` choice: the exact value (an array) or an
    :class:`AISResult` (base model from the marginals of ``data``; ``key`` defaults to
    ``jax.random.key(0)``)."""
    if choose_method(params, method, max_units) == "exact":
        # "auto" chose it within max_units; "exact" keeps log_partition's own limit.
        return log_partition(params, **({"max_units": None} if method == "auto" else {}))
    key = jax.random.key(0) if key is None else key
    return ais(params, key, data=data, num_runs=num_runs, betas=betas)


def log_likelihood(
    params: RBMParams, data, log_z=None, *, method="auto", key=None, num_runs=100, betas=None
) -> LogLikelihood:
    r"""The average log-likelihood :math:`\frac1N \sum_i \big(-F(v_i)\big) - \log Z` of data.

    Args:
        params: the RBM (batched parameters give one value per RBM).
        data: array ``(N, n_visible)``.
        log_z: an :class:`AISResult` (from :func:`ais`: optimistic in expectation; from
            :func:`reverse_ais`: typically conservative), or an exact value; ``None`` computes it
            by :func:`estimate_log_z`.
        method: ``"auto"`` (exact when the smaller layer has at most 20 units, else AIS),
            ``"exact"`` or ``"ais"``; used when ``log_z`` is ``None``.
        key, num_runs, betas: the AIS settings, when AIS is used (base model from ``data``).

    Returns:
        A :class:`LogLikelihood`; its interval is the :math:`\log Z` interval mapped through
        :math:`-\log Z` (the upper end of a :math:`\log Z` interval is the lower end here).
    """
    _check_params(params)
    data = _check_data(params, data, "data")
    if log_z is None:
        log_z = estimate_log_z(
            params, method=method, key=key, data=data, num_runs=num_runs, betas=betas
        )
    batch = params.batch_shape
    v = data.reshape(data.shape[:1] + (1,) * len(batch) + data.shape[1:])
    neg_f = -at_evaluation_precision(free_energy)(params, v)  # (N,) + batch
    mean_neg_f = jnp.mean(neg_f, axis=0)
    if isinstance(log_z, AISResult):
        lo, hi = log_z.log_z_interval
        est, stderr = log_z.log_z, log_z.stderr
    else:
        est = jnp.asarray(log_z, neg_f.dtype)
        lo = hi = est
        stderr = jnp.zeros_like(est)
    mean = mean_neg_f - est
    return LogLikelihood(mean, (mean_neg_f - hi, mean_neg_f - lo), stderr, neg_f - est)
