"""Chain statistics and convergence verdicts: values by hand, verdicts on runs that do and do
not mix."""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from conftest import Z_MAX, brute_joint_log_weights, state_index
from scipy.special import logsumexp
from test_infer import random_params

import numpyro_rbm as nrbm
from numpyro_rbm import RBMGibbs, diagnostics, partition
from numpyro_rbm.core import RBMParams
from numpyro_rbm.learning.monitors import monitor_rhat


def test_chain_statistics_match_hand_computation():
    params = random_params(8, 5, 3, 1.0)
    rng = np.random.default_rng(0)
    v = rng.integers(0, 2, size=(2, 10, 5)).astype(np.float32)
    h = rng.integers(0, 2, size=(2, 10, 3)).astype(np.float32)
    ref = np.array([1.0, 0.0, 0.0, 1.0, 1.0])
    stats = diagnostics.chain_statistics(params, v, hidden=h, reference=ref)

    V, _, table = brute_joint_log_weights(params.weights, params.visible_bias, params.hidden_bias)
    neg_f = logsumexp(table, axis=1)
    np.testing.assert_allclose(stats["free_energy"], -neg_f[state_index(v)], rtol=1e-5)
    np.testing.assert_allclose(stats["mean_activation"], v.mean(-1))
    np.testing.assert_allclose(stats["overlap"], ((2 * v - 1) * (2 * ref - 1)).mean(-1))
    W, b, c = (
        np.asarray(x, np.float64)
        for x in (params.weights, params.visible_bias, params.hidden_bias)
    )
    e = -(v @ b) - (h @ c) - np.einsum("cdi,ij,cdj->cd", v, W, h)
    np.testing.assert_allclose(stats["energy"], e, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(stats["hidden_activation"], h.mean(-1))


@pytest.mark.statistical
def test_independent_exact_draws_are_declared_converged():
    """iid draws of (v, h) from the brute-force joint: every statistic must pass.

    For N = 2000 iid draws the lag-1 autocorrelation is about N(0, 1/N); split R-hat - 1 of
    8 half-chains of 250 is about (chi2_7 / 7 - 1) / 500; the ESS estimates are about N."""
    params = random_params(9, 6, 3, 1.0)
    V, H, table = brute_joint_log_weights(params.weights, params.visible_bias, params.hidden_bias)
    p = np.exp(table - logsumexp(table)).ravel()
    idx = np.random.default_rng(0).choice(p.size, size=(4, 500), p=p)
    v, h = V[idx // H.shape[0]], H[idx % H.shape[0]]
    diag = diagnostics.chain_diagnostics(params, v, hidden=h)
    assert diag.converged, str(diag)
    assert diag.verdict.startswith("converged")
    for row in diag.table.values():
        assert abs(row["r_hat"] - 1) < 0.01 and row["ess_bulk"] > 1000
        assert abs(row["autocorr_lag1"]) < Z_MAX / np.sqrt(idx.size)
    assert "r_hat" in str(diag) and diag.verdict in str(diag)
    summary = az.summary(diag.to_inference_data())
    assert set(summary.index) == set(diag.table)


def bimodal_params(n=8, coupling=12.0):
    """Two deep modes, all units on or all off. A sweep crosses between them with probability
    1.3e-9 (by enumeration of p(h' | h) = sum_v p(v | h) p(h' | v)), so 800 sweeps cross with
    probability 1e-6; at coupling 7 it was 2.5e-5 per sweep, a 2% chance per run."""
    w = jnp.full((n, 1), coupling)
    return RBMParams(w, jnp.full((n,), -coupling / 2), jnp.full((1,), -coupling * n / 2))


def bimodal_model(params):
    numpyro.sample("pixels", nrbm.RBM(params))  # not "v": mcmc_diagnostics finds the site


@pytest.mark.statistical
def test_non_mixing_run_is_flagged():
    """Chains started in opposite modes of a bimodal RBM stay there: R-hat must say so."""
    params = bimodal_params()
    init = {"pixels": jnp.stack([jnp.ones(8), jnp.zeros(8)])}
    mcmc = numpyro.infer.MCMC(
        RBMGibbs(bimodal_model),
        num_warmup=0,
        num_samples=400,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.key(0), params, init_params=init, extra_fields=("h",))
    v = mcmc.get_samples(group_by_chain=True)["pixels"]
    assert v[0].mean() > 0.9 and v[1].mean() < 0.1  # the run really did not mix
    diag = diagnostics.mcmc_diagnostics(mcmc, reference=jnp.ones(8))
    assert not diag.converged
    assert diag.verdict.startswith("not converged")
    assert any(p.startswith("R-hat") and p.endswith("for overlap") for p in diag.problems)
    assert diag.table["overlap"]["r_hat"] > 1.5, str(diag)


@pytest.mark.statistical
def test_single_chain_is_split_and_a_trend_is_flagged():
    rng = np.random.default_rng(1)
    steady = rng.normal(size=(1, 4000))
    trending = steady + np.linspace(0, 3, 4000)[None]
    assert diagnostics.diagnose_statistics({"x": steady}).converged
    diag = diagnostics.diagnose_statistics({"x": trending})
    assert not diag.converged and "R-hat" in diag.problems[0]


def test_stuck_chains_and_bad_shapes():
    diag = diagnostics.diagnose_statistics({"free_energy": np.full((2, 50), 3.0)})
    assert not diag.converged and "never changes" in diag.verdict
    params = random_params(10, 4, 2, 1.0)
    with pytest.raises(ValueError, match="num_chains, num_draws, n_visible"):
        diagnostics.chain_statistics(params, np.zeros((10, 4)))
    with pytest.raises(ValueError, match="reference"):
        diagnostics.chain_statistics(params, np.zeros((1, 10, 4)), reference=np.zeros(3))
    with pytest.raises(ValueError, match="at least 8 draws"):
        diagnostics.diagnose_statistics({"x": np.zeros((2, 3))})


# --- the one R-hat: fit's monitor and warning, the command's verdict, chain_diagnostics ------


def ferromagnet(coupling, n=8):
    """Two modes (all units on, all off) joined through one hidden unit. Gibbs chains of the
    mean activation decorrelate in about 6 sweeps at coupling 2, 12 at 2.5 and 60 at 3.5
    (integrated autocorrelation time, ArviZ, 100 chains x 3000 sweeps); at 7 they never
    cross."""
    return RBMParams(
        jnp.full((n, 1), coupling),
        jnp.full((n,), -coupling / 2),
        jnp.full((1,), -coupling * n / 2),
    )


@jax.jit
def _equilibrium_chains(params, key):
    """100 exact samples: chains that start in equilibrium."""
    return partition.sample_exact(key, params, (100,))[0]


def monitor_rhats(params, seeds, seed=0):
    """fit's monitor R-hat (``learning.monitors.monitor_rhat``: 50 PCD-1 steps of 100 chains,
    then ``diagnostics.mixing_rhat``) of chains started in equilibrium, for ``seeds`` keys."""
    out = []
    for key in jax.random.split(jax.random.key(seed), seeds):
        k0, k1 = jax.random.split(key)
        out.append(monitor_rhat(params, _equilibrium_chains(params, k0), k1))
    return np.array(out)


def test_mixing_rhat_is_the_largest_rank_normalised_rhat():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 4, 200))
    b[:2] += 1.0  # two chains off: this statistic's R-hat is the larger
    got = diagnostics.mixing_rhat({"a": a, "b": b})
    assert got == pytest.approx(max(float(az.rhat(a)), float(az.rhat(b))), rel=1e-12)
    assert got == pytest.approx(float(az.rhat(b)), rel=1e-12) and got > 1.05
    assert diagnostics.mixing_rhat({"a": a, "frozen": np.ones((4, 200))}) == np.inf
    # the verdict uses the same statistic and threshold
    assert diagnostics.diagnose_statistics({"a": a}).table["a"]["r_hat"] == pytest.approx(
        diagnostics.mixing_rhat({"a": a}), rel=1e-12
    )


def test_ess_requirement_is_a_total_over_chains():
    """100 short chains (persistent chains) with 5000 independent draws pass; so do 4 chains
    with 600; 4 chains with 200 do not. Deterministic numpy draws with margins of many
    standard errors (ESS of iid draws is about their number)."""
    rng = np.random.default_rng(1)
    assert diagnostics.diagnose_statistics({"x": rng.normal(size=(100, 50))}).converged
    assert diagnostics.diagnose_statistics({"x": rng.normal(size=(4, 150))}).converged
    few = diagnostics.diagnose_statistics({"x": rng.normal(size=(4, 50))})
    assert not few.converged and "ESS" in few.verdict and "< 400" in few.verdict


@pytest.mark.statistical
def test_monitor_passes_mixing_chains_and_flags_stuck_ones():
    """The null distribution of the monitor's R-hat on chains that mix (tau about 6 sweeps,
    like the digits model's 4 to 10) over 100 seeds: mean 1.10, standard deviation 0.011
    (measured), so the threshold 1.3 is 17 standard deviations away: a false alarm
    probability far below 1e-9 per evaluation; we require at least Z_MAX. Chains that do not
    decorrelate within the 50 sweeps (tau about 60) and chains stuck in two modes are flagged
    at every seed."""
    limit = diagnostics.RHAT_THRESHOLD
    mixing = monitor_rhats(ferromagnet(2.0), 100)
    assert mixing.max() < limit
    assert (limit - mixing.mean()) / mixing.std() > Z_MAX, (mixing.mean(), mixing.std())
    slow = monitor_rhats(ferromagnet(3.5), 20, seed=1)  # mean 1.52, sd 0.03
    assert slow.min() > limit, slow
    # fit's monitor itself, on chains half in each mode: R-hat about 2.6
    stuck = jnp.concatenate([jnp.ones((50, 8)), jnp.zeros((50, 8))])
    assert monitor_rhat(ferromagnet(7.0), stuck, jax.random.key(0)) > 2.0
