r"""Unit types: what one layer of an RBM is made of.

An RBM layer with unit type :math:`u` contributes to the energy through its biases and a
*base log-measure* :math:`\log \mu_u(x)` (zero for discrete units). Given the other layer,
the units of a layer are independent with the exponential-family conditional

.. math::

    p(x_i \mid \phi_i) = \mu_u(x_i)\, \exp\!\big(x_i \phi_i - A_u(\phi_i)\big),
    \qquad A_u(\phi) = \log \sum_x \mu_u(x)\, e^{x \phi},

where the *field* :math:`\phi` is the unit's bias plus its input from the other layer. A unit
type therefore supplies only the conditional log-partition :math:`A_u`, its derivative (the
conditional mean), a sampler and a support check; energies, free energies, conditionals,
Gibbs sweeps and exact log Z all follow from these (see :mod:`numpyro_rbm.core`).

All methods act on a whole layer: ``field`` and ``x`` have shape ``(..., n_units)``;
``log_partition`` and ``base_log_measure`` sum over the last axis.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from ._threefry import threefry_bits32

__all__ = [
    "UnitType",
    "ParametricUnitType",
    "BoundUnits",
    "Bernoulli",
    "Spin",
    "Gaussian",
    "ReLU",
    "DReLU",
    "Potts",
    "as_unit_type",
    "gaussian_to_cho",
    "gaussian_from_cho",
]


@dataclasses.dataclass(frozen=True)
class UnitType:
    """Base class of a unit type. Subclasses are frozen dataclasses (hashable, static in jit).

    Attributes:
        name: the short name users may pass instead of an instance (``"bernoulli"``).
        values: the unit's discrete values ``(low, high)`` for two-state units, or ``None``
            for units whose layer cannot be enumerated.
    """

    name: ClassVar[str] = "abstract"
    values: ClassVar[tuple[float, float] | None] = None

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

    @property
    def enumerable(self) -> bool:
        """Whether a layer of these units can be summed over state by state."""
        return self.values is not None

    def states_from_bits(self, bits):
        """Maps a {0, 1} bit array to this unit's two values (for enumeration)."""
        low, high = self.values
        return low + (high - low) * bits

    #: Names of the unit type's per-unit parameter arrays (none for discrete units).
    param_names: ClassVar[tuple[str, ...]] = ()

    @property
    def spec(self) -> str:
        """The string :func:`as_unit_type` turns back into this unit type (saved in files)."""
        return self.name

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

    # --- data: what training and AIS need from a visible unit type ---------------------------

    def prepare_data(self, data, name: str = "data"):
        """Checks ``data`` (examples x columns) and returns it as the layer's float64 array;
        raises a ``ValueError`` naming the first bad row and column. Two-state types are
        checked by :func:`numpyro_rbm.training.fit` itself."""
        raise ValueError(f"{self.name} units cannot be the visible layer of a trained RBM")

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        """Visible biases of the independent model matching the data's marginals."""
        raise ValueError(f"{self.name} units have no data-matched independent model")

    def unit_params_from_data(self, data, dtype=jnp.float32):
        """Initial unit parameters from the data (the defaults unless overridden)."""
        return self.init_unit_params(np.shape(data)[-1], dtype)


def _first_bad(bad, name, what, fix):
    """Raises a ValueError naming the first ``True`` entry of the 2-D mask ``bad``."""
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name} row {row}, column {col}: {what} ({int(bad.sum())} bad entries). {fix}"
        )


def _as_2d_float(data, name):
    arr = np.asarray(data)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(
            f"{name} must be a non-empty 2-D array (examples x columns), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.number) and arr.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return arr.astype(np.float64)


@dataclasses.dataclass(frozen=True)
class Bernoulli(UnitType):
    r"""Binary units :math:`x \in \{0, 1\}`.

    :math:`A(\phi) = \log(1 + e^{\phi}) = \mathrm{softplus}(\phi)`,
    :math:`\mathbb{E}[x \mid \phi] = \sigma(\phi)`.
    """

    name: ClassVar[str] = "bernoulli"
    values: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def log_partition(self, field):
        return jnp.sum(jax.nn.softplus(field), axis=-1)

    def mean(self, field):
        return jax.nn.sigmoid(field)

    def sample(self, key, field):
        return _sample_binary(key, field, 0.0, 1.0)

    def in_support(self, x):
        return (x == 0) | (x == 1)


@dataclasses.dataclass(frozen=True)
class Spin(UnitType):
    r"""Ising spins :math:`x \in \{-1, +1\}`.

    :math:`A(\phi) = \log(e^{\phi} + e^{-\phi}) = |\phi| + \mathrm{softplus}(-2|\phi|)`,
    :math:`\mathbb{E}[x \mid \phi] = \tanh(\phi)`, :math:`p(x = +1 \mid \phi) = \sigma(2\phi)`.
    """

    name: ClassVar[str] = "spin"
    values: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def log_partition(self, field):
        a = jnp.abs(field)
        return jnp.sum(a + jax.nn.softplus(-2.0 * a), axis=-1)

    def mean(self, field):
        return jnp.tanh(field)

    def sample(self, key, field):
        return _sample_binary(key, 2.0 * field, -1.0, 1.0)

    def in_support(self, x):
        return (x == 1) | (x == -1)


# --- sampling two-state units: exact thresholds on 32-bit random words --------------------


def _sample_binary(key, logit, low, high):
    r"""Draws ``high`` with probability :math:`\sigma(\mathrm{logit})`, else ``low``.

    In float32 (and narrower) the draw compares a uniform 32-bit word :math:`U` with the
    threshold :math:`t = \lfloor 2^{32} q \rfloor` of the *smaller* tail
    :math:`q = \sigma(-|\ell|) \le 1/2`, and flips the outcome when :math:`\ell > 0`. Then
    :math:`P(U < t) = t / 2^{32}` differs from :math:`q` by less than :math:`2^{-32}` at every
    logit, both tails alike (the float32 :math:`q` is exact after scaling by :math:`2^{32}`,
    a power of two), and :math:`\ell = 0` gives exactly 1/2; comparing a float32 uniform with
    :math:`\sigma(\ell)` instead biases each tail by up to :math:`2^{-23}` (its 23-bit grid), e.g.
    draws probability :math:`2^{-23}` at :math:`\ell = -30` where :math:`\sigma = 10^{-13}`.
    It costs one threefry word and a few elementwise operations per draw, the same as the
    uniform comparison; the words are ``jax.random.bits(key, shape)`` bit for bit, computed
    by :func:`~numpyro_rbm._threefry.threefry_bits32`, which XLA:CPU fuses into one kernel;
    other generators were measured and rejected (docs/performance.md).
    Float64 logits use a float64 uniform (error :math:`2^{-52}`).
    """
    dtype = jnp.result_type(logit)
    if jnp.finfo(dtype).bits > 32:
        u = jax.random.uniform(key, jnp.shape(logit), dtype=dtype)
        return jnp.where(u < jax.nn.sigmoid(logit), high, low).astype(dtype)
    words = threefry_bits32(key, jnp.shape(logit))  # = jax.random.bits, fused on the CPU
    return _binary_from_words(words, logit, low, high)


def _binary_from_words(words, logit, low, high):
    r"""``high`` where the uint32 ``words`` fall in the event of probability
    :math:`\sigma(\mathrm{logit})`, else ``low`` (see :func:`_sample_binary`)."""
    q = jax.nn.sigmoid(-jnp.abs(logit).astype(jnp.float32))
    tail = words < (q * 4294967296.0).astype(jnp.uint32)
    return jnp.where(tail != (logit > 0), high, low).astype(jnp.result_type(logit))


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

    def log_partition(self, field):
        return self.units.log_partition(field, self.unit_params)

    def mean(self, field):
        return self.units.mean(field, self.unit_params)

    def sample(self, key, field):
        return self.units.sample(key, field, self.unit_params)

    def base_log_measure(self, x):
        return self.units.base_log_measure(x, self.unit_params)

    def in_support(self, x):
        return self.units.in_support(x)

    def states_from_bits(self, bits):
        return self.units.states_from_bits(bits)


@dataclasses.dataclass(frozen=True)
class ParametricUnitType(UnitType):
    """A unit type with per-unit parameters (pytree leaves of :class:`~numpyro_rbm.RBMParams`).

    Its methods take the parameter dictionary as an extra last argument (``None`` means the
    defaults, :meth:`default_unit_params`); :meth:`bind` returns an object with the
    parameter-free interface. Each parameter is an array of shape ``(..., n_units)``.
    """

    #: Names of the parameter arrays, each of shape ``(..., n_units)``.
    param_names: ClassVar[tuple[str, ...]] = ()

    def bind(self, unit_params):
        return BoundUnits(self, unit_params)

    def init_unit_params(self, n_units: int, dtype=jnp.float32):
        return {name: jnp.zeros((n_units,), dtype) for name in self.param_names}

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


def _param(unit_params, name, like):
    """The parameter array ``name`` (zeros, i.e. the default, when ``unit_params`` is None)."""
    if unit_params is None:
        return jnp.zeros((), jnp.result_type(like))
    return unit_params[name]


_LOG_2PI = math.log(2.0 * math.pi)


@dataclasses.dataclass(frozen=True)
class Gaussian(ParametricUnitType):
    r"""Real-valued units with a learnable per-unit precision :math:`\lambda_i = e^{\ell_i}`
    (parameter ``log_precision`` :math:`\ell`, default 0).

    The *natural* (exponential-family harmonium) parametrisation of the Gaussian-Bernoulli
    RBM: the energy's visible part is :math:`\sum_i \big(\lambda_i v_i^2/2 - b_i v_i\big)`
    and the coupling is :math:`-v^\top W h`, so

    .. math::

        p(v_i \mid h) = \mathcal N\big(\phi_i / \lambda_i,\ 1/\lambda_i\big),
        \quad \phi = b + W h, \qquad
        \log\mu(v_i) = -\tfrac{\lambda_i}{2} v_i^2 + \tfrac12\log\tfrac{\lambda_i}{2\pi},
        \quad A(\phi_i) = \frac{\phi_i^2}{2\lambda_i},

    and the hidden field is :math:`c + W^\top v`. This is the model of Cho, Ilin & Raiko
    (2011), :math:`p(v_i \mid h) = \mathcal N(b^{C}_i + (W^{C} h)_i, \sigma_i^2)` with hidden
    field :math:`c + W^{C\top}(v/\sigma^2)`, in other coordinates:
    :math:`\sigma_i^2 = 1/\lambda_i`, :math:`b^{C}_i = b_i/\lambda_i`,
    :math:`W^{C}_{ij} = W_{ij}/\lambda_i` (see :func:`gaussian_to_cho`); learning
    :math:`\log\lambda = -\log\sigma^2` keeps the variance positive, as Cho et al. do. The
    natural coordinates keep the coupling statistic :math:`v` itself, so every
    :math:`v^\top W` in the library (enumeration, AIS, centering, clamping) is unchanged.

    Reference: K. Cho, A. Ilin and T. Raiko, *Improved learning of Gaussian-Bernoulli
    restricted Boltzmann machines*, ICANN 2011.
    """

    name: ClassVar[str] = "gaussian"
    param_names: ClassVar[tuple[str, ...]] = ("log_precision",)

    def log_partition(self, field, unit_params):
        lam = jnp.exp(_param(unit_params, "log_precision", field))
        return jnp.sum(0.5 * field**2 / lam, axis=-1)

    def mean(self, field, unit_params):
        return field * jnp.exp(-_param(unit_params, "log_precision", field))

    def sample(self, key, field, unit_params):
        log_lam = _param(unit_params, "log_precision", field)
        noise = jax.random.normal(key, jnp.shape(field), dtype=jnp.result_type(field))
        return field * jnp.exp(-log_lam) + noise * jnp.exp(-0.5 * log_lam)

    def base_log_measure(self, x, unit_params):
        log_lam = _param(unit_params, "log_precision", x)
        return jnp.sum(-0.5 * jnp.exp(log_lam) * x**2 + 0.5 * (log_lam - _LOG_2PI), axis=-1)

    def in_support(self, x):
        return jnp.isfinite(x)

    def prepare_data(self, data, name: str = "data"):
        arr = _as_2d_float(data, name)
        _first_bad(
            ~np.isfinite(arr),
            name,
            "is not finite (NaN or infinite)",
            "Gaussian units need finite real values: drop or impute the missing entries",
        )
        return arr

    def unit_params_from_data(self, data, dtype=jnp.float32):
        r""":math:`\lambda_i = 1/\mathrm{Var}(v_i)` (floored at 1e-6 variance)."""
        return {"log_precision": jnp.asarray(_log_precision_from_data(data), dtype)}

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        r""":math:`b_i = \lambda_i \bar v_i`, so that :math:`p(v_i) = \mathcal N(\bar v_i,
        1/\lambda_i)` at :math:`W = 0`; :math:`\lambda` from ``unit_params`` (else from the
        data's variance)."""
        data = np.asarray(data, np.float64)
        if unit_params is None:
            log_lam = _log_precision_from_data(data)
        else:
            log_lam = np.asarray(unit_params["log_precision"], np.float64)
        lam = np.exp(log_lam)
        return lam * np.mean(data, axis=0)


def _log_precision_from_data(data):
    return -np.log(np.maximum(np.var(np.asarray(data, np.float64), axis=0), 1e-6))


def gaussian_to_cho(weights, visible_bias, log_precision):
    r"""Natural Gaussian-visible parameters to Cho, Ilin & Raiko's (2011):
    returns ``(W_cho, b_cho, sigma2)`` with :math:`\sigma^2 = 1/\lambda`,
    :math:`b^C = b/\lambda`, :math:`W^C = W/\lambda` (row-wise); the hidden bias is shared."""
    lam = jnp.exp(log_precision)
    return weights / lam[..., :, None], visible_bias / lam, 1.0 / lam


def gaussian_from_cho(weights_cho, visible_bias_cho, sigma2):
    r"""Inverse of :func:`gaussian_to_cho`: returns ``(W, b, log_precision)``."""
    lam = 1.0 / jnp.asarray(sigma2)
    return weights_cho * lam[..., :, None], visible_bias_cho * lam, jnp.log(lam)


# Truncated-Gaussian helpers for ReLU units. For a standard normal x truncated to x >= a the
# Mills ratio R(a) = Phi(-a) / phi(a) = sqrt(pi/2) erfcx(a / sqrt 2) is finite and accurate
# for every a (erfcx never underflows for a >= 0; for a < 0 it only grows like e^{a^2/2}).
_SQRT_HALF_PI = math.sqrt(0.5 * math.pi)


def _log_mills(a):
    r""":math:`\log R(a)`, stable for all :math:`a` (asymptotic :math:`-\log a` tail for
    :math:`a \gg 0`, :math:`a^2/2 + \log\sqrt{2\pi}` for :math:`a \ll 0`)."""
    safe = jnp.where(a > -5.0, a, 0.0)  # erfcx(-x) overflows for large x: other branch
    small = jnp.log(_SQRT_HALF_PI * jax.scipy.special.erfcx(safe / math.sqrt(2.0)))
    large = 0.5 * a**2 + 0.5 * _LOG_2PI + jax.scipy.special.log_ndtr(-a)
    return jnp.where(a > -5.0, small, large)


def _inv_mills_minus_a(a):
    r""":math:`1/R(a) - a = \mathbb E[x - a \mid x \ge a] \ge 0`, stable for all :math:`a`.

    For :math:`a > 4` the difference of two nearly equal numbers is replaced by Laplace's
    continued fraction :math:`1/(a + 2/(a + 3/(a + \dots)))`."""
    direct = jnp.exp(-_log_mills(a)) - a
    safe = jnp.where(a > 4.0, a, 4.0)
    t = safe
    for k in range(40, 1, -1):
        t = safe + k / t
    return jnp.where(a > 4.0, 1.0 / t, direct)


@dataclasses.dataclass(frozen=True)
class ReLU(ParametricUnitType):
    r"""Rectified-linear (ReLU) units :math:`h \ge 0` with potential
    :math:`\mathcal U(h) = \gamma h^2/2 + \theta h` (Tubiana & Monasson 2017), per-unit
    curvature :math:`\gamma_j = e^{g_j}` (parameter ``log_gamma`` :math:`g`, default 0) and
    threshold :math:`\theta = -c` (the layer's bias). With field :math:`\phi = c + W^\top v`:

    .. math::

        p(h \mid \phi) \propto e^{-\gamma h^2/2 + \phi h}\,\mathbb 1[h \ge 0], \qquad
        A(\phi) = \log \int_0^\infty e^{-\gamma h^2/2 + \phi h}\,dh
        = -\tfrac12 \log\gamma + \log R(-\phi/\sqrt\gamma),

    with :math:`R(a) = \Phi(-a)/\varphi(a)` the Mills ratio (:math:`\sqrt{\pi/2}\,
    \mathrm{erfcx}(a/\sqrt2)`, stable for any :math:`\phi`). Given :math:`\phi`, :math:`h` is
    a Gaussian :math:`\mathcal N(\phi/\gamma, 1/\gamma)` truncated to :math:`h \ge 0`; its mean
    is :math:`\big(1/R(a) - a\big)/\sqrt\gamma` with :math:`a = -\phi/\sqrt\gamma`.

    Sampling is exact in every regime: inverse-CDF (:math:`x = -\Phi^{-1}(u\,\Phi(-a))`) for
    :math:`a < 3`, and Marsaglia's (1964) tail rejection for :math:`a \ge 3`, where
    ``jax.random.truncated_normal``'s ``erf``-based inverse CDF loses its resolution.

    Reference: J. Tubiana and R. Monasson, *Emergence of compositional representations in
    restricted Boltzmann machines*, Phys. Rev. Lett. 118, 138301 (2017).
    """

    name: ClassVar[str] = "relu"
    param_names: ClassVar[tuple[str, ...]] = ("log_gamma",)
    #: Proposals per unit in the tail sampler (acceptance >= 0.91 each: failure < 1e-12).
    tail_tries: ClassVar[int] = 12

    def log_partition(self, field, unit_params):
        log_gamma = _param(unit_params, "log_gamma", field)
        a = -field * jnp.exp(-0.5 * log_gamma)
        return jnp.sum(_log_mills(a) - 0.5 * log_gamma, axis=-1)

    def mean(self, field, unit_params):
        log_gamma = _param(unit_params, "log_gamma", field)
        a = -field * jnp.exp(-0.5 * log_gamma)
        return _inv_mills_minus_a(a) * jnp.exp(-0.5 * log_gamma)

    def sample(self, key, field, unit_params):
        dtype = jnp.result_type(field)
        log_gamma = jnp.broadcast_to(_param(unit_params, "log_gamma", field), jnp.shape(field))
        a = -field * jnp.exp(-0.5 * log_gamma)
        key_u, key_tail = jax.random.split(key)
        # Body (a < 3): x = -ndtri(u Phi(-a)) >= a, accurate since Phi(-a) > 1e-3.
        tiny = jnp.finfo(dtype).tiny
        u = jax.random.uniform(key_u, jnp.shape(field), dtype=dtype, minval=tiny, maxval=1.0)
        a_body = jnp.minimum(a, 3.0)
        x_body = -jax.scipy.special.ndtri(u * jax.scipy.special.ndtr(-a_body))
        body = jnp.maximum(x_body - a_body, 0.0)
        # Tail (a >= 3): propose x = sqrt(a^2 - 2 log u1), accept if u2 x <= a (Marsaglia);
        # x - a = -2 log u1 / (x + a) avoids cancelling.
        a_tail = jnp.maximum(a, 3.0)
        shape = (self.tail_tries, 2) + jnp.shape(field)
        u12 = jax.random.uniform(key_tail, shape, dtype=dtype, minval=tiny, maxval=1.0)
        e = -2.0 * jnp.log(u12[:, 0])
        x = jnp.sqrt(a_tail**2 + e)
        accept = u12[:, 1] * x <= a_tail
        first = jnp.argmax(accept, axis=0)  # the first accepted proposal (0 if none: < 1e-12)
        tail = jnp.take_along_axis(e / (x + a_tail), first[None], axis=0)[0]
        return (jnp.where(a < 3.0, body, tail) * jnp.exp(-0.5 * log_gamma)).astype(dtype)

    def base_log_measure(self, x, unit_params):
        gamma = jnp.exp(_param(unit_params, "log_gamma", x))
        return jnp.sum(jnp.where(x >= 0, -0.5 * gamma * x**2, -jnp.inf), axis=-1)

    def in_support(self, x):
        return x >= 0


@dataclasses.dataclass(frozen=True)
class DReLU(ParametricUnitType):
    r"""Double-ReLU (dReLU) units :math:`h \in \mathbb R` (Tubiana, Cocco & Monasson 2019) with
    potential

    .. math::

        \mathcal U(h) = \tfrac{\gamma_+}{2} h_+^2 + \tfrac{\gamma_-}{2} h_-^2
            + \theta_+ h_+ + \theta_- h_-, \qquad h_+ = \max(h, 0),\ h_- = \min(h, 0),

    parameters ``log_gamma_plus``, ``log_gamma_minus`` (curvatures :math:`\gamma_\pm`, default
    0) and ``delta`` :math:`\Delta = (\theta_+ - \theta_-)/2` (default 0); the mean threshold
    :math:`(\theta_+ + \theta_-)/2 = -c` is the layer's bias. Each half-line is a ReLU unit,
    so with :math:`\phi = c + W^\top v`

    .. math::

        A(\phi) = \log\Big(e^{A^{\mathrm{ReLU}}_{\gamma_+}(\phi - \Delta)}
            + e^{A^{\mathrm{ReLU}}_{\gamma_-}(-\phi - \Delta)}\Big),

    and :math:`h \mid v` is the mixture of a Gaussian truncated to :math:`h \ge 0` and a
    mirrored one on :math:`h < 0`, with weights :math:`e^{A_\pm - A}`. Sampling picks the
    side and then draws it with the exact :class:`ReLU` sampler. :math:`\gamma_+ = \gamma_-`,
    :math:`\Delta = 0` is a Gaussian unit; :math:`\Delta \gg 0` makes :math:`h` sparse.

    Reference: J. Tubiana, S. Cocco and R. Monasson, *Learning protein constitutive motifs
    from sequence data*, eLife 8, e39397 (2019).
    """

    name: ClassVar[str] = "drelu"
    param_names: ClassVar[tuple[str, ...]] = ("log_gamma_plus", "log_gamma_minus", "delta")

    def _sides(self, field, unit_params):
        """Fields and ReLU parameters of the positive and the (mirrored) negative side."""
        delta = _param(unit_params, "delta", field)
        plus = {"log_gamma": _param(unit_params, "log_gamma_plus", field)}
        minus = {"log_gamma": _param(unit_params, "log_gamma_minus", field)}
        return (field - delta, plus), (-field - delta, minus)

    def _side_log_partitions(self, field, unit_params):
        (f_p, up_p), (f_m, up_m) = self._sides(field, unit_params)
        relu = ReLU()

        def per_unit(f, up):  # ReLU.log_partition sums over the last axis: one unit per entry
            return relu.log_partition(f[..., None], jax.tree.map(lambda x: x[..., None], up))

        return per_unit(f_p, up_p), per_unit(f_m, up_m)

    def log_partition(self, field, unit_params):
        a_plus, a_minus = self._side_log_partitions(field, unit_params)
        return jnp.sum(jnp.logaddexp(a_plus, a_minus), axis=-1)

    def mean(self, field, unit_params):
        a_plus, a_minus = self._side_log_partitions(field, unit_params)
        p_plus = jax.nn.sigmoid(a_plus - a_minus)
        (f_p, up_p), (f_m, up_m) = self._sides(field, unit_params)
        return p_plus * ReLU().mean(f_p, up_p) - (1 - p_plus) * ReLU().mean(f_m, up_m)

    def sample(self, key, field, unit_params):
        key_side, key_p, key_m = jax.random.split(key, 3)
        a_plus, a_minus = self._side_log_partitions(field, unit_params)
        u = jax.random.uniform(key_side, jnp.shape(field), dtype=jnp.result_type(field))
        positive = u < jax.nn.sigmoid(a_plus - a_minus)
        (f_p, up_p), (f_m, up_m) = self._sides(field, unit_params)
        h_plus = ReLU().sample(key_p, f_p, up_p)
        h_minus = ReLU().sample(key_m, f_m, up_m)
        return jnp.where(positive, h_plus, -h_minus)

    def base_log_measure(self, x, unit_params):
        gamma_plus = jnp.exp(_param(unit_params, "log_gamma_plus", x))
        gamma_minus = jnp.exp(_param(unit_params, "log_gamma_minus", x))
        delta = _param(unit_params, "delta", x)
        curvature = jnp.where(x >= 0, gamma_plus, gamma_minus)
        return jnp.sum(-0.5 * curvature * x**2 - delta * jnp.abs(x), axis=-1)

    def in_support(self, x):
        return jnp.isfinite(x)


@dataclasses.dataclass(frozen=True)
class Potts(UnitType):
    r"""Categorical (Potts) units: each of ``n_sites`` sites takes one of ``q`` states, stored
    one-hot, so a layer of ``n_sites`` sites has ``n_sites * q`` units (site-major: unit
    ``i * q + a`` is state ``a`` of site ``i``) and the weights have shape
    ``(n_sites * q, n_hidden)``. With field :math:`\phi_{ia} = b_{ia} + (W h)_{ia}`,

    .. math::

        p(x_i = a \mid \phi) = \frac{e^{\phi_{ia}}}{\sum_{a'} e^{\phi_{ia'}}},
        \qquad A(\phi_i) = \log \sum_{a=1}^q e^{\phi_{ia}} .

    Users pass integer sequences (values ``0 .. q-1``); :meth:`one_hot` and
    :meth:`from_one_hot` convert. :func:`numpyro_rbm.potts.zero_sum_gauge` fixes the gauge.

    Args:
        q: number of states per site (e.g. 21 for the amino acids and the gap).
    """

    name: ClassVar[str] = "potts"
    q: int = 21

    def __post_init__(self):
        if isinstance(self.q, bool) or not isinstance(self.q, int) or self.q < 2:
            raise ValueError(f"Potts units need an integer number of states q >= 2, got {self.q}")

    @property
    def spec(self) -> str:
        return f"potts({self.q})"

    def _blocks(self, x):
        n = jnp.shape(x)[-1]
        if n % self.q:
            raise ValueError(
                f"a Potts layer with q={self.q} needs a multiple of q units (one-hot per site), "
                f"got {n}"
            )
        return jnp.reshape(x, jnp.shape(x)[:-1] + (n // self.q, self.q))

    def log_partition(self, field):
        return jnp.sum(jax.scipy.special.logsumexp(self._blocks(field), axis=-1), axis=-1)

    def mean(self, field):
        return jax.nn.softmax(self._blocks(field), axis=-1).reshape(jnp.shape(field))

    def sample(self, key, field):
        states = jax.random.categorical(key, self._blocks(field), axis=-1)
        return self.one_hot(states, jnp.result_type(field))

    def in_support(self, x):
        blocks = self._blocks(x)
        binary = (blocks == 0) | (blocks == 1)
        one_per_site = jnp.sum(jnp.where(binary, blocks, 0), axis=-1, keepdims=True) == 1
        return (binary & one_per_site).reshape(jnp.shape(x))

    def one_hot(self, states, dtype=jnp.float32):
        """Integer states ``(..., n_sites)`` to the one-hot layer ``(..., n_sites * q)``."""
        states = jnp.asarray(states)
        x = jax.nn.one_hot(states, self.q, dtype=dtype)
        return x.reshape(states.shape[:-1] + (states.shape[-1] * self.q,))

    def from_one_hot(self, x):
        """The one-hot layer ``(..., n_sites * q)`` back to integer states ``(..., n_sites)``."""
        return jnp.argmax(self._blocks(x), axis=-1)

    def prepare_data(self, data, name: str = "data"):
        """Integer sequences ``(N, n_sites)`` in ``0 .. q-1`` to the one-hot layer
        ``(N, n_sites * q)`` (float64)."""
        arr = _as_2d_float(data, name)
        _first_bad(
            ~((arr == np.round(arr)) & (arr >= 0) & (arr < self.q)),
            name,
            f"is not a state in 0 .. {self.q - 1}",
            f"Potts units with q={self.q} need integer sequences (one state per column); "
            "map symbols to integers with numpyro_rbm.datasets.read_fasta or encode_sequences",
        )
        return np.asarray(self.one_hot(arr.astype(np.int32), jnp.float32), np.float64)

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        r""":math:`b_{ia} = \log f_{ia} - \frac1q\sum_{a'} \log f_{ia'}` with the smoothed
        frequencies :math:`f_{ia} = (n_{ia} + \alpha)/(N + q\alpha)` (zero-sum gauge)."""
        blocks = np.asarray(data, np.float64)
        blocks = blocks.reshape(blocks.shape[0], -1, self.q)
        log_f = np.log(blocks.sum(0) + pseudocount) - np.log(
            blocks.shape[0] + self.q * pseudocount
        )
        return (log_f - log_f.mean(-1, keepdims=True)).reshape(-1)


_BY_NAME = {cls.name: cls for cls in (Bernoulli, Spin, Gaussian, ReLU, DReLU)}


def as_unit_type(unit) -> UnitType:
    """Accepts a :class:`UnitType` instance, its name (``"bernoulli"``, ``"spin"``,
    ``"gaussian"``, ``"relu"``, ``"drelu"``) or ``"potts(q)"`` (e.g. ``"potts(21)"``)."""
    if isinstance(unit, UnitType):
        return unit
    if isinstance(unit, str):
        if unit.lower() in _BY_NAME:
            return _BY_NAME[unit.lower()]()
        match = re.fullmatch(r"potts\((\d+)\)", unit.lower().replace(" ", ""))
        if match:
            return Potts(int(match.group(1)))
    raise ValueError(
        f"unknown unit type {unit!r}: pass one of {sorted(_BY_NAME)}, 'potts(q)' (e.g. "
        "'potts(21)') or a numpyro_rbm.units.UnitType instance"
    )
