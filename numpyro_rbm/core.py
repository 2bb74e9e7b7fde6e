r"""The pure-JAX core of an RBM: parameters, energies, conditionals and the Gibbs sweep.

The energy of a joint state :math:`(v, h)` is

.. math::

    E(v, h) = -b^\top v - c^\top h - v^\top W h - \log\mu_v(v) - \log\mu_h(h),

with ``weights`` :math:`W` of shape ``(n_visible, n_hidden)``, ``visible_bias`` :math:`b`,
``hidden_bias`` :math:`c` and base measures :math:`\mu` that are 1 for discrete units. Summing
the hidden units out gives the free energy

.. math::

    F(v) = -b^\top v - \log\mu_v(v) - \sum_j A_h\big(c_j + (v^\top W)_j\big),
    \qquad p(v) = e^{-F(v)} / Z,

where :math:`A_h` is the hidden unit type's conditional log-partition (softplus for
Bernoulli units, :math:`\log 2\cosh` for spins; see :mod:`numpyro_rbm.units` for Gaussian,
Potts and ReLU units, whose per-unit parameters are leaves of :class:`RBMParams`). The
hidden free energy :math:`F_h(h)` is the mirror image. Every function here is a pure
function of an :class:`RBMParams` pytree and explicit PRNG keys, batched over the leading
axes of its state arguments, and safe under ``jit``, ``vmap`` and ``grad``. Parameters may
carry leading batch axes too (``weights`` of shape ``(..., n_visible, n_hidden)``); they
broadcast against the state's leading axes.

Reference: G. E. Hinton, *A Practical Guide to Training Restricted Boltzmann Machines*
(UTML TR 2010-003).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from ._threefry import threefry_split
from .normalisable import require_normalisable
from .units import Bernoulli, UnitType, as_unit_type

__all__ = [
    "RBMParams",
    "init_params",
    "energy",
    "free_energy",
    "hidden_free_energy",
    "hidden_field",
    "visible_field",
    "hidden_mean",
    "visible_mean",
    "sample_hidden",
    "sample_visible",
    "hidden_log_prob",
    "visible_log_prob",
    "gibbs_sweep",
    "apply_clamp",
    "EVALUATION_PRECISION",
    "at_evaluation_precision",
]

#: The matmul precision of everything that *estimates* a probability: exact log Z and exact
#: sampling, AIS, the log-likelihood's free energies, the pseudo-log-likelihood. Full float32:
#: on a GPU the default precision of a float32 matmul is TF32 (inputs rounded to 10 mantissa
#: bits), which moves exact log Z of a 784x16 model by 2.3e-3 nats where full float32 is off
#: by 4e-5, and more with more hidden units (``docs/performance.md``, "Precision"). Sampling
#: and training (the Gibbs sweeps, the gradient's statistics) run at JAX's default: a TF32
#: sweep samples exactly the model whose weights are rounded by at most 2**-11 of themselves,
#: a bias far below the Monte Carlo error of usual chain counts (tests/test_precision.py
#: measures both by enumeration). On a CPU both are full float32.
EVALUATION_PRECISION = "highest"


def at_evaluation_precision(fn):
    """``fn`` traced and run under ``jax.default_matmul_precision(EVALUATION_PRECISION)``;
    put it inside ``jax.jit``, so that callers in any precision share one compilation."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with jax.default_matmul_precision(EVALUATION_PRECISION):
            return fn(*args, **kwargs)

    return wrapped


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RBMParams:
    """The parameters of an RBM, a JAX pytree.

    The arrays are the pytree's leaves (what ``jax.grad`` and optax see); the unit types are
    static metadata, so a gradient or an optimiser update keeps them. Units with learnable
    per-unit parameters (:class:`~numpyro_rbm.units.Gaussian` precisions,
    :class:`~numpyro_rbm.units.ReLU` curvatures) keep them in ``visible_unit_params`` /
    ``hidden_unit_params``, dicts of arrays of shape ``(..., n_units)``: leaves too, so they
    are learnt like the weights. They are ``None`` (no leaves) for Bernoulli, spin and Potts
    units, and ``None`` means the defaults for parametric units.

    Attributes:
        weights: couplings :math:`W`, shape ``(..., n_visible, n_hidden)``.
        visible_bias: :math:`b`, shape ``(..., n_visible)``.
        hidden_bias: :math:`c`, shape ``(..., n_hidden)``.
        visible_units: unit type of the visible layer (default Bernoulli {0, 1}).
        hidden_units: unit type of the hidden layer (default Bernoulli {0, 1}).
        visible_unit_params: the visible unit type's parameters (``None`` for none/defaults).
        hidden_unit_params: the hidden unit type's parameters (``None`` for none/defaults).
    """

    weights: jax.Array
    visible_bias: jax.Array
    hidden_bias: jax.Array
    visible_units: UnitType = dataclasses.field(default=Bernoulli(), metadata=dict(static=True))
    hidden_units: UnitType = dataclasses.field(default=Bernoulli(), metadata=dict(static=True))
    visible_unit_params: Any = None
    hidden_unit_params: Any = None

    def __post_init__(self):
        # Accept unit names; a frozen dataclass needs object.__setattr__ to normalise them.
        object.__setattr__(self, "visible_units", as_unit_type(self.visible_units))
        object.__setattr__(self, "hidden_units", as_unit_type(self.hidden_units))

    @property
    def visible_layer(self):
        """The visible unit type bound to its parameters (what the layer computes with)."""
        return self.visible_units.bind(self.visible_unit_params)

    @property
    def hidden_layer(self):
        """The hidden unit type bound to its parameters."""
        return self.hidden_units.bind(self.hidden_unit_params)

    @property
    def n_visible(self) -> int:
        return jnp.shape(self.weights)[-2]

    @property
    def n_hidden(self) -> int:
        return jnp.shape(self.weights)[-1]

    @property
    def batch_shape(self) -> tuple[int, ...]:
        """Leading axes shared by all three arrays (``()`` for a single RBM)."""
        unit_params = jax.tree.leaves((self.visible_unit_params, self.hidden_unit_params))
        return jnp.broadcast_shapes(
            jnp.shape(self.weights)[:-2],
            jnp.shape(self.visible_bias)[:-1],
            jnp.shape(self.hidden_bias)[:-1],
            *(jnp.shape(x)[:-1] for x in unit_params),
        )

    def replace(self, **changes) -> RBMParams:
        return dataclasses.replace(self, **changes)


def init_params(
    key,
    n_visible: int,
    n_hidden: int,
    *,
    weight_scale: float = 0.01,
    visible_bias=None,
    visible_units="bernoulli",
    hidden_units="bernoulli",
    dtype=jnp.float32,
) -> RBMParams:
    r"""Small random weights :math:`W_{ij} \sim \mathcal N(0, \text{weight\_scale}^2)`, zero
    hidden biases, and zero visible biases unless given (Hinton's guide suggests
    :math:`\log(p_i / (1 - p_i))` from the data marginals :math:`p_i`). Parametric unit
    types get their default parameters (unit precision / curvature) as learnable leaves.

    Raises:
        NotNormalisable: when the drawn model has no finite :math:`Z` (continuous units on
            both layers and ``weight_scale`` too large for unit curvatures, e.g. Gaussian
            visible and ReLU hidden units need :math:`I - W^\top W` strictly copositive;
            :func:`~numpyro_rbm.check_normalisable`). It warns when that cannot be decided.
    """
    if n_visible < 1 or n_hidden < 1:
        raise ValueError(
            f"an RBM needs at least one unit per layer, got n_visible={n_visible}, "
            f"n_hidden={n_hidden}"
        )
    dtype = jnp.dtype(dtype)
    visible_units, hidden_units = as_unit_type(visible_units), as_unit_type(hidden_units)
    visible_units.check_size(n_visible)
    hidden_units.check_size(n_hidden)
    weights = weight_scale * jax.random.normal(key, (n_visible, n_hidden), dtype=dtype)
    if visible_bias is None:
        visible_bias = jnp.zeros((n_visible,), dtype)
    else:
        visible_bias = jnp.asarray(visible_bias, dtype)
        if visible_bias.shape != (n_visible,):
            raise ValueError(
                f"visible_bias has shape {visible_bias.shape}, expected ({n_visible},)"
            )
    params = RBMParams(
        weights,
        visible_bias,
        jnp.zeros((n_hidden,), dtype),
        visible_units=visible_units,
        hidden_units=hidden_units,
        visible_unit_params=visible_units.init_unit_params(n_visible, dtype),
        hidden_unit_params=hidden_units.init_unit_params(n_hidden, dtype),
    )
    require_normalisable(
        params, f"init_params(weight_scale={weight_scale})", fix="Lower weight_scale."
    )
    return params


# --- fields: the only place the couplings enter -------------------------------------------


def _vec_mat(x, w):
    """``x @ w`` with ``x`` (..., n) and ``w`` (..., n, m), broadcasting leading axes."""
    if w.ndim == 2:
        return x @ w
    return (x[..., None, :] @ w)[..., 0, :]


def _mat_vec(w, y):
    """``w @ y`` with ``w`` (..., n, m) and ``y`` (..., m), broadcasting leading axes."""
    if w.ndim == 2:
        return y @ w.T
    return (w @ y[..., :, None])[..., 0]


def hidden_field(params: RBMParams, v):
    r"""The hidden units' field :math:`c + W^\top v`, shape ``(..., n_hidden)``."""
    return params.hidden_bias + _vec_mat(v, params.weights)


def visible_field(params: RBMParams, h):
    r"""The visible units' field :math:`b + W h`, shape ``(..., n_visible)``."""
    return params.visible_bias + _mat_vec(params.weights, h)


# --- energies -----------------------------------------------------------------------------


def energy(params: RBMParams, v, h):
    r""":math:`E(v, h) = -b^\top v - c^\top h - v^\top W h - \log\mu_v(v) - \log\mu_h(h)`."""
    return (
        -jnp.sum(v * visible_field(params, h), axis=-1)
        - jnp.sum(params.hidden_bias * h, axis=-1)
        - params.visible_layer.base_log_measure(v)
        - params.hidden_layer.base_log_measure(h)
    )


def free_energy(params: RBMParams, v):
    r"""Visible free energy :math:`F(v) = -\log \sum_h e^{-E(v,h)}
    = -b^\top v - \log\mu_v(v) - \sum_j A_h(c_j + (v^\top W)_j)`."""
    return (
        -jnp.sum(params.visible_bias * v, axis=-1)
        - params.visible_layer.base_log_measure(v)
        - params.hidden_layer.log_partition(hidden_field(params, v))
    )


def hidden_free_energy(params: RBMParams, h):
    r"""Hidden free energy :math:`F_h(h) = -\log \sum_v e^{-E(v,h)}
    = -c^\top h - \log\mu_h(h) - \sum_i A_v(b_i + (W h)_i)`."""
    return (
        -jnp.sum(params.hidden_bias * h, axis=-1)
        - params.hidden_layer.base_log_measure(h)
        - params.visible_layer.log_partition(visible_field(params, h))
    )


# --- conditionals -------------------------------------------------------------------------


def hidden_mean(params: RBMParams, v):
    r""":math:`\mathbb{E}[h \mid v] = A_h'(c + W^\top v)` (``sigmoid`` for Bernoulli units)."""
    return params.hidden_layer.mean(hidden_field(params, v))


def visible_mean(params: RBMParams, h):
    r""":math:`\mathbb{E}[v \mid h] = A_v'(b + W h)`."""
    return params.visible_layer.mean(visible_field(params, h))


def sample_hidden(key, params: RBMParams, v):
    """Draws :math:`h \\sim p(h \\mid v)`, all hidden units independently."""
    return params.hidden_layer.sample(key, hidden_field(params, v))


def sample_visible(key, params: RBMParams, h):
    """Draws :math:`v \\sim p(v \\mid h)`, all visible units independently."""
    return params.visible_layer.sample(key, visible_field(params, h))


def hidden_log_prob(params: RBMParams, h, v):
    r""":math:`\log p(h \mid v) = h^\top \phi + \log\mu_h(h) - \sum_j A_h(\phi_j)`,
    :math:`\phi = c + W^\top v`."""
    field = hidden_field(params, v)
    return (
        jnp.sum(h * field, axis=-1)
        + params.hidden_layer.base_log_measure(h)
        - params.hidden_layer.log_partition(field)
    )


def visible_log_prob(params: RBMParams, v, h):
    r""":math:`\log p(v \mid h) = v^\top \psi + \log\mu_v(v) - \sum_i A_v(\psi_i)`,
    :math:`\psi = b + W h`."""
    field = visible_field(params, h)
    return (
        jnp.sum(v * field, axis=-1)
        + params.visible_layer.base_log_measure(v)
        - params.visible_layer.log_partition(field)
    )


def apply_clamp(v, mask, values):
    """Returns ``v`` with the clamped entries (``mask`` True) replaced by ``values``."""
    if mask is None:
        return v
    return jnp.where(mask, values, v)


def _draw(key, layer, field):
    return layer.sample(key, field)


def gibbs_sweep(
    key,
    params: RBMParams,
    v,
    *,
    field_h=None,
    visible_offset=None,
    mask=None,
    values=None,
    sampler=None,
):
    r"""One block-Gibbs sweep: :math:`h \sim p(h \mid v)`, then :math:`v' \sim p(v \mid h)`.

    The sweep's kernel :math:`K(v, v') = \sum_h p(h \mid v)\, p(v' \mid h)` satisfies
    :math:`p(v) K(v, v') = \sum_h p(h)\, p(v \mid h)\, p(v' \mid h)`, which is symmetric in
    :math:`v` and :math:`v'`: the sweep is reversible with respect to :math:`p(v)` and leaves it
    invariant (docs/kernel.md). This is the library's one sweep; :mod:`numpyro_rbm.kernels`
    loops it, and the options cover what its callers condition on:

    Args:
        key: PRNG key (split into the hidden and the visible draw).
        params: the RBM.
        v: visible states ``(..., n_visible)``.
        field_h: the hidden field :math:`c + W^\top v`, when the caller has it already
            (annealed importance sampling computes it for its weights).
        visible_offset: added to the visible field: a per-unit log-likelihood term, which
            makes the sweep exact for a posterior whose likelihood factorises per unit
            (:class:`~numpyro_rbm.RBMGibbs`, ``update="factorized"``).
        mask, values: clamped units (``mask`` True) are reset to ``values`` after the draw
            (inpainting, :class:`~numpyro_rbm.ClampedRBM`).
        sampler: ``sampler(key, layer, field) -> x`` draws a layer given its field (default:
            the unit type's own sampler); the scikit-learn estimator compares uniforms with
            the conditional means instead.

    Returns:
        ``(v_new, h)``: the new visible state (in ``v``'s dtype) and the hidden state it was
        drawn from.
    """
    draw = _draw if sampler is None else sampler
    key_h, key_v = threefry_split(key)  # = jax.random.split, fused on the CPU
    h = draw(key_h, params.hidden_layer, hidden_field(params, v) if field_h is None else field_h)
    field_v = visible_field(params, h)
    if visible_offset is not None:
        field_v = field_v + visible_offset
    v_new = draw(key_v, params.visible_layer, field_v).astype(jnp.result_type(v))
    return apply_clamp(v_new, mask, values), h
