r"""Clamping: an RBM conditioned on some of its visible units (inpainting).

Split the visible units into clamped units :math:`C` (known values :math:`v_C`) and free units
:math:`F`. The conditional of the free units is again an RBM,

.. math::

    p(v_F \mid v_C) \propto \sum_h \exp\big(b_F^\top v_F + (c + W_{C}^\top v_C)^\top h
        + v_F^\top W_F h\big),

with the clamped units' input absorbed into the hidden bias :math:`c' = c + W_C^\top v_C`
(the same algebra as the hidden conditional :math:`p(h \mid v)`; G. E. Hinton, *A Practical
Guide to Training Restricted Boltzmann Machines*, UTML TR 2010-003).
Its free energy is the full free energy :math:`F(v)` evaluated at :math:`v = (v_F, v_C)` plus
the constant :math:`b_C^\top v_C`, and block-Gibbs sampling of the conditional is the ordinary
sweep with the clamped units reset to :math:`v_C` after every :math:`v \mid h` draw.

Everything here keeps the full visible shape and marks the clamped units with a boolean
``mask`` (``True`` = clamped), so shapes never depend on how many units are clamped and all
functions work under ``jit`` and ``vmap`` with a traced mask. :func:`clamp_params` returns the
conditional RBM in that layout: the clamped rows of :math:`W` and entries of :math:`b` are
zeroed, which leaves each clamped unit a decoupled unit with zero field that contributes
exactly :math:`A_v(0)` to :math:`\log Z` (:math:`\log 2` for Bernoulli and spin units);
:func:`clamped_log_partition` removes that constant.

The NumPyro face is :class:`ClampedRBM`, a distribution over the *full* visible vector whose
clamped entries are fixed. Put it at the RBM site of a model instead of the RBM itself; its
samples and :class:`~numpyro_rbm.RBMGibbs` draws keep the known pixels and fill in the rest.
(``numpyro.sample(..., obs_mask=...)`` cannot express this: it masks whole batch elements, not
units inside one event.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from numpyro.distributions import Distribution, constraints
from numpyro.distributions.util import validate_sample

from .core import RBMParams, apply_clamp, free_energy
from .partition import MAX_ENUMERABLE_UNITS, log_partition, sample_exact

__all__ = ["ClampedRBM", "clamp_params", "clamped_log_partition", "apply_clamp"]


def _check_mask(params: RBMParams, mask, values):
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"mask must be a boolean array (True = clamped), got dtype {mask.dtype}; "
            "pass e.g. `pixels_known.astype(bool)`"
        )
    n = params.n_visible
    values = jnp.asarray(values, dtype=params.weights.dtype)
    for name, x in (("mask", mask), ("values", values)):
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != n:
            raise ValueError(
                f"{name} must have shape (..., n_visible) = (..., {n}), got {jnp.shape(x)}"
            )
    return mask, values


def clamp_params(params: RBMParams, mask, values) -> RBMParams:
    r"""The conditional RBM :math:`p(v_F \mid v_C)` in the full visible layout.

    Args:
        params: the RBM.
        mask: boolean ``(..., n_visible)``, ``True`` where a unit is clamped.
        values: ``(..., n_visible)`` visible states; only the clamped entries are read.

    Returns:
        :class:`~numpyro_rbm.RBMParams` with hidden bias :math:`c + W^\top (m \odot v)`, and
        the clamped rows of :math:`W` and entries of :math:`b` set to zero (:math:`m` is the
        mask). Leading axes of ``mask`` / ``values`` become batch axes of the result.
    """
    mask, values = _check_mask(params, mask, values)
    keep = (~mask).astype(params.weights.dtype)
    clamped_v = jnp.where(mask, values, 0.0)
    hidden_bias = params.hidden_bias + jnp.einsum("...i,...ij->...j", clamped_v, params.weights)
    return params.replace(
        weights=params.weights * keep[..., :, None],
        visible_bias=params.visible_bias * keep,
        hidden_bias=hidden_bias,
    )


def clamped_log_partition(params: RBMParams, mask, values, **kwargs):
    r""":math:`\log Z_C = \log \sum_{v_F} e^{-F(v_F, v_C) - b_C^\top v_C}`, exactly, by
    enumeration (keyword arguments go to :func:`~numpyro_rbm.log_partition`).

    So that :math:`\log p(v_F \mid v_C) = -F(v) - b_C^\top v_C - \log Z_C`.
    """
    mask, values = _check_mask(params, mask, values)
    cp = clamp_params(params, mask, values)
    n_clamped = jnp.sum(mask, axis=-1).astype(params.weights.dtype)
    zero = jnp.zeros((1,), params.weights.dtype)
    return log_partition(cp, **kwargs) - n_clamped * params.visible_units.log_partition(zero)


class ClampedRBM(Distribution):
    r"""An RBM with some visible units held at known values, as a NumPyro distribution over
    the full visible vector.

    .. math::

        \log p(v) = -F(v) - b_C^\top v_C - \log Z_C \quad\text{if } v_C \text{ matches the
        clamped values, } -\infty \text{ otherwise.}

    Use it where the RBM would go::

        known = jnp.zeros(64, bool).at[:32].set(True)        # top half of the image known
        numpyro.sample("v", ClampedRBM(rbm, known, image))   # inpaint the bottom half

    :class:`~numpyro_rbm.RBMGibbs` recognises it and samples only the free units (the sweep
    resets the clamped ones), and its ``sample`` draws exactly by enumeration.

    Args:
        rbm: an :class:`~numpyro_rbm.RBMParams` or an object with a ``params`` attribute
            holding one (such as :class:`numpyro_rbm.RBM`).
        mask: boolean ``(..., n_visible)``; ``True`` marks a clamped unit.
        values: ``(..., n_visible)``; the clamped units' values (other entries are ignored).
        log_z: ``"exact"`` to normalise by enumeration (:func:`clamped_log_partition`), or
            ``None`` for the unnormalised :math:`-F(v) - b_C^\top v_C`.
        max_units: enumeration limit passed to :func:`~numpyro_rbm.log_partition`.
    """

    arg_constraints = {}
    pytree_data_fields = ("params", "clamp_mask", "clamp_values")
    pytree_aux_fields = ("_log_z_mode", "_max_units")

    def __init__(
        self,
        rbm,
        mask,
        values,
        *,
        log_z="exact",
        max_units=MAX_ENUMERABLE_UNITS,
        validate_args=None,
    ):
        params = getattr(rbm, "params", rbm)
        if not isinstance(params, RBMParams):
            raise TypeError(
                "ClampedRBM needs an RBMParams or an RBM distribution (with a .params "
                f"attribute), got {type(rbm).__name__}"
            )
        if log_z not in ("exact", None):
            raise ValueError(f"log_z must be 'exact' or None, got {log_z!r}")
        mask, values = _check_mask(params, mask, values)
        units = params.visible_units
        values = jnp.where(mask, values, units.values[0])
        if not isinstance(values, jax.core.Tracer) and not isinstance(mask, jax.core.Tracer):
            if not bool(jnp.all(units.in_support(values))):
                raise ValueError(
                    f"clamped values must be {units.name} states {units.values}; got values "
                    "outside that set at clamped positions"
                )
        self.params = params
        self.clamp_mask = mask
        self.clamp_values = values
        self._log_z_mode = log_z
        self._max_units = max_units
        batch_shape = jnp.broadcast_shapes(
            params.batch_shape, jnp.shape(mask)[:-1], jnp.shape(values)[:-1]
        )
        super().__init__(batch_shape, (params.n_visible,), validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """The same support as :class:`numpyro_rbm.RBM`'s."""
        return self.params.visible_units.site_support()

    @property
    def conditional_params(self) -> RBMParams:
        """The conditional RBM of the free units (see :func:`clamp_params`)."""
        return clamp_params(self.params, self.clamp_mask, self.clamp_values)

    def log_partition(self):
        r""":math:`\log Z_C` by enumeration (recomputed per call: nothing is cached on the
        object, so it stays safe to close over under ``jit``)."""
        return clamped_log_partition(
            self.params, self.clamp_mask, self.clamp_values, max_units=self._max_units
        )

    @validate_sample
    def log_prob(self, value):
        v = jnp.asarray(value, self.params.weights.dtype)
        clamped_v = jnp.where(self.clamp_mask, self.clamp_values, 0.0)
        lp = -free_energy(self.params, v) - jnp.sum(self.params.visible_bias * clamped_v, -1)
        if self._log_z_mode == "exact":
            lp = lp - self.log_partition()
        consistent = jnp.all(jnp.where(self.clamp_mask, v == self.clamp_values, True), -1)
        return jnp.where(consistent, lp, -jnp.inf)

    def sample(self, key, sample_shape=()):
        v, _ = sample_exact(
            key, self.conditional_params, tuple(sample_shape), max_units=self._max_units
        )
        return apply_clamp(v, self.clamp_mask, self.clamp_values)

    def infer_shapes(self, *args, **kwargs):
        raise NotImplementedError("ClampedRBM shapes follow its parameters; build it directly")
