r"""Maximum-likelihood training of RBMs: CD-k, PCD-k / SML, parallel tempering, and ``fit``.

The gradient of the average log-likelihood of data :math:`\{v_n\}` is a positive phase minus a
negative phase,

.. math::

    \nabla_\theta \frac1N \sum_n \log p(v_n)
    = -\frac1N \sum_n \nabla_\theta F(v_n) + \mathbb{E}_{v \sim p_\theta}[\nabla_\theta F(v)].

Every estimator here replaces the model expectation by an average over *negative samples*
:math:`v'_1, \dots, v'_M` and differentiates the free-energy surrogate

.. math::

    \mathcal{L}(\theta) = \frac1N \sum_n F_\theta(v_n)
        - \frac1M \sum_m F_\theta\big(\operatorname{stop\_gradient}(v'_m)\big)

with :func:`jax.grad`, so :math:`-\nabla\mathcal L` is an unbiased estimate of the gradient
when the :math:`v'_m` are exact model samples, for any unit types and any parametrisation. The
estimators differ only in where the negative samples come from:

* **CD-k** (Hinton 2002): :math:`k` Gibbs sweeps started at the minibatch (biased, cheap).
* **PCD-k / SML** (Younes 1989; Tieleman 2008): :math:`k` sweeps of persistent chains that
  carry over from one parameter update to the next. :func:`fit` takes each update's
  negative phase at the chains as they stand, then advances them by :math:`k` sweeps under
  the same parameters, so the sweep's first product :math:`v'W` is the gradient's own.
* **Parallel tempering** (Desjardins et al. 2010; Cho, Raiko & Ilin 2010): persistent chains
  at inverse temperatures :math:`0 = \beta_1 < \dots < \beta_T = 1` of the interpolated models
  :math:`p_\beta(v, h) \propto \exp\big(\beta(v^\top W h + c^\top h) + (\beta b +
  (1-\beta) b_0)^\top v\big)`, whose :math:`\beta = 0` end is the data's base-rate model
  :math:`b_0`; after each sweep, neighbouring replicas swap states with the Metropolis
  probability :math:`\min\{1, e^{F_i(v_i) + F_j(v_j) - F_i(v_j) - F_j(v_i)}\}`.

**Centering** (Montavon & Müller 2012; Melchior, Fischer & Wiskott 2016) trains the
equivalent parametrisation :math:`E(v, h) = -(v - \mu)^\top W (h - \lambda) - b'^\top(v - \mu)
- c'^\top(h - \lambda)` with :math:`\mu` the data mean and :math:`\lambda` a running mean of the
hidden activations, which conditions the gradient much better. The gradient in these
coordinates is again :func:`jax.grad` of the same surrogate, through the map to standard
parameters :math:`b = b' - W\lambda`, :math:`c = c' - W^\top \mu`.

References:
    * G. E. Hinton, *Training products of experts by minimizing contrastive divergence*,
      Neural Computation 14 (2002).
    * T. Tieleman, *Training restricted Boltzmann machines using approximations to the
      likelihood gradient*, ICML 2008.
    * G. Desjardins, A. Courville, Y. Bengio, P. Vincent and O. Delalleau, *Tempered Markov
      chain Monte Carlo for training of restricted Boltzmann machines*, AISTATS 2010.
    * G. Montavon and K.-R. Müller, *Deep Boltzmann machines and the centering trick*, in
      *Neural Networks: Tricks of the Trade* (2012).
    * J. Melchior, A. Fischer and L. Wiskott, *How to center deep Boltzmann machines*, JMLR 17
      (2016).
    * G. E. Hinton, *A Practical Guide to Training Restricted Boltzmann Machines* (2010).
"""

from __future__ import annotations

import functools
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from . import diagnostics, io
from ._progress import Progress
from ._threefry import threefry_split
from .core import RBMParams, free_energy, gibbs_sweep, hidden_mean, init_params, visible_mean
from .units import as_unit_type

__all__ = [
    "FitResult",
    "TrainState",
    "TrainingDiverged",
    "ChainsNotMixing",
    "fit",
    "free_energy_loss",
    "loss_gradient",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
    "tempered_params",
    "base_rate_bias",
    "to_standard",
    "move_hidden_offset",
    "pseudo_log_likelihood",
    "reconstruction_error",
]

METHODS = ("cd", "pcd", "pt")
CHECKPOINT_FILE = "checkpoint.npz"
PARAMS_FILE = "params.npz"
# epochs=None trains for DEFAULT_EPOCHS epochs or MIN_UPDATES parameter updates, whichever is
# more: small data sets (bars-and-stripes: 30 patterns, 3 updates an epoch) need the updates.
DEFAULT_EPOCHS = 100
MIN_UPDATES = 10_000
# eval_every="auto" evaluates at most about this many times per run.
MAX_EVALUATIONS = 100
# The mesh axis data-parallel training splits minibatches and chains along.
DATA_AXIS = "data"


class TrainingDiverged(FloatingPointError):
    """Raised when the parameters become NaN or infinite during :func:`fit`."""


class ChainsNotMixing(RuntimeWarning):
    """Warned (once per run) when fit's monitor finds the persistent chains not mixing:
    :func:`numpyro_rbm.diagnostics.mixing_rhat` above ``RHAT_THRESHOLD``."""

    def __init__(self, message, epoch, rhat):
        super().__init__(message)
        self.epoch, self.rhat = epoch, rhat


# --- the gradient estimators: pure functions --------------------------------------------------


def to_standard(params: RBMParams, visible_offset, hidden_offset) -> RBMParams:
    r"""Maps centered parameters :math:`(W, b', c')` with offsets :math:`(\mu, \lambda)` to the
    standard parametrisation of the same distribution: :math:`b = b' - W\lambda`,
    :math:`c = c' - W^\top\mu` (the constant :math:`\mu^\top W \lambda - b'^\top\mu -
    c'^\top\lambda` cancels in :math:`p`). Zero offsets give the parameters back unchanged."""
    w = params.weights
    return params.replace(
        visible_bias=params.visible_bias - w @ hidden_offset,
        hidden_bias=params.hidden_bias - visible_offset @ w,
    )


def move_hidden_offset(params: RBMParams, old_offset, new_offset) -> RBMParams:
    r"""Re-expresses centered parameters for a new hidden offset without changing the model:
    :math:`b'_{\text{new}} = b' + W(\lambda_{\text{new}} - \lambda)` keeps
    :math:`b = b' - W\lambda` fixed (:math:`c` does not depend on :math:`\lambda`)."""
    return params.replace(
        visible_bias=params.visible_bias + params.weights @ (new_offset - old_offset)
    )


def free_energy_loss(params: RBMParams, v_data, v_model, offsets=None):
    r"""The surrogate :math:`\frac1N\sum_n F(v_n) - \frac1M\sum_m F(\operatorname{sg}(v'_m))`.

    Its gradient is minus the stochastic log-likelihood gradient (so optimisers minimise it).
    Its *value* is not the negative log-likelihood.

    Args:
        params: the RBM, in centered coordinates when ``offsets`` is given.
        v_data: a minibatch ``(N, n_visible)``.
        v_model: negative samples ``(M, n_visible)``; gradients do not flow through them.
        offsets: optional ``(visible_offset, hidden_offset)`` for centered training.
    """
    if offsets is not None:
        params = to_standard(params, *offsets)
    v_model = jax.lax.stop_gradient(v_model)
    return jnp.mean(free_energy(params, v_data)) - jnp.mean(free_energy(params, v_model))


def loss_gradient(params: RBMParams, v_data, v_model, offsets=None) -> RBMParams:
    r""":func:`jax.grad` of :func:`free_energy_loss`: an estimate of
    :math:`-\nabla_\theta \frac1N\sum_n \log p(v_n)` (for Bernoulli units and no centering,
    :math:`-(\langle v\,\sigma(c + W^\top v)^\top\rangle_{\text{data}} -
    \langle v\,\sigma(c + W^\top v)^\top\rangle_{\text{model}})` for :math:`W`)."""
    return jax.grad(free_energy_loss)(params, v_data, v_model, offsets)


def _gibbs_k(key, params: RBMParams, v, k: int):
    """``k`` block-Gibbs sweeps of the chains ``v``, through the unit types' own samplers."""

    def body(v, key):
        return gibbs_sweep(key, params, v)[0], None

    return jax.lax.scan(body, v, threefry_split(key, k))[0]


def cd_negative(key, params: RBMParams, v_data, k: int = 1):
    """CD-k negative samples: ``k`` block-Gibbs sweeps started at the data."""
    return _gibbs_k(key, params, v_data, k)


def pcd_negative(key, params: RBMParams, chains, k: int = 1):
    """PCD-k / SML: advances the persistent ``chains`` ``(M, n_visible)`` by ``k`` sweeps;
    the result is both the negative samples and the next chain state."""
    return _gibbs_k(key, params, chains, k)


def tempered_params(params: RBMParams, betas, base_bias) -> RBMParams:
    r"""The ladder :math:`(\beta W,\ \beta b + (1-\beta) b_0,\ \beta c)`, batched over ``betas``
    (shape ``(T,)``): :math:`\beta = 1` is the model, :math:`\beta = 0` the independent
    base-rate model with visible bias :math:`b_0`."""
    betas = jnp.asarray(betas, params.weights.dtype)
    return params.replace(
        weights=betas[:, None, None] * params.weights,
        visible_bias=betas[:, None] * params.visible_bias + (1 - betas)[:, None] * base_bias,
        hidden_bias=betas[:, None] * params.hidden_bias,
    )


def _swap(uniforms, ladder: RBMParams, chains, parity: int):
    """Metropolis swaps of replicas ``(t, t + 1)`` for all ``t`` of the given parity, driven
    by ``uniforms`` ``(T - 1, M)``. Only the free energies a swap needs are computed: each
    replica under its own model and under its neighbours' (``3T`` rather than ``T^2``)."""
    fe = jax.vmap(free_energy)  # replica t's model on chains t: (T, M)
    own_each = fe(ladder, chains)
    lower = jax.tree.map(lambda x: x[:-1], ladder)
    upper = jax.tree.map(lambda x: x[1:], ladder)
    own = own_each[:-1] + own_each[1:]
    crossed = fe(lower, chains[1:]) + fe(upper, chains[:-1])
    log_ratio = own - crossed  # (T - 1, M)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    t = jnp.arange(chains.shape[0] - 1)
    accept = (uniforms < accept_prob) & ((t % 2) == parity)[:, None]
    up = jnp.concatenate([accept, jnp.zeros_like(accept[:1])])  # t takes t + 1's state
    down = jnp.concatenate([jnp.zeros_like(accept[:1]), accept])  # t + 1 takes t's state
    new = jnp.where(up[..., None], jnp.roll(chains, -1, axis=0), chains)
    new = jnp.where(down[..., None], jnp.roll(chains, 1, axis=0), new)
    return new, jnp.mean(accept_prob, axis=-1)


def pt_negative(key, params: RBMParams, chains, betas, base_bias, k: int = 1):
    r"""Parallel tempering: ``k`` sweeps of every replica, then swaps of the even and of the
    odd neighbouring pairs.

    Args:
        key: PRNG key.
        params: the model (:math:`\beta = 1`).
        chains: ``(T, M, n_visible)`` replicas, ordered like ``betas`` (the last is the model).
        betas: increasing inverse temperatures ``(T,)`` ending at 1.
        base_bias: visible bias :math:`b_0` of the :math:`\beta = 0` model.
        k: sweeps per replica between swaps.

    Returns:
        ``(chains, swap_rate)``: the new replicas (``chains[-1]`` are the negative samples)
        and the mean swap acceptance probability of each neighbouring pair ``(T - 1,)``.
    """
    ladder = tempered_params(params, betas, base_bias)
    n_temps, n_chains = chains.shape[:2]
    key_gibbs, key_even, key_odd = threefry_split(key, 3)
    keys = threefry_split(key_gibbs, n_temps)
    chains = jax.vmap(lambda kk, p, v: _gibbs_k(kk, p, v, k))(keys, ladder, chains)
    u_even = jax.random.uniform(key_even, (n_temps - 1, n_chains), chains.dtype)
    chains, rate_even = _swap(u_even, ladder, chains, 0)
    u_odd = jax.random.uniform(key_odd, (n_temps - 1, n_chains), chains.dtype)
    chains, rate_odd = _swap(u_odd, ladder, chains, 1)
    pair = jnp.arange(n_temps - 1)
    return chains, jnp.where(pair % 2 == 0, rate_even, rate_odd)


def base_rate_bias(data, units="bernoulli", pseudocount: float = 1.0):
    r"""Visible biases of the independent model matching the data marginals (Hinton's guide):
    with :math:`q_i = (n_i + \alpha)/(N + 2\alpha)` the smoothed frequency of the high value
    :math:`x_+`, :math:`b_i = \operatorname{logit}(q_i)/(x_+ - x_-)`."""
    units = as_unit_type(units)
    if units.values is None:  # Gaussian, Potts: the unit type's independent model
        return jnp.asarray(units.bias_from_data(data, pseudocount))
    low, high = units.values
    data = jnp.asarray(data)
    n_high = jnp.sum(data == high, axis=0)
    q = (n_high + pseudocount) / (data.shape[0] + 2 * pseudocount)
    return (jnp.log(q) - jnp.log1p(-q)) / (high - low)


# --- monitoring -------------------------------------------------------------------------------


def reconstruction_error(params: RBMParams, v):
    r"""Mean squared error per unit of the mean-field reconstruction
    :math:`\mathbb{E}[v \mid h = \mathbb{E}[h \mid v]]`. Cheap, but not a likelihood: a
    small value does not mean a good model."""
    recon = visible_mean(params, hidden_mean(params, v))
    return jnp.mean((v - recon) ** 2)


def pseudo_log_likelihood(params: RBMParams, v):
    r"""Average exact pseudo-log-likelihood :math:`\frac1N\sum_n\sum_i \log p(v_{ni} \mid
    v_{n,-i})`, with :math:`\log p(v_i \mid v_{-i}) = \log\sigma\big(F(\bar v^{(i)}) - F(v)\big)`
    where :math:`\bar v^{(i)}` flips unit :math:`i` (Besag 1975)."""
    low, high = params.visible_units.values
    delta = (low + high - 2 * v)[..., :, None]  # (N, n_v, 1): change of v_i when flipped
    field = (params.hidden_bias + v @ params.weights)[..., None, :]  # (N, 1, n_h)
    a = params.hidden_layer.log_partition
    d_free = -params.visible_bias * delta[..., 0] - (
        a(field + delta * params.weights) - a(field)
    )  # F(flipped) - F(v), (N, n_v)
    return jnp.mean(jnp.sum(jax.nn.log_sigmoid(d_free), axis=-1))


# --- fit ---------------------------------------------------------------------------------------


class TrainState(NamedTuple):
    """Everything that evolves during training (a pytree; what a checkpoint stores)."""

    #: The trained parameters in centered coordinates (see :func:`to_standard`).
    params: RBMParams
    #: The visible offset :math:`\mu` (zeros without centering).
    visible_offset: jax.Array
    #: The hidden offset :math:`\lambda` (zeros without centering).
    hidden_offset: jax.Array
    #: The optax optimiser state.
    opt_state: Any
    #: Persistent chains ``(M, n_visible)``, ``(T, M, n_visible)`` for tempering; for CD, the
    #: last negative samples.
    chains: jax.Array
    #: The PRNG key of the next epoch.
    key: jax.Array


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    #: The trained :class:`~numpyro_rbm.core.RBMParams` (standard coordinates).
    params: RBMParams
    #: The model's persistent chains ``(num_chains, n_visible)`` (for parallel tempering the
    #: :math:`\beta = 1` replica; for CD, the last negative samples).
    chains: jax.Array
    #: ``{metric: list}``, one entry per evaluation: ``"epoch"``, ``"reconstruction_error"``,
    #: ``"pseudo_log_likelihood"``, ``"train_log_likelihood"`` and ``"test_log_likelihood"``
    #: (exact when enumerable, AIS otherwise; absent when neither is available),
    #: ``"chain_rhat"`` (persistent chains) and ``"swap_rate"`` (tempering).
    history: dict
    #: The optimiser state.
    opt_state: Any
    #: The PRNG key after training.
    key: jax.Array
    #: The full :class:`TrainState`.
    state: TrainState
    #: ``{"compile_s", "train_s", "eval_s"}``, wall-clock seconds (``compile_s`` is near zero
    #: when an earlier call compiled the same settings and shapes).
    timings: dict


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_data(data, name, units, n_visible=None):
    try:
        arr = np.asarray(data)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} must be a 2-D array of unit values: {err}") from err
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (examples x visible units), got shape "
            f"{arr.shape}; reshape images to one row per example, e.g. x.reshape(len(x), -1)"
        )
    if units.values is None:  # Gaussian, Potts: the unit type checks (and encodes) its data
        arr = units.prepare_data(arr, name)
    if n_visible is not None and arr.shape[1] != n_visible:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the model has {n_visible} visible units"
        )
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if units.values is None:
        return arr
    low, high = units.values
    bad = ~((arr == low) | (arr == high))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} must hold only the {units.name} values {{{low:g}, {high:g}}}; row {row}, "
            f"column {col} is {float(arr[row, col]):g} ({int(bad.sum())} bad entries). "
            "Binarise the data first (e.g. x >= threshold) or pick visible_units to match"
        )
    return arr


def _check_devices(devices, method, batch_size, num_chains):
    try:
        devices = list(devices)
    except TypeError as err:
        raise TypeError(
            f"devices must be a sequence of jax devices, e.g. jax.devices(): {err}"
        ) from err
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(
            f"devices must be a non-empty sequence of jax devices, e.g. jax.devices(); got "
            f"{devices!r}"
        )
    n = len(devices)
    split = {"batch_size": batch_size}
    if method != "cd":
        split["num_chains"] = num_chains
    for name, value in split.items():
        if value % n:
            raise ValueError(
                f"{name}={value} cannot be split evenly across {n} devices; use a multiple of {n}"
            )
    return devices


def _make_optimizer(optimizer, learning_rate, total_steps):
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
                f"got {type(optimizer).__name__}"
            )
        return optimizer
    if not callable(learning_rate) and not (
        isinstance(learning_rate, int | float)
        and math.isfinite(learning_rate)
        and learning_rate > 0
    ):
        raise ValueError(
            f"learning_rate must be a positive number or an optax schedule, got {learning_rate!r}"
        )
    if callable(learning_rate):
        return optax.adam(learning_rate)
    return _default_optimizer(float(learning_rate), int(total_steps))


@functools.lru_cache(maxsize=16)
def _default_optimizer(learning_rate: float, total_steps: int):
    """Adam on a cosine schedule; one object per setting, so the compiled loop is reused."""
    # Decaying the step size lets the stochastic gradient settle (Tieleman 2008 and most SML
    # analyses assume a decreasing step size); cosine to 1% over the run.
    return optax.adam(optax.cosine_decay_schedule(learning_rate, total_steps, alpha=0.01))


@functools.lru_cache(maxsize=16)
def _build_run(cfg_items: tuple, optimizer, state_sharding=None):
    """The jit-compiled training loop: epochs in a ``while_loop``, each a shuffle and a
    ``lax.scan`` of one update per minibatch.

    Cached on the (hashable) settings, so repeated :func:`fit` calls with the same settings
    and shapes reuse one compiled loop; the ladder ``betas``, ``base_bias`` and the epoch count
    are traced arguments. With ``state_sharding`` (a :class:`TrainState` of shardings, see
    :func:`_data_parallel_sharding`) minibatches and chains are split across the mesh's
    devices and everything else is replicated; XLA inserts the gradient reductions.
    """
    cfg = dict(cfg_items)
    batch_sharding = None
    if state_sharding is not None:
        # (n_batches, batch_size, n_visible): each device gets its share of every minibatch.
        batch_sharding = NamedSharding(state_sharding.key.mesh, PartitionSpec(None, DATA_AXIS))

    def negative(key, params, batch, chains, betas, base_bias):
        if cfg["method"] == "cd":
            v_model = cd_negative(key, params, batch, cfg["k"])
            return v_model, v_model, jnp.zeros((0,), batch.dtype)
        if cfg["method"] == "pcd":
            # The negative phase reads the chains as they are, then advances them by k
            # sweeps: the sweep's first product v W is then the gradient's own (XLA merges
            # the two), five matrix products per update instead of six.
            advanced = pcd_negative(key, params, chains, cfg["k"])
            return chains, advanced, jnp.zeros((0,), batch.dtype)
        chains, rate = pt_negative(key, params, chains, betas, base_bias, cfg["k"])
        return chains[-1], chains, rate

    def update(state: TrainState, batch, key_neg, betas, base_bias):
        offsets = (state.visible_offset, state.hidden_offset)
        standard = to_standard(state.params, *offsets)
        v_model, chains, rate = negative(key_neg, standard, batch, state.chains, betas, base_bias)
        grads = loss_gradient(state.params, batch, v_model, offsets)
        if cfg["weight_decay"] or cfg["l1_decay"]:
            w = state.params.weights
            grads = grads.replace(
                weights=grads.weights + cfg["weight_decay"] * w + cfg["l1_decay"] * jnp.sign(w)
            )
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        hidden_offset = state.hidden_offset
        if cfg["centering"]:
            # Running mean of the data's hidden activations; re-express b' so that the
            # standard visible bias b = b' - W lambda is unchanged by the offset move.
            rate_h = cfg["offset_rate"]
            new = (1 - rate_h) * hidden_offset + rate_h * jnp.mean(
                hidden_mean(standard, batch), axis=0
            )
            params = move_hidden_offset(params, hidden_offset, new)
            hidden_offset = new
        state = TrainState(
            params, state.visible_offset, hidden_offset, opt_state, chains, state.key
        )
        return state, rate

    def epoch(state: TrainState, data, betas, base_bias):
        # All of an epoch's update keys in one split: a split per update would add its own
        # small kernels to every update's critical path (measured about 2x slower on digits
        # at batch 10).
        key, key_perm, key_updates = threefry_split(state.key, 3)
        n_batches = data.shape[0] // cfg["batch_size"]
        update_keys = threefry_split(key_updates, n_batches)
        perm = jax.random.permutation(key_perm, data.shape[0])[: n_batches * cfg["batch_size"]]
        batches = data[perm].reshape(n_batches, cfg["batch_size"], data.shape[1])
        if batch_sharding is not None:
            batches = jax.lax.with_sharding_constraint(batches, batch_sharding)

        def step(state, batch_and_key):
            return update(state, *batch_and_key, betas, base_bias)

        state, rates = jax.lax.scan(step, state._replace(key=key), (batches, update_keys))
        return state, jnp.mean(rates, axis=0)

    def is_finite(params):
        return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))

    def run(state: TrainState, data, betas, base_bias, n_epochs):
        """``n_epochs`` (traced: any count reuses the compiled loop) epochs, stopping early
        at the first whose parameters are not finite. Returns ``(state, swap rates of the
        last epoch, finite, epochs run)``."""
        n_rates = betas.shape[0] - 1 if cfg["method"] == "pt" else 0
        rates0 = jnp.zeros((n_rates,), data.dtype)

        def cond(carry):
            _, _, finite, done = carry
            return finite & (done < n_epochs)

        def body(carry):
            state, _, _, done = carry
            state, rates = epoch(state, data, betas, base_bias)
            return state, rates, is_finite(state.params), done + 1

        init = (state, rates0, jnp.array(True), jnp.array(0, jnp.int32))
        return jax.lax.while_loop(cond, body, init)

    if state_sharding is None:
        return jax.jit(run)
    rep = NamedSharding(state_sharding.key.mesh, PartitionSpec())
    return jax.jit(
        run,
        in_shardings=(state_sharding, rep, rep, rep, rep),
        out_shardings=(state_sharding, rep, rep, rep),
    )


def _data_parallel_sharding(devices, state: TrainState, method: str) -> TrainState:
    """Shardings for data-parallel training on ``devices``: the chains split along their chain
    axis, everything else (parameters, offsets, optimiser state, key) replicated."""
    mesh = Mesh(np.asarray(devices), (DATA_AXIS,))
    replicated = NamedSharding(mesh, PartitionSpec())
    chain_axis = (None, DATA_AXIS) if method == "pt" else (DATA_AXIS,)
    return TrainState(
        params=jax.tree.map(lambda _: replicated, state.params),
        visible_offset=replicated,
        hidden_offset=replicated,
        opt_state=jax.tree.map(lambda _: replicated, state.opt_state),
        chains=NamedSharding(mesh, PartitionSpec(*chain_axis)),
        key=replicated,
    )


@jax.jit
def _exact_log_likelihoods(params, key, datasets):
    """Exact mean log-likelihood of each data set (module level: compiled once per shapes)."""
    from .partition import log_partition

    log_z = log_partition(params, chunk_bits=12)
    return [jnp.mean(-free_energy(params, d)) - log_z for d in datasets]


def _log_likelihood_fn(mode, n_small):
    """Returns ``f(params, key, datasets) -> list of mean log-likelihoods`` or ``None``."""
    if mode is None:
        return None
    if mode == "exact" or (mode == "auto" and n_small <= 20):
        return _exact_log_likelihoods
    try:
        from .ais import ais as run_ais
    except ImportError:
        if mode == "ais":
            raise
        return None

    def by_ais(params, key, datasets):
        result = run_ais(params, key, data=datasets[0], num_runs=64, betas=1000)
        return [jnp.mean(-free_energy(params, d)) - result.log_z for d in datasets]

    return by_ais


@functools.partial(jax.jit, static_argnames="n_draws")
def _diagnostic_trace(params, chains, key, n_draws=diagnostics.MONITOR_SWEEPS):
    def body(v, k):
        v = gibbs_sweep(k, params, v)[0]
        return v, v

    _, trace = jax.lax.scan(body, chains, jax.random.split(key, n_draws))
    return jnp.swapaxes(trace, 0, 1)  # (chains, draws, n_visible)


@functools.partial(jax.jit, static_argnames="n_draws")
def _tempered_diagnostic_trace(
    params, replicas, betas, base_bias, key, n_draws=diagnostics.MONITOR_SWEEPS
):
    """The model replica's trace under parallel tempering (sweeps *and* swaps), which is the
    chain that supplies PT's negative samples."""

    def body(chains, k):
        chains = pt_negative(k, params, chains, betas, base_bias)[0]
        return chains, chains[-1]

    _, trace = jax.lax.scan(body, replicas, jax.random.split(key, n_draws))
    return jnp.swapaxes(trace, 0, 1)  # (chains, draws, n_visible)


def _chain_rhat(params, chains, key, ladder=None):
    """The monitor's R-hat: :func:`numpyro_rbm.diagnostics.mixing_rhat` of the free energy and
    mean activation of the persistent chains over
    :data:`~numpyro_rbm.diagnostics.MONITOR_SWEEPS` further sweeps at fixed parameters. With
    ``ladder=(betas, base_bias)``, ``chains`` are PT replicas ``(T, M, n_visible)`` and the
    sweeps include the replica swaps."""
    if chains.shape[-2] < 2:
        return float("nan")
    if ladder is None:
        trace = _diagnostic_trace(params, chains, key)
    else:
        trace = _tempered_diagnostic_trace(params, chains, *ladder, key)
    return diagnostics.mixing_rhat(diagnostics.chain_statistics(params, trace))


def _state_to_arrays(state: TrainState) -> dict:
    arrays = {}
    for i, leaf in enumerate(jax.tree.leaves(state._replace(key=None))):
        arrays[f"leaf_{i:04d}"] = np.asarray(leaf)
    arrays["key"] = np.asarray(jax.random.key_data(state.key))
    return arrays


def _state_from_arrays(template: TrainState, arrays: dict) -> TrainState:
    leaves, treedef = jax.tree.flatten(template._replace(key=None))
    if sum(name.startswith("leaf_") for name in arrays) != len(leaves):
        raise ValueError("the checkpoint does not match this training configuration")
    new_leaves = []
    for i, old in enumerate(leaves):
        new = arrays[f"leaf_{i:04d}"]
        if new.shape != np.shape(old):
            raise ValueError(
                f"checkpoint array {i} has shape {new.shape}, this run expects {np.shape(old)}"
            )
        new_leaves.append(jnp.asarray(new, dtype=jnp.result_type(old)))
    state = jax.tree.unflatten(treedef, new_leaves)
    return state._replace(key=jax.random.wrap_key_data(jnp.asarray(arrays["key"])))


def fit(
    data,
    n_hidden: int,
    *,
    method: str = "pcd",
    epochs: int | None = None,
    batch_size: int = 10,
    learning_rate: float | Callable = 0.01,
    optimizer: optax.GradientTransformation | None = None,
    k: int = 1,
    num_chains: int = 100,
    num_temperatures: int = 10,
    centering: bool = True,
    weight_decay: float = 0.0,
    l1_decay: float = 0.0,
    seed: int = 0,
    dtype="float32",
    visible_units="bernoulli",
    hidden_units="bernoulli",
    weight_scale: float = 0.01,
    test_data=None,
    eval_every: int | str | None = "auto",
    log_likelihood: str | None = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callable] = (),
    devices: Sequence[jax.Device] | None = None,
) -> FitResult:
    r"""Trains an RBM on ``data`` by stochastic maximum likelihood.

    Each epoch shuffles the data, cuts it into ``len(data) // batch_size`` minibatches (the
    remainder is left out of that epoch; a different remainder each epoch) and makes one
    optimiser update per minibatch inside a :func:`jax.lax.scan`; the epochs between two
    evaluations run in one compiled :func:`jax.lax.while_loop`, compiled once per settings
    and shapes (later calls with the same ones reuse it). Visible
    biases start at the data's base rates (Hinton's guide), weights at
    :math:`\mathcal N(0, \text{weight\_scale}^2)`. Everything is a function of ``seed``: the
    same call gives the same parameters, and a resumed run equals an uninterrupted one.

    Args:
        data: training examples ``(N, n_visible)`` holding the visible unit values.
        n_hidden: number of hidden units.
        method: ``"pcd"`` (persistent contrastive divergence / SML), ``"cd"`` (CD-k) or
            ``"pt"`` (parallel tempering).
        epochs: total number of passes over the data. ``None`` (the default) trains for 100
            epochs or 10,000 parameter updates, whichever is more, so that a small data set
            (30 bars-and-stripes patterns make 3 updates an epoch) still gets enough updates.
        batch_size: examples per update.
        learning_rate: initial step size of the default optimiser, Adam with the step size
            decayed to 1% of ``learning_rate`` over the run by a cosine schedule; or an optax
            schedule, used as is.
        optimizer: any ``optax.GradientTransformation``; overrides ``learning_rate``.
        k: Gibbs sweeps per update (per replica for ``"pt"``).
        num_chains: persistent chains (per temperature for ``"pt"``).
        num_temperatures: rungs of the parallel-tempering ladder, :math:`\beta` evenly spaced
            in :math:`[0, 1]`.
        centering: train in centered coordinates (recommended; see the module docstring).
        weight_decay: L2 penalty :math:`\tfrac{\lambda_2}{2}\|W\|^2` on the weights.
        l1_decay: L1 penalty :math:`\lambda_1 \|W\|_1` on the weights.
        seed: the integer seed of all randomness.
        dtype: ``"float32"`` or ``"float64"`` (needs ``jax.enable_x64``).
        visible_units, hidden_units: unit types (``"bernoulli"`` or ``"spin"``; visible also
            ``"gaussian"`` (real data) or ``Potts(q)`` (integer sequences), hidden also
            ``"relu"``; see ``docs/units.md``).
        weight_scale: standard deviation of the initial weights.
        test_data: optional held-out examples, monitored alongside the training data.
        eval_every: evaluate the monitoring metrics every this many epochs (and after the
            last); ``"auto"`` (the default) every ``max(1, epochs // 100)`` epochs, at most
            about 100 evaluations; ``None`` turns monitoring off. The epochs between two
            evaluations (or checkpoints) run inside one compiled call.
        log_likelihood: ``"auto"`` (exact when the smaller layer has at most 20 units, else AIS
            when :mod:`numpyro_rbm.ais` is available), ``"exact"``, ``"ais"`` or ``None``.
        checkpoint_dir: folder for an atomic checkpoint after every epoch and the final
            ``params.npz``.
        resume: continue from the checkpoint in ``checkpoint_dir`` up to ``epochs``.
        progress: report progress on stderr: what is being compiled, then a tqdm bar with
            the latest metrics on a terminal, or, when stderr is a file or a pipe, a line at
            most every 10 seconds (``chain_rhat`` is shown as ``R-hat(50 sweeps)``).
        callbacks: functions ``callback(epoch, params, metrics) -> bool | None`` called after
            each evaluation; returning ``True`` stops training.
        devices: data-parallel training over these devices (e.g. ``jax.devices()``): every
            minibatch and the persistent chains are split evenly across them, parameters and
            optimiser state are replicated, and XLA reduces the gradients. ``batch_size`` and
            ``num_chains`` must be multiples of ``len(devices)``. Same seed, same result as on
            one device, up to the order of floating-point sums. ``None``: one device, no
            sharding.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for invalid arguments or data, with what to change.
        TrainingDiverged: when the parameters become NaN or infinite; the last good
            checkpoint (if ``checkpoint_dir`` is set) is left intact.
    """
    # --- argument checks ---------------------------------------------------------------------
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    vis = as_unit_type(visible_units)
    hid = as_unit_type(hidden_units)
    n_hidden = _check_positive_int("n_hidden", n_hidden)
    if epochs is not None:
        epochs = _check_positive_int("epochs", epochs)
    batch_size = _check_positive_int("batch_size", batch_size)
    k = _check_positive_int("k", k)
    num_chains = _check_positive_int("num_chains", num_chains)
    num_temperatures = _check_positive_int("num_temperatures", num_temperatures, minimum=2)
    if eval_every is not None and eval_every != "auto":
        if isinstance(eval_every, bool) or not isinstance(eval_every, int | np.integer):
            raise ValueError(
                f"eval_every must be an integer >= 1, 'auto' or None, got {eval_every!r}"
            )
        eval_every = _check_positive_int("eval_every", eval_every)
    for name, value in (("weight_decay", weight_decay), ("l1_decay", l1_decay)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from err
    if dtype not in (jnp.dtype("float32"), jnp.dtype("float64")):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype}")
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: run inside `with jax.enable_x64(True):` or set "
            "jax.config.update('jax_enable_x64', True) at startup"
        )
    if log_likelihood not in ("auto", "exact", "ais", None):
        raise ValueError(
            f"log_likelihood must be 'auto', 'exact', 'ais' or None, got {log_likelihood!r}"
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoint")
    callbacks = tuple(callbacks)
    for cb in callbacks:
        if not callable(cb):
            raise TypeError(f"callbacks must be callables, got {cb!r}")
    train = _check_data(data, "data", vis)
    n, n_visible = train.shape
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n} training examples; use batch_size <= {n}"
        )
    test = None if test_data is None else _check_data(test_data, "test_data", vis, n_visible)
    if devices is not None:
        devices = _check_devices(devices, method, batch_size, num_chains)
    updates_per_epoch = n // batch_size
    if epochs is None:
        epochs = max(DEFAULT_EPOCHS, math.ceil(MIN_UPDATES / updates_per_epoch))
    if eval_every == "auto":
        eval_every = max(1, epochs // MAX_EVALUATIONS)
    optimizer = _make_optimizer(optimizer, learning_rate, epochs * updates_per_epoch)

    report = None
    if progress:  # the initial state and the loop compile now: say so before the wait
        report = Progress(f"fit[{method}]", epochs)
        report.say("compiling the training loop (once per settings and shapes)")

    # --- initial state -----------------------------------------------------------------------
    train = jnp.asarray(train, dtype)
    keys = jax.random.split(jax.random.key(seed), 5)
    key_init, key_chains, key_run, key_eval, key_diag = keys
    base = base_rate_bias(train, vis).astype(dtype)
    params0 = init_params(
        key_init,
        n_visible,
        n_hidden,
        weight_scale=weight_scale,
        visible_bias=base,
        visible_units=vis,
        hidden_units=hid,
        dtype=dtype,
    )
    params0 = params0.replace(visible_unit_params=vis.unit_params_from_data(train, dtype))
    if centering:
        mu = jnp.mean(train, axis=0)
        lam = jnp.mean(hidden_mean(params0, train), axis=0)
    else:
        mu = jnp.zeros((n_visible,), dtype)
        lam = jnp.zeros((n_hidden,), dtype)
    # Centered biases chosen so that to_standard(...) reproduces params0 exactly.
    centered0 = params0.replace(
        visible_bias=params0.visible_bias + params0.weights @ lam,
        hidden_bias=params0.hidden_bias + mu @ params0.weights,
    )
    starts = train[jax.random.randint(key_chains, (num_chains,), 0, n)]
    betas = jnp.linspace(0.0, 1.0, num_temperatures, dtype=dtype)
    if method == "pt":
        chains0 = jnp.broadcast_to(starts, (num_temperatures,) + starts.shape)
    elif method == "pcd":
        chains0 = starts
    else:
        chains0 = train[:batch_size]
    state = TrainState(centered0, mu, lam, optimizer.init(centered0), chains0, key_run)

    cfg = dict(
        method=method,
        k=k,
        batch_size=batch_size,
        centering=bool(centering),
        offset_rate=0.01,
        weight_decay=float(weight_decay),
        l1_decay=float(l1_decay),
    )
    signature = dict(
        cfg,
        n_visible=n_visible,
        n_hidden=n_hidden,
        epochs=epochs,
        num_chains=num_chains,
        num_temperatures=num_temperatures if method == "pt" else None,
        seed=int(seed),
        dtype=str(dtype),
        n_examples=n,
        visible_units=vis.spec,
        hidden_units=hid.spec,
    )
    history: dict[str, list] = {}
    start_epoch = 0
    ckpt_path = None if checkpoint_dir is None else os.path.join(checkpoint_dir, CHECKPOINT_FILE)
    if resume and os.path.exists(ckpt_path):
        arrays, meta = io.load_checkpoint(ckpt_path)
        if meta["signature"] != signature:
            diff = {
                name: (meta["signature"].get(name), value)
                for name, value in signature.items()
                if meta["signature"].get(name) != value
            }
            raise ValueError(
                f"cannot resume from {ckpt_path}: it was written with different settings "
                f"(name: (checkpoint, now)) {diff}"
            )
        state = _state_from_arrays(state, arrays)
        history = meta["history"]
        start_epoch = int(meta["epoch"])

    # --- compile -----------------------------------------------------------------------------
    t0 = time.perf_counter()
    if report is not None:
        report.resume_at(start_epoch)
        if start_epoch:
            report.say(f"resuming at epoch {start_epoch} of {epochs}")
    state_sharding = None
    if devices is not None:
        state_sharding = _data_parallel_sharding(devices, state, method)
        state = jax.device_put(state, state_sharding)
        train = jax.device_put(train, NamedSharding(state_sharding.key.mesh, PartitionSpec()))
    # The epoch count is a traced argument: one compilation serves every call with these
    # settings and shapes. A call for zero epochs compiles (or finds the cached loop) now, so
    # that train_s is pure training time.
    try:
        run_fn = _build_run(tuple(sorted(cfg.items())), optimizer, state_sharding)
    except TypeError:  # an optimiser that cannot be hashed: compile without the cache
        run_fn = _build_run.__wrapped__(tuple(sorted(cfg.items())), optimizer, state_sharding)
    jax.block_until_ready(run_fn(state, train, betas, base, np.int32(0)))
    timings = {"compile_s": time.perf_counter() - t0, "train_s": 0.0, "eval_s": 0.0}
    ll_fn = None
    if eval_every is not None:
        sizes = [n for n, u in ((n_visible, vis), (n_hidden, hid)) if u.enumerable]
        small = min(sizes, default=math.inf)
        ll_fn = _log_likelihood_fn(log_likelihood, small)
        eval_sets = [train] if test is None else [train, jnp.asarray(test, dtype)]
        pll_fn = jax.jit(pseudo_log_likelihood)
        recon_fn = jax.jit(reconstruction_error)

    mixing_warned = []  # epochs at which the "not mixing" warning was given (at most one)

    def evaluate(epoch, state, rate):
        params = to_standard(state.params, state.visible_offset, state.hidden_offset)
        sub = train[:1000]  # a fixed subset keeps the cost of monitoring bounded
        metrics = {
            "epoch": epoch,
            "reconstruction_error": float(recon_fn(params, sub)),
            "pseudo_log_likelihood": float(pll_fn(params, sub)) if vis.values else math.nan,
        }
        if ll_fn is not None:
            values = ll_fn(params, jax.random.fold_in(key_eval, epoch), eval_sets)
            metrics["train_log_likelihood"] = float(values[0])
            if test is not None:
                metrics["test_log_likelihood"] = float(values[1])
        if method != "cd":
            # PT's negative samples mix through the swaps: diagnose the chain it really runs.
            ladder = (betas, base) if method == "pt" else None
            key = jax.random.fold_in(key_diag, epoch)
            rhat = _chain_rhat(params, state.chains, key, ladder)
            metrics["chain_rhat"] = rhat
            if not rhat <= diagnostics.RHAT_THRESHOLD and not mixing_warned:
                # Once per run: later epochs are in history["chain_rhat"].
                mixing_warned.append(epoch)
                message = (
                    f"epoch {epoch}: the persistent chains are not mixing (R-hat of their "
                    f"free energy and mean activation over {diagnostics.MONITOR_SWEEPS} "
                    f"sweeps {rhat:.2f} > {diagnostics.RHAT_THRESHOLD}); the negative phase "
                    "is unreliable. Try method='pt', more sweeps k, or a smaller "
                    "learning_rate (history['chain_rhat'] has the value at every evaluation; "
                    "docs/diagnostics.md explains the test)"
                )
                warnings.warn(ChainsNotMixing(message, epoch, rhat), stacklevel=3)
        if method == "pt":
            metrics["swap_rate"] = [float(x) for x in np.asarray(rate)]
        return metrics

    if report is not None:
        monitors = "" if eval_every is None else "; the first evaluation compiles the monitors"
        report.start(f" (loop compiled in {timings['compile_s']:.1f} s{monitors})")
    last_good = start_epoch

    def next_stop(done):
        """The next epoch at which Python must look at the state (evaluation, checkpoint,
        end); the epochs up to it run inside one compiled call."""
        if ckpt_path is not None:
            return done + 1
        stop = epochs
        if eval_every is not None:
            stop = min(stop, (done // eval_every + 1) * eval_every)
        if report is not None:  # let the bar move (and Ctrl-C answer) at least every 1%
            stop = min(stop, done + max(1, epochs // MAX_EVALUATIONS))
        return stop

    epoch = start_epoch
    try:
        while epoch < epochs:
            t0 = time.perf_counter()
            n_run = np.int32(next_stop(epoch) - epoch)
            new_state, rate, finite, ran = run_fn(state, train, betas, base, n_run)
            finite = bool(finite)  # blocks until the epochs are done
            timings["train_s"] += time.perf_counter() - t0
            if not finite:
                where = (
                    f"the last good checkpoint (epoch {last_good}) is intact at {ckpt_path}; "
                    "resume from it with fit(..., resume=True) after changing the settings "
                    "that diverged, or read it with numpyro_rbm.io.load_checkpoint"
                    if ckpt_path is not None and os.path.exists(ckpt_path)
                    else "pass checkpoint_dir to keep the last good state"
                )
                raise TrainingDiverged(
                    f"the parameters became NaN or infinite during epoch {epoch + int(ran)}; "
                    f"{where}. Lower the learning_rate or add weight_decay."
                )
            epoch += int(ran)
            state = new_state
            stop = False
            if eval_every is not None and (epoch % eval_every == 0 or epoch == epochs):
                t0 = time.perf_counter()
                metrics = evaluate(epoch, state, rate)
                timings["eval_s"] += time.perf_counter() - t0
                for name, value in metrics.items():
                    history.setdefault(name, []).append(value)
                if report is not None:
                    report.metrics(metrics)
                params = to_standard(state.params, state.visible_offset, state.hidden_offset)
                stop = any(bool(cb(epoch, params, metrics)) for cb in callbacks)
            if ckpt_path is not None:
                meta = {"epoch": epoch, "history": history, "signature": signature}
                io.save_checkpoint(ckpt_path, _state_to_arrays(state), meta)
                last_good = epoch
            if report is not None:
                report.update(int(ran))
            if stop:
                break
    finally:
        if report is not None:
            report.close()

    params = to_standard(state.params, state.visible_offset, state.hidden_offset)
    if checkpoint_dir is not None:
        io.save_params(os.path.join(checkpoint_dir, PARAMS_FILE), params, {"signature": signature})
    chains = state.chains[-1] if method == "pt" else state.chains
    return FitResult(params, chains, history, state.opt_state, state.key, state, timings)
