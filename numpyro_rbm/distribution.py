r"""The RBM as a NumPyro distribution over its visible units.

A restricted Boltzmann machine (Smolensky 1986; Hinton 2002) with weights :math:`W`, visible
bias :math:`b` and hidden bias :math:`c` defines the joint
:math:`p(v, h) = e^{-E(v, h)} / Z` with :math:`E(v, h) = -b^\top v - c^\top h - v^\top W h`.
:class:`RBM` is its visible marginal,

.. math::

    p(v) = \frac{e^{-F(v)}}{Z}, \qquad
    F(v) = -b^\top v - \sum_{j=1}^{n_h} A_h\big(c_j + (v^\top W)_j\big),
    \qquad Z = \sum_v e^{-F(v)},

where :math:`A_h` is the hidden unit type's log-partition,
:math:`A_h(\phi) = \log(1 + e^\phi)` for Bernoulli :math:`\{0, 1\}` units and
:math:`\log(e^\phi + e^{-\phi})` for spins :math:`\{-1, +1\}`. It is a thin adapter: every
number comes from :mod:`numpyro_rbm.core` and :mod:`numpyro_rbm.partition`.

References:
    P. Smolensky, *Information processing in dynamical systems: foundations of harmony
    theory*, in Parallel Distributed Processing, vol. 1, MIT Press (1986).

    G. E. Hinton, *Training products of experts by minimizing contrastive divergence*,
    Neural Computation 14(8), 1771-1800 (2002).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import Distribution, constraints

from .core import RBMParams, free_energy
from .kernels import gibbs
from .normalisable import require_normalisable
from .partition import (
    MAX_ENUMERABLE_UNITS,
    EnumerationTooLarge,
    enumerated_layer,
    log_partition,
    sample_exact,
)
from .units import as_unit_type, spin, spin_vector

__all__ = ["RBM", "spin", "spin_vector"]


def _is_tracer(x) -> bool:
    return isinstance(x, jax.core.Tracer)


def _float_dtype(*arrays):
    dtype = jnp.result_type(*arrays)
    return dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


class RBM(Distribution):
    r"""The visible marginal :math:`p(v) = e^{-F(v)} / Z` of a restricted Boltzmann machine.

    A distribution over vectors :math:`v` of ``n_visible`` Bernoulli :math:`\{0,1\}` or spin
    :math:`\{-1,+1\}` units, with event shape ``(n_visible,)``. Leading axes of the parameters
    broadcast to the batch shape (one RBM per batch element). With Bernoulli hidden units the
    free energy is

    .. math::

        F(v) = -b^\top v - \sum_j \mathrm{softplus}\big(c_j + (v^\top W)_j\big),

    and with spin hidden units the softplus becomes :math:`\log 2\cosh`. The other unit types
    of :mod:`numpyro_rbm.units` work too (see ``docs/units.md``): Gaussian visible units give
    a density over real vectors (support ``real_vector``), Potts visible units a distribution
    over integer sequences (event shape ``(n_sites,)``, values ``0 .. q-1``; the one-hot layer
    is internal), and ReLU hidden units a continuous hidden layer. ``log_z="exact"`` then
    enumerates whichever layer is discrete and two-state.

    **The three log Z modes** (``log_z=``):

    * ``"exact"`` (default): :math:`\log Z` by enumerating the smaller layer
      (:func:`numpyro_rbm.partition.log_partition`; :math:`2^{\min(n_v, n_h)}` terms). It is
      computed on first use and cached (outside ``jit``). If the smaller layer has more than
      ``max_units`` units the constructor raises :class:`~numpyro_rbm.EnumerationTooLarge`.
    * ``None``: **unnormalised**. ``log_prob(v)`` returns :math:`-F(v)`, *not* a normalised
      log probability: differences between states are right, absolute values are off by
      :math:`\log Z`. This is what MCMC over :math:`v` needs (e.g.
      :class:`numpyro_rbm.RBMGibbs`), and it never enumerates. ``is_normalized`` is ``False``.
    * an array (or an object with a ``log_z`` attribute, such as the result of
      :func:`numpyro_rbm.ais`): used as :math:`\log Z`. For large models this is an
      *estimate*, e.g. ``numpyro_rbm.ais(params, key).log_z``; log probabilities inherit its
      error (and AIS's downward bias of :math:`\log Z` on average).

    **Sampling.** When the smaller layer has at most ``max_units`` units, ``sample`` is
    exact: that layer is drawn from its marginal by enumeration, then the other layer from
    its conditional (:func:`numpyro_rbm.partition.sample_exact`). Otherwise it is
    **approximate**: each draw runs ``num_gibbs_sweeps`` block-Gibbs sweeps
    :math:`h \sim p(h \mid v)`, :math:`v \sim p(v \mid h)` from a uniformly random start,
    independently per draw, and returns the final state. Its accuracy depends on how well
    the chain mixes in that many sweeps.

    ``log_prob`` of a state outside the support (an entry that is not a unit value) is
    :math:`-\infty`. With validation on it also warns, as NumPyro's discrete distributions
    do; unlike ``numpyro.distributions.Bernoulli`` it returns :math:`-\infty` with validation
    off too.

    Example::

        import jax, numpyro
        import numpyro_rbm as nrbm

        params = nrbm.init_params(jax.random.key(0), n_visible=64, n_hidden=16)
        rbm = nrbm.RBM(params)                       # exact: 2^16 hidden states
        v = rbm.sample(jax.random.key(1), (100,))    # (100, 64), exact draws
        rbm.log_prob(v)                              # (100,), normalised

        def model(y):
            v = numpyro.sample("v", rbm)
            numpyro.sample("y", numpyro.distributions.Normal(v, 0.5).to_event(1), obs=y)

    Args:
        weights: the couplings :math:`W`, shape ``(..., n_visible, n_hidden)``, or an
            :class:`~numpyro_rbm.RBMParams` (then leave the biases and unit types out: they
            are taken from it).
        visible_bias: :math:`b`, shape ``(..., n_visible)``.
        hidden_bias: :math:`c`, shape ``(..., n_hidden)``.
        visible_units: ``"bernoulli"`` (default), ``"spin"``, ``"gaussian"``,
            ``"potts(q)"``, or a :class:`~numpyro_rbm.units.UnitType`.
        hidden_units: likewise for the hidden layer (also ``"relu"``).
        visible_unit_params, hidden_unit_params: the unit types' parameters (e.g.
            ``{"log_precision": ...}`` for Gaussian units); taken from the RBMParams when one
            is given.
        log_z: ``"exact"``, ``None`` or an array of shape broadcastable to the batch shape;
            see above.
        num_gibbs_sweeps: block-Gibbs sweeps per draw when sampling cannot be exact.
        max_units: the most units the enumerated layer may have (:math:`2^{\text{max\_units}}`
            states) for exact :math:`\log Z` and exact sampling.
        validate_args: check parameters (finite values) and ``log_prob`` values (support);
            NumPyro's global default (on) when ``None``.

    Raises:
        ValueError: on inconsistent shapes, unknown unit types or modes, and (with
            validation on) non-finite parameters.
        EnumerationTooLarge: with ``log_z="exact"`` when the model is too large to
            enumerate.
        NotNormalisable: with ``log_z="exact"`` or a supplied ``log_z``, when the model has
            no finite :math:`Z` (:func:`numpyro_rbm.check_normalisable`; continuous units on
            both layers, e.g. Gaussian visible and ReLU hidden units with
            :math:`\Gamma - W^\top\Lambda^{-1}W` not strictly copositive). It warns
            (:class:`~numpyro_rbm.normalisable.NormalisabilityWarning`) when that cannot be
            decided.
    """

    arg_constraints = {
        "weights": constraints.independent(constraints.real, 2),
        "visible_bias": constraints.real_vector,
        "hidden_bias": constraints.real_vector,
    }
    pytree_data_fields = (
        "weights",
        "visible_bias",
        "hidden_bias",
        "visible_unit_params",
        "hidden_unit_params",
        "_log_z",
    )
    pytree_aux_fields = (
        "visible_units",
        "hidden_units",
        "_log_z_mode",
        "num_gibbs_sweeps",
        "max_units",
    )

    def __init__(
        self,
        weights,
        visible_bias=None,
        hidden_bias=None,
        *,
        visible_units=None,
        hidden_units=None,
        visible_unit_params=None,
        hidden_unit_params=None,
        log_z="exact",
        num_gibbs_sweeps: int = 1000,
        max_units: int | None = MAX_ENUMERABLE_UNITS,
        validate_args=None,
    ):
        params = _as_params(
            weights, visible_bias, hidden_bias, (visible_units, hidden_units),
            (visible_unit_params, hidden_unit_params),
        )  # fmt: skip
        params, batch_shape, dtype = _normalized(params)
        if not (isinstance(num_gibbs_sweeps, (int, np.integer)) and num_gibbs_sweeps >= 1):
            raise ValueError(
                f"num_gibbs_sweeps must be a positive integer, got {num_gibbs_sweeps!r}"
            )
        if max_units is not None and not (isinstance(max_units, (int, np.integer))):
            raise ValueError(f"max_units must be an integer or None, got {max_units!r}")

        self.weights = params.weights
        self.visible_bias = params.visible_bias
        self.hidden_bias = params.hidden_bias
        self.visible_units = params.visible_units
        self.hidden_units = params.hidden_units
        self.visible_unit_params = params.visible_unit_params
        self.hidden_unit_params = params.hidden_unit_params
        self.num_gibbs_sweeps = int(num_gibbs_sweeps)
        self.max_units = None if max_units is None else int(max_units)
        if log_z is not None:  # a normalised density needs a finite Z (docs/units.md)
            mode = log_z if isinstance(log_z, str) else "<array>"
            require_normalisable(params, f"RBM(log_z={mode})")
        self._log_z_mode, self._log_z = self._resolve_log_z(log_z, batch_shape, dtype)

        event_size = params.visible_units.site_size(params.n_visible)  # Potts: one per site
        super().__init__(batch_shape, (event_size,), validate_args=validate_args)

    # --- construction helpers -------------------------------------------------------------

    def _resolve_log_z(self, log_z, batch_shape, dtype):
        if callable(getattr(log_z, "resolve_log_z", None)):  # sml(...): numpyro_rbm.models
            self.log_z_info = log_z.resolve_log_z(self.params)
            return "sml", jnp.asarray(self.log_z_info.log_z, dtype)
        if isinstance(log_z, str):
            if log_z != "exact":
                raise ValueError(
                    f"log_z must be 'exact', None, or an array (e.g. an AIS estimate), got "
                    f"{log_z!r}"
                )
            try:
                enumerated_layer(self.params, self.max_units)
            except EnumerationTooLarge as err:
                raise EnumerationTooLarge(
                    f"RBM(log_z='exact') cannot normalise this model: {err} To proceed, "
                    "pass log_z=None for the unnormalised density -F(v) (enough for MCMC "
                    "over v, e.g. numpyro_rbm.RBMGibbs), or pass an estimate such as "
                    "log_z=numpyro_rbm.ais(params, key).log_z, or raise max_units."
                ) from None
            return "exact", None
        if log_z is None:
            return None, None
        log_z = jnp.asarray(getattr(log_z, "log_z", log_z))
        if not jnp.issubdtype(log_z.dtype, jnp.number):
            raise ValueError(f"log_z must be numeric, got dtype {log_z.dtype}")
        log_z = log_z.astype(dtype)
        try:
            broadcast = jnp.broadcast_shapes(log_z.shape, batch_shape)
        except ValueError:
            broadcast = None
        if broadcast != batch_shape:
            raise ValueError(
                f"log_z has shape {log_z.shape}, which does not broadcast to the RBM's batch "
                f"shape {batch_shape}; pass one value per RBM"
            )
        return "supplied", log_z

    def validate_args(self, strict: bool = True) -> None:
        """Checks that the parameters (and a supplied ``log_z``) are finite.

        Replaces NumPyro's generic check with one that names the offending array; values
        traced under ``jit`` cannot be checked (``strict`` raises then, as NumPyro does).
        """
        named = {
            "weights": self.weights,
            "visible_bias": self.visible_bias,
            "hidden_bias": self.hidden_bias,
            "log_z": self._log_z,
        }
        for layer in ("visible", "hidden"):
            for key, x in (getattr(self, f"{layer}_unit_params") or {}).items():
                named[f"{layer}_unit_params[{key!r}]"] = x
        for name, x in named.items():
            if x is None:
                continue
            if _is_tracer(x):
                if strict:
                    raise RuntimeError("Cannot validate arguments inside jitted code.")
                continue
            bad = int(np.size(x) - np.count_nonzero(np.isfinite(np.asarray(x))))
            if bad:
                raise ValueError(
                    f"RBM got {bad} non-finite (NaN or infinite) value(s) in {name}; all "
                    "parameters must be finite"
                )

    # --- properties -----------------------------------------------------------------------

    @property
    def params(self) -> RBMParams:
        """The parameters as an :class:`~numpyro_rbm.RBMParams` pytree."""
        return RBMParams(
            self.weights,
            self.visible_bias,
            self.hidden_bias,
            visible_units=self.visible_units,
            hidden_units=self.hidden_units,
            visible_unit_params=self.visible_unit_params,
            hidden_unit_params=self.hidden_unit_params,
        )

    @property
    def n_visible(self) -> int:
        """Number of visible units (the event size)."""
        return self.weights.shape[-2]

    @property
    def n_hidden(self) -> int:
        """Number of hidden units."""
        return self.weights.shape[-1]

    @property
    def log_z_mode(self) -> str | None:
        """``"exact"``, ``"supplied"`` (a given value, typically an estimate), ``"sml"``
        (:func:`numpyro_rbm.sml`: its value and error in ``log_z_info``) or ``None``."""
        return self._log_z_mode

    @property
    def is_normalized(self) -> bool:
        """Whether ``log_prob`` subtracts a :math:`\\log Z` (exact or supplied)."""
        return self._log_z_mode is not None

    @property
    def log_z(self):
        r""":math:`\log Z`, shape broadcastable to ``batch_shape``; ``None`` when unnormalised.

        In ``"exact"`` mode it is enumerated on first use and cached on the distribution
        when computed outside a JAX transformation (a value traced under ``jit`` is never
        stored, so nothing leaks out of the trace).
        """
        if self._log_z_mode != "exact" or self._log_z is not None:
            return self._log_z
        value = log_partition(self.params, max_units=None)
        if not _is_tracer(value):
            self._log_z = value
        return value

    @property
    def exact_sampling(self) -> bool:
        """Whether ``sample`` draws exactly (the smaller layer can be enumerated)."""
        try:
            enumerated_layer(self.params, self.max_units)
        except EnumerationTooLarge:
            return False
        return True

    @constraints.dependent_property(is_discrete=True, event_dim=1)
    def support(self):
        """The visible unit type's site support: binary or spin vectors; real vectors for
        Gaussian units; integer sequences in ``0 .. q-1`` for Potts units (the event is one
        state per site, not the one-hot)."""
        return self.visible_units.site_support()

    # --- density and sampling -------------------------------------------------------------

    def log_prob(self, value):
        r""":math:`\log p(v) = -F(v) - \log Z` (just :math:`-F(v)` when ``log_z=None``),
        shape ``sample_shape + batch_shape``; :math:`-\infty` outside the support.

        A row with a missing entry (NaN) is an error when the value is concrete (outside
        ``jit``) and outside the support (:math:`-\infty`) when traced: its density is the
        marginal of its observed entries, which this is not. To train from incomplete rows,
        observe ``numpyro_rbm.incomplete(data).complete(params, idx)`` (``docs/models.md``)."""
        value = jnp.asarray(value)
        _check_no_missing(value)
        size = self.event_shape[0]
        if value.ndim < 1 or value.shape[-1] != size:
            raise ValueError(
                f"RBM.log_prob expects values of shape (..., {size}), "
                f"{self.visible_units.site_noun} per event (n_visible={self.n_visible}), got "
                f"shape {value.shape}"
            )
        if self._validate_args:
            self._validate_sample(value)  # warns on out-of-support values, as NumPyro does
        log_z = self.log_z if self._log_z_mode is not None else None
        return _log_prob(self.params, value, log_z)

    def sample_with_intermediates(self, key, sample_shape=()):
        """Draws ``v`` and returns ``(v, [h])``, with ``h`` the hidden state drawn jointly
        with it (exact joint draws, or the last sweep's hidden state on the Gibbs path)."""
        sample_shape = tuple(sample_shape)
        params = self.params
        if self.exact_sampling:
            v, h = sample_exact(key, params, sample_shape, max_units=self.max_units)
        else:
            shape = sample_shape + self.batch_shape
            v, h = _gibbs_sample(key, params, shape, self.num_gibbs_sweeps)
        return self.visible_units.from_layer(v), [h]

    def sample(self, key, sample_shape=()):
        """Draws ``v`` of shape ``sample_shape + batch_shape + (n_visible,)`` (exact, or by
        block Gibbs when the model is too large to enumerate; see the class docstring)."""
        return self.sample_with_intermediates(key, sample_shape)[0]

    @classmethod
    def infer_shapes(cls, weights, visible_bias=None, hidden_bias=None, **kwargs):
        """``(batch_shape, event_shape)`` from the shapes of the constructor's arrays."""
        visible_bias = (weights[-2],) if visible_bias is None else visible_bias
        hidden_bias = (weights[-1],) if hidden_bias is None else hidden_bias
        batch_shape = _check_shapes(tuple(weights), tuple(visible_bias), tuple(hidden_bias))
        return batch_shape, (weights[-2],)


def _check_no_missing(value):
    """Raises for a concrete value with a NaN entry, naming the first (row, column)."""
    if _is_tracer(value) or not jnp.issubdtype(value.dtype, jnp.floating):
        return
    nan = np.argwhere(np.isnan(np.asarray(value)))
    if nan.size:
        where = ", ".join(str(i) for i in nan[0])
        raise ValueError(
            f"RBM.log_prob got a missing entry (NaN) at index ({where}): the RBM's density is "
            "that of complete rows, and an incomplete row's is the marginal of its observed "
            "entries. To train from incomplete rows, use numpyro_rbm.fit(data_with_nans), "
            "or inside a NumPyro model observe missing.complete(params, idx) with missing = "
            "numpyro_rbm.incomplete(data_with_nans) (docs/models.md, incomplete data in SVI)"
        )


@jax.jit
def _log_prob(params: RBMParams, value, log_z):
    """``-F(v) - log_z`` (no ``log_z`` when it is ``None``) of site values, ``-inf`` outside
    the unit type's site support."""
    units = params.visible_units
    lp = -free_energy(params, units.to_layer(value, params.weights.dtype))
    if log_z is not None:
        lp = lp - log_z
    return jnp.where(units.site_support()(value), lp, -jnp.inf)


@partial(jax.jit, static_argnums=(2, 3))
def _gibbs_sample(key, params: RBMParams, shape: tuple[int, ...], num_sweeps):
    """``num_sweeps`` block-Gibbs sweeps from a random layer state of ``shape`` (the unit type's
    :meth:`~numpyro_rbm.units.UnitType.random_layer`); returns the final ``(v, h)``."""
    key_start, key_chain = jax.random.split(key)
    field = jnp.broadcast_to(params.visible_bias, shape + (params.n_visible,))
    v0 = params.visible_layer.random_layer(key_start, field)
    return gibbs(key_chain, params, v0, num_sweeps)


def _as_params(weights, visible_bias, hidden_bias, units, unit_params) -> RBMParams:
    """The constructor's arguments as one :class:`RBMParams`: the given one, or one made of
    the arrays and unit types (Bernoulli by default)."""
    if not isinstance(weights, RBMParams):
        if visible_bias is None or hidden_bias is None:
            raise ValueError(
                "RBM needs weights, visible_bias and hidden_bias, or a single RBMParams"
            )
        vu, hu = (as_unit_type("bernoulli" if u is None else u) for u in units)
        return RBMParams(weights, visible_bias, hidden_bias, vu, hu, *unit_params)
    params = weights
    if visible_bias is not None or hidden_bias is not None:
        raise ValueError(
            "RBM(params) takes the biases from the RBMParams; do not also pass visible_bias "
            "or hidden_bias"
        )
    for name, given, own in zip(
        ("visible_units", "hidden_units"), units, (params.visible_units, params.hidden_units),
        strict=True,
    ):  # fmt: skip
        if given is not None and as_unit_type(given) != own:
            raise ValueError(
                f"RBM(params, {name}={given!r}) conflicts with the params' {name}="
                f"{own.name!r}; change the RBMParams instead"
            )
    if any(up is not None for up in unit_params):
        raise ValueError(
            "RBM(params) takes the unit parameters from the RBMParams; do not also pass "
            "visible_unit_params or hidden_unit_params"
        )
    return params


def _normalized(params: RBMParams):
    """``(params, batch_shape, dtype)``: the arrays in one floating dtype, shapes, unit
    parameters and layer sizes checked."""
    arrays = [jnp.asarray(x) for x in (params.weights, params.visible_bias, params.hidden_bias)]
    dtype = _float_dtype(*arrays)
    weights, visible_bias, hidden_bias = (x.astype(dtype) for x in arrays)
    batch_shape = _check_shapes(weights.shape, visible_bias.shape, hidden_bias.shape)
    vup, hup = (
        None if up is None else jax.tree.map(lambda x: jnp.asarray(x, dtype), up)
        for up in (params.visible_unit_params, params.hidden_unit_params)
    )
    n_visible, n_hidden = weights.shape[-2:]
    params.visible_units.check_unit_params(vup, n_visible)
    params.hidden_units.check_unit_params(hup, n_hidden)
    leaves = jax.tree.leaves((vup, hup))
    batch_shape = jnp.broadcast_shapes(batch_shape, *(jnp.shape(x)[:-1] for x in leaves))
    params.visible_units.check_size(n_visible)
    params.hidden_units.check_size(n_hidden)
    params = params.replace(
        weights=weights, visible_bias=visible_bias, hidden_bias=hidden_bias,
        visible_unit_params=vup, hidden_unit_params=hup,
    )  # fmt: skip
    return params, batch_shape, dtype


def _check_shapes(w_shape, b_shape, c_shape):
    """Checks the parameter shapes agree and returns their broadcast batch shape."""
    if len(w_shape) < 2:
        raise ValueError(
            f"RBM weights must have shape (..., n_visible, n_hidden), got shape {w_shape}"
        )
    n_visible, n_hidden = w_shape[-2:]
    if n_visible < 1 or n_hidden < 1:
        raise ValueError(f"RBM needs at least one unit per layer, got weights of shape {w_shape}")
    for name, shape, n, layer in (
        ("visible_bias", b_shape, n_visible, "n_visible"),
        ("hidden_bias", c_shape, n_hidden, "n_hidden"),
    ):
        if len(shape) < 1 or shape[-1] != n:
            raise ValueError(
                f"RBM {name} has shape {shape}, but weights of shape {w_shape} imply "
                f"{layer}={n}: {name} must have shape (..., {n})"
            )
    try:
        return jnp.broadcast_shapes(w_shape[:-2], b_shape[:-1], c_shape[:-1])
    except ValueError:
        raise ValueError(
            f"RBM parameter batch shapes do not broadcast: weights {w_shape[:-2]}, "
            f"visible_bias {b_shape[:-1]}, hidden_bias {c_shape[:-1]} (leading axes before "
            "the unit axes)"
        ) from None
