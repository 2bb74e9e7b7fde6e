"""AIS and reverse AIS against exact enumeration.

Every reference log Z below comes from enumeration: ``conftest.brute_joint_log_weights`` for
small models, or ``partition.log_partition`` (checked against brute force in
test_partition.py) for the 64x20 digits model. Seeds are fixed, but no verdict rests on one
random stream: estimates are judged by z-scores against the exact value (|z| < Z_MAX), and
claims about 95% intervals by repetition with a binomial threshold. Each statistical test
states its false-failure probability for a correct implementation (tests/audit_learn.md lists
them, with the measurements behind them).
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import P_MIN, Z_MAX, brute_joint_log_weights, brute_joint_table
from scipy import stats

import numpyro_rbm as nrbm
from numpyro_rbm.ais import (
    AISResult,
    ais,
    base_rate_bias,
    default_schedule,
    log_likelihood,
    reverse_ais,
    summarize_log_weights,
)
from numpyro_rbm.core import RBMParams, free_energy, gibbs_sweep, init_params
from numpyro_rbm.partition import log_partition, sample_exact
from numpyro_rbm.training import loss_gradient

# The submodule (the package attribute `ais` is the function of the same name).
ais_module = importlib.import_module("numpyro_rbm.ais")


def np_logsumexp(x, axis=None):
    x = np.asarray(x, np.float64)
    m = np.max(x, axis=axis, keepdims=True)
    return np.squeeze(m, axis) + np.log(np.sum(np.exp(x - m), axis=axis))


def brute_log_z(params):
    _, _, table = brute_joint_table(params)
    return float(np_logsumexp(table))


def random_rbm(seed, n_v, n_h, weight_scale, vu="bernoulli", hu="bernoulli", dtype=jnp.float32):
    k_w, k_b, k_c = jax.random.split(jax.random.key(seed), 3)
    return RBMParams(
        weight_scale * jax.random.normal(k_w, (n_v, n_h), dtype),
        0.3 * jax.random.normal(k_b, (n_v,), dtype),
        0.3 * jax.random.normal(k_c, (n_h,), dtype),
        visible_units=vu,
        hidden_units=hu,
    )


@pytest.fixture(scope="module")
def digits():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    # load_digits ships with scikit-learn (no download); values 0..16, binarised at >= 8.
    return jnp.asarray(sklearn_datasets.load_digits().data >= 8, jnp.float32)


def train_pcd(data, n_hidden, steps, lr, seed=0, batch=100):
    """A small persistent-CD trainer written for these tests (independent of training.py)."""
    p = init_params(
        jax.random.key(seed),
        data.shape[1],
        n_hidden,
        weight_scale=0.01,
        visible_bias=base_rate_bias(data),
    )

    @jax.jit
    def run(p, key):
        k_init, k_steps = jax.random.split(key)
        chains = data[jax.random.choice(k_init, data.shape[0], (batch,))]

        def step(carry, k):
            p, chains = carry
            k_batch, k_gibbs = jax.random.split(k)
            idx = jax.random.choice(k_batch, data.shape[0], (batch,))
            chains, _ = gibbs_sweep(k_gibbs, p, chains)
            grad = loss_gradient(p, data[idx], chains)
            return (jax.tree.map(lambda a, g: a - lr * g, p, grad), chains), None

        (p, _), _ = jax.lax.scan(step, (p, chains), jax.random.split(k_steps, steps))
        return p

    return run(p, jax.random.key(seed + 1))


@pytest.fixture(scope="module")
def digits_rbm(digits):
    """A 64x20 RBM trained on binarised digits (average log-likelihood about -18.5 nats)."""
    params = train_pcd(digits, n_hidden=20, steps=3000, lr=0.1)
    return params, float(log_partition(params))


@pytest.fixture(scope="module")
def digits_default_ais(digits, digits_rbm):
    """AIS at the reference schedule (14,501 betas), 100 runs, base rates from the data."""
    return ais(digits_rbm[0], jax.random.key(0), data=digits)


@pytest.fixture(scope="module")
def coupled():
    """A strongly coupled random 16x10 RBM (weights N(0, 1.5^2): several distinct modes),
    its exact log Z (by enumeration; test_partition.py checks it against brute force) and 400
    exact samples."""
    params = random_rbm(1, 16, 10, 1.5)
    samples, _ = sample_exact(jax.random.key(5), params, (400,))
    return params, float(log_partition(params)), samples


@pytest.fixture(scope="module")
def coupled_runs(coupled):
    """20 independent AIS estimates (100 runs each) of the coupled model, per schedule length."""
    return {b: many_ais(coupled[0], 20, betas=b) for b in (100, 1000)}


@pytest.fixture(scope="module")
def coupled_reverse(coupled):
    """Reverse AIS of the coupled model from its 400 exact samples, keyed by (betas, chains per
    example): three keys at (100, 1), one each at (100, 8) and (1000, 1)."""
    params, _, samples = coupled
    runs = {
        (100, 1): [reverse_ais(params, jax.random.key(s), samples, betas=100) for s in (0, 1, 2)]
    }
    runs[100, 8] = [reverse_ais(params, jax.random.key(3), samples, betas=100, num_chains=8)]
    runs[1000, 1] = [reverse_ais(params, jax.random.key(4), samples, betas=1000)]
    return runs


def many_ais(params, num_seeds, **kwargs):
    """Independent AIS estimates for num_seeds keys, vectorised (one compilation)."""
    keys = jax.random.split(jax.random.key(1234), num_seeds)
    return jax.vmap(lambda k: ais(params, k, **kwargs))(keys)


# --- schedule, base model, input checks --------------------------------------------------


def test_default_schedule_is_the_reference_schedule():
    betas = default_schedule()
    assert betas.shape == (14501,)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    steps = np.diff(betas)
    # Steps of 1e-3 below 0.5, 1e-4 on [0.5, 0.9], 1e-5 above 0.9 (Salakhutdinov & Murray).
    np.testing.assert_allclose(steps[:500], 1e-3, rtol=1e-6)
    np.testing.assert_allclose(steps[500:4500], 1e-4, rtol=1e-6)
    np.testing.assert_allclose(steps[4500:], 1e-5, rtol=1e-6)
    short = default_schedule(1000)
    assert short.shape == (1000,) and np.all(np.diff(short) > 0)
    assert short[0] == 0.0 and short[-1] == 1.0


@pytest.mark.parametrize(
    "betas, match",
    [
        (np.linspace(0.1, 1, 10), "from exactly 0 to exactly 1"),
        (np.linspace(0, 0.9, 10), "from exactly 0 to exactly 1"),
        (np.array([0.0, 0.6, 0.4, 1.0]), "non-decreasing"),
        (np.ones((2, 3)), "1-D"),
        (3, "num_betas >= 4"),
    ],
)
def test_bad_schedules_are_rejected(betas, match):
    params = random_rbm(0, 4, 3, 0.5)
    with pytest.raises(ValueError, match=match):
        ais(params, jax.random.key(0), betas=betas)


def test_bad_inputs_are_rejected():
    params = random_rbm(0, 4, 3, 0.5)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="num_runs must be >= 2"):
        ais(params, key, num_runs=1)
    with pytest.raises(ValueError, match=r"shape \(num_examples, n_visible=4\)"):
        ais(params, key, data=np.zeros((10, 5)))
    with pytest.raises(ValueError, match="outside the support"):
        ais(params, key, data=np.full((10, 4), 0.5))
    with pytest.raises(ValueError, match="outside the support"):
        reverse_ais(params, key, -np.ones((10, 4)))
    with pytest.raises(ValueError, match="at least 2 examples"):
        reverse_ais(params, key, np.zeros((1, 4)))
    with pytest.raises(ValueError, match="confidence"):
        ais(params, key, confidence=95)
    with pytest.raises(TypeError, match="RBMParams"):
        ais({"weights": params.weights}, key)
    with pytest.raises(ValueError, match="pseudocount"):
        base_rate_bias(np.zeros((3, 4)), pseudocount=0.0)


@pytest.mark.parametrize("units", ["bernoulli", "spin"])
def test_base_rate_bias_matches_smoothed_marginals(units):
    low, high = (0.0, 1.0) if units == "bernoulli" else (-1.0, 1.0)
    rng = np.random.default_rng(0)
    data = np.where(rng.random((50, 6)) < np.linspace(0.0, 0.9, 6), high, low)
    bias = base_rate_bias(data, units, pseudocount=0.5)
    # p(x = high) under independent units with these biases, written out by hand.
    p_high = np.exp(high * bias) / (np.exp(high * bias) + np.exp(low * bias))
    np.testing.assert_allclose(p_high, ((data == high).sum(0) + 0.5) / 51.0, rtol=1e-12)


@pytest.mark.statistical
@pytest.mark.parametrize("vu, hu", [("bernoulli", "bernoulli"), ("spin", "spin")])
def test_uncoupled_target_gives_the_exact_analytic_answer(vu, hu):
    """With W = 0 every importance weight is deterministic, so AIS must be exact: this pins
    down log Z_0 and the visible and hidden halves of the log-weight increments.

    The second half is statistical: from a base-rate base the weights are random, and the
    estimate must be within Z_MAX of its standard errors of log Z. With 100 runs the skewed
    weights give the z-score a heavy lower tail (2 x 10^5 seeds: P(|z| > 4.5) = 1.35e-4);
    with 1000 runs, 20,000 seeds per unit type gave sd 1.01, none beyond 4.4, and
    P(|z| > 4) = 1.0e-4 and 1.5e-4, 1.6 and 2.4 times the normal tail: about 2e-5 at 4.5."""
    params = random_rbm(3, 5, 4, 0.0, vu, hu)
    exact = brute_log_z(params)
    result = ais(params, jax.random.key(0), num_runs=1000, betas=20)
    assert abs(float(result.log_z) - exact) < 1e-4
    assert float(result.stderr) < 1e-5
    assert float(result.ess) == pytest.approx(1000.0, rel=1e-4)
    # A base-rate base differs from the target in its visible biases: random weights now,
    # but still an unbiased estimate of the same log Z.
    low = -1.0 if vu == "spin" else 0.0
    data = np.where(np.random.default_rng(1).random((30, 5)) < 0.3, 1.0, low)
    result = ais(params, jax.random.key(0), num_runs=1000, betas=20, data=data)
    assert 0 < float(result.stderr) < 0.1
    assert abs(float(result.log_z) - exact) < Z_MAX * float(result.stderr)


# --- agreement with exact log Z ----------------------------------------------------------


COVERAGE_SEEDS = 20
#: At least this many of 20 nominal 95% intervals must cover: P[Bin(20, 0.92) <= 12] = 8.8e-5,
#: and 8e-6 at the coverage measured over 2,000 seeds (94.3% coupled, 94.7% spin).
MIN_COVERED = 13


def check_calibration(results, exact):
    """20 independent estimates (100 runs each) judged by their z-scores
    z_i = (log Z_i - log Z) / se_i, which a correct estimator at a schedule long enough for
    the model makes about standard normal (over 2,000 seeds: sd 1.02 for both models, from
    -3.4 to 3.1 coupled and from -4.2 to 2.7 spin):

    - no bias: |sqrt(20) mean z| < Z_MAX;
    - a calibrated standard error: mean z^2 inside the chi-square(20)/20 interval of
      probability 1 - P_MIN (a standard error off by 2x either way fails);
    - coverage by repetition: at least MIN_COVERED of the 20 nominal 95% intervals hold log Z.

    False failures, resampling the 2,000 measured z-scores in 10^6 sets of 20 (coupled,
    spin): bias 3.4e-5 and 1.0e-5, calibration 1.1e-5 each, coverage 9e-6 and 7e-6 (8.8e-5
    at a coverage of 92%).
    """
    z = (np.asarray(results.log_z) - exact) / np.asarray(results.stderr)
    lo, hi = (np.asarray(x) for x in results.log_z_interval)
    covered = int(np.sum((lo <= exact) & (exact <= hi)))
    n = COVERAGE_SEEDS
    assert z.shape == (n,)
    assert abs(math.sqrt(n) * z.mean()) < Z_MAX, z
    chi2_lo, chi2_hi = stats.chi2.ppf(P_MIN / 2, n) / n, stats.chi2.isf(P_MIN / 2, n) / n
    assert chi2_lo < np.mean(z**2) < chi2_hi, (np.mean(z**2), z)
    assert covered >= MIN_COVERED, (covered, z)


@pytest.mark.statistical
def test_interval_is_calibrated_coupled_bernoulli(coupled, coupled_runs):
    """Strongly coupled 16x10 Bernoulli RBM, 100 runs, 1000 betas, 20 seeds."""
    check_calibration(coupled_runs[1000], coupled[1])


@pytest.mark.statistical
def test_interval_is_calibrated_spin():
    """A coupled 12x8 RBM of +-1 spins in both layers, 100 runs, 500 betas, 20 seeds."""
    params = random_rbm(7, 12, 8, 0.5, "spin", "spin")
    check_calibration(many_ais(params, 20, num_runs=100, betas=500), brute_log_z(params))


@pytest.mark.statistical
def test_digits_model_within_0_1_nats_at_default_schedule(digits_rbm, digits_default_ais):
    """The issue's requirement: 64x20 digits model, reference schedule, 100 runs: within 0.1
    nats of the exact log Z and within Z_MAX of its own standard errors (a 95% interval
    would miss once in 20 seeds by design), with even weights (ESS above 50 of 100).

    Over 3 trained models (training seeds 0-2) x 12 AIS keys, identical natively and under
    AVX2: every |z| below 2.7, every error below 0.03 nats, ESS at least 98.7. The weights
    are that even (squared coefficient of variation 0.01), so z is close to normal: false
    failure about 6.8e-6."""
    _, exact = digits_rbm
    result = digits_default_ais
    assert result.log_weights.shape == (100,)
    err = float(result.log_z) - exact
    assert abs(err) < 0.1, err
    assert abs(err) < Z_MAX * float(result.stderr), (err, float(result.stderr))
    assert float(result.ess) > 50  # a well-annealed run keeps the weights even


def pooled_runs(runs):
    """All runs of several estimates of one model (same base) summarised as one estimate."""
    return summarize_log_weights(runs.log_weights.reshape(-1), runs.log_z_base[0])


def check_forward_and_reverse(params, exact, start, fwd, revs):
    """Forward AIS errs low, reverse AIS started at ``start`` high, at 100 betas.

    Forward AIS is a stochastic lower bound (E log Z_hat <= log Z), but its bias is below its
    noise, so one estimate may well land above log Z. What is checked: the Jensen gap of
    single runs shows (mean log w + log Z_0 is below log Z by more than Z_MAX standard errors
    of that mean); the estimate pooled over all runs is not significantly above log Z (one
    sided, z < Z_MAX); every reverse estimate (one chain per example) is above log Z by more
    than Z_MAX of its standard errors, hence above the pooled forward one; and the same order
    for the average log-likelihood of the starting points.
    """
    single_runs = np.asarray(fwd.log_weights) + np.asarray(fwd.log_z_base)[:, None]
    se_single = np.std(single_runs) / math.sqrt(single_runs.size)
    assert np.mean(single_runs) < exact - Z_MAX * se_single, np.mean(single_runs) - exact
    pooled = pooled_runs(fwd)
    assert float(pooled.log_z) - exact < Z_MAX * float(pooled.stderr)
    rev_z = np.array([(float(r.log_z) - exact) / float(r.stderr) for r in revs])
    assert np.all(rev_z > Z_MAX), rev_z
    assert float(pooled.log_z) < min(float(r.log_z) for r in revs)
    exact_ll = float(log_likelihood(params, start, exact).mean)
    fwd_ll = log_likelihood(params, start, pooled)
    assert exact_ll < float(fwd_ll.mean) + Z_MAX * float(fwd_ll.stderr)
    for r in revs:
        assert float(log_likelihood(params, start, r).mean) < exact_ll


@pytest.mark.statistical
def test_forward_and_reverse_from_exact_samples_bracket_log_z(
    coupled, coupled_runs, coupled_reverse
):
    """The guaranteed bracket: forward AIS has E[log Z_hat] <= log Z, and reverse AIS started
    at *exact model samples* has E[log Z_rev] >= log Z (E[1/r] = 1/Z, then Jensen; Grosse,
    Ghahramani & Adams 2015). Checked on the strongly coupled 16x10 model with 100 betas
    (``check_forward_and_reverse``).

    Margins, over 2,000 coupled forward estimates (200 reverse keys), natively and under AVX2
    (identical): the Jensen-gap z at least 35; the pooled forward z, resampling 2 x 10^5
    pools of the measured runs, at most 3.6; the reverse z at least 14.9; reverse minus pooled
    forward at least 0.85 nats. The checks these replace failed too often: a forward 95%
    interval missed log Z from below in 0.05% of seeds, and some forward estimate topped the
    lowest reverse one with probability 2.5e-4.
    """
    rbm, exact, samples = coupled
    check_forward_and_reverse(rbm, exact, samples, coupled_runs[100], coupled_reverse[100, 1])


@pytest.mark.statistical
def test_reverse_from_data_errs_high_on_the_digits_model_empirically(digits, digits_rbm):
    """An *empirical* property of this model and schedule, not a theorem. Started from data,
    RAISE is a stochastic lower bound on the log-likelihood of its own annealing model (the
    forward chain's marginal p_fwd), not of the RBM (Burda, Grosse & Salakhutdinov 2015):
    nothing orders p_fwd(v) and p(v) for given data, so E[log Z_rev] >= log Z can fail. It
    typically holds for an RBM and data it was trained on, and it holds here by a wide margin:
    the same checks as from exact samples (``check_forward_and_reverse``; the forward half
    is guaranteed) on the 64x20 digits model reversed from 300 training digits, 100 betas.

    Margins, over 3 trained digits models x 400 forward keys (30 reverse keys each), natively
    and under AVX2 (identical): the Jensen-gap z at least 13; the pooled forward z, resampling
    2 x 10^5 pools of the measured runs, at most 4.2; the reverse z at least 7.1; reverse
    minus pooled forward at least 0.22 nats. A forward 95% interval missed log Z from below
    in 0.5% of seeds, about 5% for the 28 intervals of the test these checks replace.
    """
    params, exact = digits_rbm
    revs = [
        reverse_ais(params, jax.random.key(s), digits[:300], betas=100, base_data=digits)
        for s in range(3)
    ]
    fwd = many_ais(params, 8, betas=100, data=digits)
    check_forward_and_reverse(params, exact, digits[:300], fwd, revs)


@pytest.mark.statistical
def test_reverse_weights_from_exact_samples_are_unbiased_for_inverse_z(coupled, coupled_reverse):
    """From exact samples, E[1/r] = 1/Z for any schedule: the pooled estimate
    -log mean(1/r) must match log Z within Z_MAX delta-method standard errors. That needs the
    1/r to be light-tailed: at 1000 betas (sd of log r 0.53) resampling 4 x 10^5 sets of 400
    measured log r gave P(|z| > 4.5) = 3.3e-5; at 100 betas (sd 1.7) the z-score is skewed
    (P(z > 3) = 5%), so only the bias is checked there. The RAISE estimate (mean over examples
    of log r) is biased high, and more chains per example shrink that: at 100 betas the bias
    is 1.42 nats with one chain and 0.45 with 8 (sd over 200 keys 0.078 and 0.044), so the
    order fails with a correct implementation only beyond 10 standard deviations."""
    _, exact, _ = coupled
    (r,) = coupled_reverse[1000, 1]
    assert r.log_weights.shape == (400, 1)
    neg = -np.asarray(r.log_weights, np.float64).ravel()
    pooled = float(r.log_z_base) - (np_logsumexp(neg) - math.log(neg.size))
    w = np.exp(neg - neg.max())
    se = w.std(ddof=1) / (w.mean() * math.sqrt(neg.size))
    assert abs(pooled - exact) < Z_MAX * se, (pooled - exact, se)
    raise_bias = []
    for r in (coupled_reverse[100, 1][0], coupled_reverse[100, 8][0]):
        assert r.log_weights.shape[0] == 400
        raise_bias.append(float(r.log_z) - exact)
        lo, hi = (float(x) for x in r.log_z_interval)
        assert lo < float(r.log_z) < hi
    assert coupled_reverse[100, 8][0].log_weights.shape == (400, 8)
    assert raise_bias[0] > raise_bias[1] > 0, raise_bias


@pytest.mark.statistical
def test_error_bars_shrink_with_runs_and_betas(coupled, coupled_runs, coupled_reverse):
    """Each inequality below held with room to spare over 100 disjoint sets of 20 seeds
    (2,000 estimates per schedule; reverse AIS over 200 keys): se_200 / se_100 was
    0.763 +- 0.028 (max 0.841), long / short standard errors 0.222 +- 0.015, the RMSE ratio
    0.195 +- 0.042 (max 0.349), the ESS gain 60.6 +- 1.5, and the reverse-forward gap
    1.47 +- 0.10 at 100 betas and 0.147 +- 0.033 at 1000 (ratio at most 0.17). The closest
    bound, gap > 0 at 1000 betas, is 4.4 standard deviations away (normal tail 5e-6)."""
    _, exact, _ = coupled
    short, long = coupled_runs[100], coupled_runs[1000]
    # Pool the 20 independent 100-run estimates in pairs: 200 runs each.
    pairs = summarize_log_weights(short.log_weights.reshape(10, 200), short.log_z_base[:10])
    se_100, se_200 = float(np.mean(short.stderr)), float(np.mean(pairs.stderr))
    # Twice the runs: 1/sqrt(2) expected; heavy-tailed weights make the ratio noisy.
    assert 0.45 < se_200 / se_100 < 0.9, (se_100, se_200)
    # Ten times the betas: more even weights, smaller error bars and smaller actual errors.
    assert float(np.mean(long.stderr)) < 0.6 * se_100, (se_100, np.mean(long.stderr))
    rmse = [float(np.sqrt(np.mean((r.log_z - exact) ** 2))) for r in (short, long)]
    assert rmse[1] < rmse[0], rmse
    assert float(np.mean(long.ess)) > float(np.mean(short.ess))
    # The reverse-forward gap closes as well.
    rev = [float(coupled_reverse[b, 1][0].log_z) for b in (100, 1000)]
    gap = [rev[0] - float(np.mean(short.log_z)), rev[1] - float(np.mean(long.log_z))]
    assert 0 < gap[1] < 0.5 * gap[0], gap


def test_summary_pools_runs_like_one_big_run(coupled_runs):
    runs = coupled_runs[100]
    pooled = summarize_log_weights(runs.log_weights.reshape(-1), runs.log_z_base[0])
    all_w = np.asarray(runs.log_weights, np.float64).ravel()
    expected = float(runs.log_z_base[0]) + np_logsumexp(all_w) - math.log(all_w.size)
    assert float(pooled.log_z) == pytest.approx(expected, abs=1e-4)
    w = np.exp(all_w - all_w.max())
    assert float(pooled.ess) == pytest.approx(w.sum() ** 2 / (w**2).sum(), rel=1e-4)
    with pytest.raises(ValueError, match="at least 2 runs"):
        summarize_log_weights(np.zeros(1), 0.0)


# --- log-likelihoods, batches, dtypes, numerics --------------------------------------------


@pytest.mark.statistical
def test_log_likelihood_exact_and_from_estimates(digits, digits_rbm, digits_default_ais):
    """Exact log Z: exact per-example log-likelihoods with a zero-width interval. An AIS
    estimate: its interval mapped through -log Z, and the exact average within Z_MAX of its
    standard errors (the same z-score as the digits test, hence the same error rate)."""
    params = random_rbm(4, 6, 5, 1.0)
    V, _, table = brute_joint_log_weights(params.weights, params.visible_bias, params.hidden_bias)
    log_pv = np_logsumexp(table, axis=1) - np_logsumexp(table)
    idx = np.random.default_rng(0).integers(0, len(V), 40)
    data = V[idx]
    for ll in (log_likelihood(params, data), log_likelihood(params, data, brute_log_z(params))):
        assert float(ll.mean) == pytest.approx(log_pv[idx].mean(), abs=1e-4)
        np.testing.assert_allclose(ll.per_example, log_pv[idx], atol=1e-4)
        assert float(ll.interval[0]) == float(ll.interval[1]) == float(ll.mean)
        assert float(ll.stderr) == 0.0

    # From an AIS estimate the interval maps through -log Z (its ends swap), and the exact
    # value is within Z_MAX standard errors (the digits test's z-score, with its sign flipped).
    params, exact = digits_rbm
    exact_ll = float(log_likelihood(params, digits, exact).mean)
    ll = log_likelihood(params, digits, digits_default_ais)
    lo, hi = float(ll.interval[0]), float(ll.interval[1])
    mean_neg_f = float(ll.mean) + float(digits_default_ais.log_z)
    z_lo, z_hi = (float(x) for x in digits_default_ais.log_z_interval)
    assert lo == pytest.approx(mean_neg_f - z_hi, abs=1e-4)
    assert hi == pytest.approx(mean_neg_f - z_lo, abs=1e-4)
    assert lo < float(ll.mean) < hi
    assert float(ll.stderr) == float(digits_default_ais.stderr) > 0
    assert abs(float(ll.mean) - exact_ll) < Z_MAX * float(ll.stderr)


@pytest.mark.statistical
def test_batched_params_give_one_estimate_per_rbm():
    """Three RBMs in one batch, each estimate judged against its own exact log Z.

    Forward, 400 runs: within Z_MAX standard errors. With 100 runs the z-scores' tails were
    up to 4 times the normal ones (12,000 of them, over 4000 keys: P(|z| > 4) up to 5e-4,
    none beyond 4.1); 400 runs halve the skew (3000 z-scores within -3.5 and 3.3): about
    2e-5 per z-score at 4.5, 6e-5 for the three.

    Reverse, 2 chains per example: the data are samples of the first RBM only, so for the
    other two it has no guaranteed sign; within Z_MAX standard errors plus 0.05 nats. Over
    100 keys (rev - log Z) / se had mean 0.3-0.6 and sd 1.03-1.05 per RBM, so the 0.05 nats
    (2.3-3.5 standard errors) put the bound beyond 7 sd."""
    batch = [random_rbm(s, 8, 6, 0.8) for s in range(3)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    data = np.asarray(sample_exact(jax.random.key(0), batch[0], (50,))[0])
    exact = np.array([brute_log_z(p) for p in batch])
    fwd = ais(params, jax.random.key(0), num_runs=400, betas=500, data=data)
    rev = reverse_ais(params, jax.random.key(1), data, betas=500, num_chains=2)
    assert fwd.log_z.shape == (3,) and fwd.log_weights.shape == (3, 400)
    assert rev.log_z.shape == (3,) and rev.log_weights.shape == (3, 50, 2)
    # Distinct RBMs get distinct answers, each right: Z_MAX standard errors, or for reverse
    # AIS (biased high, and the data are samples of the first RBM only) 0.05 nats more.
    assert np.all(np.abs(np.asarray(fwd.log_z) - exact) < Z_MAX * np.asarray(fwd.stderr))
    rev_err = np.abs(np.asarray(rev.log_z) - exact)
    assert np.all(rev_err < Z_MAX * np.asarray(rev.stderr) + 0.05), rev_err
    ll = log_likelihood(params, data, fwd)
    assert ll.mean.shape == (3,) and ll.per_example.shape == (50, 3)
    single = log_likelihood(batch[2], data, float(fwd.log_z[2]))
    assert float(ll.mean[2]) == pytest.approx(float(single.mean), abs=1e-4)


@pytest.mark.statistical
def test_float64_parameters_run_in_float64(x64):
    """float64 in, float64 out, and an estimate within Z_MAX standard errors of log Z, from
    1000 runs: with 100 the z-score's lower tail is heavy (8000 keys: P(|z| > 4) = 2.5e-4,
    4 times the normal tail, one z below -4.5); with 400, 2000 keys gave z from -3.56 to
    2.92 (sd 1.03); the skew of the mean weight falls as 1/sqrt(runs), so 1000 runs have
    less still."""
    params = random_rbm(5, 10, 6, 1.0, "spin", "bernoulli", dtype=jnp.float64)
    exact = brute_log_z(params)
    result = ais(params, jax.random.key(0), num_runs=1000, betas=500)
    assert result.log_z.dtype == jnp.float64 and result.log_weights.dtype == jnp.float64
    assert abs(float(result.log_z) - exact) < Z_MAX * float(result.stderr)


def test_compensated_summation_of_float32_increments():
    """The accumulator the annealing loop uses: 14,500 float32 increments summed in a scan,
    as long log-weights are, agree with an exact float64 sum to float32 resolution of the
    total, where naive float32 summation drifts by orders of magnitude more."""
    rng = np.random.default_rng(0)
    incs = (0.01 + 1e-3 * rng.standard_normal(14500)).astype(np.float32)
    exact = math.fsum(incs.astype(np.float64))

    def kahan(carry, x):
        return ais_module._kahan_add(*carry, x), None

    (total, comp), _ = jax.lax.scan(kahan, (jnp.float32(0), jnp.float32(0)), jnp.asarray(incs))
    naive, _ = jax.lax.scan(lambda s, x: (s + x, None), jnp.float32(0), jnp.asarray(incs))
    kahan_err = abs(float(total) - float(comp) - exact)
    naive_err = abs(float(naive) - exact)
    assert kahan_err < 2e-5, kahan_err  # about one float32 ulp of 145
    assert naive_err > 10 * kahan_err, (naive_err, kahan_err)


def test_one_step_log_weights_recomputed_by_hand():
    """With the schedule (0, 1), log w = log f_1(v_0) - log f_0(v_0)
    = -F(v_0) - b.v_0 - n_h log 2, where v_0 is the exact base sample drawn from the key that
    ais uses (one key per RBM, then split into an initial and a per-step key)."""
    params = random_rbm(8, 6, 4, 1.0)
    key = jax.random.key(3)
    result = ais(params, key, num_runs=5, betas=np.array([0.0, 1.0]))
    assert result.log_z.dtype == jnp.float32 and result.log_weights.dtype == jnp.float32
    key_init, _ = jax.random.split(jax.random.split(key, 1)[0])
    v0 = params.visible_units.sample(key_init, jnp.broadcast_to(params.visible_bias, (5, 6)))
    expected = -free_energy(params, v0) - v0 @ params.visible_bias - 4 * math.log(2.0)
    np.testing.assert_allclose(result.log_weights, expected, atol=1e-5)
    assert float(result.log_z_base) == pytest.approx(
        float(jnp.sum(jax.nn.softplus(params.visible_bias))) + 4 * math.log(2.0), abs=1e-5
    )


def test_rbm_distribution_accepts_an_ais_estimate(digits_rbm, digits_default_ais):
    distribution = pytest.importorskip("numpyro_rbm.distribution")
    params, _ = digits_rbm
    estimate = digits_default_ais
    assert isinstance(estimate, AISResult)
    v = jnp.asarray(np.random.default_rng(0).integers(0, 2, (7, 64)), jnp.float32)
    expected = -free_energy(params, v) - estimate.log_z
    for log_z in (estimate.log_z, estimate):  # the array, or the result itself
        rbm = distribution.RBM(params, log_z=log_z)
        assert rbm.log_z_mode == "supplied"
        np.testing.assert_allclose(rbm.log_prob(v), expected, rtol=1e-6, atol=1e-4)


def test_public_api_is_exported():
    for name in ("AISResult", "LogLikelihood", "ais", "reverse_ais", "log_likelihood"):
        assert getattr(nrbm, name) is getattr(ais_module, name)
    assert nrbm.summarize_log_weights is summarize_log_weights
