r"""Clamping: an RBM conditioned on some of its visible units (inpainting).

Split the visible sites into clamped sites :math:`C` (known values :math:`v_C`) and free sites
:math:`F` (a site is a unit: a pixel, a Gaussian feature; for Potts units one categorical
variable, its one-hot block of q units). The conditional of the free sites is again an RBM,

.. math::

    p(v_F \mid v_C) \propto \mu_F(v_F) \sum_h \exp\big(b_F^\top v_F + (c + W_{C}^\top v_C)^\top h
        + v_F^\top W_F h\big),

with the clamped units' input absorbed into the hidden bias :math:`c' = c + W_C^\top v_C`
(the same algebra as the hidden conditional :math:`p(h \mid v)`; G. E. Hinton, *A Practical
Guide to Training Restricted Boltzmann Machines*, UTML TR 2010-003) and :math:`\mu_F` the free
units' base measure (1 for discrete units). Its free energy is the full free energy
:math:`F(v)` at :math:`v = (v_F, v_C)` plus the constant :math:`\kappa(v_C) = \sum_{s \in C}
b_s^\top v_s + \log\mu_s(v_s)`, and block-Gibbs sampling of the conditional is the ordinary
sweep with the clamped units reset to :math:`v_C` after every :math:`v \mid h` draw.

Everything here keeps the full visible shape and marks the clamped sites with a boolean
``mask`` (``True`` = clamped, one entry per site; the unit type widens it to its units,
:meth:`~numpyro_rbm.units.UnitType.layer_mask`), so shapes never depend on how many sites are
clamped and all functions work under ``jit`` and ``vmap`` with a traced mask.
:func:`clamp_params` returns the conditional RBM in that layout: the clamped rows of :math:`W`
and entries of :math:`b` are zeroed, which leaves each clamped site a decoupled site with zero
field that contributes exactly :math:`A_s(0)` to :math:`\log Z` (:math:`\log 2` for Bernoulli
and spin units, :math:`\log q` for Potts sites, 0 for Gaussian units, whose base measure is
normalised); :func:`clamped_log_partition` removes it.

The NumPyro face is :class:`ClampedRBM`, a distribution over the *full* visible site value
whose clamped entries are fixed. Put it at the RBM site of a model instead of the RBM itself; its
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


def _to_layer(params: RBMParams, mask, values):
    """Checks a per-site ``mask`` and site ``values`` and returns ``(mask, layer_mask,
    layer_values, values_ok)``: the per-unit mask and clamped layer (zeros where free) that
    the sweep resets, and whether every clamped value is a site value of the unit type (a
    traced boolean under ``jit``)."""
    mask = jnp.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"mask must be a boolean array (True = clamped), got dtype {mask.dtype}; "
            "pass e.g. `pixels_known.astype(bool)`"
        )
    units = params.visible_units
    n = units.site_size(params.n_visible)
    values = jnp.asarray(values)
    for name, x in (("mask", mask), ("values", values)):
        if jnp.ndim(x) < 1 or jnp.shape(x)[-1] != n:
            raise ValueError(
                f"{name} must have shape (..., {n}), one entry per visible site "
                f"({units.site_noun}; n_visible = {params.n_visible}), got {jnp.shape(x)}"
            )
    dtype = params.weights.dtype
    known = jnp.where(mask, values, jnp.zeros((), values.dtype))  # free entries: any, NaN too
    layer = units.to_layer(known, dtype)
    layer_mask = units.layer_mask(mask)
    round_trip = units.from_layer(layer, dtype) == known.astype(dtype)
    values_ok = jnp.all(jnp.where(layer_mask, units.in_support(layer), True)) & jnp.all(
        jnp.where(mask, round_trip, True)
    )
    return mask, layer_mask, jnp.where(layer_mask, layer, 0.0), values_ok


def clamp_params(params: RBMParams, mask, values) -> RBMParams:
    r"""The conditional RBM :math:`p(v_F \mid v_C)` in the full visible layout.

    Args:
        params: the RBM.
        mask: boolean ``(..., n_sites)``, ``True`` where a visible site is clamped (a site is
            a unit; for Potts units one categorical variable, its whole one-hot block).
        values: ``(..., n_sites)`` site values (Potts: integer states); only the clamped
            entries are read.

    Returns:
        :class:`~numpyro_rbm.RBMParams` with hidden bias :math:`c + W^\top (m \odot v)`, and
        the clamped rows of :math:`W` and entries of :math:`b` set to zero (:math:`m` is the
        per-unit mask, :math:`v` the clamped layer). Leading axes of ``mask`` / ``values``
        become batch axes of the result.
    """
    _, layer_mask, layer, _ = _to_layer(params, mask, values)
    return _conditional(params, layer_mask, layer)


def _conditional(params: RBMParams, layer_mask, layer) -> RBMParams:
    keep = (~layer_mask).astype(params.weights.dtype)
    hidden_bias = params.hidden_bias + jnp.einsum("...i,...ij->...j", layer, params.weights)
    return params.replace(
        weights=params.weights * keep[..., :, None],
        visible_bias=params.visible_bias * keep,
        hidden_bias=hidden_bias,
    )


def _clamped_own_terms(params: RBMParams, mask, layer_mask, layer):
    r""":math:`\kappa(v_C) = \sum_{s \in C} b_s^\top v_s + \log\mu_s(v_s)`, the clamped sites'
    terms of :math:`-F(v)` that involve no coupling."""
    bias = jnp.sum(jnp.where(layer_mask, params.visible_bias * layer, 0.0), axis=-1)
    measure = params.visible_layer.site_base_log_measure(layer)
    return bias + jnp.sum(jnp.where(mask, measure, 0.0), axis=-1)


def clamped_log_partition(params: RBMParams, mask, values, **kwargs):
    r""":math:`\log Z_C = \log \int e^{-F(v_F, v_C) - \kappa(v_C)}\, dv_F`, exactly, by
    enumeration (keyword arguments go to :func:`~numpyro_rbm.log_partition`), where
    :math:`\kappa(v_C) = \sum_{s \in C} b_s^\top v_s + \log\mu_s(v_s)` collects the clamped
    sites' own terms of :math:`-F` (just :math:`b_C^\top v_C` for discrete units). So that
    :math:`\log p(v_F \mid v_C) = -F(v) - \kappa(v_C) - \log Z_C`.

    The conditional RBM of :func:`clamp_params` keeps each clamped site as a decoupled site
    with zero field, which adds its :math:`A_s(0)` (:math:`\log 2` for a two-state unit,
    :math:`\log q` for a Potts site, 0 for a Gaussian unit) to its :math:`\log Z`; this
    removes them.
    """
    return _log_z_c(params, *_to_layer(params, mask, values)[:3], **kwargs)


def _log_z_c(params: RBMParams, mask, layer_mask, layer, **kwargs):
    zero = jnp.zeros(jnp.shape(params.visible_bias), params.weights.dtype)
    a_zero = params.visible_layer.site_log_partition(zero)  # (..., n_sites)
    log_z = log_partition(_conditional(params, layer_mask, layer), **kwargs)
    return log_z - jnp.sum(jnp.where(mask, a_zero, 0.0), axis=-1)


class ClampedRBM(Distribution):
    r"""An RBM with some visible sites held at known values, as a NumPyro distribution over
    the full visible site value (the :class:`~numpyro_rbm.RBM`'s event: one value per unit,
    or one integer state per site for Potts units).

    .. math::

        \log p(v) = -F(v) - \kappa(v_C) - \log Z_C \quad\text{if } v_C \text{ matches the
        clamped values, } -\infty \text{ otherwise,}

    the log-probability (discrete units) or log-density (Gaussian units) of the free sites
    given the clamped ones, with :math:`\kappa` and :math:`\log Z_C` as in
    :func:`clamped_log_partition`. Every visible unit type clamps: two-state units per unit,
    Gaussian units per feature, Potts units per site (one categorical variable).

    Use it where the RBM would go::

        known = jnp.zeros(64, bool).at[:32].set(True)        # top half of the image known
        numpyro.sample("v", ClampedRBM(rbm, known, image))   # inpaint the bottom half

    :class:`~numpyro_rbm.RBMGibbs` recognises it and samples only the free sites (the sweep
    resets the clamped units: ``clamp_mask`` and ``clamp_values`` are the per-unit mask and
    the clamped layer), and its ``sample`` draws exactly by enumeration.

    Args:
        rbm: an :class:`~numpyro_rbm.RBMParams` or an object with a ``params`` attribute
            holding one (such as :class:`numpyro_rbm.RBM`).
        mask: boolean ``(..., n_sites)``; ``True`` marks a clamped site.
        values: ``(..., n_sites)`` site values; only the clamped entries are read (the
            others may be anything, NaN included).
        log_z: ``"exact"`` to normalise by enumeration (:func:`clamped_log_partition`), or
            ``None`` for the unnormalised :math:`-F(v) - \kappa(v_C)`.
        max_units: enumeration limit passed to :func:`~numpyro_rbm.log_partition`.
    """

    arg_constraints = {}
    pytree_data_fields = ("params", "site_mask", "clamp_mask", "clamp_values")
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
        mask, layer_mask, layer, values_ok = _to_layer(params, mask, values)
        units = params.visible_units
        if not isinstance(values_ok, jax.core.Tracer) and not bool(values_ok):
            raise ValueError(
                f"clamped values must be {units.name} states ({units.site_noun} of "
                f"{units.spec} units); got values outside that set at clamped positions"
            )
        self.params = params
        self.site_mask = mask
        self.clamp_mask = layer_mask
        self.clamp_values = layer
        self._log_z_mode = log_z
        self._max_units = max_units
        batch_shape = jnp.broadcast_shapes(
            params.batch_shape, jnp.shape(mask)[:-1], jnp.shape(layer)[:-1]
        )
        event = (units.site_size(params.n_visible),)
        super().__init__(batch_shape, event, validate_args=validate_args)

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """The same support as :class:`numpyro_rbm.RBM`'s."""
        return self.params.visible_units.site_support()

    @property
    def conditional_params(self) -> RBMParams:
        """The conditional RBM of the free sites (see :func:`clamp_params`)."""
        return _conditional(self.params, self.clamp_mask, self.clamp_values)

    def log_partition(self):
        r""":math:`\log Z_C` by enumeration (recomputed per call: nothing is cached on the
        object, so it stays safe to close over under ``jit``)."""
        return _log_z_c(
            self.params, self.site_mask, self.clamp_mask, self.clamp_values,
            max_units=self._max_units,
        )  # fmt: skip

    @validate_sample
    def log_prob(self, value):
        units = self.params.visible_units
        v = units.to_layer(value, self.params.weights.dtype)
        own = _clamped_own_terms(self.params, self.site_mask, self.clamp_mask, self.clamp_values)
        lp = -free_energy(self.params, v) - own
        if self._log_z_mode == "exact":
            lp = lp - self.log_partition()
        consistent = jnp.all(jnp.where(self.clamp_mask, v == self.clamp_values, True), -1)
        return jnp.where(consistent & units.site_support()(value), lp, -jnp.inf)

    def sample(self, key, sample_shape=()):
        v, _ = sample_exact(
            key, self.conditional_params, tuple(sample_shape), max_units=self._max_units
        )
        layer = apply_clamp(v, self.clamp_mask, self.clamp_values)
        return self.params.visible_units.from_layer(layer)

    def infer_shapes(self, *args, **kwargs):
        raise NotImplementedError("ClampedRBM shapes follow its parameters; build it directly")
