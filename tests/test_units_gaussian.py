"""Gaussian visible units: conditionals, free energy, log Z, sampling and learning, each
checked against numerical integration or a numpy computation written independently here.

Sampler checks use Kolmogorov-Smirnov tests against the exact distribution, Bonferroni-combined
over the coordinates of one test (smallest p-value times their number > ``P_MIN``), and
z-scores below ``Z_MAX`` (conftest; tests/README.md gives each test's false-failure rate)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import P_MIN, Z_MAX
from scipy import integrate, special, stats

import numpyro_rbm as nrbm
from numpyro_rbm import io
from numpyro_rbm.core import RBMParams, free_energy, gibbs_sweep
from numpyro_rbm.distribution import RBM
from numpyro_rbm.partition import log_partition, sample_exact
from numpyro_rbm.units import Gaussian, gaussian_from_cho, gaussian_to_cho


def _model(seed=0, n_v=2, n_h=3, scale=1.2, dtype=np.float64):
    """A small Gaussian-Bernoulli RBM with non-trivial precisions; float64 numpy copies."""
    rng = np.random.default_rng(seed)
    w = scale * rng.standard_normal((n_v, n_h))
    b = 0.5 * rng.standard_normal(n_v)
    c = 0.5 * rng.standard_normal(n_h)
    log_lam = 0.6 * rng.standard_normal(n_v)
    params = RBMParams(
        *(jnp.asarray(x, dtype) for x in (w, b, c)),
        visible_units="gaussian",
        visible_unit_params={"log_precision": jnp.asarray(log_lam, dtype)},
    )
    return params, (w, b, c, np.exp(log_lam))


def _neg_energy(v, h, w, b, c, lam):
    """-E(v, h) written out: the normalised Gaussian base measure plus the bilinear terms."""
    log_mu = -0.5 * lam * v**2 + 0.5 * np.log(lam / (2 * np.pi))
    return np.sum(log_mu + b * v) + c @ h + v @ w @ h


def _mixture(w, b, c, lam):
    """p(v) = sum_h p(h) N(v; (b + W h)/lam, 1/lam): hidden states, weights, means."""
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=w.shape[1])))
    phi = b + hs @ w.T
    log_ph = hs @ c + np.sum(phi**2 / (2 * lam), axis=1)
    return hs, np.exp(log_ph - special.logsumexp(log_ph)), phi / lam, log_ph


@pytest.mark.parametrize("phi", [-7.0, -0.3, 0.0, 2.5])
@pytest.mark.parametrize("log_lam", [-1.2, 0.0, 0.9])
def test_conditional_log_partition_and_mean_match_quadrature(x64, phi, log_lam):
    unit, lam = Gaussian(), np.exp(log_lam)
    up = {"log_precision": jnp.array([log_lam])}

    def density(v):  # mu(v) e^{v phi}
        return np.exp(-0.5 * lam * v**2 + 0.5 * np.log(lam / (2 * np.pi)) + v * phi)

    z = integrate.quad(density, -np.inf, np.inf)[0]
    mean = integrate.quad(lambda v: v * density(v), -np.inf, np.inf)[0] / z
    field = jnp.array([phi])
    np.testing.assert_allclose(float(unit.log_partition(field, up)), np.log(z), atol=1e-9)
    np.testing.assert_allclose(float(unit.mean(field, up)[0]), mean, rtol=1e-7, atol=1e-12)
    # The bound layer is the same computation; an unbound call must not silently default.
    bound = unit.bind(up)
    assert float(bound.log_partition(field)) == float(unit.log_partition(field, up))
    with pytest.raises(TypeError):
        unit.log_partition(field)


@pytest.mark.statistical
def test_conditional_sampler_matches_the_gaussian(x64):
    unit = Gaussian()
    phi = jnp.array([-2.0, 0.0, 3.0])
    log_lam = jnp.array([-1.0, 0.0, 1.5])
    x = unit.sample(
        jax.random.key(0), jnp.broadcast_to(phi, (4000, 3)), {"log_precision": log_lam}
    )
    lam = np.exp(np.asarray(log_lam))
    pvalues = [  # KS against N(phi/lam, 1/lam): detects a wrong mean or variance
        stats.kstest(np.asarray(x[:, i]), stats.norm(phi[i] / lam[i], lam[i] ** -0.5).cdf).pvalue
        for i in range(3)
    ]
    assert 3 * min(pvalues) > P_MIN, pvalues


def test_free_energy_and_log_z_match_integration(x64):
    params, (w, b, c, lam) = _model()
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=3)))
    rng = np.random.default_rng(1)
    vs = rng.standard_normal((5, 2)) * 2
    brute_f = [-special.logsumexp([_neg_energy(v, h, w, b, c, lam) for h in hs]) for v in vs]
    np.testing.assert_allclose(free_energy(params, jnp.asarray(vs)), brute_f, rtol=1e-10)

    # Z by the trapezoid rule on a wide grid (spectrally accurate for these smooth, rapidly
    # decaying integrands), summing exp(-E) over the hidden states written out above.
    grid = np.linspace(-25, 25, 1001)
    v0, v1 = np.meshgrid(grid, grid, indexing="ij")
    vv = np.stack([v0.ravel(), v1.ravel()], -1)
    log_mu = -0.5 * lam * vv**2 + 0.5 * np.log(lam / (2 * np.pi))
    neg_e = (log_mu + b * vv).sum(-1)[:, None] + (hs @ c)[None] + vv @ w @ hs.T
    dens = np.exp(special.logsumexp(neg_e, axis=1)).reshape(v0.shape)
    z = np.trapezoid(np.trapezoid(dens, grid, axis=1), grid)
    np.testing.assert_allclose(float(log_partition(params)), np.log(z), rtol=1e-9)
    # The RBM distribution is normalised over R^2 and says its support is real vectors.
    rbm = RBM(params)
    assert rbm.support is nrbm.distribution.constraints.real_vector
    p = np.exp(np.asarray(rbm.log_prob(jnp.asarray(vv)))).reshape(v0.shape)
    np.testing.assert_allclose(np.trapezoid(np.trapezoid(p, grid, axis=1), grid), 1.0, rtol=1e-9)


def test_log_z_in_higher_dimension_matches_the_analytic_mixture(x64):
    params, (w, b, c, lam) = _model(seed=3, n_v=7, n_h=5)
    _, _, _, log_ph = _mixture(w, b, c, lam)
    np.testing.assert_allclose(float(log_partition(params)), special.logsumexp(log_ph), rtol=1e-10)
    # Batched parameters (a batch axis on the unit parameters only) give one value per RBM.
    log_lams = jnp.stack([params.visible_unit_params["log_precision"], jnp.zeros(7)])
    batched = params.replace(visible_unit_params={"log_precision": log_lams})
    assert batched.batch_shape == (2,)
    np.testing.assert_allclose(log_partition(batched)[0], special.logsumexp(log_ph), rtol=1e-10)
    _, _, _, log_ph1 = _mixture(w, b, c, np.ones(7))
    np.testing.assert_allclose(log_partition(batched)[1], special.logsumexp(log_ph1), rtol=1e-10)


def _mixture_cdf(x, coord, weights, means, lam):
    return np.sum(
        weights * stats.norm.cdf(x[:, None], means[:, coord], 1 / np.sqrt(lam[coord])), 1
    )


def _mixture_ks_pvalue(v, weights, means, lam):
    """Bonferroni-combined KS p-value of every coordinate of ``v`` against the mixture."""
    pvalues = [
        stats.kstest(v[:, k], lambda x, k=k: _mixture_cdf(x, k, weights, means, lam)).pvalue
        for k in range(v.shape[1])
    ]
    return min(1.0, v.shape[1] * min(pvalues))


@pytest.mark.statistical
@pytest.mark.parametrize("how", ["exact", "gibbs"])
def test_samples_match_the_exact_mixture(x64, how):
    params, (w, b, c, lam) = _model(seed=0, scale=0.9)
    _, weights, means, _ = _mixture(w, b, c, lam)
    n = 3000
    if how == "exact":
        v = np.asarray(sample_exact(jax.random.key(0), params, (n,))[0])
    else:  # independent chains, 60 block-Gibbs sweeps each from p(v | h = 0): the chain of h
        # has second eigenvalue 0.25 (by quadrature), so 60 sweeps leave a bias below 1e-30
        rbm = RBM(params, log_z=None, num_gibbs_sweeps=60, max_units=1)  # force Gibbs
        assert not rbm.exact_sampling
        v = np.asarray(rbm.sample(jax.random.key(0), (n,)))
    assert _mixture_ks_pvalue(v, weights, means, lam) > P_MIN
    # Second moments: the mixture's covariance, within Z_MAX standard errors per entry.
    cov_exact = np.diag(1 / lam) + np.einsum("k,ki,kj->ij", weights, means, means)
    mean_exact = weights @ means
    cov_exact -= np.outer(mean_exact, mean_exact)
    prod = (v - mean_exact)[:, :, None] * (v - mean_exact)[:, None, :]
    se = prod.std(0) / np.sqrt(n)
    assert np.all(np.abs(prod.mean(0) - cov_exact) < Z_MAX * se + 1e-12)


@pytest.mark.statistical
def test_a_sampler_with_the_wrong_variance_is_detected(x64):
    """Power of the check above: draws with variance 1/lam^2 instead of 1/lam fail it."""
    params, (w, b, c, lam) = _model(seed=0, scale=0.9)
    _, weights, means, _ = _mixture(w, b, c, lam)
    rng = np.random.default_rng(0)
    k = rng.choice(len(weights), size=3000, p=weights)
    v = means[k] + rng.standard_normal((3000, 2)) / lam
    assert _mixture_ks_pvalue(v, weights, means, lam) < P_MIN


def test_gibbs_sweep_keeps_the_precision_gradient_and_cho_coordinates(x64):
    params, (w, b, c, lam) = _model()
    # The learnt leaf gets a gradient: d F / d log lam_i = lam_i v_i^2 / 2 - 1/2.
    v = jnp.array([[0.3, -1.1]])
    grad = jax.grad(lambda p: jnp.sum(free_energy(p, v)))(params)
    np.testing.assert_allclose(
        grad.visible_unit_params["log_precision"], lam * np.asarray(v[0]) ** 2 / 2 - 0.5
    )
    # Cho et al.'s coordinates describe the same conditionals: N(b^C + W^C h, sigma^2), and
    # hidden field c + W^C^T (v / sigma^2).
    w_cho, b_cho, sigma2 = gaussian_to_cho(
        params.weights, params.visible_bias, params.visible_unit_params["log_precision"]
    )
    h = jnp.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(nrbm.core.visible_mean(params, h), b_cho + w_cho @ h)
    np.testing.assert_allclose(sigma2, 1 / lam)
    np.testing.assert_allclose(
        nrbm.core.hidden_field(params, v[0]), params.hidden_bias + w_cho.T @ (v[0] / sigma2)
    )
    back = gaussian_from_cho(w_cho, b_cho, sigma2)
    for x, y in zip(back, (params.weights, params.visible_bias, np.log(lam)), strict=True):
        np.testing.assert_allclose(x, y)
    v2, h2 = gibbs_sweep(jax.random.key(0), params, v)
    assert v2.shape == (1, 2) and h2.shape == (1, 3) and bool(jnp.all(jnp.isfinite(v2)))


def test_save_and_load_keep_the_unit_parameters(tmp_path):
    params, _ = _model(dtype=np.float32)
    io.save_params(tmp_path / "g.npz", params)
    loaded, _ = io.load_params(tmp_path / "g.npz")
    assert loaded.visible_units == Gaussian()
    np.testing.assert_array_equal(
        loaded.visible_unit_params["log_precision"], params.visible_unit_params["log_precision"]
    )
    np.testing.assert_array_equal(
        free_energy(loaded, jnp.ones(2)), free_energy(params, jnp.ones(2))
    )


def test_infinite_data_is_rejected_naming_row_and_column():
    """An infinite value is an error naming it (NaN is a missing entry for ``fit``, which
    samples it: tests/test_missing.py; the unit type's own check still refuses it)."""
    data = np.random.default_rng(0).normal(size=(12, 3))
    data[4, 1] = np.inf
    with pytest.raises(ValueError, match=r"row 4, column 1: is not finite"):
        nrbm.fit(data, 2, visible_units="gaussian", batch_size=4, progress=False)
    data[4, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 4, column 1"):
        Gaussian().prepare_data(data)


def _fit_errors(seed):
    """One replicate: PCD with a learnt precision on 4000 exact draws (key 1 + 1000 seed) from a
    known Gaussian-Bernoulli RBM. Returns the fitted model's largest error of its exact mean
    and of its exact covariance (relative to the data's largest covariance entry), both
    against the data, and its log-likelihood deficit to the generating model on the data."""
    with jax.enable_x64(True):
        true, _ = _model(seed=5, n_v=3, n_h=2, scale=1.3)
        data = np.asarray(sample_exact(jax.random.key(1 + 1000 * seed), true, (4000,))[0])
        true_ll = float(jnp.mean(RBM(true).log_prob(jnp.asarray(data))))
    fit = nrbm.fit(
        data, 2, visible_units="gaussian", epochs=40, batch_size=50, learning_rate=0.02,
        l1_decay=0.0, eval_every=None, progress=False, seed=seed,  # maximum likelihood
    )  # fmt: skip
    p = fit.params
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p)
        fitted_ll = float(jnp.mean(RBM(p64).log_prob(jnp.asarray(data))))
        wf, bf, cf = (
            np.asarray(x, np.float64) for x in (p.weights, p.visible_bias, p.hidden_bias)
        )
        lamf = np.exp(np.asarray(p.visible_unit_params["log_precision"], np.float64))
    _, weights, means, _ = _mixture(wf, bf, cf, lamf)
    mean_fit = weights @ means
    cov_fit = np.diag(1 / lamf) + np.einsum("k,ki,kj->ij", weights, means, means)
    cov_fit -= np.outer(mean_fit, mean_fit)
    cov = np.cov(data.T)
    return (
        np.abs(mean_fit - data.mean(0)).max(),
        np.abs(cov_fit - cov).max() / np.abs(cov).max(),
        true_ll - fitted_ll,
    )


@pytest.mark.statistical
def test_fit_recovers_the_generating_model_statistics():
    """Five independent replicates (data and PCD seeds 0-4) of ``_fit_errors``: the median
    over replicates of the mean error is below 0.05, of the relative covariance error below
    0.05 and of the log-likelihood deficit below 0.01 nats. Over 200 replicates (seeds 0-199)
    a replicate's errors were 0.0089 +- 0.0048 (max 0.024), 0.011 +- 0.005 (max 0.027) and
    -0.0008 +- 0.0006 nats (max 0.0009); none crossed a threshold, so a replicate does with
    probability q < 1.5% (95% bound), and the median fails only if three of five do: at most
    10 q^3 = 3.4e-5. A sampler with the wrong variance fails it (tests/README.md)."""
    errors = np.median([_fit_errors(seed) for seed in range(5)], axis=0)
    assert np.all(errors < [0.05, 0.05, 0.01]), errors


@pytest.mark.statistical
@pytest.mark.slow  # the same Gibbs check runs by default through RBM.sample (above)
def test_rbm_gibbs_kernel_samples_the_gaussian_prior():
    """RBMGibbs on a Gaussian-visible RBM site (prior update): 500 vectorized chains after 60
    warmup sweeps match the exact mixture by a KS test per coordinate."""
    import numpyro
    from numpyro.infer import MCMC

    params, (w, b, c, lam) = _model(seed=0, scale=0.9, dtype=np.float32)
    _, weights, means, _ = _mixture(w, b, c, lam)
    rbm = RBM(params)

    def model():
        numpyro.sample("v", rbm)

    mcmc = MCMC(
        nrbm.RBMGibbs(model), num_warmup=60, num_samples=1, num_chains=1000,
        chain_method="vectorized", progress_bar=False,
    )  # fmt: skip
    mcmc.run(jax.random.key(3))
    v = np.asarray(mcmc.get_samples()["v"], np.float64).reshape(-1, 2)
    assert _mixture_ks_pvalue(v, weights, means, lam) > P_MIN
