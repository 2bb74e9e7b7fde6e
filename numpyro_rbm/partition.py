r"""Exact log-partition function and exact sampling by enumerating the smaller layer.

For an RBM whose smaller discrete layer has :math:`n` units, summing the other layer out in
closed form leaves a sum over :math:`2^n` states; e.g. enumerating the hidden layer,

.. math::

    \log Z = \log \sum_h \exp\big(-F_h(h)\big),
    \qquad -F_h(h) = c^\top h + \log\mu_h(h) + \sum_i A_v\big(b_i + (W h)_i\big).

The :math:`2^n` states are split into a fixed *low* block of :math:`k` units, enumerated once
(its :math:`2^k \times m` field contribution :math:`H_{\text{low}} W_{\text{low}}` is computed
once), and :math:`2^{n-k}` *high* prefixes visited one chunk at a time with ``lax.map``. A chunk
then costs one broadcast add and :math:`2^k m` log-partition evaluations, no matmul, and memory
stays at one chunk whatever :math:`n` is. Chunk log-sum-exps are combined in log space. For
Bernoulli and spin units in the other layer the evaluations take one ``log`` per row (or per
block of factors) instead of one per element, and no ``exp`` per element when the low block's
fields have a small spread (:func:`_chunk_logits_fn`); docs/performance.md has the figures.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .core import RBMParams, at_evaluation_precision, sample_hidden, sample_visible
from .units import UnitType

__all__ = [
    "MAX_ENUMERABLE_UNITS",
    "EXACT_MAX_UNITS",
    "EnumerationTooLarge",
    "log_partition",
    "sample_exact",
    "all_states",
    "enumerated_layer",
]

#: Default limit on the number of units in the enumerated layer (2**30 states).
MAX_ENUMERABLE_UNITS = 30
#: The library's one cut-off between exact enumeration and AIS when it chooses by itself
#: (``method="auto"`` in :func:`numpyro_rbm.log_likelihood`, ``fit``'s monitoring, the
#: scikit-learn estimator and the command line): 2^20 states take seconds at most on a CPU.
EXACT_MAX_UNITS = 20

# Elements of the (2^k, m) field block of one chunk, by the platform that computes it. On a CPU
# 2^18 float32 values = 1 MiB, which stays in cache (measured 2-3x faster per state than 16 MiB
# chunks; docs/performance.md). An accelerator wants chunks that fill it: on an H200 a 1 MiB
# chunk left it idle (784x24: 1.32 s; 64x28: 1.36 s) where 2^17-2^20 states per chunk took
# 0.017-0.043 s (shared/gpu/2026-11-29-run2.json), so there a chunk holds up to 2^27 values
# (512 MiB) and at most 2^20 states (measured optimum 18-20).
_CHUNK_ELEMENTS = {"cpu": 1 << 18}
_ACCELERATOR_CHUNK_ELEMENTS = 1 << 27
_ACCELERATOR_MAX_CHUNK_BITS = 20


class EnumerationTooLarge(ValueError):
    """Raised when exact enumeration would visit more states than the limit allows."""


class _Layout(NamedTuple):
    """The enumerated layer ("own") and the one summed out in closed form ("other")."""

    layer: str  # "visible" or "hidden": which layer is enumerated
    n: int
    own_units: UnitType
    other_units: UnitType
    weights: jax.Array  # (..., n, m): own x other
    own_bias: jax.Array  # (..., n)
    other_bias: jax.Array  # (..., m)


def enumerated_layer(params: RBMParams, max_units: int | None = MAX_ENUMERABLE_UNITS) -> str:
    """Which layer exact computations enumerate: the smaller layer of discrete units.

    Raises:
        EnumerationTooLarge: if that layer has more than ``max_units`` units, or neither
            layer is discrete.
    """
    candidates = [
        (n, name)
        for n, name, units in (
            (params.n_hidden, "hidden", params.hidden_units),
            (params.n_visible, "visible", params.visible_units),
        )
        if units.enumerable
    ]
    if not candidates:
        raise EnumerationTooLarge(
            "exact enumeration needs a layer of discrete units; this RBM has none. "
            "Estimate log Z with annealed importance sampling instead."
        )
    n, name = min(candidates)
    if max_units is not None and n > max_units:
        raise EnumerationTooLarge(
            f"exact enumeration sums over 2^{n} states of the {name} layer ({n} units), above "
            f"the limit max_units={max_units}. Estimate log Z with annealed importance "
            "sampling (numpyro_rbm.ais(params, key)), or raise max_units if you can afford "
            f"2^{n} evaluations."
        )
    return name


def _layout(params: RBMParams, max_units) -> _Layout:
    layer = enumerated_layer(params, max_units)
    if layer == "hidden":
        return _Layout(
            "hidden",
            params.n_hidden,
            params.hidden_layer,
            params.visible_layer,
            jnp.swapaxes(params.weights, -1, -2),
            params.hidden_bias,
            params.visible_bias,
        )
    return _Layout(
        "visible",
        params.n_visible,
        params.visible_layer,
        params.hidden_layer,
        params.weights,
        params.visible_bias,
        params.hidden_bias,
    )


def _bits(index, n_bits: int, dtype):
    """Bit ``i`` of each integer in ``index``, as an array ``(..., n_bits)``."""
    return ((index[..., None] >> jnp.arange(n_bits, dtype=index.dtype)) & 1).astype(dtype)


def all_states(n: int, units: UnitType | str = "bernoulli", dtype=jnp.float32):
    """All ``2**n`` states of ``n`` two-state units, shape ``(2**n, n)``; row ``i`` holds the
    bits of ``i`` (unit 0 is the least significant bit) mapped to the unit's values."""
    from .units import as_unit_type

    units = as_unit_type(units)
    if n > 24:
        raise EnumerationTooLarge(f"all_states materialises 2^{n} rows; use n <= 24")
    return units.states_from_bits(_bits(jnp.arange(2**n, dtype=jnp.int32), n, dtype))


def _platform(x) -> str:
    """The platform (``"cpu"``, ``"gpu"``, ``"tpu"``) that holds ``x``: its device when ``x``
    is a concrete array, JAX's default backend when it is traced."""
    try:
        return next(iter(x.devices())).platform
    except (AttributeError, jax.errors.ConcretizationTypeError):
        return jax.default_backend()


def _chunk_bits(n: int, m: int, chunk_bits: int | None, platform: str = "cpu") -> int:
    """States per chunk, as a power of two: ``chunk_bits`` when given, otherwise sized for
    ``platform`` (a cache-sized block of fields on a CPU, a device-filling one elsewhere)."""
    if chunk_bits is not None:
        if chunk_bits < 0:
            raise ValueError(f"chunk_bits must be >= 0, got {chunk_bits}")
        return min(chunk_bits, n)
    elements = _CHUNK_ELEMENTS.get(platform, _ACCELERATOR_CHUNK_ELEMENTS)
    bits = int(math.log2(max(1, elements // max(m, 1))))
    if platform not in _CHUNK_ELEMENTS:
        bits = min(bits, _ACCELERATOR_MAX_CHUNK_BITS)
    return max(0, min(n, bits))


# Factors per product in _summed_log_partition: each lies in [1, 2], so a product of 64 stays
# below 2^64, far from float32's overflow at 2^128.
_PRODUCT_BLOCK = 64


def _summed_log_partition(units: UnitType, field):
    r""":math:`\sum_i A(\phi_i)` over the last axis, with one logarithm per row for two-state
    units instead of one per element.

    For Bernoulli units :math:`A(\phi) = \max(\phi, 0) + \log(1 + e^{-|\phi|})`, so

    .. math::

        \sum_i A(\phi_i) = \sum_i \max(\phi_i, 0)
            + \log \prod_i \big(1 + e^{-|\phi_i|}\big),

    and spins are the same with :math:`|\phi|` and :math:`e^{-2|\phi|}`. Every factor lies in
    :math:`[1, 2]`, so products of 64 factors neither overflow nor underflow; the rounding of
    a product of :math:`k` factors is at most :math:`k` ulps, i.e. an absolute error below
    :math:`k\,\epsilon` in the log, the same order as summing :math:`k` logarithms. Exact
    enumeration spends almost all its time here (:math:`2^n m` evaluations), and one ``exp``
    plus a multiply is much cheaper than ``exp`` plus ``log1p``. Other unit types use their
    own :meth:`~numpyro_rbm.units.UnitType.log_partition`.
    """
    if units.softplus_form is None:
        return units.log_partition(field)
    return _two_state_log_partition_leading(units, jnp.moveaxis(field, -1, 0))


def _two_state_log_partition_leading(units: UnitType, field):
    r""":func:`_summed_log_partition` of units with :math:`A(\phi) = l\phi +
    \mathrm{softplus}(s\phi)` (their ``softplus_form``), laid out on the first axis:
    :math:`l\phi + \max(s\phi, 0) + \log(1 + e^{-|s\phi|})`."""
    low, scale = units.softplus_form
    s_field = scale * field
    linear = jnp.maximum(s_field, 0.0) + low * field if low else jnp.maximum(s_field, 0.0)
    return jnp.sum(linear, axis=0) + _log_prod_leading(
        1.0 + jnp.exp(-jnp.abs(s_field)), _PRODUCT_BLOCK
    )


def _log_prod_leading(factors, block: int):
    r""":math:`\sum_b \log \prod_{i \in b} f_i` over blocks of ``block`` factors of the *first*
    axis (padded with ones), so that no partial product leaves the floating-point range. The
    products multiply whole rows, which vectorises; a product over a short last axis does not
    (measured 3x slower)."""
    m = factors.shape[0]
    pad = -m % block if m > block else 0
    if pad:
        factors = jnp.concatenate([factors, jnp.ones((pad,) + factors.shape[1:], factors.dtype)])
    if m <= block:
        return jnp.log(jnp.prod(factors, axis=0))
    factors = factors.reshape((-1, block) + factors.shape[1:])
    return jnp.sum(jnp.log(jnp.prod(factors, axis=1)), axis=0)


def _chunk_logits_fn(lay: _Layout, k: int):
    r"""Returns ``logits(high_index) -> (2^k,)`` of -F_own for the states of one chunk.

    For two-state units in the other layer (values :math:`l < u`, so
    :math:`A(\phi) = l\phi + \mathrm{softplus}(s\phi)` with :math:`s = u - l`), the chunk's
    fields are :math:`\phi_{ai} = L_{ai} + H_i` (low block state :math:`a`, the chunk's high
    prefix :math:`H`). Centring :math:`sL_{ai} = c_i + \delta_{ai}` and writing
    :math:`g_i = c_i + sH_i`, :math:`r_i = \max(g_i, 0)`,

    .. math::

        \mathrm{softplus}(s\phi_{ai}) = r_i
            + \log\big(e^{-r_i} + e^{g_i - r_i}\, e^{\delta_{ai}}\big),

    where :math:`e^{\delta_{ai}}` is computed once: a chunk then costs one multiply-add per
    element and one ``log`` per block of factors, no ``exp`` per element. Both terms of a factor
    are positive (no cancellation) and a factor lies in :math:`(e^{-S/2}, 1 + e^{S/2}]`, with
    :math:`S` the largest spread :math:`\max_a \delta_{ai} - \min_a \delta_{ai}`; when
    :math:`S` is small enough for blocks of factors to stay in range (:math:`S \le 8` with 16
    factors per block in float32, :math:`S \le 16` with 64 in float64) this path is taken,
    otherwise (large weights) the one-``exp``-per-element path of
    :func:`_summed_log_partition`. Other unit types use their own ``log_partition``.
    """
    n = lay.n
    dtype = lay.weights.dtype
    low_states = lay.own_units.states_from_bits(_bits(jnp.arange(2**k, dtype=jnp.int32), k, dtype))
    low_field = low_states @ lay.weights[:k]  # (2^k, m), computed once
    low_own = low_states @ lay.own_bias[:k] + lay.own_units.base_log_measure(low_states)
    w_high, b_high = lay.weights[k:], lay.own_bias[k:]

    def high_terms(high_index):
        high_state = lay.own_units.states_from_bits(_bits(high_index, n - k, dtype))
        high_field = lay.other_bias + high_state @ w_high
        high_own = high_state @ b_high + lay.own_units.base_log_measure(high_state)
        return high_field, low_own + high_own

    if lay.other_units.softplus_form is None:

        def generic(high_index):
            high_field, own = high_terms(high_index)
            return own + lay.other_units.log_partition(low_field + high_field)

        return generic
    low_field_t = low_field.T  # (m, 2^k): other-layer units first, see _log_prod_leading

    def per_element(high_index):
        high_field, own = high_terms(high_index)
        field = low_field_t + high_field[:, None]
        return own + _two_state_log_partition_leading(lay.other_units, field)

    low_value, high_value = lay.other_units.values
    scale = high_value - low_value
    scaled_low = scale * low_field
    top, bottom = jnp.max(scaled_low, axis=0), jnp.min(scaled_low, axis=0)
    centre = 0.5 * (top + bottom)
    block, max_spread = (64, 16.0) if jnp.finfo(dtype).bits > 32 else (16, 8.0)
    in_range = jnp.max(top - bottom) <= max_spread
    # In [e^{-S/2}, e^{S/2}], other-layer units first; exponents zeroed when the other path
    # is taken, whose gradient would otherwise meet 0 * inf = nan here.
    exp_delta = jnp.exp(jnp.where(in_range, scaled_low - centre, 0.0)).T  # (m, 2^k)
    low_linear = low_value * jnp.sum(low_field, axis=-1)

    def factored(high_index):
        high_field, own = high_terms(high_index)
        g = centre + scale * high_field
        r = jnp.maximum(g, 0.0)
        factors = jnp.exp(-r)[:, None] + jnp.exp(g - r)[:, None] * exp_delta  # (m, 2^k)
        linear = jnp.sum(r) + low_value * jnp.sum(high_field) + low_linear
        return own + linear + _log_prod_leading(factors, block)

    return lambda high_index: jax.lax.cond(in_range, factored, per_element, high_index)


def _chunk_log_z(lay: _Layout, k: int):
    """Log-sum-exp of each chunk, shape ``(2^(n-k),)``."""
    logits = _chunk_logits_fn(lay, k)
    high = jnp.arange(2 ** (lay.n - k), dtype=jnp.int32)
    return jax.lax.map(lambda j: logsumexp(logits(j)), high)


def _flatten_batch(params: RBMParams) -> RBMParams:
    """Broadcasts every array to ``params.batch_shape`` and flattens it to one leading axis."""
    batch_shape = params.batch_shape
    event_ndims = RBMParams(2, 1, 1, params.visible_units, params.hidden_units)
    event_ndims = event_ndims.replace(  # unit parameters: one value per unit
        visible_unit_params=jax.tree.map(lambda _: 1, params.visible_unit_params),
        hidden_unit_params=jax.tree.map(lambda _: 1, params.hidden_unit_params),
    )
    return jax.tree.map(
        lambda x, nd: jnp.broadcast_to(x, batch_shape + x.shape[x.ndim - nd :]).reshape(
            (-1,) + x.shape[x.ndim - nd :]
        ),
        params,
        event_ndims,
    )


def _map_over_batch(fn, params: RBMParams, *args):
    """Applies ``fn(single_params, *per_rbm_args)`` to each RBM of a batched ``params``, one at
    a time (memory of one enumeration). ``args`` carry a leading flat batch axis."""
    batch_shape = params.batch_shape
    if not batch_shape:
        return fn(params, *args)
    out = jax.lax.map(lambda xs: fn(*xs), (_flatten_batch(params),) + args)
    return jax.tree.map(lambda y: y.reshape(batch_shape + y.shape[1:]), out)


def log_partition(
    params: RBMParams,
    *,
    max_units: int | None = MAX_ENUMERABLE_UNITS,
    chunk_bits: int | None = None,
):
    r"""Exact :math:`\log Z` by chunked enumeration of the smaller discrete layer.

    Args:
        params: the RBM; leading batch axes give one :math:`\log Z` per RBM.
        max_units: refuse (with :class:`EnumerationTooLarge`) to enumerate more units than
            this; ``None`` removes the limit.
        chunk_bits: enumerate :math:`2^{\text{chunk\_bits}}` states per chunk (default: sized
            for the device that holds ``params``: as many as fit in about 1 MiB of fields on a
            CPU, which stays in cache; up to 512 MiB of fields and :math:`2^{20}` states on an
            accelerator, which a small chunk would leave idle).

    Returns:
        :math:`\log Z`, shape ``params.batch_shape``.
    """
    lay = _layout(params, max_units)  # raises here, outside jit, with a clear message
    k = _chunk_bits(lay.n, lay.other_bias.shape[-1], chunk_bits, _platform(params.weights))
    return _log_partition_compiled(params, k)


# Compiled once per shape, unit types and chunking: an eager call would otherwise re-trace
# the enumeration's lax.map on every call.
@partial(jax.jit, static_argnums=1)
@at_evaluation_precision
def _log_partition_compiled(params: RBMParams, k: int):
    return _map_over_batch(lambda p: logsumexp(_chunk_log_z(_layout(p, None), k)), params)


def _sample_exact_single(key, params: RBMParams, num_samples: int, chunk_bits):
    lay = _layout(params, None)
    k = _chunk_bits(lay.n, lay.other_bias.shape[-1], chunk_bits)
    chunk_lse = _chunk_log_z(lay, k)
    logits = _chunk_logits_fn(lay, k)
    key_chunk, key_low, key_other = jax.random.split(key, 3)
    high = jax.random.categorical(key_chunk, chunk_lse, shape=(num_samples,))
    low = jax.lax.map(
        lambda args: jax.random.categorical(args[0], logits(args[1])),
        (jax.random.split(key_low, num_samples), high),
        batch_size=64,
    )
    index = (high.astype(jnp.int32) << k) | low.astype(jnp.int32)
    own = lay.own_units.states_from_bits(_bits(index, lay.n, lay.weights.dtype))
    if lay.layer == "hidden":
        return sample_visible(key_other, params, own), own
    return own, sample_hidden(key_other, params, own)


def sample_exact(
    key,
    params: RBMParams,
    sample_shape: tuple[int, ...] = (),
    *,
    max_units: int | None = MAX_ENUMERABLE_UNITS,
    chunk_bits: int | None = 12,
):
    r"""Exact joint samples :math:`(v, h) \sim p(v, h)`.

    The smaller layer is drawn from its exact marginal (:math:`p(h) \propto e^{-F_h(h)}` when
    the hidden layer is smaller) in two stages, a chunk by its total mass and then a state
    within the chunk, so memory stays at one chunk per draw; the other layer is then drawn
    from its exact conditional.

    Returns:
        ``(v, h)`` of shapes ``sample_shape + params.batch_shape + (n_visible,)`` and
        ``sample_shape + params.batch_shape + (n_hidden,)``.
    """
    _layout(params, max_units)  # raises here, outside jit, with a clear message
    return _sample_exact_compiled(key, params, tuple(sample_shape), chunk_bits)


@partial(jax.jit, static_argnums=(2, 3))
@at_evaluation_precision
def _sample_exact_compiled(key, params: RBMParams, sample_shape, chunk_bits):
    num_samples = math.prod(sample_shape)
    batch_shape = params.batch_shape
    keys = jax.random.split(key, math.prod(batch_shape)) if batch_shape else key
    v, h = _map_over_batch(
        lambda p, k: _sample_exact_single(k, p, num_samples, chunk_bits), params, keys
    )
    n_batch = len(batch_shape)

    def to_sample_major(x):
        # (*batch, num_samples, n) -> (*sample_shape, *batch, n)
        x = jnp.moveaxis(x, n_batch, 0)
        return x.reshape(sample_shape + batch_shape + x.shape[-1:])

    return to_sample_major(v), to_sample_major(h)
