"""RBMGibbs against exact enumeration: prior, posterior with a likelihood, Gibbs with NUTS.

Goodness of fit. MCMC draws are correlated, so the G statistic of the state counts is computed
on counts scaled by ``ESS / N`` (the smallest bulk ESS of the free energy and the mean
activation, capped at N): for correlated draws the multinomial statistic is inflated by about
the integrated autocorrelation time ``N / ESS``, and the scaled statistic is again about
chi-square. A test passes when the p-value exceeds 1e-3 (a correct sampler fails one such
check in a thousand; the fixed seeds make the outcome reproducible). A broken sampler is off
by far more: the prior-only sweep on a posterior gives p < 1e-12 below.

Compile time dominates, so each MCMC configuration runs once per module (fixtures) and the
checks on its draws (fit, ArviZ conversion, diagnostics) share it.
"""

import textwrap

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import ROOT, brute_joint_table, g_test_pvalue, run_with_host_devices, state_index
from numpyro.infer import MCMC, NUTS, Gibbs
from scipy.special import logsumexp
from scipy.stats import beta as beta_dist

import numpyro_rbm as nrbm
from numpyro_rbm import RBMGibbs, diagnostics
from numpyro_rbm.core import RBMParams, free_energy

P_MIN = 1e-3


def random_params(seed, n_v, n_h, scale, units="bernoulli"):
    rng = np.random.default_rng(seed)
    return RBMParams(
        jnp.asarray(scale * rng.normal(size=(n_v, n_h)), jnp.float32),
        jnp.asarray(0.5 * rng.normal(size=n_v), jnp.float32),
        jnp.asarray(0.5 * rng.normal(size=n_h), jnp.float32),
        visible_units=units,
        hidden_units=units,
    )


def exact_log_p(params):
    """Exact log p(v) over brute_states(n_visible) order, from the brute-force table."""
    _, _, table = brute_joint_table(params)
    log_pv = logsumexp(table, axis=1)
    return log_pv - logsumexp(log_pv)


def ess_ratio(params, v):
    """min(ESS, N) / N over the free energy and the mean activation of draws (C, D, n)."""
    stats = diagnostics.chain_statistics(params, v)
    n = v.shape[0] * v.shape[1]
    ess = min(float(az.ess(stats[k])) for k in ("free_energy", "mean_activation"))
    return min(ess, n) / n


def mcmc_gof_pvalue(params, v, log_p, units="bernoulli"):
    """ESS-scaled G-test p-value of draws ``v`` (C, D, n) against exact ``log_p`` (2^n,)."""
    v = np.asarray(v)
    counts = np.bincount(state_index(v.reshape(-1, v.shape[-1]), units), minlength=log_p.size)
    expected = counts.sum() * np.exp(log_p)
    r = ess_ratio(params, v)
    return g_test_pvalue(counts * r, expected * r)


def prior_model(params):
    v = numpyro.sample("v", nrbm.RBM(params))
    numpyro.deterministic("m", jnp.mean(v, -1))


def run(
    kernel,
    *args,
    num_chains=1,
    chain_method="sequential",
    num_warmup=200,
    num_samples=1500,
    seed=0,
    extra_fields=(),
    **kwargs,
):
    mcmc = MCMC(
        kernel,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=False,
        **kwargs,
    )
    mcmc.run(jax.random.key(seed), *args, extra_fields=extra_fields)
    return mcmc


STRONG = random_params(0, 5, 3, 2.5)  # strongly coupled: single-sweep mixing is slow
SPIN = random_params(1, 5, 3, 1.0, "spin")


@pytest.fixture(scope="module")
def prior_runs():
    """One run per chain method on the strongly coupled RBM (and one on spins)."""
    return {
        "sequential": (
            STRONG,
            run(
                RBMGibbs(prior_model),
                STRONG,
                num_chains=2,
                num_samples=3000,
                extra_fields=("h", "free_energy"),
            ),
        ),
        "vectorized": (
            STRONG,
            run(
                RBMGibbs(prior_model, num_sweeps=2),
                STRONG,
                num_chains=4,
                chain_method="vectorized",
                extra_fields=("h",),
            ),
        ),
        "spin-vectorized": (
            SPIN,
            # spins mix slowly between mirror-image modes (ESS/N ~ 0.15): more draws
            run(
                RBMGibbs(prior_model),
                SPIN,
                num_chains=4,
                chain_method="vectorized",
                num_samples=5000,
            ),
        ),
    }


@pytest.mark.parametrize("method", ["sequential", "vectorized", "spin-vectorized"])
def test_prior_matches_exact_distribution(prior_runs, method):
    params, mcmc = prior_runs[method]
    v = mcmc.get_samples(group_by_chain=True)["v"]
    assert v.shape[:2] == (mcmc.num_chains, mcmc.num_samples)
    p = mcmc_gof_pvalue(params, v, exact_log_p(params), params.visible_units.name)
    assert p > P_MIN, f"{method}: G-test p = {p:.2e}"


@pytest.mark.parametrize("method", ["sequential", "vectorized", "spin-vectorized"])
def test_arviz_and_diagnostics_on_every_chain_method(prior_runs, method):
    params, mcmc = prior_runs[method]
    idata = az.from_numpyro(mcmc)
    assert idata.posterior["v"].shape == (mcmc.num_chains, mcmc.num_samples, 5)
    assert idata.sample_stats["lp"].shape == (mcmc.num_chains, mcmc.num_samples)
    diag = diagnostics.mcmc_diagnostics(mcmc)
    assert set(diag.table) >= {"free_energy", "mean_activation"}
    assert diag.converged, str(diag)
    az.summary(diag.to_inference_data())


def test_extra_fields_and_deterministic_sites(prior_runs):
    _, mcmc = prior_runs["sequential"]
    samples = mcmc.get_samples(group_by_chain=True)
    extra = mcmc.get_extra_fields(group_by_chain=True)
    v = samples["v"]
    np.testing.assert_allclose(samples["m"], v.mean(-1), rtol=1e-6)
    np.testing.assert_allclose(extra["free_energy"], free_energy(STRONG, v), rtol=1e-5, atol=1e-5)
    h = extra["h"]
    assert h.shape == v.shape[:2] + (3,)
    # v was drawn from p(v | h): each v_i = 1 must have had positive probability, and over the
    # run the frequency of v_i = 1 given h matches sigmoid(b + W h) (exact conditional)
    probs = jax.nn.sigmoid(STRONG.visible_bias + h @ STRONG.weights.T)
    resid = np.asarray(v - probs).reshape(-1, 5)
    se = np.sqrt(np.asarray(probs * (1 - probs)).reshape(-1, 5).sum(0)) / resid.shape[0]
    assert np.all(np.abs(resid.mean(0)) < 5 * se + 1e-9)


def test_thinning_post_warmup_state_and_print_summary(capsys):
    mcmc = run(
        RBMGibbs(prior_model),
        STRONG,
        num_warmup=50,
        num_samples=100,
        thinning=4,
        extra_fields=("i",),
    )
    assert mcmc.get_samples()["v"].shape == (25, 5)
    first = mcmc.get_extra_fields()["i"]
    np.testing.assert_array_equal(first, np.arange(54, 151, 4))  # thinned step counters
    mcmc.post_warmup_state = mcmc.last_state
    mcmc.run(mcmc.post_warmup_state.rng_key, STRONG, extra_fields=("i",))
    np.testing.assert_array_equal(mcmc.get_extra_fields()["i"], np.arange(154, 251, 4))
    mcmc.print_summary()
    out = capsys.readouterr().out
    assert "r_hat" in out and "v[4]" in out


def test_parallel_chain_method_in_subprocess(tmp_path):
    """chain_method="parallel" on two forced host devices, in a fresh interpreter."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import arviz as az, jax, numpy as np
        from numpyro.infer import MCMC
        from test_infer import STRONG, prior_model
        from numpyro_rbm import RBMGibbs, diagnostics
        assert jax.local_device_count() == 2
        mcmc = MCMC(RBMGibbs(prior_model), num_warmup=200, num_samples=2000, num_chains=2,
                    chain_method="parallel", progress_bar=False)
        mcmc.run(jax.random.key(3), STRONG)
        v = mcmc.get_samples(group_by_chain=True)["v"]
        idata = az.from_numpyro(mcmc)
        diag = diagnostics.mcmc_diagnostics(mcmc)
        np.save({str(tmp_path / "v.npy")!r}, np.asarray(v))
        print(json.dumps(dict(shape=list(idata.posterior["v"].shape),
                              converged=bool(diag.converged), verdict=diag.verdict)))
    """)
    result = run_with_host_devices(script, 2, timeout=300)
    assert result["shape"] == [2, 2000, 5]
    assert result["converged"], result["verdict"]
    v = np.load(tmp_path / "v.npy")
    p = mcmc_gof_pvalue(STRONG, v, exact_log_p(STRONG))
    assert p > P_MIN, f"parallel: G-test p = {p:.2e}"


# --- posterior: an RBM prior with a likelihood on v --------------------------------------

NOISY = random_params(2, 5, 3, 1.5)
Y = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0])
EPS = 0.2


def noisy_model(params, y, eps=EPS):
    v = numpyro.sample("v", nrbm.RBM(params))
    numpyro.sample("y", dist.Bernoulli(probs=jnp.where(v == 1, 1 - eps, eps)).to_event(1), obs=y)


def exact_noisy_posterior(params, y, eps):
    from conftest import brute_states

    V = brute_states(5)
    loglik = np.sum(np.where(V == y[None], np.log1p(-eps), np.log(eps)), axis=1)
    log_post = exact_log_p(params) + loglik
    return log_post - logsumexp(log_post)


@pytest.fixture(scope="module")
def posterior_runs():
    y = np.asarray(Y)
    return {
        update: run(
            RBMGibbs(noisy_model, update=update),
            NOISY,
            Y,
            num_chains=4,
            chain_method="vectorized",
            num_samples=1500,
            extra_fields=extra,
        )
        for update, extra in (
            ("metropolis", ("accept_prob", "log_likelihood", "free_energy")),
            ("factorized", ()),
            ("prior", ()),
        )
    } | {"exact": exact_noisy_posterior(NOISY, y, EPS)}


def test_auto_update_resolves_from_the_model():
    kernel = RBMGibbs(noisy_model)
    kernel.init(jax.random.key(0), 0, None, (NOISY, Y), {})
    assert kernel.update == "metropolis"
    kernel = RBMGibbs(prior_model)
    kernel.init(jax.random.key(0), 0, None, (NOISY,), {})
    assert kernel.update == "prior"


@pytest.mark.parametrize("update", ["metropolis", "factorized"])
def test_posterior_matches_exact_posterior(posterior_runs, update):
    v = posterior_runs[update].get_samples(group_by_chain=True)["v"]
    p = mcmc_gof_pvalue(NOISY, v, posterior_runs["exact"])
    assert p > P_MIN, f"{update}: G-test p = {p:.2e}"


def test_prior_only_sweep_fails_the_posterior_check(posterior_runs):
    """The check has power: bare sweeps sample the prior, which the G-test rejects."""
    v = posterior_runs["prior"].get_samples(group_by_chain=True)["v"]
    p = mcmc_gof_pvalue(NOISY, v, posterior_runs["exact"])
    assert p < 1e-12, f"prior-only sweep passed the posterior check (p = {p:.2e})"
    # and it does match the prior
    assert mcmc_gof_pvalue(NOISY, v, exact_log_p(NOISY)) > P_MIN


def test_metropolis_fields_are_consistent(posterior_runs):
    mcmc = posterior_runs["metropolis"]
    v = mcmc.get_samples(group_by_chain=True)["v"]
    extra = mcmc.get_extra_fields(group_by_chain=True)
    eps = EPS
    loglik = jnp.sum(jnp.where(v == Y, jnp.log1p(-eps), jnp.log(eps)), -1)
    np.testing.assert_allclose(extra["log_likelihood"], loglik, rtol=1e-5)
    np.testing.assert_allclose(extra["free_energy"], free_energy(NOISY, v), rtol=1e-5, atol=1e-5)
    acc = np.asarray(extra["accept_prob"])
    assert np.all((acc >= 0) & (acc <= 1)) and 0.05 < acc.mean() < 1.0


# --- inside numpyro.infer.Gibbs with NUTS on a continuous site ----------------------------

A, B = 2.0, 6.0  # Beta prior of the flip rate


def unknown_noise_model(params, y):
    eps = numpyro.sample("eps", dist.Beta(A, B))
    v = numpyro.sample("v", nrbm.RBM(params))
    numpyro.sample("y", dist.Bernoulli(probs=jnp.where(v == 1, 1 - eps, eps)).to_event(1), obs=y)


def exact_unknown_noise_posterior(params, y, grid_size=20000):
    """p(v | y) and E[eps | y] by enumeration of v and midpoint quadrature over eps."""
    from conftest import brute_states

    V = brute_states(5)
    eps = (np.arange(grid_size) + 0.5) / grid_size
    agree = (V == np.asarray(y)[None]).sum(1)  # (32,)
    n = V.shape[1]
    log_joint = (
        exact_log_p(params)[:, None]
        + beta_dist.logpdf(eps, A, B)[None]
        + agree[:, None] * np.log1p(-eps)[None]
        + (n - agree)[:, None] * np.log(eps)[None]
    )
    log_joint -= logsumexp(log_joint)
    post_v = logsumexp(log_joint, axis=1)
    eps_mean = float(np.sum(np.exp(logsumexp(log_joint, axis=0)) * eps))
    return post_v, eps_mean


@pytest.mark.parametrize(
    "update", ["metropolis", pytest.param("factorized", marks=pytest.mark.slow)]
)
def test_gibbs_with_nuts_matches_exact_posterior(update):
    kernel = Gibbs(
        [(RBMGibbs(unknown_noise_model, update=update), ["v"]), (NUTS(unknown_noise_model), None)]
    )
    mcmc = run(kernel, NOISY, Y, num_warmup=300, num_samples=2000, seed=1)
    samples = mcmc.get_samples(group_by_chain=True)
    post_v, eps_mean = exact_unknown_noise_posterior(NOISY, Y)
    p = mcmc_gof_pvalue(NOISY, samples["v"], post_v)
    assert p > P_MIN, f"Gibbs({update}) + NUTS: G-test p = {p:.2e}"
    eps = np.asarray(samples["eps"])
    mcse = float(az.mcse(eps))
    assert abs(eps.mean() - eps_mean) < 4 * mcse, (eps.mean(), eps_mean, mcse)
    idata = az.from_numpyro(mcmc)
    assert set(idata.posterior.data_vars) >= {"v", "eps"}


def test_refresh_recomputes_the_cached_likelihood():
    """Gibbs changes eps between RBM steps: refresh must re-evaluate log L(v) under it."""
    from numpyro.infer.gibbs import conditioned, with_conditioning

    kernel = RBMGibbs(unknown_noise_model).wrap_model(conditioned)
    v = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0])  # agrees with Y in 3 of 5 units

    def loglik(eps):
        return 3 * np.log1p(-eps) + 2 * np.log(eps) + dist.Beta(A, B).log_prob(eps)

    state = kernel.init(
        jax.random.key(0), 0, {"v": v}, (NOISY, Y), with_conditioning({}, {"eps": jnp.array(0.1)})
    )
    np.testing.assert_allclose(state.log_likelihood, loglik(0.1), rtol=1e-5)
    state = kernel.refresh(state, (NOISY, Y), with_conditioning({}, {"eps": jnp.array(0.4)}))
    np.testing.assert_allclose(state.log_likelihood, loglik(0.4), rtol=1e-5)
    np.testing.assert_allclose(
        state.potential_energy, free_energy(NOISY, v) - loglik(0.4), rtol=1e-5
    )


# --- errors ---------------------------------------------------------------------------------


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="update must be one of"):
        RBMGibbs(prior_model, update="exact")
    with pytest.raises(ValueError, match="num_sweeps"):
        RBMGibbs(prior_model, num_sweeps=0)
    with pytest.raises(ValueError, match="Gibbs"):
        RBMGibbs(unknown_noise_model).init(jax.random.key(0), 0, None, (NOISY, Y), {})

    def no_rbm():
        numpyro.sample("x", dist.Normal())

    with pytest.raises(ValueError, match="one latent RBM site"):
        RBMGibbs(no_rbm).init(jax.random.key(0), 0, None, (), {})
    with pytest.raises(ValueError, match="not a latent RBM sample site"):
        RBMGibbs(prior_model, site="w").init(jax.random.key(0), 0, None, (STRONG,), {})
