"""dReLU hidden units: the two-sided conditional against quadrature, its sampler against the
exact mixture of truncated Gaussians, and free energy / log Z against brute force.

The sampler check is a Kolmogorov-Smirnov test per field, Bonferroni-combined (smallest p-value
times the number of fields > ``P_MIN``, conftest; tests/README.md gives its error rate)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import P_MIN, brute_states
from scipy import integrate, special, stats

from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.partition import log_partition
from numpyro_rbm.units import DReLU, as_unit_type

GP, GM, DELTA = 1.7, 0.6, 0.8  # gamma_plus, gamma_minus, Delta


def _potential_integrals(phi, gp=GP, gm=GM, delta=DELTA):
    """Z_+ = int_0^inf, Z_- = int_-inf^0 of exp(-gamma_pm h^2/2 - Delta |h| + phi h)."""

    def plus(h):
        return np.exp(-0.5 * gp * h**2 + (phi - delta) * h)

    def minus(h):
        return np.exp(-0.5 * gm * h**2 + (phi + delta) * h)

    zp = integrate.quad(plus, 0, np.inf, epsabs=0, epsrel=1e-12)[0]
    zm = integrate.quad(minus, -np.inf, 0, epsabs=0, epsrel=1e-12)[0]
    mp = integrate.quad(lambda h: h * plus(h), 0, np.inf, epsabs=0, epsrel=1e-12)[0]
    mm = integrate.quad(lambda h: h * minus(h), -np.inf, 0, epsabs=0, epsrel=1e-12)[0]
    return zp, zm, (mp + mm) / (zp + zm)


def _up(n, dtype=jnp.float64):
    return {
        "log_gamma_plus": jnp.full((n,), np.log(GP), dtype),
        "log_gamma_minus": jnp.full((n,), np.log(GM), dtype),
        "delta": jnp.full((n,), DELTA, dtype),
    }


def test_log_partition_and_mean_match_quadrature(x64):
    fields = np.array([-9.0, -2.0, -0.5, 0.0, 0.3, 1.5, 6.0])
    expected = np.array([_potential_integrals(f) for f in fields])
    unit = DReLU()
    per_unit = unit.log_partition(
        jnp.asarray(fields)[:, None], jax.tree.map(lambda x: x[:, None], _up(7))
    )
    np.testing.assert_allclose(per_unit, np.log(expected[:, 0] + expected[:, 1]), rtol=1e-10)
    np.testing.assert_allclose(unit.mean(jnp.asarray(fields), _up(7)), expected[:, 2], rtol=1e-8)
    assert as_unit_type("drelu") == unit


@pytest.mark.statistical
def test_sampler_matches_the_two_sided_mixture():
    fields = np.array([-4.0, -0.5, 0.0, 0.6, 3.0])
    n = 4000
    field = jnp.broadcast_to(jnp.float32(fields), (n, 5))
    h = jax.jit(DReLU().sample)(jax.random.key(0), field, _up(5, jnp.float32))
    h = np.asarray(h, np.float64)
    pvalues = []
    for k, phi in enumerate(fields):
        zp, zm, _ = _potential_integrals(phi)
        p_plus = zp / (zp + zm)
        mu_p, sd_p = (phi - DELTA) / GP, 1 / np.sqrt(GP)
        mu_m, sd_m = (phi + DELTA) / GM, 1 / np.sqrt(GM)
        plus = stats.truncnorm(-mu_p / sd_p, np.inf, loc=mu_p, scale=sd_p)
        minus = stats.truncnorm(-np.inf, -mu_m / sd_m, loc=mu_m, scale=sd_m)

        def cdf(x, p_plus=p_plus, plus=plus, minus=minus):
            return p_plus * plus.cdf(x) + (1 - p_plus) * minus.cdf(x)

        pvalues.append(stats.kstest(h[:, k], cdf).pvalue)
    assert len(fields) * min(pvalues) > P_MIN, dict(zip(fields, pvalues, strict=True))


def test_free_energy_and_log_z_match_brute_force(x64):
    rng = np.random.default_rng(0)
    w, b, c = rng.standard_normal((4, 2)), 0.5 * rng.standard_normal(4), rng.standard_normal(2)
    params = RBMParams(
        jnp.asarray(w), jnp.asarray(b), jnp.asarray(c), hidden_units="drelu",
        hidden_unit_params=_up(2),
    )  # fmt: skip
    vs = brute_states(4)
    neg_f = np.array(
        [v @ b + sum(np.log(sum(_potential_integrals(f)[:2])) for f in c + v @ w) for v in vs]
    )
    np.testing.assert_allclose(-free_energy(params, jnp.asarray(vs)), neg_f, rtol=1e-10)
    np.testing.assert_allclose(float(log_partition(params)), special.logsumexp(neg_f), rtol=1e-10)
