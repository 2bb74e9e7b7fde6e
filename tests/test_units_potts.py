"""Potts (categorical) visible units: conditionals, free energy and log Z against enumeration
of every sequence, the distribution over integer sequences, the zero-sum gauge, Gibbs
sampling, learning of single-site and pairwise frequencies, and the RBMGibbs kernel on a Potts
site (prior and posterior against enumeration).

Sampler checks use the G-test with threshold ``P_MIN`` (conftest); MCMC draws are checked step
by step against the exact transition kernel (``conftest.transition_gof_pvalue``), which needs
no ESS estimate (tests/README.md gives each test's false-failure rate)."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import P_MIN, Z_MAX, g_test_pvalue, transition_gof_pvalue
from numpyro.infer import MCMC
from scipy import special, stats
from test_infer import metropolis_kernel

import numpyro_rbm as nrbm
from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.distribution import RBM
from numpyro_rbm.infer import RBMGibbs
from numpyro_rbm.partition import log_partition, sample_exact
from numpyro_rbm.potts import pair_frequencies, site_frequencies, zero_sum_gauge
from numpyro_rbm.units import Potts


def _model(seed=0, n_sites=3, q=3, n_h=3, scale=1.0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    w = scale * rng.standard_normal((n_sites, q, n_h))
    b = rng.standard_normal((n_sites, q))
    c = 0.5 * rng.standard_normal(n_h)
    params = RBMParams(
        jnp.asarray(w.reshape(n_sites * q, n_h), dtype),
        jnp.asarray(b.reshape(-1), dtype),
        jnp.asarray(c, dtype),
        visible_units=Potts(q),
    )
    return params, (w, b, c)


def _joint_table(w, b, c):
    """Every sequence x (itertools order) and the table of -E(x, h) over all hidden states."""
    n_sites, q, n_h = w.shape
    seqs = np.array(list(itertools.product(range(q), repeat=n_sites)))
    hs = np.array(list(itertools.product([0.0, 1.0], repeat=n_h)))
    sites = np.arange(n_sites)
    neg_e = np.array(
        [[b[sites, x].sum() + c @ h + w[sites, x, :].sum(0) @ h for h in hs] for x in seqs]
    )
    return seqs, neg_e


def _brute_log_p(w, b, c):
    """log p(x) of every sequence x (itertools order), summing over all hidden states."""
    seqs, neg_e = _joint_table(w, b, c)
    log_unnorm = special.logsumexp(neg_e, axis=1)
    return seqs, log_unnorm, special.logsumexp(log_unnorm)


def _sweep_kernel(w, b, c):
    """The exact block-Gibbs sweep x -> h -> x' over all sequences (itertools order)."""
    _, neg_e = _joint_table(w, b, c)
    p_h = np.exp(neg_e - special.logsumexp(neg_e, axis=1, keepdims=True))
    p_x = np.exp(neg_e - special.logsumexp(neg_e, axis=0, keepdims=True)).T
    return p_h @ p_x


def _seq_index(x, q=3):
    """Row of the itertools order of each integer sequence in ``x`` (..., n_sites)."""
    x = np.asarray(x)
    return x @ (q ** np.arange(x.shape[-1] - 1, -1, -1))


@pytest.mark.statistical
def test_conditionals_match_enumeration(x64):
    unit = Potts(4)
    field = jnp.asarray(np.random.default_rng(0).standard_normal((2, 3 * 4)) * 3)
    blocks = np.asarray(field).reshape(2, 3, 4)
    np.testing.assert_allclose(
        unit.log_partition(field), special.logsumexp(blocks, axis=-1).sum(-1), rtol=1e-12
    )
    np.testing.assert_allclose(
        unit.mean(field).reshape(2, 3, 4), special.softmax(blocks, axis=-1), rtol=1e-12
    )
    # Sampler: one-hot per site, state frequencies by a G-test per site (P_MIN).
    n = 6000
    x = unit.sample(jax.random.key(0), jnp.broadcast_to(field[0], (n, 12)))
    assert bool(jnp.all(jnp.all(unit.in_support(x), axis=-1)))
    counts = np.asarray(x).reshape(n, 3, 4).sum(0)
    expected = special.softmax(blocks[0], axis=-1) * n
    assert g_test_pvalue(counts, expected) > P_MIN
    # The power of that test: draws from another field fail it.
    wrong = np.asarray(unit.sample(jax.random.key(0), jnp.broadcast_to(field[1], (n, 12))))
    assert g_test_pvalue(wrong.reshape(n, 3, 4).sum(0), expected) < P_MIN
    # Conversions and support.
    states = jnp.array([[0, 3, 1]])
    assert np.array_equal(unit.from_one_hot(unit.one_hot(states)), states)
    bad = unit.one_hot(states).at[0, 1].set(1.0)  # two states on at site 0
    assert not bool(jnp.all(unit.in_support(bad)))


def test_free_energy_log_z_and_distribution_match_enumeration(x64):
    params, (w, b, c) = _model()
    seqs, log_unnorm, log_z = _brute_log_p(w, b, c)
    unit = params.visible_units
    np.testing.assert_allclose(
        -free_energy(params, unit.one_hot(jnp.asarray(seqs), jnp.float64)), log_unnorm, rtol=1e-12
    )
    np.testing.assert_allclose(float(log_partition(params)), log_z, rtol=1e-12)
    rbm = RBM(params)
    assert rbm.event_shape == (3,) and rbm.n_visible == 9
    assert rbm.support(jnp.asarray(seqs)).all() and not rbm.support(jnp.array([0, 3, 1]))
    np.testing.assert_allclose(rbm.log_prob(jnp.asarray(seqs)), log_unnorm - log_z, rtol=1e-12)
    with pytest.warns(UserWarning):  # validation warns, as NumPyro does, and gives -inf
        assert float(rbm.log_prob(jnp.array([0, 3, 1]))) == -np.inf
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\), an integer sequence per event"):
        rbm.log_prob(jnp.zeros(9))


@pytest.mark.statistical
@pytest.mark.parametrize("how", ["exact", "gibbs"])
def test_samples_match_the_exact_distribution(x64, how):
    params, (w, b, c) = _model(seed=1, scale=1.3)
    seqs, log_unnorm, log_z = _brute_log_p(w, b, c)
    law = np.exp(log_unnorm - log_z)
    n = 6000
    rbm = RBM(params)
    if how == "gibbs":  # force the Gibbs path (the hidden layer is small enough to enumerate)
        rbm = RBM(params, log_z=None, num_gibbs_sweeps=30, max_units=1)
        assert not rbm.exact_sampling
        # each draw: 30 sweeps from x ~ p(x | h = 0) (softmax of the biases), exactly this law
        start = np.prod(special.softmax(b, axis=-1)[np.arange(3), seqs], axis=1)
        law_30 = start @ np.linalg.matrix_power(_sweep_kernel(w, b, c), 30)
        assert 0.5 * np.abs(law_30 - law).sum() < 1e-9  # 30 sweeps: p(x) to rounding
        law = law_30
    x = np.asarray(rbm.sample(jax.random.key(0), (n,)))
    assert x.shape == (n, 3) and x.dtype.kind == "i"
    counts = np.bincount(_seq_index(x), minlength=27)
    assert g_test_pvalue(counts, law * n) > P_MIN


def test_zero_sum_gauge_preserves_the_distribution_and_is_idempotent(x64):
    params, (w, b, c) = _model(seed=2)
    seqs, _, _ = _brute_log_p(w, b, c)
    gauged = zero_sum_gauge(params)
    onehot = params.visible_units.one_hot(jnp.asarray(seqs), jnp.float64)
    lp, lp_g = (
        RBM(p).log_prob(jnp.asarray(seqs)) for p in (params, gauged)
    )  # each normalised by its own exact log Z
    np.testing.assert_allclose(lp_g, lp, rtol=0, atol=1e-12)
    # Energies shift by a constant only (the bias means), free energies too.
    diff = free_energy(gauged, onehot) - free_energy(params, onehot)
    np.testing.assert_allclose(diff, diff[0], atol=1e-12)
    np.testing.assert_allclose(gauged.weights.reshape(3, 3, -1).sum(1), 0, atol=1e-12)
    np.testing.assert_allclose(gauged.visible_bias.reshape(3, 3).sum(1), 0, atol=1e-12)
    again = zero_sum_gauge(gauged)
    for name in ("weights", "visible_bias", "hidden_bias"):
        np.testing.assert_allclose(getattr(again, name), getattr(gauged, name), atol=1e-14)


def test_out_of_alphabet_data_is_rejected_naming_row_and_column():
    data = np.zeros((5, 4), int)
    data[3, 2] = 7
    with pytest.raises(ValueError, match=r"row 3, column 2: is not a state in 0 \.\. 4"):
        nrbm.fit(data, 2, visible_units=Potts(5), progress=False)
    with pytest.raises(ValueError, match="n_visible = n_sites \\* q"):
        nrbm.init_params(jax.random.key(0), 7, 2, visible_units=Potts(3))
    assert nrbm.units.as_unit_type("potts(21)") == Potts(21)
    assert Potts(21).spec == "potts(21)"


def test_save_and_load_keep_q(tmp_path):
    params, _ = _model(dtype=np.float32)
    nrbm.io.save_params(tmp_path / "p.npz", params)
    loaded, _ = nrbm.io.load_params(tmp_path / "p.npz")
    assert loaded.visible_units == Potts(3)


def _fit_errors(seed):
    """One replicate: PCD on 4000 exact draws (key 1000 seed) from a known Potts RBM (5 sites,
    q = 3, 3 hidden units). Returns the largest errors of the fitted model's exact single-site
    frequencies f_i(a) and pairwise frequencies f_ij(a, b) (enumerating all 3^5 sequences)
    against the data's, and its log-likelihood deficit to the generating model on the data;
    checks that the zero-sum gauge leaves the fitted model unchanged."""
    n_sites, q = 5, 3
    with jax.enable_x64(True):
        true, _ = _model(seed=3, n_sites=n_sites, q=q, n_h=3, scale=1.2)
        x1h, _ = sample_exact(jax.random.key(1000 * seed), true, (4000,))
        data = np.asarray(true.visible_units.from_one_hot(x1h))
        true_ll = float(jnp.mean(RBM(true).log_prob(jnp.asarray(data))))
    fit = nrbm.fit(
        data, 3, visible_units=Potts(q), epochs=30, batch_size=50, learning_rate=0.02,
        l1_decay=0.0, eval_every=None, progress=False, seed=seed,  # maximum likelihood
    )  # fmt: skip
    seqs = np.array(list(itertools.product(range(q), repeat=n_sites)))
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), fit.params)
        p_fit = np.exp(np.asarray(RBM(p64).log_prob(jnp.asarray(seqs))))
        fitted_ll = float(jnp.mean(RBM(p64).log_prob(jnp.asarray(data))))
        gauged = np.asarray(RBM(zero_sum_gauge(p64)).log_prob(jnp.asarray(seqs)))
    np.testing.assert_allclose(gauged, np.log(p_fit), atol=1e-9)
    return (
        np.abs(site_frequencies(seqs, q, p_fit) - site_frequencies(data, q)).max(),
        np.abs(pair_frequencies(seqs, q, p_fit) - pair_frequencies(data, q)).max(),
        true_ll - fitted_ll,
    )


@pytest.mark.statistical
def test_fit_recovers_single_site_and_pairwise_frequencies():
    """Five independent replicates (seeds 0-4) of ``_fit_errors``: the medians of the site and
    pair frequency errors are below 0.015 and 0.02 and of the log-likelihood deficit below
    0.015 nats. Over 200 replicates (seeds 0-199) a replicate's errors were 0.0048 +- 0.0019
    (max 0.0147), 0.0065 +- 0.0021 (max 0.0147) and -0.0001 +- 0.0017 nats (max 0.0050); none
    crossed a threshold, so a replicate does with probability q < 1.5% (95% bound), and the
    median fails only if three of five do: at most 10 q^3 = 3.4e-5. A Potts sampler at 0.9
    times the field fails it (tests/README.md)."""
    errors = np.median([_fit_errors(seed) for seed in range(5)], axis=0)
    assert np.all(errors < [0.015, 0.02, 0.015]), errors


# --- RBMGibbs on a Potts site: integer sequences in, integer sequences out ------------------
#
# The kernel converts the site value (integer sequences) to the one-hot layer for sweeps and
# free energies. Each step of the chains is compared with the exact transition kernel over all
# 3^3 sequences (the sweep, or the Metropolis kernel built on it) by the transition test
# (conftest.transition_gof_pvalue), as tests/test_infer.py does for binary units; a test
# passes at p > P_MIN.

# 3 sites, q = 3, 3 hidden units, couplings of scale 2 (no sequence has more than 0.34 of the
# mass); the likelihood y ~ Normal(sum_i x_i, SIGMA) at y = 3 moves 0.3 of it.
KERNEL_PARAMS, _ = _model(seed=6, scale=2.0, dtype=np.float32)
SIGMA, Y_OBS = 0.7, 3.0


def _kernel_arrays(params):
    """The float32 parameters as float64 (sites, q, hidden), (sites, q) and (hidden,) arrays."""
    n_sites, q = 3, params.visible_units.q
    w = np.asarray(params.weights, np.float64).reshape(n_sites, q, -1)
    b = np.asarray(params.visible_bias, np.float64).reshape(n_sites, q)
    return w, b, np.asarray(params.hidden_bias, np.float64)


def _kernel_exact_log_p(params):
    """Exact log p(x) of every sequence (itertools order) from the float32 parameters."""
    seqs, log_unnorm, log_z = _brute_log_p(*_kernel_arrays(params))
    return seqs, log_unnorm - log_z


def _potts_prior_model(params):
    numpyro.sample("x", RBM(params, log_z=None))


def _potts_posterior_model(params, y):
    x = numpyro.sample("x", RBM(params, log_z=None))
    numpyro.sample("y", dist.Normal(jnp.sum(x, -1), SIGMA), obs=y)


def _posterior_loglik(seqs):
    return stats.norm.logpdf(Y_OBS, seqs.sum(1), SIGMA)


def _exact_posterior(params):
    seqs, log_p = _kernel_exact_log_p(params)
    log_post = log_p + _posterior_loglik(seqs)
    return log_post - special.logsumexp(log_post)


def _kernel_gof_pvalue(mcmc, kernel, log_target):
    """Transition G-test of the chains of ``x`` against ``kernel`` (27, 27), after checking
    that the reference kernel leaves the exact target ``exp(log_target)`` invariant."""
    target = np.exp(log_target)
    np.testing.assert_allclose(target @ kernel, target, atol=1e-12)
    states = _seq_index(mcmc.get_samples(group_by_chain=True)["x"])
    seqs, _ = _kernel_exact_log_p(KERNEL_PARAMS)
    one_hot = np.asarray(KERNEL_PARAMS.visible_units.one_hot(seqs))  # the units of each state
    return transition_gof_pvalue(states, kernel[states[:, :-1]], one_hot)


@pytest.fixture(scope="module")
def potts_kernel_runs():
    def run(model, *args, update="auto"):
        kernel = RBMGibbs(model, update=update)
        mcmc = MCMC(
            kernel, num_warmup=200, num_samples=1500, num_chains=4,
            chain_method="vectorized", progress_bar=False,
        )  # fmt: skip
        fields = ("free_energy", "log_likelihood", "accept_prob", "h")
        mcmc.run(jax.random.key(0), KERNEL_PARAMS, *args, extra_fields=fields)
        return kernel, mcmc

    seqs, _ = _kernel_exact_log_p(KERNEL_PARAMS)
    sweep = _sweep_kernel(*_kernel_arrays(KERNEL_PARAMS))
    return {
        "prior": run(_potts_prior_model),
        "posterior": run(_potts_posterior_model, Y_OBS),
        "posterior-prior-update": run(_potts_posterior_model, Y_OBS, update="prior"),
        "sweep": sweep,
        "metropolis": metropolis_kernel(sweep, _posterior_loglik(seqs)),
    }


@pytest.mark.statistical
def test_rbmgibbs_samples_the_potts_prior(potts_kernel_runs):
    kernel, mcmc = potts_kernel_runs["prior"]
    assert kernel.update == "prior"
    x = mcmc.get_samples(group_by_chain=True)["x"]
    assert x.shape == (4, 1500, 3) and x.dtype.kind == "i"
    assert bool(jnp.all((x >= 0) & (x < 3)))
    extra = mcmc.get_extra_fields(group_by_chain=True)
    onehot = KERNEL_PARAMS.visible_units.one_hot(x)
    np.testing.assert_allclose(
        extra["free_energy"], free_energy(KERNEL_PARAMS, onehot), rtol=1e-5, atol=1e-5
    )
    assert extra["h"].shape == (4, 1500, 3)
    _, log_p = _kernel_exact_log_p(KERNEL_PARAMS)
    p = _kernel_gof_pvalue(mcmc, potts_kernel_runs["sweep"], log_p)
    assert p > P_MIN, f"Potts prior: transition test p = {p:.2e}"


@pytest.mark.statistical
def test_rbmgibbs_metropolis_samples_the_potts_posterior(potts_kernel_runs):
    kernel, mcmc = potts_kernel_runs["posterior"]
    assert kernel.update == "metropolis"  # "auto" with a likelihood on x
    x = np.asarray(mcmc.get_samples(group_by_chain=True)["x"])
    extra = mcmc.get_extra_fields(group_by_chain=True)
    np.testing.assert_allclose(
        extra["log_likelihood"], stats.norm.logpdf(Y_OBS, x.sum(-1), SIGMA), rtol=1e-5
    )
    acc = np.asarray(extra["accept_prob"], np.float64)
    assert np.all((acc >= 0) & (acc <= 1))
    # The acceptance probability of the proposal from x has exact mean and variance given x
    # (enumeration): its residuals sum to a martingale, normal; |z| < Z_MAX.
    seqs, _ = _kernel_exact_log_p(KERNEL_PARAMS)
    ll = _posterior_loglik(seqs)
    alpha = np.exp(np.minimum(ll[None, :] - ll[:, None], 0.0))
    sweep = potts_kernel_runs["sweep"]
    mean, second = np.sum(sweep * alpha, 1), np.sum(sweep * alpha**2, 1)
    start = _seq_index(x)[:, :-1]
    z = np.sum(acc[:, 1:] - mean[start]) / np.sqrt(np.sum(second[start] - mean[start] ** 2))
    assert abs(z) < Z_MAX, f"acceptance probability z = {z:.2f}"
    p = _kernel_gof_pvalue(mcmc, potts_kernel_runs["metropolis"], _exact_posterior(KERNEL_PARAMS))
    assert p > P_MIN, f"Potts posterior (metropolis): transition test p = {p:.2e}"


@pytest.mark.statistical
def test_potts_posterior_check_rejects_the_prior_only_sweep(potts_kernel_runs):
    """The posterior check has power: bare sweeps sample the prior and fail it."""
    _, mcmc = potts_kernel_runs["posterior-prior-update"]
    kernel = potts_kernel_runs["metropolis"]
    p = _kernel_gof_pvalue(mcmc, kernel, _exact_posterior(KERNEL_PARAMS))
    assert p < 1e-12, f"prior-only sweep passed the Potts posterior check (p = {p:.2e})"


def test_rbmgibbs_potts_errors_and_init_params():
    args = (KERNEL_PARAMS, Y_OBS)
    with pytest.raises(ValueError, match=r"factorized.*two-state.*potts\(3\).*metropolis"):
        RBMGibbs(_potts_posterior_model, update="factorized").init(
            jax.random.key(0), 0, None, args, {}
        )
    with pytest.raises(ValueError, match=r"integers in 0 \.\. 2.*not the one-hot"):
        RBMGibbs(_potts_prior_model).init(
            jax.random.key(0), 0, {"x": jnp.array([0, 3, 1])}, args[:1], {}
        )
    with pytest.raises(ValueError, match=r"integer sequence of shape \(3,\)"):
        RBMGibbs(_potts_prior_model).init(
            jax.random.key(0), 0, {"x": KERNEL_PARAMS.visible_units.one_hot(jnp.zeros(3, int))},
            args[:1], {},
        )  # fmt: skip
    kernel = RBMGibbs(_potts_posterior_model)
    state = kernel.init(jax.random.key(0), 0, {"x": jnp.array([2, 1, 2])}, args, {})
    assert state.z["x"].dtype.kind == "i" and state.z["x"].tolist() == [2, 1, 2]
    np.testing.assert_allclose(state.log_likelihood, stats.norm.logpdf(Y_OBS, 5, SIGMA), rtol=1e-5)
    # a random start is a uniform integer sequence; one step keeps the state integer
    state = kernel.init(jax.random.key(1), 0, None, args, {})
    state = kernel.sample(state, args, {})
    assert state.z["x"].dtype.kind == "i" and state.z["x"].shape == (3,)
