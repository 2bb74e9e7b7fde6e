"""Gaussian and Potts visible units in the adapters: inpainting (ClampedRBM, RBMGibbs with a
clamp) against the exact conditionals, and the pseudo-log-likelihood against enumeration and
numerical integration. References are float64 numpy, written out here: enumeration of the
hidden states for the analytic Gaussian mixture, enumeration of every sequence for Potts."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from conftest import P_MIN, g_test_pvalue
from scipy import integrate, stats
from scipy.special import logsumexp

import numpyro_rbm as nrbm
from numpyro_rbm import ClampedRBM, RBMGibbs
from numpyro_rbm.core import RBMParams
from numpyro_rbm.learning import site_log_conditionals
from numpyro_rbm.units import Potts

Q, SITES = 3, 3
HIDDEN = np.array(list(itertools.product([0.0, 1.0], repeat=3)))  # 2^3 hidden states


def gaussian_params(seed=0, n_v=3, n_h=3, scale=0.8, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    return RBMParams(
        jnp.asarray(scale * rng.normal(size=(n_v, n_h)), dtype),
        jnp.asarray(0.5 * rng.normal(size=n_v), dtype),
        jnp.asarray(0.5 * rng.normal(size=n_h), dtype),
        visible_units="gaussian",
        visible_unit_params={"log_precision": jnp.asarray(0.4 * rng.normal(size=n_v), dtype)},
    )


def potts_params(seed=1, n_h=2, scale=1.2, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    n_v = SITES * Q
    return RBMParams(
        jnp.asarray(scale * rng.normal(size=(n_v, n_h)), dtype),
        jnp.asarray(0.7 * rng.normal(size=n_v), dtype),
        jnp.asarray(0.5 * rng.normal(size=n_h), dtype),
        visible_units=Potts(Q),
    )


def as_np(params):
    return [np.asarray(x, np.float64) for x in (params.weights, params.visible_bias,
                                                params.hidden_bias)]  # fmt: skip


# --- references ----------------------------------------------------------------------------------

SEQUENCES = np.array(list(itertools.product(range(Q), repeat=SITES)))  # all 27


def potts_log_weights(params):
    """-F(x) of every sequence, the hidden states summed explicitly."""
    w, b, c = as_np(params)
    onehot = np.eye(Q)[SEQUENCES].reshape(len(SEQUENCES), -1)
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=w.shape[1])))
    return logsumexp((onehot @ b)[:, None] + (hs @ c)[None] + onehot @ w @ hs.T, axis=1)


def gaussian_hidden_weights(params, v_clamped, free):
    """Per hidden state h: log of the unnormalised weight of h given the clamped units,
    c'h + sum_F phi_F(h)^2 / (2 lam_F), and the free units' means phi_F(h) / lam_F."""
    w, b, c = as_np(params)
    lam = np.exp(np.asarray(params.visible_unit_params["log_precision"], np.float64))
    clamped = ~free
    c_eff = c + v_clamped[clamped] @ w[clamped]
    phi = b[free][None] + HIDDEN @ w[free].T  # (H, n_free)
    log_w = HIDDEN @ c_eff + np.sum(phi**2 / (2 * lam[free]), axis=1)
    return log_w, phi / lam[free], lam[free]


# --- inpainting ----------------------------------------------------------------------------------


def test_potts_clamp_log_prob_and_log_partition_are_the_exact_conditional(x64):
    params = potts_params()
    mask = np.array([False, True, False])
    values = np.array([-1, 2, 7])  # free entries are ignored, even outside 0 .. q-1
    dist = ClampedRBM(params, mask, values)
    log_w = potts_log_weights(params)
    consistent = SEQUENCES[:, 1] == 2
    cond = log_w - logsumexp(log_w[consistent])
    lp = np.asarray(dist.log_prob(jnp.asarray(SEQUENCES)))
    np.testing.assert_allclose(lp[consistent], cond[consistent], rtol=1e-10)
    assert np.all(np.isneginf(lp[~consistent]))
    kappa = float(params.visible_bias[1 * Q + 2])  # the clamped site's own term b_{1,2}
    log_z_c = logsumexp(log_w[consistent]) - kappa
    np.testing.assert_allclose(dist.log_partition(), log_z_c, rtol=1e-12)
    np.testing.assert_allclose(nrbm.clamped_log_partition(params, mask, values), log_z_c)
    assert dist.event_shape == (SITES,) and dist.clamp_mask.shape == (SITES * Q,)
    # the conditional RBM that exact sampling draws from: its free energy is the conditional's
    layer = Potts(Q).one_hot(jnp.asarray(SEQUENCES[consistent]), jnp.float64)
    neg_f = -np.asarray(nrbm.free_energy(dist.conditional_params, layer))
    np.testing.assert_allclose(neg_f - logsumexp(neg_f), cond[consistent], rtol=1e-10)
    draws = np.asarray(dist.sample(jax.random.key(0), (50,)))
    assert draws.shape == (50, SITES) and np.all(draws[:, 1] == 2)


def test_gaussian_clamp_log_prob_is_the_analytic_mixture(x64):
    """p(v_F | v_C) = sum_h p(h | v_C) N(v_F; phi_F(h) / lam_F, 1 / lam_F), for one and for
    two free units, and log Z_C = log sum_h exp(c'h + sum_F phi_F(h)^2 / 2 lam_F)."""
    params = gaussian_params()
    rng = np.random.default_rng(5)
    for mask in (np.array([True, False, True]), np.array([False, True, False])):
        free = ~mask
        values = np.array([0.7, np.nan, -1.3]) if mask[0] else np.array([np.nan, 0.4, np.nan])
        dist = ClampedRBM(params, mask, values)
        log_w, means, lam = gaussian_hidden_weights(params, np.nan_to_num(values), free)
        np.testing.assert_allclose(dist.log_partition(), logsumexp(log_w), rtol=1e-12)
        v = np.tile(np.where(mask, values, 0.0), (50, 1))
        v[:, free] = rng.normal(0.0, 2.0, size=(50, free.sum()))
        log_n = stats.norm.logpdf(v[:, None, free], means[None], 1 / np.sqrt(lam)).sum(-1)
        exact = logsumexp(log_w - logsumexp(log_w) + log_n, axis=1)
        np.testing.assert_allclose(dist.log_prob(jnp.asarray(v)), exact, rtol=1e-10)
        neg_f = -np.asarray(nrbm.free_energy(dist.conditional_params, jnp.asarray(v)))
        np.testing.assert_allclose(np.diff(neg_f), np.diff(exact), rtol=1e-9)  # what sample draws
        v[0, mask] += 0.1  # disagrees with the clamp
        assert np.isneginf(dist.log_prob(jnp.asarray(v[0])))


def test_clamping_refuses_values_a_site_cannot_take():
    with pytest.raises(ValueError, match=r"potts states \(an integer sequence"):
        ClampedRBM(potts_params(dtype=jnp.float32), np.array([True, False, False]),
                   np.array([1.5, 0, 0]))  # fmt: skip
    with pytest.raises(ValueError, match="gaussian states"):
        ClampedRBM(gaussian_params(dtype=jnp.float32), np.array([True, False, False]),
                   np.array([np.nan, 0, 0]))  # fmt: skip
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\), one entry per visible site"):
        ClampedRBM(potts_params(dtype=jnp.float32), np.ones(9, bool), np.zeros(9))


def exact_potts_sweep(params, mask, values):
    """The clamped block-Gibbs sweep over the free sequences: (free sequences, K)."""
    w, b, c = as_np(params)
    free_seqs = SEQUENCES[np.all(np.where(mask, SEQUENCES == values, True), axis=1)]
    onehot = np.eye(Q)[free_seqs].reshape(len(free_seqs), -1)
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=w.shape[1])))
    log_ph = hs @ c + onehot @ w @ hs.T  # (X, H): p(h | x) up to a per-row constant
    p_h = np.exp(log_ph - logsumexp(log_ph, axis=1, keepdims=True))
    log_px = onehot @ b + (onehot @ w @ hs.T).T  # (H, X): p(x_F | h) over the free sequences
    p_x = np.exp(log_px - logsumexp(log_px, axis=1, keepdims=True))
    return free_seqs, p_h @ p_x


def inpaint(params, mask, values):
    numpyro.sample("v", ClampedRBM(params, mask, values, log_z=None))


def final_states(params, mask, values, num_chains, num_sweeps, seed):
    """The state of ``num_chains`` independent RBMGibbs chains after ``num_sweeps`` sweeps
    from the kernel's random start (one MCMC step of ``num_sweeps`` sweeps, no warmup)."""
    mcmc = numpyro.infer.MCMC(
        RBMGibbs(inpaint, num_sweeps=num_sweeps), num_warmup=0, num_samples=1,
        num_chains=num_chains, chain_method="vectorized", progress_bar=False,
    )  # fmt: skip
    mcmc.run(jax.random.key(seed), params, jnp.asarray(mask), jnp.asarray(values))
    return np.asarray(mcmc.get_samples()["v"])


@pytest.mark.statistical
def test_potts_rbmgibbs_inpainting_follows_the_exact_chain():
    """RBMGibbs on a clamped Potts site: 2000 independent chains after 3 sweeps from uniform
    random sequences, against the exact law of that chain, pi_0 K^3 (K: the clamped sweep
    over the 9 free sequences, by enumeration), so no mixing is assumed (G-test)."""
    params = potts_params(dtype=jnp.float32)
    mask, values = np.array([False, True, False]), np.array([0, 2, 0])
    free_seqs, kernel = exact_potts_sweep(params, mask, values)
    index = {tuple(s): i for i, s in enumerate(free_seqs)}
    n = 2000
    chains = final_states(params, mask, values, n, 3, seed=1)
    assert np.all(chains[:, 1] == 2)
    counts = np.bincount([index[tuple(s)] for s in chains], minlength=len(free_seqs))
    law = np.full(len(free_seqs), 1 / len(free_seqs)) @ np.linalg.matrix_power(kernel, 3)
    assert g_test_pvalue(counts, n * law) > P_MIN


def gaussian_chain_law(params, mask, values, num_sweeps):
    """Law of the free unit after ``num_sweeps`` clamped sweeps from the kernel's random start
    v_F ~ N(b_F / lam_F, 1 / lam_F): hidden-state weights P(h_T), by quadrature over v_F (one
    free unit), then the mixture sum_h P(h_T) N(phi(h) / lam, 1 / lam)."""
    w, b, c = as_np(params)
    free = ~mask
    _, means, lam = gaussian_hidden_weights(params, values, free)
    sd = 1 / np.sqrt(lam[0])
    grid = np.linspace(-15, 15, 6001)  # the means lie within +-3: the tails are < 1e-20
    dv = grid[1] - grid[0]
    field = c + values[mask] @ w[mask] + grid[:, None] * w[free]  # (G, n_h)
    log_ph = HIDDEN @ field.T - np.sum(np.logaddexp(0, field), axis=1)  # (H, G): p(h | v)
    p_h_given_v = np.exp(log_ph)
    start = stats.norm.pdf(grid, b[free][0] / lam[0], sd) * dv
    p_h = p_h_given_v @ start  # after the first half-sweep
    p_v_given_h = stats.norm.pdf(grid[None], means, sd) * dv  # (H, G)
    for _ in range(num_sweeps - 1):
        p_h = p_h_given_v @ (p_h @ p_v_given_h)
    np.testing.assert_allclose(p_h.sum(), 1.0, atol=1e-9)
    return lambda x: np.sum(p_h * stats.norm.cdf((x[:, None] - means[:, 0]) / sd), axis=1)


@pytest.mark.statistical
def test_gaussian_rbmgibbs_inpainting_follows_the_exact_chain():
    """RBMGibbs on a clamped Gaussian site: 2000 independent chains after 3 sweeps, against
    the exact law of that chain (quadrature over the free unit), by a KS test."""
    params = gaussian_params(dtype=jnp.float32)
    mask = np.array([True, False, True])
    values = np.array([0.7, 0.0, -1.3], np.float32).astype(np.float64)  # as the model holds them
    n = 2000
    chains = final_states(params, mask, values, n, 3, seed=3)
    np.testing.assert_array_equal(chains[:, mask], np.broadcast_to(values[mask], (n, 2)))
    law = gaussian_chain_law(params, mask, values, 3)
    assert stats.kstest(chains[:, 1], law).pvalue > P_MIN


# --- the pseudo-log-likelihood -------------------------------------------------------------------


def test_potts_site_conditionals_match_enumeration(x64):
    params = potts_params()
    log_w = potts_log_weights(params)
    table = log_w.reshape((Q,) * SITES)
    expected = np.stack(
        [np.asarray(table - logsumexp(table, axis=s, keepdims=True)).reshape(-1)
         for s in range(SITES)], axis=1,
    )  # fmt: skip
    layer = Potts(Q).one_hot(jnp.asarray(SEQUENCES), jnp.float64)
    got = site_log_conditionals(params, layer)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("hidden", ["bernoulli"])
def test_gaussian_site_conditionals_match_numerical_integration(x64, hidden):
    """log p(v_i | v_-i) = -F(v) - log int exp(-F) dv_i, the integral by scipy's adaptive
    quadrature of the free energy computed here by enumerating the hidden states."""
    params = gaussian_params(seed=3, scale=1.0).replace(hidden_units=hidden)
    w, b, c = as_np(params)
    lam = np.exp(np.asarray(params.visible_unit_params["log_precision"], np.float64))
    hs = HIDDEN if hidden == "bernoulli" else 2 * HIDDEN - 1

    def neg_f(v):
        log_mu = np.sum(-0.5 * lam * v**2 + 0.5 * np.log(lam / (2 * np.pi)))
        return log_mu + v @ b + logsumexp(hs @ c + v @ w @ hs.T)

    v = np.random.default_rng(4).normal(0, 1.5, size=(4, 3))
    expected = np.zeros((4, 3))
    for n, i in itertools.product(range(4), range(3)):

        def density(x, n=n, i=i):
            y = v[n].copy()
            y[i] = x
            return np.exp(neg_f(y) - neg_f(v[n]))

        total, _ = integrate.quad(density, -np.inf, np.inf, epsabs=0, epsrel=1e-12, limit=200)
        expected[n, i] = -np.log(total)
    np.testing.assert_allclose(site_log_conditionals(params, jnp.asarray(v)), expected,
                               rtol=1e-8, atol=1e-9)  # fmt: skip
    pll = nrbm.learning.pseudo_log_likelihood(params, jnp.asarray(v))
    np.testing.assert_allclose(pll, expected.sum(1).mean(), rtol=1e-8)


# --- chain diagnostics ---------------------------------------------------------------------------


def test_chain_statistics_of_potts_sequences_and_gaussian_chains(x64):
    """Integer (Potts) chains as MCMC records them, and real (Gaussian) chains: every
    statistic against its definition computed here."""
    params = potts_params()
    rng = np.random.default_rng(6)
    x = rng.integers(0, Q, size=(2, 10, SITES))
    ref = np.array([0, 2, 1])
    stats_ = nrbm.diagnostics.chain_statistics(params, x, reference=ref)
    log_w = potts_log_weights(params)
    index = x @ (Q ** np.arange(SITES - 1, -1, -1))
    np.testing.assert_allclose(stats_["free_energy"], -log_w[index], rtol=1e-10)
    np.testing.assert_allclose(stats_["mean_activation"], x.mean(-1))
    np.testing.assert_allclose(stats_["overlap"], ((Q * (x == ref) - 1) / (Q - 1)).mean(-1))
    layer = Potts(Q).one_hot(jnp.asarray(x), jnp.float64)  # the layer gives the same
    np.testing.assert_allclose(
        nrbm.diagnostics.chain_statistics(params, layer)["mean_activation"], x.mean(-1)
    )
    with pytest.raises(ValueError, match=r"\(2, 10, 3\) \(an integer sequence per state or"):
        nrbm.diagnostics.chain_statistics(params, x[..., :2])

    g = gaussian_params()
    v = rng.normal(size=(2, 10, 3))
    r = rng.normal(size=3)
    stats_ = nrbm.diagnostics.chain_statistics(g, v, reference=r)
    np.testing.assert_allclose(stats_["mean_activation"], v.mean(-1))
    cosine = v @ r / np.linalg.norm(v, axis=-1) / np.linalg.norm(r)
    np.testing.assert_allclose(stats_["overlap"], cosine)


def test_verdicts_for_potts_and_gaussian_chains():
    """Known cases: independent draws from the model converge (R-hat near 1, ESS near the
    number of draws); chains each stuck in a different state never mix. Independent draws of
    4 x 500 have R-hat - 1 of order 1/sqrt(2000) and ESS near 2000: the thresholds (1.3, 400)
    are tens of standard errors away."""
    for params, draws in (
        (
            potts_params(dtype=jnp.float32),
            SEQUENCES[np.random.default_rng(7).integers(0, 27, 2000)],
        ),
        (gaussian_params(dtype=jnp.float32), np.random.default_rng(8).normal(size=(2000, 3))),
    ):
        # i.i.d. states (exchangeable draws): R-hat and ESS see independent draws
        diag = nrbm.diagnostics.chain_diagnostics(params, draws.reshape(4, 500, -1))
        assert diag.converged, str(diag)
        stuck = np.repeat(draws[:4, None], 50, axis=1)  # each chain stays in its own state
        diag = nrbm.diagnostics.chain_diagnostics(params, stuck)
        assert not diag.converged and "R-hat inf > 1.3 for free_energy" in diag.verdict


# --- degenerate data -----------------------------------------------------------------------------


def test_a_constant_gaussian_column_is_refused_by_name():
    data = np.random.default_rng(9).normal(size=(50, 4))
    data[:, 2] = 0.25
    data[:, 3] = 1.0 + 1e-9 * np.arange(50)  # constant once held in float32
    with pytest.raises(
        ValueError,
        match=r"data column 2 is constant \(every value is 0.25\) "
        r"\(also column\(s\) 3\): a Gaussian unit on it would learn an infinite",
    ):
        nrbm.fit(data, 2, visible_units="gaussian", epochs=1, progress=False)


@pytest.mark.statistical
@pytest.mark.parametrize("units", ["bernoulli", "potts", "gaussian"])
def test_constant_and_near_constant_columns_train_to_finite_models(units):
    """Column 0 constant (a single category for Potts; for Gaussian units, where a constant
    column is refused, a column of standard deviation 1e-3), column 1 near-constant (one row
    differs; Gaussian: sd 0.05). After training every parameter is finite, the
    pseudo-log-likelihood is finite, the constant column is predicted from the rest with
    probability above 0.9 (two-state, Potts), and a Gaussian unit's learnt standard deviation
    stays within a factor 3 of its column's. (At the base-rate start a two-state or Potts
    unit seen in one state of 200 rows has probability 1/202 of the other: training moves
    it by a fraction of that.)"""
    rng = np.random.default_rng(10)
    n = 200
    if units == "gaussian":
        data = rng.normal(size=(n, 4))
        data[:, 0] = 2.0 + 1e-3 * rng.normal(size=n)
        data[:, 1] = 0.05 * rng.normal(size=n)
        vis = "gaussian"
    elif units == "potts":
        data = rng.integers(0, 3, size=(n, 4))
        data[:, 0], data[:, 1], data[0, 1] = 1, 2, 0
        vis = Potts(3)
    else:
        low, high = (0, 1) if units == "bernoulli" else (-1, 1)
        data = rng.choice([low, high], size=(n, 4))
        data[:, 0], data[:, 1], data[0, 1] = low, low, high
        vis = units
    monitored = units != "bernoulli"  # fit's pseudo-log-likelihood, which was NaN for these
    fit = nrbm.fit(data, 3, visible_units=vis, epochs=5, batch_size=20, seed=0, progress=False,
                   learning_rate=0.01, l1_decay=0.0,  # the audit's setting (audit_sample.md)
                   log_likelihood=None, eval_every=5 if monitored else None)  # fmt: skip
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(fit.params))
    if monitored:
        assert np.all(np.isfinite(fit.history["pseudo_log_likelihood"]))
    layer = jnp.asarray(nrbm.units.check_data(data, vis), jnp.float32)
    site_lp = np.asarray(site_log_conditionals(fit.params, layer))
    if units == "gaussian":
        sd = np.exp(-0.5 * np.asarray(fit.params.visible_unit_params["log_precision"]))
        ratio = sd[:2] / data[:, :2].std(0)
        assert np.all((ratio > 1 / 3) & (ratio < 3)), ratio
        assert np.all(np.isfinite(site_lp))
    else:
        assert np.mean(np.exp(site_lp[:, 0])) > 0.9


@pytest.mark.parametrize("units", ["bernoulli", "spin", "potts(3)"])
def test_a_constant_discrete_column_starts_at_a_finite_smoothed_bias(units):
    """The base-rate start of a column always in one state: the pseudo-count leaves the other
    states probability 1/(N + 2) (two states) or 1/(N + q) each (Potts), a finite bias. (Spin
    units share the two-state code with Bernoulli units, which the test above trains.)"""
    unit = nrbm.units.as_unit_type(units)
    n, k = 200, getattr(unit, "q", 2)
    states = np.random.default_rng(11).integers(0, 2, size=(n, 2))
    states[:, 0] = 1  # column 0: always the second state
    layer = np.asarray(unit.to_layer(states, jnp.float32)) if unit.values is None else (
        np.asarray(unit.states_from_bits(states.astype(np.float32)))
    )  # fmt: skip
    bias = nrbm.units.base_rate_bias(layer, unit)
    assert np.all(np.isfinite(bias))
    if unit.values is None:
        p_second = np.asarray(unit.mean(jnp.asarray(bias)))[1]
    else:
        p_second = float(jax.nn.sigmoid((unit.values[1] - unit.values[0]) * bias[0]))
    np.testing.assert_allclose(p_second, (n + 1) / (n + k), rtol=1e-6)
