"""ReLU hidden units: the truncated-Gaussian conditional (log-partition, mean, sampler) against
quadrature and scipy, free energy and log Z against brute force, Gibbs and learning.

Sampler checks: Kolmogorov-Smirnov tests, Bonferroni-combined over the fields of one test
(smallest p-value times their number > ``P_MIN``), G-tests with ``P_MIN`` and z-scores below
``Z_MAX`` (conftest; tests/README.md gives each test's false-failure rate)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import P_MIN, Z_MAX, brute_states, g_test_pvalue, state_index
from scipy import integrate, special, stats

import numpyro_rbm as nrbm
from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.distribution import RBM
from numpyro_rbm.partition import log_partition
from numpyro_rbm.units import ReLU

FIELDS = [-300.0, -40.0, -8.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0]


def _quad_log_partition_and_mean(phi, gamma):
    """log int_0^inf e^{-gamma h^2/2 + phi h} dh and the mean, by quadrature. The integrand is
    rescaled by its maximum (at h* = max(phi, 0)/gamma) so that quad sees O(1) values."""
    h_star = max(phi, 0.0) / gamma
    log_max = -0.5 * gamma * h_star**2 + phi * h_star

    def f(h):
        return np.exp(-0.5 * gamma * h**2 + phi * h - log_max)

    scale = 1.0 / max(abs(phi), np.sqrt(gamma))  # the width of the mass near 0 or h*
    pts = [h_star, h_star + 10 * scale]
    z = integrate.quad(f, 0, pts[1], points=pts[:1], limit=200, epsabs=0, epsrel=1e-12)[0]
    z += integrate.quad(f, pts[1], np.inf, epsabs=0, epsrel=1e-12)[0]
    m = integrate.quad(
        lambda h: h * f(h), 0, pts[1], points=pts[:1], limit=200, epsabs=0, epsrel=1e-12
    )[0]
    m += integrate.quad(lambda h: h * f(h), pts[1], np.inf, epsabs=0, epsrel=1e-12)[0]
    return np.log(z) + log_max, m / z


def test_log_partition_and_mean_match_quadrature_at_every_field(x64):
    unit = ReLU()
    gammas = np.array([0.4, 1.0, 3.0])
    phi, gamma = (x.ravel() for x in np.meshgrid(FIELDS, gammas, indexing="ij"))
    up = {"log_gamma": jnp.asarray(np.log(gamma))}
    field = jnp.asarray(phi)
    expected = np.array(
        [_quad_log_partition_and_mean(f, g) for f, g in zip(phi, gamma, strict=True)]
    )

    def per_unit(f, g):  # log_partition sums over the last axis: one unit per row
        return unit.log_partition(f[:, None], {"log_gamma": g[:, None]})

    np.testing.assert_allclose(
        per_unit(field, up["log_gamma"]), expected[:, 0], rtol=1e-9, atol=1e-10
    )
    np.testing.assert_allclose(unit.mean(field, up), expected[:, 1], rtol=1e-8)
    # float32 stays accurate in the far tails too (no cancellation of large terms).
    with jax.enable_x64(False):
        f32, g32 = jnp.asarray(phi, jnp.float32), jnp.asarray(np.log(gamma), jnp.float32)
        np.testing.assert_allclose(unit.mean(f32, {"log_gamma": g32}), expected[:, 1], rtol=2e-5)
        np.testing.assert_allclose(per_unit(f32, g32), expected[:, 0], rtol=1e-5, atol=2e-6)


@pytest.mark.statistical
def test_sampler_matches_the_truncated_gaussian():
    """KS test against scipy's truncated normal, in float32, at fields from the far tail
    (a = -phi/sqrt(gamma) up to 49, where an erf-based inverse CDF such as
    ``jax.random.truncated_normal``'s loses its resolution) through the switch between the
    two samplers at a = 3 to the untruncated regime."""
    gamma = 1.5
    fields = np.array([-60.0, -6.0, -3.7, -3.6, -1.0, 0.0, 2.0, 9.0])  # a = 3 at phi = -3.67
    unit = ReLU()
    # 40000 draws per field: the tail sampler without its rejection step (Marsaglia's
    # proposal accepted always) moves the mean at a = 3.02 (phi = -3.7) by 0.023 standard
    # deviations of the unit, z = 5 at 4000 draws and 16 here
    n = 40_000
    up = {"log_gamma": jnp.full((len(fields),), np.log(gamma), jnp.float32)}
    field = jnp.broadcast_to(jnp.float32(fields), (n, len(fields)))
    h = jax.jit(unit.sample)(jax.random.key(0), field, up)  # one compile, not op by op
    h = np.asarray(h, np.float64)
    assert np.all(h >= 0)
    means = np.asarray(jax.jit(unit.mean)(jnp.asarray(fields, jnp.float32), up), np.float64)
    pvalues = []
    for k, phi in enumerate(fields):
        mu, sd = phi / gamma, 1 / np.sqrt(gamma)
        dist = stats.truncnorm((0 - mu) / sd, np.inf, loc=mu, scale=sd)
        pvalues.append(stats.kstest(h[:, k], dist.cdf).pvalue)
        # The sample mean agrees with the unit's mean within Z_MAX standard errors.
        assert abs(h[:, k].mean() - means[k]) < Z_MAX * h[:, k].std() / np.sqrt(n), phi
    assert len(fields) * min(pvalues) > P_MIN, dict(zip(fields, pvalues, strict=True))


def _model(seed=0, n_v=4, n_h=2, vu="bernoulli", scale=1.0):
    rng = np.random.default_rng(seed)
    w = scale * rng.standard_normal((n_v, n_h))
    b = 0.5 * rng.standard_normal(n_v)
    c = 0.5 * rng.standard_normal(n_h)
    g = np.exp(0.4 * rng.standard_normal(n_h))
    params = RBMParams(
        *(jnp.asarray(x) for x in (w, b, c)),
        visible_units=vu,
        hidden_units="relu",
        hidden_unit_params={"log_gamma": jnp.asarray(np.log(g))},
    )
    return params, (w, b, c, g)


@pytest.mark.parametrize("vu", ["bernoulli", "spin"])
def test_free_energy_and_log_z_match_quadrature(x64, vu):
    params, (w, b, c, g) = _model(vu=vu)
    vs = brute_states(4, vu)
    # -F(v) = b.v + sum_j log int_0^inf exp(-g_j h^2/2 + (c_j + (W^T v)_j) h) dh
    neg_f = np.array(
        [
            v @ b
            + sum(
                _quad_log_partition_and_mean(phi, gj)[0]
                for phi, gj in zip(c + v @ w, g, strict=True)
            )
            for v in vs
        ]
    )
    np.testing.assert_allclose(-free_energy(params, jnp.asarray(vs)), neg_f, rtol=1e-9)
    np.testing.assert_allclose(float(log_partition(params)), special.logsumexp(neg_f), rtol=1e-9)
    probs = np.exp(RBM(params).log_prob(jnp.asarray(vs)))
    np.testing.assert_allclose(probs.sum(), 1.0, rtol=1e-9)


@pytest.mark.statistical
def test_gibbs_chains_match_the_exact_visible_and_hidden_marginals(x64):
    """4000 independent chains of 40 sweeps: the chain of v has second eigenvalue 0.44 (its
    kernel by quadrature over h), so the final states are p(v) to within 1e-13."""
    params, (w, b, c, g) = _model(seed=1, scale=1.5)
    vs = brute_states(4)
    p_v = np.exp(np.asarray(RBM(params).log_prob(jnp.asarray(vs))))
    n_chains, n_sweeps = 4000, 40
    v0 = jnp.asarray(vs[np.random.default_rng(0).integers(0, 16, n_chains)])

    def run(v, key):
        v, h = nrbm.core.gibbs_sweep(key, params, v)
        return v, h

    v, hs = jax.lax.scan(run, v0, jax.random.split(jax.random.key(0), n_sweeps))
    h = np.asarray(hs[-1])  # drawn from p(h | v_prev); v_prev ~ p(v) after burn-in
    counts = np.bincount(state_index(np.asarray(v)), minlength=16)
    assert g_test_pvalue(counts, p_v * n_chains) > P_MIN
    # Hidden marginal p(h_0) = sum_v p(v) TruncNormal(h_0; phi_0(v)/g_0, 1/g_0): KS test.
    phi = c[0] + vs @ w[:, 0]
    mu, sd = phi / g[0], 1 / np.sqrt(g[0])

    def cdf(x):
        return np.sum(p_v * stats.truncnorm.cdf(x[:, None], -mu / sd, np.inf, mu, sd), axis=1)

    assert stats.kstest(h[:, 0], cdf).pvalue > P_MIN


def _fit_errors(seed):
    """One replicate: PCD with learnt curvatures on 3000 exact draws (numpy seed ``seed``) from
    a known ReLU-hidden RBM over 6 binary units (unit means 0.1-0.56, correlations up to
    0.17: no unit is constant, so the maximum-likelihood fit is finite). Returns the largest
    error of the fitted model's exact single-unit and pairwise moments against the data's,
    and its log-likelihood deficit to the generating model on the data."""
    with jax.enable_x64(True):
        true, _ = _model(seed=7, n_v=6, n_h=3, scale=1.0)
        vs = brute_states(6)
        p_true = np.exp(np.asarray(RBM(true).log_prob(jnp.asarray(vs))))
        idx = np.random.default_rng(seed).choice(64, size=3000, p=p_true)
        data = vs[idx]
    fit = nrbm.fit(
        data, 3, hidden_units="relu", epochs=40, batch_size=50, learning_rate=0.02,
        l1_decay=0.0, eval_every=None, progress=False, seed=seed,  # maximum likelihood
    )  # fmt: skip
    assert set(fit.params.hidden_unit_params) == {"log_gamma"}
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), fit.params)
        p_fit = np.exp(np.asarray(RBM(p64).log_prob(jnp.asarray(vs))))
    pair_fit = np.einsum("s,si,sj->ij", p_fit, vs, vs)
    return (
        np.abs(p_fit @ vs - data.mean(0)).max(),
        np.abs(pair_fit - data.T @ data / len(data)).max(),
        np.mean(np.log(p_true[idx])) - np.mean(np.log(p_fit[idx])),
    )


@pytest.mark.statistical
def test_fit_recovers_the_generating_model_statistics():
    """Five independent replicates (seeds 0-4) of ``_fit_errors``: the medians of the moment
    errors are below 0.015 and of the log-likelihood deficit below 0.01 nats. Over 200
    replicates (seeds 0-199) a replicate's errors were 0.0038 +- 0.0015 (max 0.0099), 0.0050
    +- 0.0015 (max 0.0099) and -0.0028 +- 0.0018 nats (max 0.0050); none crossed a threshold,
    so a replicate does with probability q < 1.5% (95% bound), and the median fails only if
    three of five do: at most 10 q^3 = 3.4e-5. A sampler whose draws are 10% too large fails
    it (tests/README.md). The former generating model (seed 4, scale 1.5) had five of
    six units constant in the data: its fit diverged (log-likelihood 30 nats short) for 2 of
    40 seeds."""
    errors = np.median([_fit_errors(seed) for seed in range(5)], axis=0)
    assert np.all(errors < [0.015, 0.015, 0.01]), errors


def test_relu_cannot_be_enumerated_and_unbound_calls_fail():
    params = nrbm.init_params(
        jax.random.key(0), 3, 40, visible_units="bernoulli", hidden_units="relu"
    )
    assert params.hidden_unit_params["log_gamma"].shape == (40,)
    # The visible layer (3 units) is enumerated even though it is the larger-index layer.
    assert nrbm.partition.enumerated_layer(params) == "visible"
    both = nrbm.init_params(jax.random.key(0), 3, 4, visible_units="gaussian", hidden_units="relu")
    with pytest.raises(nrbm.partition.EnumerationTooLarge, match="discrete"):
        RBM(both)
    with pytest.raises(TypeError):
        ReLU().mean(jnp.zeros(3))
    assert list(itertools.islice(iter(ReLU.param_names), 1)) == ["log_gamma"]
