r"""Real-valued units: Gaussian visible units, ReLU and double-ReLU (dReLU) hidden units."""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from .base import ParametricUnitType, as_2d_float, first_bad, register_unit_type
from .base import param as _param

__all__ = ["Gaussian", "ReLU", "DReLU", "gaussian_to_cho", "gaussian_from_cho"]

_LOG_2PI = math.log(2.0 * math.pi)


@register_unit_type
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

    #: The pseudo-likelihood's quadrature: grid points per unit, spaced by the unit's
    #: conditional standard deviation :math:`1/\sqrt{\lambda_i}`, centred on its value.
    quadrature_half_width: ClassVar[int] = 16

    def site_log_conditional(self, x, log_ratio, unit_params):
        r"""The density :math:`p(v_i \mid v_{-i})` by the trapezoid rule on the grid
        :math:`y_k = v_i + k s_i`, :math:`|k| \le 16`, :math:`s_i = \lambda_i^{-1/2}`:

        .. math::

            \log p(v_i \mid v_{-i}) = \tfrac12 \log\lambda_i - \log \sum_k
                e^{-(\sqrt{\lambda_i} v_i k + k^2/2) + r_i(y_k) - r_i(v_i)} .

        :math:`p(v_i \mid v_{-i}) = \int p(h \mid v_{-i})\,\mathcal N(v_i; (b_i + W_i h)/
        \lambda_i, 1/\lambda_i)\, dh` is a Gaussian of variance :math:`s_i^2` convolved with a
        distribution of means, so its Fourier transform decays at least as fast as that
        Gaussian's and the trapezoid rule's aliasing error (Poisson summation) is at most
        :math:`2e^{-2\pi^2} \approx 5 \times 10^{-9}` relative, for any hidden unit type. The
        grid spans :math:`\pm 16 s_i` about the observed value: conditional mass further away is
        not counted (the value is then too high)."""
        dtype = jnp.result_type(x)
        log_lam = jnp.broadcast_to(_param(unit_params, "log_precision", x), jnp.shape(x))
        scale = jnp.exp(-0.5 * log_lam)
        root_x = x * jnp.exp(0.5 * log_lam)
        steps = jnp.arange(-self.quadrature_half_width, self.quadrature_half_width + 1)

        def term(k):  # one grid point of every unit at once: memory of one candidate
            y = x + scale * k
            return -(root_x * k + 0.5 * k**2) + log_ratio(y[..., None, None])[..., 0]

        terms = jax.lax.map(term, steps.astype(dtype))
        return 0.5 * log_lam - jax.scipy.special.logsumexp(terms, axis=0)

    def overlap(self, x, reference):
        r"""The cosine similarity :math:`v^\top r / (\lVert v\rVert\, \lVert r\rVert)`
        (for standardised data close to the correlation of the two vectors)."""
        norm = jnp.sqrt(jnp.sum(x**2, axis=-1) * jnp.sum(reference**2, axis=-1))
        return jnp.sum(x * reference, axis=-1) / norm

    def tail_curvature(self, unit_params=None):
        r""":math:`(\lambda, \lambda)`: the precision on both half-lines."""
        lam = jnp.exp(_param(unit_params, "log_precision", 0.0))
        return lam, lam

    def prepare_data(self, data, name: str = "data"):
        arr = as_2d_float(data, name)
        first_bad(
            ~np.isfinite(arr),
            name,
            "is not finite (NaN or infinite)",
            "Gaussian units need finite real values: drop or impute the missing entries",
        )
        return arr

    def invalid_data(self, x):
        return ~jnp.isfinite(x)

    def unit_params_from_data(self, data, dtype=jnp.float32):
        r""":math:`\lambda_i = 1/\mathrm{Var}(v_i)`, the variance of the data as held in the
        training ``dtype``.

        Raises:
            ValueError: for a constant column (every value equal in ``dtype``), naming it: its
                maximum-likelihood variance is 0, so learning would drive the precision to
                infinity, and any floor would be arbitrary and set the log-likelihood. A
                near-constant column (a nonzero variance, however small) gets the finite
                precision :math:`1/\mathrm{Var}(v_i)`.
        """
        first, constant, _, var = _moments(data, dtype)
        constant = np.flatnonzero(constant)
        if constant.size:
            col, others = constant[0], constant[1:]
            also = ", ".join(map(str, others[:5])) + (", ..." if others.size > 5 else "")
            also = f" (also column(s) {also})" if others.size else ""
            raise ValueError(
                f"data column {col} is constant (every value is {first[col]:g}){also}: a "
                "Gaussian unit on it would learn an infinite precision (its maximum-likelihood "
                "variance is 0). Drop the column (it carries no information; put the value back "
                "after sampling), or model it with noise of its measurement resolution"
            )
        return {"log_precision": jnp.asarray(-np.log(var), dtype)}

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        r""":math:`b_i = \lambda_i \bar v_i`, so that :math:`p(v_i) = \mathcal N(\bar v_i,
        1/\lambda_i)` at :math:`W = 0`; :math:`\lambda` from ``unit_params`` (else from the
        data's variance)."""
        _, _, mean, var = _moments(data)
        if unit_params is None:
            log_lam = -np.log(np.maximum(var, 1e-6))
        else:
            log_lam = np.asarray(unit_params["log_precision"], np.float64)
        lam = np.exp(log_lam)
        return lam * mean


def _moments(data, dtype=None):
    """``(first row, constant columns, mean, variance)`` of ``data`` held in ``dtype`` (by
    default as it is), float64 NumPy: computed where the data are, on the device for a
    ``jax.Array`` (in float64 under ``jax_enable_x64``, else in float32, so the last bits
    may differ from the host's float64 sums) and only the columns' figures come back."""
    if isinstance(data, jax.Array):
        out = _moments_jit(data, None if dtype is None else jnp.dtype(dtype))
        return tuple(np.asarray(a, np.float64) if a.dtype != bool else np.asarray(a) for a in out)
    held = np.asarray(data, np.float64)
    if dtype is not None:
        held = np.asarray(held.astype(dtype), np.float64)
    constant = np.all(held == held[:1], axis=0)
    return held[0], constant, np.mean(held, axis=0), np.var(held, axis=0)


@functools.partial(jax.jit, static_argnums=1)
def _moments_jit(x, dtype):
    held = x if dtype is None else x.astype(dtype)
    held = held.astype(jax.dtypes.canonicalize_dtype(jnp.float64))  # float64 under x64
    return held[0], jnp.all(held == held[:1], axis=0), jnp.mean(held, 0), jnp.var(held, 0)


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


@register_unit_type
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

    def tail_curvature(self, unit_params=None):
        r""":math:`(\gamma, \infty)`: no negative half-line."""
        gamma = jnp.exp(_param(unit_params, "log_gamma", 0.0))
        return gamma, jnp.full(jnp.shape(gamma), jnp.inf, jnp.result_type(gamma))


@register_unit_type
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

    def tail_curvature(self, unit_params=None):
        r""":math:`(\gamma_+, \gamma_-)`: each half-line its own curvature (:math:`\Delta`
        is linear in :math:`|h|` and does not confine)."""
        gamma_plus = jnp.exp(_param(unit_params, "log_gamma_plus", 0.0))
        return gamma_plus, jnp.exp(_param(unit_params, "log_gamma_minus", 0.0))
