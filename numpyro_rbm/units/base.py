r"""The :class:`UnitType` contract, parametric unit types, and the registry of unit types.

A unit type is everything the rest of the library needs to know about one layer's units:
the conditional distribution (log-partition, mean, sampler, base measure, support), how the
layer is enumerated (two-state units), how a NumPyro site value maps to the layer the core
computes with, how user data are checked and encoded, the independent model matching data
marginals, and a random initial state for chains. Code outside :mod:`numpyro_rbm.units`
calls these methods and never branches on a unit's class.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

__all__ = [
    "UnitType",
    "ParametricUnitType",
    "BoundUnits",
    "register_unit_type",
    "as_unit_type",
    "registered_unit_types",
    "base_rate_bias",
    "check_data",
    "check_incomplete_data",
    "device_layer",
]


@dataclasses.dataclass(frozen=True)
class UnitType:
    """Base class of a unit type. Subclasses are frozen dataclasses (hashable, static in jit).

    A new unit type implements :meth:`log_partition`, :meth:`mean`, :meth:`sample` and
    :meth:`in_support` (and :meth:`base_log_measure` when its base measure is not counting
    measure), and is made loadable from files with :func:`register_unit_type`;
    ``docs/architecture.md`` has a worked example.

    Attributes:
        name: the short name users may pass instead of an instance (``"bernoulli"``).
        values: the unit's discrete values ``(low, high)`` for two-state units, or ``None``
            for units whose layer cannot be enumerated.
    """

    name: ClassVar[str] = "abstract"
    values: ClassVar[tuple[float, float] | None] = None
    #: Names of the unit type's per-unit parameter arrays (none for discrete units).
    param_names: ClassVar[tuple[str, ...]] = ()

    # --- the conditional distribution of one layer given the other ------------------------

    def log_partition(self, field):
        r""":math:`\sum_i A(\phi_i)` over the last axis."""
        raise NotImplementedError

    def mean(self, field):
        r"""The conditional mean :math:`A'(\phi)`, elementwise."""
        raise NotImplementedError

    def sample(self, key, field):
        """Draws ``x ~ p(x | field)`` elementwise, in ``field``'s dtype."""
        raise NotImplementedError

    def base_log_measure(self, x):
        r""":math:`\sum_i \log \mu(x_i)` over the last axis (zero for discrete units)."""
        return jnp.zeros(jnp.shape(x)[:-1], dtype=jnp.result_type(x))

    def in_support(self, x):
        """Elementwise boolean: is ``x`` a value this unit can take."""
        raise NotImplementedError

    def random_layer(self, key, field):
        """A random layer state to start chains from (cheap, never enumerates): a draw from
        the conditional at ``field``; two-state and Potts units draw uniformly instead."""
        return self.sample(key, field)

    # --- enumeration ----------------------------------------------------------------------

    @property
    def enumerable(self) -> bool:
        """Whether a layer of these units can be summed over state by state."""
        return self.values is not None

    def states_from_bits(self, bits):
        """Maps a {0, 1} bit array to this unit's two values (for enumeration)."""
        low, high = self.values
        return low + (high - low) * bits

    @property
    def softplus_form(self) -> tuple[float, float] | None:
        r"""``(l, s)`` when :math:`A(\phi) = l\phi + \mathrm{softplus}(s\phi)` exactly (two-state
        units with counting measure), which lets exact enumeration use its product form
        (:mod:`numpyro_rbm.partition`); ``None`` otherwise."""
        return None

    # --- parameters -----------------------------------------------------------------------

    @property
    def spec(self) -> str:
        """The string :func:`as_unit_type` turns back into this unit type (saved in files):
        the name, followed by the dataclass fields in parentheses when there are any."""
        fields = dataclasses.fields(self)
        if not fields:
            return self.name
        return f"{self.name}({','.join(repr(getattr(self, f.name)) for f in fields)})"

    def bind(self, unit_params):
        """This layer's units with their parameters; parameter-free types return ``self``."""
        if unit_params:
            raise ValueError(f"{self.name} units take no parameters, got {unit_params!r}")
        return self

    def init_unit_params(self, n_units: int, dtype=jnp.float32):
        """Default per-unit parameters (``None`` for parameter-free types)."""
        return None

    def check_unit_params(self, unit_params, n_units: int):
        if unit_params:
            raise ValueError(f"{self.name} units take no parameters, got {unit_params!r}")

    # --- the layer and the values a NumPyro site holds --------------------------------------

    def check_size(self, n_units: int) -> None:
        """Raises a ``ValueError`` when a layer cannot have ``n_units`` units."""

    def site_size(self, n_units: int) -> int:
        """The length of a site value (an event) for a layer of ``n_units`` units."""
        return n_units

    def to_layer(self, value, dtype):
        """A site value ``(..., site_size)`` as the layer ``(..., n_units)`` the core uses."""
        return jnp.asarray(value).astype(dtype)

    def from_layer(self, layer, dtype=None):
        """Inverse of :meth:`to_layer` (``dtype``: of the site value; default the layer's)."""
        return layer if dtype is None else jnp.asarray(layer).astype(dtype)

    def site_support(self):
        """The NumPyro constraint of a site value (event dimension 1)."""
        return constraints.real_vector

    #: What a site value is, for messages ("a state of shape (3,)").
    site_noun: ClassVar[str] = "a state"

    def check_site_value(self, value, what: str) -> None:
        """Raises a ``ValueError`` when the concrete site ``value`` leaves the support."""
        if not bool(np.all(np.asarray(self.site_support()(jnp.asarray(value))))):
            raise ValueError(f"{what} must hold {self.name} states (support {self.spec})")

    # --- sites: the variables a user observes (one unit, or a Potts one-hot block) ----------

    def layer_mask(self, mask):
        """A per-site boolean ``mask`` ``(..., site_size)`` as the per-unit mask ``(...,
        n_units)`` of the layer: every unit of a masked site is masked (clamping)."""
        return jnp.asarray(mask)

    def site_log_partition(self, field):
        r""":math:`A` of each site, ``(..., n_sites)``: :meth:`log_partition` without the sum
        over sites (one unit per site unless a subclass groups them)."""
        return self.log_partition(jnp.asarray(field)[..., None])

    def site_base_log_measure(self, x):
        r""":math:`\log \mu` of each site, ``(..., n_sites)``: :meth:`base_log_measure` without
        the sum over sites."""
        return self.base_log_measure(jnp.asarray(x)[..., None])

    def site_log_conditional(self, x, log_ratio):
        r""":math:`\log p(x_s \mid x_{-s})` of every site :math:`s` of the layer ``x`` (a
        log-probability for discrete sites, a log-density for continuous ones), shape
        ``(..., n_sites)``, when the rest of the model multiplies the site's own measure
        :math:`\mu_s(y)` by :math:`e^{r_s(y)}`:

        .. math::

            p(x_s \mid x_{-s}) = \frac{\mu_s(x_s)\, e^{r_s(x_s)}}
                {\int \mu_s(y)\, e^{r_s(y)}\, dy} .

        ``log_ratio(y)`` returns :math:`r_s(y) - r_s(x_s)` for candidate site values ``y`` of
        shape ``(..., n_sites, K, units_per_site)`` (any ``K``) as ``(..., n_sites, K)``; the
        unit type chooses the candidates: every state of a discrete site, a quadrature grid
        of a continuous one. Used by the pseudo-log-likelihood
        (:func:`numpyro_rbm.learning.pseudo_log_likelihood`)."""
        raise NotImplementedError(f"{self.name} units have no site conditional")

    def overlap(self, x, reference):
        """A similarity of the layers ``x`` and ``reference`` in [-1, 1], 1 when they are
        equal, averaged over sites (the ``overlap`` chain statistic)."""
        raise ValueError(f"{self.name} units define no overlap; leave out the reference state")

    # --- data -----------------------------------------------------------------------------

    def prepare_data(self, data, name: str = "data"):
        """Checks user ``data`` (examples x columns) and returns the layer as float64 NumPy;
        raises a ``ValueError`` naming the first bad row and column and the fix."""
        raise ValueError(f"{self.name} units cannot be the visible layer of a trained RBM")

    def invalid_data(self, x):
        """The device counterpart of :meth:`prepare_data`'s check (jnp, traceable): the
        elementwise boolean mask of the user data ``x`` (any real, integer or boolean dtype)
        that are not values of these units. :func:`device_layer` uses it to check data where
        they will be used, without a host copy; a type without it is checked on the host."""
        raise NotImplementedError(f"{self.name} units check data on the host only")

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        """Visible biases of the independent model matching the marginals of the layer
        ``data`` ``(N, n_units)`` (NumPy, or a ``jax.Array`` on the device, which ``fit``
        passes: read it with ``jnp`` to avoid a host copy), float64 NumPy."""
        raise ValueError(f"{self.name} units have no data-matched independent model")

    def unit_params_from_data(self, data, dtype=jnp.float32):
        """Initial unit parameters from the data (the defaults unless overridden)."""
        return self.init_unit_params(np.shape(data)[-1], dtype)

    # --- normalisability ------------------------------------------------------------------

    def tail_curvature(self):
        r"""How the base measure confines a unit far from zero, for the normalisability check
        (:func:`numpyro_rbm.check_normalisable`; ``docs/units.md``, "When is Z finite").

        Returns ``None`` when the support is bounded (two-state, Potts units), otherwise
        ``(kappa_plus, kappa_minus)``, arrays broadcastable to ``(..., n_units)`` with
        :math:`-\log\mu(x) = \kappa_\pm x^2/2 + O(|x|)` as :math:`x \to \pm\infty`:
        ``inf`` for a half-line outside the support (ReLU's :math:`x < 0`). Unit types with
        unbounded support must override it."""
        if self.values is not None:
            return None
        raise NotImplementedError(
            f"{self.name} units do not declare tail_curvature(): return None for a bounded "
            "support, else the curvatures (kappa_plus, kappa_minus) of -log mu at +-infinity"
        )


class TwoStateUnits(UnitType):
    """Shared behaviour of units with two values ``values = (low, high)``: enumeration, data
    checks, the base-rate bias and uniform random states. (A mixin; not registered.)"""

    def random_layer(self, key, field):
        bits = jax.random.bernoulli(key, 0.5, jnp.shape(field))
        return self.states_from_bits(bits.astype(jnp.result_type(field)))

    def prepare_data(self, data, name: str = "data"):
        arr = as_2d_float(data, name)
        low, high = self.values
        bad = ~((arr == low) | (arr == high))
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(
                f"{name} must hold only the {self.name} values {{{low:g}, {high:g}}}; row "
                f"{row}, column {col} is {float(arr[row, col]):g} ({int(bad.sum())} bad "
                "entries). Binarise the data first (e.g. x >= threshold) or pick "
                "visible_units to match"
            )
        return arr

    def invalid_data(self, x):
        low, high = self.values
        return ~((x == low) | (x == high))

    def site_log_conditional(self, x, log_ratio):
        r"""Two states: :math:`\log p(x_i \mid x_{-i}) = -\mathrm{softplus}(r_i(\bar x_i) -
        r_i(x_i))` with :math:`\bar x_i` the other value (Besag 1975)."""
        low, high = self.values
        flipped = (low + high) - jnp.asarray(x)
        return -jax.nn.softplus(log_ratio(flipped[..., None, None]))[..., 0]

    def overlap(self, x, reference):
        r"""The Edwards-Anderson overlap :math:`\frac1n \sum_i s(x_i)\, s(r_i)`, :math:`s`
        mapping the two values to :math:`\pm 1`."""
        low, high = self.values

        def spin(y):
            return (2.0 * y - (low + high)) / (high - low)

        return jnp.mean(spin(x) * spin(reference), axis=-1)

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        r"""With :math:`q_i = (n_i + \alpha)/(N + 2\alpha)` the smoothed frequency of the high
        value :math:`x_+`, :math:`b_i = \operatorname{logit}(q_i)/(x_+ - x_-)`, since
        :math:`p(x_i = x_+) = \sigma((x_+ - x_-) b_i)` for an independent unit."""
        low, high = self.values
        n_high = column_count(data, high)  # exact integers: the same bias from either copy
        q = (n_high + pseudocount) / (np.shape(data)[0] + 2.0 * pseudocount)
        return (np.log(q) - np.log1p(-q)) / (high - low)


@jax.jit
def _count_jit(x, value):
    return jnp.sum(x == value, axis=0, dtype=jnp.int32)


def column_count(data, value):
    """How many entries of each column of ``data`` equal ``value`` (int NumPy): counted where
    the data are, on the device for a ``jax.Array`` (only the counts come back)."""
    if isinstance(data, jax.Array):
        return np.asarray(_count_jit(data, value))
    return np.sum(np.asarray(data) == value, axis=0)


def first_bad(bad, name, what, fix):
    """Raises a ValueError naming the first ``True`` entry of the 2-D mask ``bad``."""
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} row {row}, column {col}: {what} ({int(bad.sum())} bad entries). {fix}"
        )


def as_2d_float(data, name):
    """``data`` as a non-empty 2-D float64 NumPy array, or a ``ValueError`` saying why not."""
    arr = np.asarray(as_2d_array(data, name))
    return arr.astype(np.float64, copy=False)  # no copy of float64 data (callers never write)


def as_2d_array(data, name):
    """``data`` as a non-empty 2-D numeric array, not copied (a ``jax.Array`` stays one, a
    NumPy array is returned as is), or a ``ValueError`` saying why not."""
    try:
        arr = data if isinstance(data, jax.Array) else np.asarray(data)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} must be a 2-D array of unit values: {err}") from err
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (examples x columns), got shape "
            f"{arr.shape}; reshape images to one row per example, e.g. x.reshape(len(x), -1)"
        )
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr


def check_data(data, units, name: str = "data", n_visible: int | None = None, *, layer=False):
    """The one data check. ``data`` holds one example per row: user values, which the visible
    unit type checks and encodes (:meth:`UnitType.prepare_data`; Potts sequences become
    one-hot), or with ``layer=True`` the layer itself (one-hot for Potts units), whose entries
    must lie in the units' support. The width is checked against ``n_visible`` units.

    Returns:
        The layer as float64 NumPy ``(N, n_visible)``.

    Raises:
        ValueError: naming what is wrong (shape, first bad row and column) and the fix.
    """
    units = as_unit_type(units)
    if not layer:
        arr = units.prepare_data(data, name)
        _check_width(arr.shape[1], n_visible, name)
        return arr
    arr = np.asarray(data)
    if arr.ndim != 2 or (n_visible is not None and arr.shape[-1] != n_visible):
        raise ValueError(
            f"{name} must have shape (num_examples, n_visible={n_visible}), got {arr.shape}"
        )
    if arr.shape[0] < 1:
        raise ValueError(f"{name} is empty")
    if not bool(np.all(np.asarray(units.in_support(arr)))):
        raise ValueError(
            f"{name} has values outside the support of the visible units ({units.spec}: "
            f"{units.values}); binarise it first (Gaussian units: finite values; Potts units: "
            "the one-hot layer, Potts(q).one_hot(sequences))"
        )
    return arr.astype(np.float64)


def check_incomplete_data(data, units, name: str = "data", *, seed: int = 0):
    r"""The data check for examples with missing entries, marked by NaN, which
    :func:`~numpyro_rbm.fit` samples by clamped Gibbs sweeps (Salakhutdinov, Mnih & Hinton,
    *Restricted Boltzmann machines for collaborative filtering*, ICML 2007).

    Data without a NaN go to :func:`check_data` and come back unchanged. Otherwise every row
    and every column must have an observed entry; the unit type's
    :meth:`UnitType.layer_mask` turns the mask of observed entries (one per site: a unit, or
    a Potts site) into the mask of clamped layer units. Each missing entry is filled with the
    entry of the same column in a random row where that column is observed (NumPy's PCG64
    from ``seed``: the same draws on every machine), so the filled data pass the unit type's
    own check and, when entries are missing at random, keep each column's frequencies.

    Returns:
        ``(layer, observed)``: the filled layer, float64 ``(N, n_visible)``, and the boolean
        mask ``(N, n_visible)`` of observed layer units (``None`` for complete data).

    Raises:
        ValueError: naming an all-missing row or column.
    """
    units = as_unit_type(units)
    try:
        arr = np.asarray(data)
    except Exception:  # ragged lists and the like: check_data says what is wrong
        arr = None
    if arr is None or arr.dtype.kind != "f" or not np.isnan(arr).any():
        return check_data(data, units, name), None
    arr = as_2d_float(arr, name)
    missing = np.isnan(arr)
    for axis, what in ((1, "row"), (0, "column")):
        empty = np.flatnonzero(missing.all(axis=axis))
        if empty.size:
            listed = ", ".join(str(i) for i in empty[:10]) + (", ..." if empty.size > 10 else "")
            raise ValueError(
                f"{name} {what} {empty[0]} has no observed entry (all NaN; {empty.size} such "
                f"{what}s: {listed}); it carries no information: drop it"
            )
    rng = np.random.default_rng(seed)
    filled = arr.copy()
    for j in np.flatnonzero(missing.any(axis=0)):
        filled[missing[:, j], j] = rng.choice(arr[~missing[:, j], j], int(missing[:, j].sum()))
    layer = check_data(filled, units, name)
    return layer, np.asarray(units.layer_mask(~missing), bool)


def device_layer(
    data, units, name: str = "data", n_visible: int | None = None, dtype=jnp.float32, *,
    missing: bool | str = False, seed: int = 0,
):  # fmt: skip
    r""":func:`check_data` (and :func:`check_incomplete_data`) where the data will be used:
    the data go to the device once, in their own dtype (or ``dtype`` where JAX cannot hold
    theirs, e.g. 64-bit data without ``jax_enable_x64``: then checked as held in ``dtype``),
    and one compiled pass checks them with the unit type's :meth:`UnitType.invalid_data` and
    encodes them (:meth:`UnitType.to_layer`). Only the positions of the first missing and
    the first bad entry come back; the message is built on the host when there is one (by
    the host check, so it is :func:`check_data`'s). A ``jax.Array`` is not copied to the
    host. Unit types without :meth:`UnitType.invalid_data`, and data with missing entries
    (NaN) when ``missing=True``, go through the host checks.

    Args:
        missing: ``True``: NaN marks a missing entry (:func:`check_incomplete_data`);
            a string: NaN is refused with this explanation; ``False``: NaN is a bad value.

    Returns:
        ``(layer, observed)``: the layer on the device in ``dtype`` ``(N, n_visible)``, and
        the observed mask (NumPy) of incomplete data, else ``None``.
    """
    units, dtype = as_unit_type(units), jnp.dtype(dtype)
    arr = as_2d_array(data, name)
    if not _checks_on_device(units, arr.dtype):
        return _host_layer(arr, units, name, n_visible, dtype, missing, seed)
    held = arr.dtype if jax.dtypes.canonicalize_dtype(arr.dtype) == arr.dtype else dtype
    x = arr if isinstance(arr, jax.Array) else jax.device_put(np.asarray(arr, held))
    layer, first_nan, first_bad_entry = _checked_layer(units, dtype, x)
    (has_nan, *nan_at), (has_bad, *bad_at) = jax.device_get((first_nan, first_bad_entry))
    if has_nan and missing is not False:
        if missing is True:
            return _host_layer(arr, units, name, n_visible, dtype, missing, seed)
        row, col = nan_at
        raise ValueError(f"{name} row {row}, column {col} is missing (NaN): {missing}")
    if has_nan or has_bad:
        check_data(np.asarray(arr), units, name)  # raises the host check's message
        row, col = bad_at if has_bad else nan_at
        raise ValueError(
            f"{name} row {row}, column {col}: {np.asarray(arr[row, col]).item()!r} is not a "
            f"{units.name} value once held in {held} (e.g. it overflows); rescale the data "
            "(numpyro_rbm.datasets.standardize) or enable 64-bit JAX"
        )
    _check_width(layer.shape[1], n_visible, name)
    return layer, None


def _checks_on_device(units, dtype) -> bool:
    """Whether :func:`device_layer` checks on the device: a unit type with
    :meth:`UnitType.invalid_data` and real, integer or boolean data."""
    own = type(units).invalid_data is not UnitType.invalid_data
    return own and np.dtype(dtype).kind in "biuf"


@functools.partial(jax.jit, static_argnums=(0, 1))
def _checked_layer(units, dtype, x):
    """The layer in ``dtype`` and ``(any, row, column)`` of the first missing (NaN) and the
    first bad entry, in one pass: each entry's two flags are OR-reduced along its row, and
    only the first flagged row is looked at again."""

    def flags(y):
        nan = jnp.isnan(y) if jnp.issubdtype(y.dtype, jnp.floating) else jnp.zeros(y.shape, bool)
        return nan.astype(jnp.uint8) | (units.invalid_data(y).astype(jnp.uint8) << 1)

    rows = jax.lax.reduce(flags(x), np.uint8(0), jax.lax.bitwise_or, (1,))

    def first(bit):
        hit = (rows & bit) != 0
        row = jnp.argmax(hit)
        return jnp.any(hit), row, jnp.argmax((flags(x[row]) & bit) != 0)

    return units.to_layer(x, dtype), first(1), first(2)


def _host_layer(arr, units, name, n_visible, dtype, missing, seed):
    arr = np.asarray(arr)
    if missing is True:
        layer, observed = check_incomplete_data(arr, units, name, seed=seed)
        _check_width(layer.shape[1], n_visible, name)
    else:
        if isinstance(missing, str) and arr.dtype.kind == "f" and np.isnan(arr).any():
            row, col = np.argwhere(np.isnan(arr))[0]
            raise ValueError(f"{name} row {row}, column {col} is missing (NaN): {missing}")
        layer, observed = check_data(arr, units, name, n_visible), None
    return jax.device_put(np.asarray(layer, dtype)), observed


def _check_width(width, n_visible, name):
    if n_visible is not None and width != n_visible:
        raise ValueError(f"{name} has {width} columns but the model has {n_visible} visible units")


def base_rate_bias(data, units="bernoulli", pseudocount: float = 1.0, unit_params=None):
    r"""Visible biases of the *base-rate* model: independent units matching the data marginals
    (Hinton's guide), from the unit type's :meth:`~UnitType.bias_from_data`.

    For two-state units with values :math:`(x_-, x_+)`, :math:`b_i =
    \operatorname{logit}(q_i)/(x_+ - x_-)` with :math:`q_i = (n_i + \alpha)/(N + 2\alpha)` the
    smoothed frequency of :math:`x_+`; the pseudo-count :math:`\alpha` keeps units that never
    (or always) fire at a finite bias. Gaussian units: :math:`b_i = \lambda_i \bar v_i` with the
    precisions ``unit_params`` (default: from the data's variance). Potts units: the log of the
    smoothed site frequencies in the zero-sum gauge.

    Args:
        data: the layer ``(N, n_visible)`` (one-hot for Potts units).
        units: the visible unit type (a name or :class:`UnitType`).
        pseudocount: :math:`\alpha > 0`.
        unit_params: the units' parameters, where the independent model needs them.

    Returns:
        The biases, shape ``(n_visible,)``, float64 NumPy (cast them to your dtype).
    """
    units = as_unit_type(units)
    if not pseudocount > 0:
        raise ValueError(f"pseudocount must be > 0, got {pseudocount}")
    if not isinstance(data, jax.Array):  # a device layer is read where it is (issue 17)
        data = np.asarray(data, np.float64)
    if data.ndim != 2 or data.shape[0] < 1:
        raise ValueError(f"data must have shape (num_examples, n_visible), got {data.shape}")
    if not _all_in_support(units, data):
        raise ValueError(f"data has values outside {units.name} units' support {units.spec}")
    return units.bias_from_data(data, pseudocount, unit_params)


@functools.partial(jax.jit, static_argnums=0)
def _all_in_support_jit(units, x):
    return jnp.all(units.in_support(x))


def _all_in_support(units, data) -> bool:
    if isinstance(data, jax.Array):
        return bool(_all_in_support_jit(units, data))
    return bool(np.all(np.asarray(units.in_support(data))))


# --- units with learnable parameters ------------------------------------------------------


class BoundUnits:
    """A parametric unit type together with its parameter arrays (what the layer computes
    with). Made by :meth:`UnitType.bind`, used transiently inside functions, never stored as
    static metadata. It exposes the methods of a parameter-free unit type."""

    def __init__(self, units, unit_params):
        self.units = units
        self.unit_params = unit_params

    name = property(lambda self: self.units.name)
    values = property(lambda self: self.units.values)
    enumerable = property(lambda self: self.units.enumerable)
    softplus_form = property(lambda self: self.units.softplus_form)

    def log_partition(self, field):
        return self.units.log_partition(field, self.unit_params)

    def mean(self, field):
        return self.units.mean(field, self.unit_params)

    def sample(self, key, field):
        return self.units.sample(key, field, self.unit_params)

    def random_layer(self, key, field):
        return self.units.random_layer(key, field, self.unit_params)

    def base_log_measure(self, x):
        return self.units.base_log_measure(x, self.unit_params)

    def in_support(self, x):
        return self.units.in_support(x)

    def tail_curvature(self):
        return self.units.tail_curvature(self.unit_params)

    def states_from_bits(self, bits):
        return self.units.states_from_bits(bits)

    def layer_mask(self, mask):
        return self.units.layer_mask(mask)

    def site_log_partition(self, field):
        return self.units.site_log_partition(field, self.unit_params)

    def site_base_log_measure(self, x):
        return self.units.site_base_log_measure(x, self.unit_params)

    def site_log_conditional(self, x, log_ratio):
        return self.units.site_log_conditional(x, log_ratio, self.unit_params)

    def overlap(self, x, reference):
        return self.units.overlap(x, reference)


@dataclasses.dataclass(frozen=True)
class ParametricUnitType(UnitType):
    """A unit type with per-unit parameters (pytree leaves of :class:`~numpyro_rbm.RBMParams`).

    Its methods take the parameter dictionary as an extra last argument (``None`` means the
    defaults, zeros); :meth:`bind` returns an object with the parameter-free interface. Each
    parameter is an array of shape ``(..., n_units)``.
    """

    def bind(self, unit_params):
        return BoundUnits(self, unit_params)

    def random_layer(self, key, field, unit_params=None):
        return self.sample(key, field, unit_params)

    def init_unit_params(self, n_units: int, dtype=jnp.float32):
        return {name: jnp.zeros((n_units,), dtype) for name in self.param_names}

    def site_log_partition(self, field, unit_params=None):
        return self.log_partition(jnp.asarray(field)[..., None], _per_unit(unit_params))

    def site_base_log_measure(self, x, unit_params=None):
        return self.base_log_measure(jnp.asarray(x)[..., None], _per_unit(unit_params))

    def site_log_conditional(self, x, log_ratio, unit_params=None):
        raise NotImplementedError(f"{self.name} units have no site conditional")

    def tail_curvature(self, unit_params=None):
        """See :meth:`UnitType.tail_curvature`; parametric types take their parameters."""
        raise NotImplementedError(f"{self.name} units do not declare tail_curvature()")

    def check_unit_params(self, unit_params, n_units: int):
        if unit_params is None:
            return
        if not isinstance(unit_params, dict) or set(unit_params) != set(self.param_names):
            raise ValueError(
                f"{self.name} units take the parameters {list(self.param_names)} (a dict of "
                f"arrays of shape (..., {n_units})), got {unit_params!r}"
            )
        for name, x in unit_params.items():
            if jnp.shape(x)[-1:] != (n_units,):
                raise ValueError(
                    f"{self.name} parameter {name!r} has shape {jnp.shape(x)}, expected "
                    f"(..., {n_units})"
                )


def _per_unit(unit_params):
    """Unit parameters ``(..., n)`` as ``(..., n, 1)``: each unit a layer of its own."""
    if unit_params is None:
        return None
    return jax.tree.map(lambda p: jnp.asarray(p)[..., None], unit_params)


def param(unit_params, name, like):
    """The parameter array ``name`` (zeros, i.e. the default, when ``unit_params`` is None)."""
    if unit_params is None:
        return jnp.zeros((), jnp.result_type(like))
    return unit_params[name]


# --- the registry: unit types by name, for strings and files ---------------------------------

_REGISTRY: dict[str, type[UnitType]] = {}


def register_unit_type(cls: type[UnitType]) -> type[UnitType]:
    """Registers a :class:`UnitType` subclass under its ``name`` (usable as a class decorator),
    so that ``as_unit_type("name")`` and files saved by :mod:`numpyro_rbm.io` find it.

    The class must be a frozen dataclass whose fields (if any) are plain literals (ints,
    floats, strings, tuples): its :attr:`~UnitType.spec` is ``name(field, ...)`` and is parsed
    back with :func:`ast.literal_eval`, so loading a file never executes code.
    """
    if not (isinstance(cls, type) and issubclass(cls, UnitType)):
        raise TypeError(f"register_unit_type needs a UnitType subclass, got {cls!r}")
    name = cls.name
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or "") or name == "abstract":
        raise ValueError(
            f"unit type {cls.__name__} needs a lower-case identifier as its `name` class "
            f"attribute, got {name!r}"
        )
    if not dataclasses.is_dataclass(cls) or not cls.__dataclass_params__.frozen:
        raise TypeError(f"unit type {cls.__name__} must be a frozen dataclass")
    known = _REGISTRY.get(name)
    if known is not None and known is not cls and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"a unit type named {name!r} is already registered ({known!r})")
    _REGISTRY[name] = cls
    return cls


def registered_unit_types() -> dict[str, type[UnitType]]:
    """The registered unit types, by name."""
    return dict(_REGISTRY)


_SPEC = re.compile(r"([a-z][a-z0-9_]*)(?:\((.*)\))?")


def as_unit_type(unit) -> UnitType:
    """Accepts a :class:`UnitType` instance or its spec: a registered name (``"bernoulli"``,
    ``"spin"``, ``"gaussian"``, ``"relu"``, ``"drelu"``, case-insensitive) or a name with
    arguments (``"potts(21)"``)."""
    if isinstance(unit, UnitType):
        return unit
    if isinstance(unit, str):
        match = _SPEC.fullmatch(unit.lower().replace(" ", ""))
        if match and match.group(1) in _REGISTRY:
            args = ()
            if match.group(2) is not None:
                try:
                    args = ast.literal_eval(f"({match.group(2)},)") if match.group(2) else ()
                except (ValueError, SyntaxError):
                    args = None
            if args is not None:
                return _REGISTRY[match.group(1)](*args)
    names = sorted(n for n, cls in _REGISTRY.items() if not dataclasses.fields(cls))
    raise ValueError(
        f"unknown unit type {unit!r}: pass one of {names}, 'potts(q)' (e.g. 'potts(21)'), a "
        "numpyro_rbm.units.UnitType instance, or the name of a type registered with "
        "numpyro_rbm.units.register_unit_type"
    )
