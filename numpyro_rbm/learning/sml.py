r"""A :math:`\log Z` whose gradient is the stochastic-maximum-likelihood negative phase, and its
tracked value: the pure pieces behind ``RBM(params, log_z=numpyro_rbm.sml(...))``.

**The gradient.** For :math:`p_\theta(v) = e^{-F_\theta(v)}/Z_\theta`,

.. math::

    \nabla_\theta \log Z_\theta = \mathbb E_{v \sim p_\theta}[-\nabla_\theta F_\theta(v)]
    \approx -\frac1M \sum_{j=1}^M \nabla_\theta F_\theta(v_j)

over model samples :math:`v_j` (``docs/derivation.md``). :func:`sml_log_z` returns a given
value of :math:`\log Z` and declares, through :func:`jax.custom_vjp`, that its derivative with
respect to every leaf of the parameters (weights, biases, unit parameters) is the right-hand
side at the negative samples :math:`v_j`. So ``jax.grad`` of
:math:`\frac1N\sum_n -F(v_n) - \log Z` is minus the gradient of
:func:`~numpyro_rbm.learning.free_energy_loss` at the same samples: the PCD gradient when the
:math:`v_j` are persistent chains (Younes 1989; Tieleman 2008).

**The value.** Enumeration when the model is small (:func:`numpyro_rbm.ais.choose_method`);
otherwise a tracked estimate (in the spirit of Desjardins et al. 2011): a fresh estimate
(exact, or AIS) every ``refresh_every`` updates, and between refreshes the importance-sampling
update from the previous parameters :math:`\theta'` (whose last transition the chains made) to
:math:`\theta`,

.. math::

    \log Z_\theta = \log Z_{\theta'}
        + \log \bar w + \frac{\hat\sigma^2_w}{2 M \bar w^2},
    \qquad \bar w = \frac1M \sum_j w_j, \quad w_j = e^{F_{\theta'}(v_j) - F_\theta(v_j)},

whose delta-method variance :math:`\hat\sigma^2_w/(M \bar w^2)` is accumulated. The
second-order (delta-method) term :math:`\hat\sigma^2_w/(2M\bar w^2)` corrects the log of a
mean, which is low by :math:`\mathrm{Var}(\bar w)/(2\bar w^2)` on average (Jensen), a bias
the steps would add up.

The larger bias is the chains' lag: persistent chains trail :math:`p_{\theta'}` while the
parameters move, and the lag biases every step the same way (to first order the step
measures :math:`\Delta\theta\cdot\mathbb E_{q}[-\nabla F]` with the chains' distribution
:math:`q` where :math:`\mathbb E_{p_{\theta'}}[-\nabla F]` is due, and learning moves
:math:`\theta` towards the data, away from the chains, so the estimate falls behind). No
statistic of the chains alone shows it; a fresh estimate does. So each refresh measures the
drift rate :math:`r = |\Delta|/\text{age}`, with :math:`\Delta` the fresh minus the tracked
value (sampling noise included, which errs on the side of early refreshes), and with a
``tolerance`` :math:`\tau` the next refresh comes as soon as

.. math::

    \text{age}\cdot r + \text{stderr} > \tau
    \quad\text{or}\quad \text{age} \ge 2 \cdot \text{(the last interval)}
    \quad\text{or}\quad \text{age} \ge \text{refresh\_every}:

the interval adapts to the measured drift and at most doubles from one refresh to the next,
so a rate that grows between refreshes is caught (until a first measurement the rate is
infinite: the second refresh comes one update after the first).

References:
    * L. Younes, *Parametric inference for imperfectly observed Gibbsian fields*, Probability
      Theory and Related Fields 82 (1989).
    * T. Tieleman, *Training restricted Boltzmann machines using approximations to the
      likelihood gradient*, ICML 2008.
    * G. Desjardins, A. Courville and Y. Bengio, *On tracking the partition function*,
      NIPS 2011.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..ais import ais, choose_method
from ..core import RBMParams, free_energy
from ..partition import log_partition
from .loss import _mean_free_energy

__all__ = [
    "sml_log_z",
    "TrackedLogZ",
    "fresh_log_z",
    "tracked_step",
    "refresh_due",
    "refreshed",
    "initial_tracked",
]


@jax.custom_vjp
def sml_log_z(params: RBMParams, v_model, value):
    r"""``value`` (an estimate of :math:`\log Z`), with the gradient
    :math:`-\frac1M\sum_j \nabla_\theta F_\theta(v_j)` with respect to ``params`` at the
    negative samples ``v_model`` ``(M, n_visible)``; no gradient flows to ``v_model`` or
    ``value``."""
    del params, v_model
    return value


def _sml_fwd(params, v_model, value):
    return value, (params, v_model, value)


def _sml_bwd(residuals, g):
    params, v_model, value = residuals
    _, vjp = jax.vjp(lambda p: -_mean_free_energy(p, v_model), params)
    return vjp(g)[0], jnp.zeros_like(v_model), jnp.zeros_like(value)


sml_log_z.defvjp(_sml_fwd, _sml_bwd)


class TrackedLogZ(NamedTuple):
    """The tracked estimate of :math:`\\log Z` (arrays only: it lives in model state)."""

    #: The estimate at ``anchor``.
    log_z: jax.Array
    #: Its variance from sampling (nats squared): the refresh's plus the tracking steps'.
    variance: jax.Array
    #: Updates since the last refresh.
    age: jax.Array
    #: The parameters the estimate refers to.
    anchor: RBMParams
    #: The drift rate measured at the last refresh (nats per update; infinite before).
    drift_rate: jax.Array = math.inf
    #: The age at the last refresh (updates between the last two refreshes).
    last_interval: jax.Array = 0


def fresh_log_z(key, params: RBMParams, *, ais_runs: int = 100, ais_betas: int = 1000):
    """``(log_z, variance)`` by the library's one chooser: exact enumeration (variance 0)
    when the smaller layer is small enough, else forward AIS (``ais_runs`` runs over a
    default schedule of ``ais_betas`` temperatures; variance its squared standard error)."""
    if choose_method(params) == "exact":
        value = log_partition(params, max_units=None)
        return value, jnp.zeros_like(value)
    result = ais(params, key, num_runs=ais_runs, betas=ais_betas)
    return result.log_z, jnp.square(result.stderr)


def tracked_step(tracked: TrackedLogZ, params: RBMParams, chains) -> TrackedLogZ:
    r"""Moves the estimate from ``tracked.anchor`` to ``params`` by importance sampling with
    the ``chains`` ``(M, n_visible)`` (approximately drawn from the anchor's model):
    :math:`\log w_j = F_{\theta'}(v_j) - F_\theta(v_j)`, :math:`\log\bar w` plus its
    second-order bias correction :math:`\hat\sigma^2_w/(2M\bar w^2)`."""
    log_w = free_energy(tracked.anchor, chains) - free_energy(params, chains)
    m = log_w.shape[0]
    delta = jax.nn.logsumexp(log_w) - math.log(m)
    w = jnp.exp(log_w - jnp.max(log_w))
    rel_var = jnp.var(w, ddof=1) / (m * jnp.square(jnp.mean(w)))
    log_z = tracked.log_z + delta + 0.5 * rel_var
    return tracked._replace(
        log_z=log_z, variance=tracked.variance + rel_var, age=tracked.age + 1, anchor=params
    )


def refresh_due(tracked: TrackedLogZ, refresh_every: int, tolerance: float | None = None):
    r"""Whether ``tracked`` is ``refresh_every`` updates old or, with a ``tolerance``
    (nats), whether :math:`\text{age}\cdot r + \text{stderr}` exceeds it or the age is twice
    the last interval (see the module's docstring)."""
    due = tracked.age >= refresh_every
    if tolerance is None:
        return due
    bound = tracked.age * tracked.drift_rate + jnp.sqrt(tracked.variance)
    doubled = tracked.age >= 2 * jnp.maximum(tracked.last_interval, 1)
    return due | (bound > tolerance) | doubled


def refreshed(
    key, tracked: TrackedLogZ, refresh_every: int, tolerance: float | None = None,
    **fresh_options,
) -> TrackedLogZ:  # fmt: skip
    """``tracked`` replaced by a :func:`fresh_log_z` at its anchor when :func:`refresh_due`
    (age 0 then), with the drift rate it measured."""

    def refresh(t):
        value, variance = fresh_log_z(key, t.anchor, **fresh_options)
        measured = jnp.isfinite(t.log_z) & (t.age > 0)
        rate = jnp.where(measured, jnp.abs(value - t.log_z) / jnp.maximum(t.age, 1), jnp.inf)
        rate = rate.astype(jnp.result_type(t.drift_rate))
        return TrackedLogZ(value, variance, jnp.zeros_like(t.age), t.anchor, rate, t.age)

    due = refresh_due(tracked, refresh_every, tolerance)
    return jax.lax.cond(due, refresh, lambda t: t, tracked)


def initial_tracked(params: RBMParams, refresh_every: int) -> TrackedLogZ:
    """An estimate that is due for a refresh (its value, NaN, is never reported before
    that), with no drift rate measured yet."""
    dtype = params.weights.dtype
    zero = jnp.zeros((), dtype)
    nan, inf = jnp.full((), jnp.nan, dtype), jnp.full((), jnp.inf, dtype)
    age = jnp.asarray(refresh_every, jnp.int32)
    return TrackedLogZ(nan, zero, age, params, inf, jnp.zeros((), jnp.int32))
