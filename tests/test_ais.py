"""AIS and reverse AIS against exact enumeration.

Every reference log Z below comes from enumeration: ``conftest.brute_joint_log_weights`` for
small models, or ``partition.log_partition`` (checked against brute force in
test_partition.py) for the 64x20 digits model. Seeds are fixed; tolerances are stated where
they are used.
"""

import importlib
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import brute_joint_log_weights, brute_joint_table

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


@pytest.mark.parametrize("vu, hu", [("bernoulli", "bernoulli"), ("spin", "spin")])
def test_uncoupled_target_gives_the_exact_analytic_answer(vu, hu):
    """With W = 0 every importance weight is deterministic, so AIS must be exact: this pins
    down log Z_0 and the visible and hidden halves of the log-weight increments."""
    params = random_rbm(3, 5, 4, 0.0, vu, hu)
    exact = brute_log_z(params)
    result = ais(params, jax.random.key(0), num_runs=100, betas=20)
    assert abs(float(result.log_z) - exact) < 1e-4
    assert float(result.stderr) < 1e-5
    assert float(result.ess) == pytest.approx(100.0, rel=1e-4)
    # A base-rate base differs from the target in its visible biases: random weights now,
    # but still an unbiased estimate of the same log Z.
    low = -1.0 if vu == "spin" else 0.0
    data = np.where(np.random.default_rng(1).random((30, 5)) < 0.3, 1.0, low)
    result = ais(params, jax.random.key(0), num_runs=100, betas=20, data=data)
    assert 0 < float(result.stderr) < 0.2
    assert abs(float(result.log_z) - exact) < 4 * float(result.stderr)


# --- agreement with exact log Z ----------------------------------------------------------


def check_coverage(results, exact):
    """20 independent estimates: a nominal 95% interval misses for a correct estimator about
    once in 20; allowing 4 misses makes a false failure rare (P[Bin(20, 0.95) <= 15] = 3e-4)
    while an estimator off by a few standard errors misses nearly always. The mean error must
    be within 4 standard errors (of that mean) of zero, and the reported standard error must
    match the spread of the estimates across seeds."""
    lo, hi = (np.asarray(x) for x in results.log_z_interval)
    covered = int(np.sum((lo <= exact) & (exact <= hi)))
    errors = np.asarray(results.log_z) - exact
    assert covered >= 16, (covered, errors)
    assert abs(errors.mean()) < 4 * errors.std(ddof=1) / math.sqrt(20) + 1e-3, errors
    assert 0.5 < np.mean(np.asarray(results.stderr)) / errors.std(ddof=1) < 2.0


def test_interval_covers_exact_log_z_coupled_bernoulli(coupled, coupled_runs):
    """Strongly coupled 16x10 Bernoulli RBM, 100 runs, 1000 betas, 20 seeds."""
    check_coverage(coupled_runs[1000], coupled[1])


def test_interval_covers_exact_log_z_spin():
    """A coupled 12x8 RBM of +-1 spins in both layers, 100 runs, 500 betas, 20 seeds."""
    params = random_rbm(7, 12, 8, 0.5, "spin", "spin")
    check_coverage(many_ais(params, 20, num_runs=100, betas=500), brute_log_z(params))


def test_digits_model_within_0_1_nats_at_default_schedule(digits_rbm, digits_default_ais):
    """The issue's requirement: 64x20 digits model, reference schedule, 100 runs."""
    _, exact = digits_rbm
    result = digits_default_ais
    assert result.log_weights.shape == (100,)
    assert abs(float(result.log_z) - exact) < 0.1
    lo, hi = (float(x) for x in result.log_z_interval)
    assert lo <= exact <= hi
    assert float(result.ess) > 50  # a well-annealed run keeps the weights even


def test_forward_and_reverse_bracket_exact_log_z(digits, digits_rbm, coupled, coupled_runs):
    """With a short schedule (100 betas), reverse AIS and AIS bracket the exact log Z.

    Forward AIS is a stochastic lower bound (E log Z_hat <= log Z), but its bias is below its
    noise, so one estimate may land above log Z: we require each forward interval to reach
    log Z from below, the Jensen gap of single runs (mean log w + log Z_0 < log Z) to show,
    and every forward estimate to lie below every reverse one. Reverse AIS (RAISE, one chain
    per example) must be above log Z every time: its bias at this schedule is many standard
    errors. Cases: the digits model reversed from training data, and the coupled model
    reversed from exact samples.
    """
    params, exact = digits_rbm
    rbm_coupled, exact_coupled, samples = coupled
    cases = [
        (params, exact, digits[:300], many_ais(params, 8, betas=100, data=digits), digits),
        (rbm_coupled, exact_coupled, samples, coupled_runs[100], None),
    ]
    for p, ex, start, fwd, base_data in cases:
        rev = np.array(
            [
                float(
                    reverse_ais(p, jax.random.key(s), start, betas=100, base_data=base_data).log_z
                )
                for s in range(3)
            ]
        )
        log_z = np.asarray(fwd.log_z)
        assert np.all(np.asarray(fwd.log_z_interval[0]) <= ex), log_z - ex
        assert np.max(log_z) < rev.min() and ex < rev.min(), (log_z - ex, rev - ex)
        single_runs = np.asarray(fwd.log_weights) + np.asarray(fwd.log_z_base)[:, None]
        assert np.mean(single_runs) < ex - 5 * np.std(single_runs) / math.sqrt(single_runs.size)
        # The same bracket for the average log-likelihood of the starting data.
        exact_ll = float(log_likelihood(p, start, ex).mean)
        fwd_ll = log_likelihood(p, start, jax.tree.map(lambda x: x[0], fwd))
        rev_ll = log_likelihood(p, start, rev[0])
        assert float(rev_ll.mean) < exact_ll <= float(fwd_ll.interval[1])


def test_reverse_weights_from_exact_samples_are_unbiased_for_inverse_z(coupled):
    """From exact samples, E[1/r] = 1/Z for any schedule: the pooled estimate
    -log mean(1/r) must match log Z within 3 delta-method standard errors. The RAISE estimate
    (mean over examples of log r) is biased high, and more chains per example shrink that."""
    params, exact, samples = coupled
    raise_bias = []
    for num_chains in (1, 8):
        r = reverse_ais(params, jax.random.key(3), samples, betas=100, num_chains=num_chains)
        assert r.log_weights.shape == (400, num_chains)
        neg = -np.asarray(r.log_weights, np.float64).ravel()
        pooled = float(r.log_z_base) - (np_logsumexp(neg) - math.log(neg.size))
        w = np.exp(neg - neg.max())
        se = w.std(ddof=1) / (w.mean() * math.sqrt(neg.size))
        assert abs(pooled - exact) < 3 * se + 1e-3, (pooled - exact, se)
        raise_bias.append(float(r.log_z) - exact)
        lo, hi = (float(x) for x in r.log_z_interval)
        assert lo < float(r.log_z) < hi
    assert raise_bias[0] > raise_bias[1] > 0, raise_bias


def test_error_bars_shrink_with_runs_and_betas(coupled, coupled_runs):
    params, exact, samples = coupled
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
    rev = [
        float(reverse_ais(params, jax.random.key(4), samples, betas=b).log_z) for b in (100, 1000)
    ]
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


def test_log_likelihood_exact_and_from_estimates(digits, digits_rbm, digits_default_ais):
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

    # From an AIS estimate the interval maps through -log Z and contains the exact value.
    params, exact = digits_rbm
    exact_ll = float(log_likelihood(params, digits, exact).mean)
    ll = log_likelihood(params, digits, digits_default_ais)
    lo, hi = float(ll.interval[0]), float(ll.interval[1])
    assert lo <= exact_ll <= hi and lo < float(ll.mean) < hi
    assert float(ll.stderr) == float(digits_default_ais.stderr) > 0


def test_batched_params_give_one_estimate_per_rbm():
    batch = [random_rbm(s, 8, 6, 0.8) for s in range(3)]
    params = jax.tree.map(lambda *xs: jnp.stack(xs), *batch)
    data = np.asarray(sample_exact(jax.random.key(0), batch[0], (50,))[0])
    exact = np.array([brute_log_z(p) for p in batch])
    fwd = ais(params, jax.random.key(0), num_runs=100, betas=500, data=data)
    rev = reverse_ais(params, jax.random.key(1), data, betas=500, num_chains=2)
    assert fwd.log_z.shape == (3,) and fwd.log_weights.shape == (3, 100)
    assert rev.log_z.shape == (3,) and rev.log_weights.shape == (3, 50, 2)
    # Distinct RBMs get distinct answers, each right: 5 standard errors, or for reverse AIS
    # (biased high, and the data are samples of the first RBM only) 0.05 nats more.
    assert np.all(np.abs(np.asarray(fwd.log_z) - exact) < 5 * np.asarray(fwd.stderr))
    assert np.all(np.asarray(rev.log_z) - exact > -5 * np.asarray(rev.stderr))
    assert np.all(np.asarray(rev.log_z) - exact < 5 * np.asarray(rev.stderr) + 0.05)
    ll = log_likelihood(params, data, fwd)
    assert ll.mean.shape == (3,) and ll.per_example.shape == (50, 3)
    single = log_likelihood(batch[2], data, float(fwd.log_z[2]))
    assert float(ll.mean[2]) == pytest.approx(float(single.mean), abs=1e-4)


def test_float64_parameters_run_in_float64(x64):
    params = random_rbm(5, 10, 6, 1.0, "spin", "bernoulli", dtype=jnp.float64)
    exact = brute_log_z(params)
    result = ais(params, jax.random.key(0), num_runs=100, betas=500)
    assert result.log_z.dtype == jnp.float64 and result.log_weights.dtype == jnp.float64
    assert abs(float(result.log_z) - exact) < 4 * float(result.stderr)


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
