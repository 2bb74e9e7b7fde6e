"""Every claim of ``docs/derivation.md``, checked on small enumerable RBMs in float64.

Ground truth is brute-force enumeration of all joint states written here and in
``conftest.py`` (numpy, independent of the library); the library is used only where the claim
is about it (its ``free_energy``, ``energy``, ``log_partition``, ``sample_exact``,
``gibbs_sweep``). Statistical checks use fixed seeds and z-scores whose standard errors come
from the spread of independent batches; each states its false-failure probability for a
correct implementation (tests/audit_learn.md gives the measurements behind them).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import P_MIN, brute_joint_log_weights, brute_states, state_index
from scipy import stats

from numpyro_rbm import RBMParams, energy, free_energy, gibbs_sweep, log_partition, sample_hidden
from numpyro_rbm.learning.sml import sml_log_z
from numpyro_rbm.partition import sample_exact

N_VISIBLE, N_HIDDEN = 5, 3
UNITS = [("bernoulli", "bernoulli"), ("spin", "spin")]
LEAVES = ("weights", "visible_bias", "hidden_bias")


# --- fixtures: a non-trivial model and a data set unlike it --------------------------------


def make_params(units, seed=0, scale=1.0):
    """Weights of order one, so that the model is far from independent units."""
    vu, hu = units
    rng = np.random.default_rng(seed)
    return RBMParams(
        jnp.asarray(scale * rng.normal(size=(N_VISIBLE, N_HIDDEN))),
        jnp.asarray(0.5 * rng.normal(size=N_VISIBLE)),
        jnp.asarray(0.5 * rng.normal(size=N_HIDDEN)),
        visible_units=vu,
        hidden_units=hu,
    )


def make_data(units, n=16, seed=1):
    """A data set with a strong pattern (first units mostly on, last mostly off)."""
    low, high = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0)}[units[0]]
    rng = np.random.default_rng(seed)
    on = rng.random((n, N_VISIBLE)) < np.linspace(0.9, 0.1, N_VISIBLE)
    return np.where(on, high, low)


# --- brute force -----------------------------------------------------------------------------


def _softmax(x):
    e = np.exp(x - x.max())
    return e / e.sum()


def brute_phases(params, data):
    r"""Positive and negative phases of :math:`\partial \frac1N \sum_n \log p(v_n)`.

    With :math:`-\partial E/\partial W = v h^\top`, :math:`-\partial E/\partial b = v`,
    :math:`-\partial E/\partial c = h`: positive = data average of
    :math:`\mathbb E_{p(h|v_n)}[-\partial E]`, negative = :math:`\mathbb E_{p(v,h)}[-\partial E]`,
    both by summing over every joint state.
    """
    vu, hu = params.visible_units.name, params.hidden_units.name
    V, H, table = brute_joint_log_weights(
        params.weights, params.visible_bias, params.hidden_bias, vu, hu
    )
    cond = np.stack([_softmax(table[row]) for row in state_index(data, vu)])  # p(h | v_n)
    joint = _softmax(table.ravel()).reshape(table.shape)  # p(v, h)
    pos = {
        "weights": np.einsum("ni,nk,kj->ij", data, cond, H) / len(data),
        "visible_bias": data.mean(0),
        "hidden_bias": (cond @ H).mean(0),
    }
    neg = {
        "weights": V.T @ joint @ H,
        "visible_bias": joint.sum(1) @ V,
        "hidden_bias": joint.sum(0) @ H,
    }
    return pos, neg


def brute_gradient(params, data):
    pos, neg = brute_phases(params, data)
    return {k: pos[k] - neg[k] for k in LEAVES}


def neg_energy_table(params):
    """-E(v, h) for every joint state, in JAX (differentiable), written without the library."""
    V = jnp.asarray(brute_states(N_VISIBLE, params.visible_units.name))
    H = jnp.asarray(brute_states(N_HIDDEN, params.hidden_units.name))
    return (
        (V @ params.visible_bias)[:, None]
        + (H @ params.hidden_bias)[None, :]
        + V @ params.weights @ H.T
    )


def brute_log_z(params):
    return jax.nn.logsumexp(neg_energy_table(params))


def mean_log_likelihood(params, data, log_z=brute_log_z):
    r""":math:`\frac1N \sum_n \log p(v_n) = -\frac1N \sum_n F(v_n) - \log Z`."""
    return jnp.mean(-free_energy(params, jnp.asarray(data))) - log_z(params)


def flat(tree, batch_dims=0):
    """Concatenates the three gradient leaves into one vector (per leading batch index)."""
    if isinstance(tree, dict):
        leaves = [np.asarray(tree[k]) for k in LEAVES]
    else:
        leaves = [np.asarray(getattr(tree, k)) for k in LEAVES]
    shape = leaves[0].shape[:batch_dims]
    return np.concatenate([x.reshape(shape + (-1,)) for x in leaves], axis=-1)


def jit_grad(fn):
    """``jax.grad`` compiled as one program (eager grads compile op by op: slower here)."""
    return jax.jit(jax.grad(fn))


def assert_tree_close(tree, expected, **tol):
    for k in LEAVES:
        np.testing.assert_allclose(np.asarray(getattr(tree, k)), expected[k], err_msg=k, **tol)


# --- the estimators of the derivation --------------------------------------------------------


def free_energy_surrogate(params, data, v_model):
    r"""SML surrogate :math:`-(\overline{F(v_\text{data})} - \overline{F(\bar v_\text{model})})`:
    its gradient is the estimator; the model samples are constants (stop-gradient)."""
    v_model = jax.lax.stop_gradient(v_model)
    return -(jnp.mean(free_energy(params, data)) - jnp.mean(free_energy(params, v_model)))


def energy_surrogate(params, data, h_data, v_model, h_model):
    r"""The question's last line:
    :math:`\frac1M\sum_j E(v_j, h_j) - \frac1N\sum_i E(v, h_i)` with every sample held fixed."""
    sg = jax.lax.stop_gradient
    return jnp.mean(energy(params, sg(v_model), sg(h_model))) - jnp.mean(
        energy(params, data, sg(h_data))
    )


def sml_log_likelihood(params, data, v_model):
    r""":math:`\frac1N\sum_n -F(v_n) - \log Z` with the log Z of ``RBM(log_z=sml(...))``
    (:func:`numpyro_rbm.learning.sml.sml_log_z`): any value, the SML gradient at ``v_model``."""
    return jnp.mean(-free_energy(params, data)) - sml_log_z(params, v_model, 0.0)


def z_scores(estimates, exact):
    """(mean - exact) / SE per component; the SE is the batch-to-batch spread / sqrt(K)."""
    se = estimates.std(0, ddof=1) / np.sqrt(len(estimates))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (estimates.mean(0) - exact) / se
    # A constant estimator (SE = 0) is consistent only where it is exactly right.
    return np.where(se == 0, np.where(estimates.mean(0) == exact, 0.0, np.inf), z)


def family_pvalue(z):
    """Bonferroni p-value of the largest of d z-scores: d * P(|Z| > max |z|), at most 1.
    Requiring it >= P_MIN fails a correct estimator with probability <= P_MIN."""
    z = np.abs(np.asarray(z))
    return min(1.0, z.size * 2 * stats.norm.sf(z.max()))


# --- Q1: the gradient is positive minus negative phase ---------------------------------------


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_grad_log_likelihood_is_positive_minus_negative_phase(x64, units):
    params, data = make_params(units), make_data(units)
    pos, neg = brute_phases(params, data)
    # Both terms matter: neither phase alone is the gradient.
    assert min(np.abs(pos[k] - neg[k]).max() for k in LEAVES) > 1e-2
    expected = {k: pos[k] - neg[k] for k in LEAVES}
    for log_z in (brute_log_z, log_partition):
        grads = jit_grad(lambda p, log_z=log_z: mean_log_likelihood(p, data, log_z))(params)
        assert_tree_close(grads, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_closed_forms_match_autodiff(x64, units):
    r""":math:`\langle v\,\mathbb E[h|v]^\top\rangle_\text{data} - \langle v\,\mathbb
    E[h|v]^\top\rangle_{p(v)}` and the bias forms, with :math:`\mathbb E[h|v]` = sigmoid or
    tanh of :math:`c + W^\top v` written out here."""
    vu, hu = units
    params, data = make_params(units), make_data(units)
    W, b, c = (np.asarray(getattr(params, k)) for k in LEAVES)
    mean_h = {"bernoulli": lambda x: 1 / (1 + np.exp(-x)), "spin": np.tanh}[hu]
    V = brute_states(N_VISIBLE, vu)
    _, _, table = brute_joint_log_weights(W, b, c, vu, hu)
    p_v = _softmax(table.ravel()).reshape(table.shape).sum(1)  # exact marginal p(v)
    mu_data, mu_model = mean_h(c + data @ W), mean_h(c + V @ W)
    expected = {
        "weights": data.T @ mu_data / len(data) - V.T @ (p_v[:, None] * mu_model),
        "visible_bias": data.mean(0) - p_v @ V,
        "hidden_bias": mu_data.mean(0) - p_v @ mu_model,
    }
    grads = jit_grad(lambda p: mean_log_likelihood(p, data))(params)
    assert_tree_close(grads, expected, rtol=1e-10, atol=1e-12)


# --- Q2: the stop-gradient surrogate, exactly and in expectation ----------------------------


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_weighted_free_energy_surrogate_is_exact(x64, units):
    """Negative phase weighted by the exact p(v'), held constant: the exact gradient."""
    params, data = make_params(units), make_data(units)
    V = jnp.asarray(brute_states(N_VISIBLE, units[0]))

    def weighted_surrogate(p):
        log_p_v = -free_energy(p, V) - brute_log_z(p)
        weights = jax.lax.stop_gradient(jnp.exp(log_p_v))
        return -(jnp.mean(free_energy(p, data)) - jnp.sum(weights * free_energy(p, V)))

    assert_tree_close(
        jit_grad(weighted_surrogate)(params), brute_gradient(params, data), rtol=1e-10, atol=1e-12
    )

    # The same weights *without* stop_gradient differentiate the measure too: wrong.
    def through_measure(p):
        weights = jnp.exp(-free_energy(p, V) - brute_log_z(p))
        return -(jnp.mean(free_energy(p, data)) - jnp.sum(weights * free_energy(p, V)))

    wrong = flat(jit_grad(through_measure)(params))
    assert np.abs(wrong - flat(brute_gradient(params, data))).max() > 1e-2


@pytest.fixture(scope="module", params=UNITS, ids=lambda u: "-".join(u))
def estimates(request):
    """K = 400 independent gradient estimates per estimator, each from a batch of M = 16.

    Shared by the unbiasedness and the variance tests (sampling dominates their cost).
    """
    K, M = 400, 16
    with jax.enable_x64(True):
        params, data = make_params(request.param), jnp.asarray(make_data(request.param, n=M))
        key_model, key_h, key_cd = jax.random.split(jax.random.key(0), 3)
        v_model, h_model = jax.jit(sample_exact, static_argnums=2)(key_model, params, (K, M))
        data_k = jnp.broadcast_to(data, (K,) + data.shape)
        h_data = sample_hidden(key_h, params, data_k)  # h_i ~ p(h | v_i), the question's
        v_cd1, _ = gibbs_sweep(key_cd, params, data_k)  # one sweep from the data
        free = jax.jit(jax.vmap(jax.grad(free_energy_surrogate), (None, None, 0)))
        en = jax.jit(jax.vmap(jax.grad(energy_surrogate), (None, None, 0, 0, 0)))
        sml = jax.jit(jax.vmap(jax.grad(sml_log_likelihood), (None, None, 0)))
        return {
            "exact": flat(brute_gradient(params, data)),
            "free": flat(free(params, data, v_model), 1),
            "sml": flat(sml(params, data, v_model), 1),
            "energy": flat(en(params, data, h_data, v_model, h_model), 1),
            "cd1": flat(free(params, data, v_cd1), 1),
        }


@pytest.mark.statistical
def test_stop_gradient_surrogates_are_unbiased_with_exact_samples(estimates):
    """The mean of K independent estimates is consistent with the exact gradient, for the
    free-energy surrogate and for the question's last line (energy with sampled h held fixed):
    23 z-scores each, whose Bonferroni p-value must be >= P_MIN (max |z| < 5.05), so a
    correct estimator fails with probability <= 2 * P_MIN per unit pair. A sign flip and
    CD-1 (negative samples one Gibbs sweep from the data) fail the same check. Over 200 sets
    of keys, max |z| of the two correct estimators reached 4.0 (Bernoulli) and 4.4 (spin),
    against a threshold of 5.05 (the old one, 4.5, had no room to spare); the sign flip's
    was at least 190 and CD-1's at least 8.9 (Bernoulli, median 12) and 170 (spin)."""
    exact = estimates["exact"]
    assert family_pvalue(z_scores(estimates["free"], exact)) >= P_MIN
    assert family_pvalue(z_scores(estimates["energy"], exact)) >= P_MIN
    # jax.grad of the log-likelihood through the SML log Z of RBM(log_z=sml(...)) (whose
    # custom VJP is the negative phase) with exact samples in place of its chains.
    assert family_pvalue(z_scores(estimates["sml"], exact)) >= P_MIN
    # The same criterion rejects wrong estimators: a sign flip, and CD-1 (biased).
    assert family_pvalue(z_scores(-estimates["free"], exact)) < P_MIN
    assert family_pvalue(z_scores(estimates["cd1"], exact)) < P_MIN


@pytest.mark.statistical
def test_rao_blackwellised_estimator_has_lower_variance(estimates):
    r"""Summing h out analytically (free energy) Rao-Blackwellises sampling h:
    :math:`\mathrm{Var}(\mathbb E[g \mid v]) \le \mathrm{Var}(g)`.

    The visible-bias components do not involve h, so both estimators give the same numbers
    there; on the W and c components (summed variances over K = 400 batches of 16) we saw
    energy / free-energy variance ratios of 4.4 (0.312 / 0.071, Bernoulli) and 2.3
    (1.147 / 0.503, spin). Over 200 sets of keys the ratio was 4.56 +- 0.16 (Bernoulli) and
    2.26 +- 0.06 (spin, at least 2.08): the threshold 1.5 is 12 sd below the closer one.
    """
    n_w = N_VISIBLE * N_HIDDEN
    vis = slice(n_w, n_w + N_VISIBLE)
    np.testing.assert_array_equal(estimates["free"][:, vis], estimates["energy"][:, vis])
    uses_h = np.r_[0:n_w, n_w + N_VISIBLE : n_w + N_VISIBLE + N_HIDDEN]
    var_free = estimates["free"][:, uses_h].var(0, ddof=1).sum()
    var_energy = estimates["energy"][:, uses_h].var(0, ddof=1).sum()
    # Each summed variance is itself estimated to within a few % from K = 400 draws.
    assert var_energy > 1.5 * var_free


# --- Q2: the naive interchange differentiates the measure too -------------------------------


def _covariance(weights, x, y):
    """Cov(x, y) under probabilities ``weights`` (S,), for x (S,) and each column of y (S, d)."""
    return weights @ ((x - weights @ x)[:, None] * (y - weights @ y))


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_naive_interchange_differs_by_covariance_term(x64, units):
    r""":math:`\partial_\theta \mathbb E_{p_\theta}[E_\theta]
    = \mathbb E_{p_\theta}[\partial_\theta E_\theta]
    - \mathrm{Cov}_{p_\theta}(E_\theta, \partial_\theta E_\theta)`, for the joint and
    for :math:`p(h|v)`; hence the question's second line is off by
    :math:`\overline{\mathrm{Cov}_{p(h|v_n)}(E, \partial E)} - \mathrm{Cov}_{p}(E, \partial E)`.
    """
    vu, hu = units
    params, data = make_params(units), make_data(units)
    rows = jnp.asarray(state_index(data, vu))

    def expected_energy(p):  # E_{p_theta}[E_theta], differentiating through p_theta
        log_w = neg_energy_table(p)
        return -jnp.sum(jax.nn.softmax(log_w, axis=None) * log_w)

    def expected_energy_given_data(p):  # mean_n E_{p_theta(h|v_n)}[E_theta(v_n, h)]
        log_w = neg_energy_table(p)[rows]
        return -jnp.mean(jnp.sum(jax.nn.softmax(log_w, axis=-1) * log_w, axis=-1))

    def line_two(p):  # d/dtheta (E_p[E] - E_{p(h|v)}[E]), as the question writes it
        return expected_energy(p) - expected_energy_given_data(p)

    # Brute force: every joint state's E and dE/dtheta = -(v h^T, v, h).
    V, H, table = brute_joint_log_weights(
        params.weights, params.visible_bias, params.hidden_bias, vu, hu
    )
    nv, nh = len(V), len(H)
    grad_e = {  # (nv, nh, ...) per joint state
        "weights": -V[:, None, :, None] * H[None, :, None, :],
        "visible_bias": -np.broadcast_to(V[:, None, :], (nv, nh, N_VISIBLE)),
        "hidden_bias": -np.broadcast_to(H[None, :, :], (nv, nh, N_HIDDEN)),
    }
    joint = _softmax(table.ravel())
    cov_joint, mean_grad_joint, cov_cond, mean_grad_cond = {}, {}, {}, {}
    for k, g in grad_e.items():
        g_flat = g.reshape(nv * nh, -1)
        cov_joint[k] = _covariance(joint, -table.ravel(), g_flat).reshape(g.shape[2:])
        mean_grad_joint[k] = (joint @ g_flat).reshape(g.shape[2:])
        conds = [(_softmax(table[r]), -table[r], g[r].reshape(nh, -1)) for r in np.asarray(rows)]
        cov_cond[k] = np.mean([_covariance(w, e, gr) for w, e, gr in conds], 0).reshape(
            g.shape[2:]
        )
        mean_grad_cond[k] = np.mean([w @ gr for w, e, gr in conds], 0).reshape(g.shape[2:])

    naive = jit_grad(expected_energy)(params)
    assert_tree_close(
        naive, {k: mean_grad_joint[k] - cov_joint[k] for k in LEAVES}, rtol=1e-9, atol=1e-12
    )
    naive_cond = jit_grad(expected_energy_given_data)(params)
    assert_tree_close(
        naive_cond, {k: mean_grad_cond[k] - cov_cond[k] for k in LEAVES}, rtol=1e-9, atol=1e-12
    )
    # The question's second line vs the true gradient: off by exactly the covariance terms,
    # and measurably so.
    true_grad = brute_gradient(params, data)
    difference = flat(jit_grad(line_two)(params)) - flat(true_grad)
    np.testing.assert_allclose(difference, flat(cov_cond) - flat(cov_joint), rtol=1e-9, atol=1e-12)
    assert np.abs(difference).max() > 0.1

    # Holding the measure fixed (stop_gradient) is the interchange that is right.
    def frozen(p):
        log_w = neg_energy_table(p)
        w_joint = jax.lax.stop_gradient(jax.nn.softmax(log_w, axis=None))
        w_cond = jax.lax.stop_gradient(jax.nn.softmax(log_w[rows], axis=-1))
        return -jnp.sum(w_joint * log_w) + jnp.mean(jnp.sum(w_cond * log_w[rows], axis=-1))

    assert_tree_close(jit_grad(frozen)(params), true_grad, rtol=1e-10, atol=1e-12)


# --- Q3: the update rule is gradient ascent --------------------------------------------------


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_gradient_ascent_increases_log_likelihood(x64, units):
    r""":math:`\theta \leftarrow \theta + \epsilon\,\partial_\theta \frac1N\sum_n \log p(v_n)`
    increases the exact average log-likelihood at every step; the same step with the sign
    flipped (descent on the log-likelihood) decreases it."""
    params, data = make_params(units), make_data(units)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: mean_log_likelihood(p, data)))
    step = 0.05
    for sign, monotone in ((+1.0, np.greater), (-1.0, np.less)):
        p, values = params, []
        for _ in range(5):
            value, grads = value_and_grad(p)
            values.append(float(value))
            p = jax.tree.map(lambda x, g, s=sign: x + s * step * g, p, grads)
        values.append(float(value_and_grad(p)[0]))
        assert np.all(monotone(np.diff(values), 0.0)), values
    # And the exact gradient it follows is the enumerated positive minus negative phase.
    assert_tree_close(value_and_grad(params)[1], brute_gradient(params, data), rtol=1e-10)
