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
from scipy import integrate, stats

from numpyro_rbm import RBMParams, energy, free_energy, gibbs_sweep, log_partition, sample_hidden
from numpyro_rbm.learning.loss import Weighted, loss_gradient
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


def negative_energy_surrogate(params, data, v_model, h_model):
    r"""Positive phase summed over h (free energy), negative phase with sampled h (energy):
    isolates the negative phase's Rao-Blackwellisation."""
    sg = jax.lax.stop_gradient
    return jnp.mean(energy(params, sg(v_model), sg(h_model))) - jnp.mean(free_energy(params, data))


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
        en_neg = jax.jit(jax.vmap(jax.grad(negative_energy_surrogate), (None, None, 0, 0)))
        sml = jax.jit(jax.vmap(jax.grad(sml_log_likelihood), (None, None, 0)))
        return {
            "exact": flat(brute_gradient(params, data)),
            "free": flat(free(params, data, v_model), 1),
            "sml": flat(sml(params, data, v_model), 1),
            "energy": flat(en(params, data, h_data, v_model, h_model), 1),
            "energy_negative": flat(en_neg(params, data, v_model, h_model), 1),
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
    there; the W and c components are compared by their variances summed over K = 400 batches
    of 16. The question's estimator samples h in both phases, so its ratio to the free-energy
    estimator mixes two Rao-Blackwellisations: for fixed data the summed positive phase has no
    variance at all, and sampling :math:`h_i \sim p(h|v_i)` there adds pure noise. With the
    positive phase summed in both, the ratio isolates the negative phase.

    Over 40 sets of keys (this fixture with ``jax.random.key(s)``, s = 0..39) the
    both-phases ratio was 4.56 +- 0.18 (Bernoulli, min 4.25) and 2.27 +- 0.06 (spin, min
    2.15); the negative phase alone
    2.58 +- 0.08 (min 2.39) and 1.55 +- 0.04 (min 1.49). Over 200 earlier key sets the
    both-phases ratio was 4.56 +- 0.16 and 2.26 +- 0.06 (min 2.08). Thresholds: 1.5 for both
    phases (12 sd below the closer mean), 1.2 for the negative phase alone (8.7 sd).
    """
    n_w = N_VISIBLE * N_HIDDEN
    vis = slice(n_w, n_w + N_VISIBLE)
    np.testing.assert_array_equal(estimates["free"][:, vis], estimates["energy"][:, vis])
    uses_h = np.r_[0:n_w, n_w + N_VISIBLE : n_w + N_VISIBLE + N_HIDDEN]
    var = {k: estimates[k][:, uses_h].var(0, ddof=1).sum() for k in ("free", "energy")}
    var_negative = estimates["energy_negative"][:, uses_h].var(0, ddof=1).sum()
    # Each summed variance is itself estimated to within a few % from K = 400 draws.
    assert var["energy"] > 1.5 * var["free"]
    assert var_negative > 1.2 * var["free"]
    assert var["energy"] > var_negative  # the positive phase's sampling adds its own noise


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


# --- Q2, exactly: the entropy term, the envelope theorem, and the shape of ln Z -------------


def flat_grad_energy(params):
    """(V, H, table, dE) with dE[a, b] = dE/dtheta at joint state (V[a], H[b]), flattened in
    the order of ``flat`` (W, b, c): -(v h^T, v, h)."""
    V, H, table = brute_joint_log_weights(
        params.weights,
        params.visible_bias,
        params.hidden_bias,
        params.visible_units.name,
        params.hidden_units.name,
    )
    nv, nh = len(V), len(H)
    d_e = np.concatenate(
        [
            -(V[:, None, :, None] * H[None, :, None, :]).reshape(nv, nh, -1),
            -np.broadcast_to(V[:, None, :], (nv, nh, V.shape[1])),
            -np.broadcast_to(H[None, :, :], (nv, nh, H.shape[1])),
        ],
        axis=-1,
    )
    return V, H, table, d_e


def _covariance_matrix(weights, x):
    """Cov(x) under probabilities ``weights`` (S,), for x (S, d)."""
    centred = x - weights @ x
    return (weights[:, None] * centred).T @ centred


def unflatten(params, x):
    """The RBMParams with the flat vector ``x`` (order of ``flat``) as its W, b, c."""
    n_w = params.weights.size
    return params.replace(
        weights=x[:n_w].reshape(params.weights.shape),
        visible_bias=x[n_w : n_w + N_VISIBLE],
        hidden_bias=x[n_w + N_VISIBLE :],
    )


def _entropy(log_w, axis=None):
    """H(softmax(log_w)) along ``axis``, differentiable through the weights."""
    return -jnp.sum(jax.nn.softmax(log_w, axis=axis) * jax.nn.log_softmax(log_w, axis=axis), axis)


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_entropies_make_the_interchange_exact(x64, units):
    r"""(a) :math:`\ln p(v) = [\langle E\rangle_p - H(p)] - [\langle E\rangle_{p(h|v)} -
    H(p(h|v))]`; (b) :math:`\partial_\theta H(p_\theta) = -\mathrm{Cov}_p(E, \partial_\theta
    E)`, for the joint and for :math:`p(h|v)`; (c) the envelope theorem: :math:`G(q, \theta) =
    \langle E_\theta\rangle_q - H(q)` exceeds its value at :math:`q = p_\theta` by exactly
    :math:`\mathrm{KL}(q \| p_\theta)`, its minimum is :math:`-\ln Z`, and its total derivative
    along :math:`q = p_\theta` equals its partial derivative with :math:`q` held fixed, which
    is :math:`-\partial_\theta \ln Z`. All by enumeration, to 1e-10."""
    vu, _ = units
    params, data = make_params(units), make_data(units)
    rows = jnp.asarray(state_index(data, vu))
    _, _, table, d_e = flat_grad_energy(params)
    d = d_e.shape[-1]
    joint = _softmax(table.ravel())
    rng = np.random.default_rng(5)
    log_qs = table + rng.normal(size=(5,) + table.shape)  # five distributions q != p
    out = _entropy_quantities(params, rows, jnp.asarray(log_qs))

    # (a) the log-likelihood as a difference of two variational free energies at their minima
    exact = np.asarray(-free_energy(params, jnp.asarray(data)) - brute_log_z(params))
    np.testing.assert_allclose(out["decomposed"], exact, rtol=1e-10)

    # (b) the entropy's gradient is minus the covariance of E with dE/dtheta.
    cov_joint = _covariance(joint, -table.ravel(), d_e.reshape(-1, d))
    np.testing.assert_allclose(flat(out["grad_h"]), -cov_joint, rtol=1e-10, atol=1e-12)
    assert np.abs(cov_joint).max() > 0.1  # the term is there
    cov_cond = np.mean(
        [_covariance(_softmax(table[r]), -table[r], d_e[r]) for r in np.asarray(rows)], 0
    )
    np.testing.assert_allclose(flat(out["grad_h_cond"]), -cov_cond, rtol=1e-10, atol=1e-12)

    # (c) the variational free energy G(q) = -ln Z + KL(q || p), minimised at p.
    log_z = float(brute_log_z(params))
    np.testing.assert_allclose(out["gap_at_p"], -log_z, rtol=1e-12)
    for log_q, gap in zip(log_qs, np.asarray(out["gaps"]), strict=True):
        q = _softmax(log_q.ravel())
        kl = float(q @ (np.log(q) - np.log(joint)))
        np.testing.assert_allclose(gap - float(out["gap_at_p"]), kl, rtol=1e-9)
        assert kl > 1e-3
    # The total derivative along q = p_theta equals the partial one with q held fixed (the
    # entropy's covariance cancels the measure's), and both are -d ln Z / d theta.
    minus_grad_log_z = joint @ d_e.reshape(-1, d)  # E_p[dE/dtheta] = -d ln Z / d theta
    np.testing.assert_allclose(flat(out["total"]), minus_grad_log_z, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(flat(out["partial"]), minus_grad_log_z, rtol=1e-10, atol=1e-12)


def _variational_free_energy(p, log_w):
    """G(q, theta) = <E_theta>_q - H(q) for q = softmax(log_w) over all joint states."""
    q = jax.nn.softmax(log_w, axis=None)
    return -jnp.sum(q * neg_energy_table(p)) - _entropy(log_w)


@jax.jit
def _entropy_quantities(params, rows, log_qs):
    """What the entropy test compares, in one compiled program."""

    def decomposed_log_likelihood(p):  # (a), per example
        log_w = neg_energy_table(p)
        cond = log_w[rows]
        joint_term = -jnp.sum(jax.nn.softmax(log_w, axis=None) * log_w) - _entropy(log_w)
        cond_term = -jnp.sum(jax.nn.softmax(cond, axis=-1) * cond, -1) - _entropy(cond, -1)
        return joint_term - cond_term

    gap = _variational_free_energy
    sg = jax.lax.stop_gradient
    return {
        "decomposed": decomposed_log_likelihood(params),
        "grad_h": jax.grad(lambda p: _entropy(neg_energy_table(p)))(params),
        "grad_h_cond": jax.grad(lambda p: jnp.mean(_entropy(neg_energy_table(p)[rows], -1)))(
            params
        ),
        "gap_at_p": gap(params, neg_energy_table(params)),
        "gaps": jax.vmap(gap, (None, 0))(params, log_qs),
        "total": jax.grad(lambda p: gap(p, neg_energy_table(p)))(params),
        "partial": jax.grad(lambda p: gap(p, sg(neg_energy_table(p))))(params),
    }


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_log_z_and_minus_free_energy_are_convex(x64, units):
    r"""The Hessian of :math:`\ln Z` is :math:`\mathrm{Cov}_p(\partial_\theta E)` and that of
    :math:`-F(v)` is :math:`\mathrm{Cov}_{p(h|v)}(\partial_\theta E)`, both positive
    semi-definite (jax.hessian of a log-sum-exp over all joint states and of the library's
    ``free_energy``, against the enumerated covariances); the log-likelihood, their
    difference, is not concave: its Hessian here has eigenvalues of both signs."""
    vu, _ = units
    params, data = make_params(units), make_data(units)
    x0 = jnp.asarray(flat(params))
    _, _, table, d_e = flat_grad_energy(params)
    d = d_e.shape[-1]
    cov_joint = _covariance_matrix(_softmax(table.ravel()), d_e.reshape(-1, d))
    hess_log_z = jax.jit(jax.hessian(lambda x: brute_log_z(unflatten(params, x))))(x0)
    np.testing.assert_allclose(hess_log_z, cov_joint, rtol=1e-9, atol=1e-12)
    rows = state_index(data, vu)
    cov_cond = np.mean([_covariance_matrix(_softmax(table[r]), d_e[r]) for r in rows], 0)
    hess_minus_f = jax.jit(
        jax.hessian(lambda x: jnp.mean(-free_energy(unflatten(params, x), jnp.asarray(data))))
    )(x0)
    np.testing.assert_allclose(hess_minus_f, cov_cond, rtol=1e-9, atol=1e-12)
    for h in (hess_log_z, hess_minus_f):
        assert np.linalg.eigvalsh(np.asarray(h)).min() > -1e-12
    eig_ll = np.linalg.eigvalsh(np.asarray(hess_minus_f - hess_log_z))
    assert eig_ll.min() < -0.05 and eig_ll.max() > 0.05, eig_ll


def test_stationary_point_matches_moments_and_can_be_a_saddle(x64):
    r"""With data of two patterns (all units on, all off), :math:`W = 0`, :math:`c = 0` and
    :math:`b = 0` (the independent model of the data's means, all 1/2) is a stationary point:
    data and model statistics match (moment matching), so the exact gradient is zero. It is a
    saddle, not a maximum: the Hessian of the log-likelihood has a positive eigenvalue (the W
    directions that correlate the visible units) besides negative ones (the biases). ({0,1}
    units; with +-1 units the same construction gave eigenvalues from -1 to 4.)"""
    data = np.repeat([np.ones(N_VISIBLE), np.zeros(N_VISIBLE)], 8, axis=0)
    params = RBMParams(jnp.zeros((N_VISIBLE, N_HIDDEN)), jnp.zeros(N_VISIBLE), jnp.zeros(N_HIDDEN))
    pos, neg = brute_phases(params, data)
    for k in LEAVES:  # moment matching: <s>_data = <s>_model for every statistic
        np.testing.assert_allclose(pos[k], neg[k], atol=1e-12, err_msg=k)
    x0 = jnp.asarray(flat(params))
    grad, hess = _grad_and_hessian(params, jnp.asarray(data), x0)
    np.testing.assert_allclose(grad, 0.0, atol=1e-12)
    eig = np.linalg.eigvalsh(np.asarray(hess))
    assert eig.max() > 0.05 and eig.min() < -0.05, eig


@jax.jit
def _grad_and_hessian(params, data, x):
    ll = lambda y: mean_log_likelihood(unflatten(params, y), data)  # noqa: E731
    return jax.grad(ll)(x), jax.hessian(ll)(x)


# --- Q3: the update rule is gradient ascent --------------------------------------------------


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_gradient_ascent_first_order_and_step_size(x64, units):
    r"""A step :math:`\epsilon u` changes :math:`\mathcal L` by :math:`\epsilon\, g^\top u +
    O(\epsilon^2)`, so the ratio :math:`(\mathcal L(\theta + \epsilon u) - \mathcal
    L(\theta)) / (\epsilon\|u\|^2)` is 1 only if :math:`u` is the gradient :math:`g` itself
    (checked within 1e-2 at :math:`\epsilon = 10^{-4}`), and -1 for the sign flip; half the
    gradient gives 2, the positive phase alone something else again, so this can fail. And
    ascent is not guaranteed for every step size: along :math:`g` the quadratic model
    :math:`\epsilon\|g\|^2 + \tfrac12\epsilon^2 g^\top \nabla^2\mathcal L\, g` falls below
    zero beyond :math:`\epsilon^* = 2\|g\|^2 / (-g^\top \nabla^2\mathcal L\, g)`; a step of
    half of it increases :math:`\mathcal L`, one of four times it decreases :math:`\mathcal L`
    here."""
    params, data = make_params(units), make_data(units)
    x0 = jnp.asarray(flat(params))
    base, g, curvature = _value_grad_curvature(params, jnp.asarray(data), x0)
    base, g, curvature = float(base), np.asarray(g), float(curvature)
    np.testing.assert_allclose(g, flat(brute_gradient(params, data)), rtol=1e-10, atol=1e-12)
    pos, _ = brute_phases(params, data)
    eps = 1e-4
    directions = np.stack([g, -g, 0.5 * g, flat(pos)])
    values = _values_at(params, jnp.asarray(data), jnp.asarray(x0 + eps * directions))
    ratios = (np.asarray(values) - base) / (eps * (directions**2).sum(1))
    np.testing.assert_allclose(ratios[:2], [1.0, -1.0], atol=1e-2)
    # The ratio catches directions that still point uphill but are not the gradient.
    assert np.all(np.abs(ratios[2:] - 1.0) > 0.1), ratios
    assert curvature < 0.0
    eps_star = 2 * float(g @ g) / -curvature
    half, four = _values_at(
        params, jnp.asarray(data), jnp.asarray(x0 + np.outer([0.5, 4.0], eps_star * g))
    )
    assert float(half) > base > float(four), (float(half), base, float(four))


@jax.jit
def _value_grad_curvature(params, data, x):
    """L, its gradient g and g^T (Hessian of L) g at the flat parameters x."""
    ll = lambda y: mean_log_likelihood(unflatten(params, y), data)  # noqa: E731
    value, g = jax.value_and_grad(ll)(x)
    return value, g, g @ jax.jvp(jax.grad(ll), (x,), (g,))[1]


@jax.jit
def _values_at(params, data, xs):
    """L at each row of ``xs``."""
    return jax.vmap(lambda y: mean_log_likelihood(unflatten(params, y), data))(xs)


# --- CD-k: its expected update, Hinton's objective, and why it is no gradient ---------------

CD_VISIBLE, CD_HIDDEN = 3, 2


def cd_setup(seed=0):
    """A 3x2 Bernoulli RBM (flat W, b, c) and 16 data rows as indices into the states."""
    rng = np.random.default_rng(seed)
    x0 = np.concatenate(
        [rng.normal(size=CD_VISIBLE * CD_HIDDEN), 0.5 * rng.normal(size=CD_VISIBLE + CD_HIDDEN)]
    )
    data = rng.random((16, CD_VISIBLE)) < np.linspace(0.9, 0.1, CD_VISIBLE)
    p0 = np.bincount(state_index(data.astype(float)), minlength=2**CD_VISIBLE) / len(data)
    return jnp.asarray(x0), jnp.asarray(p0)


def cd_model(x):
    r"""(p(v), K, stats) of the 3x2 RBM with flat parameters ``x``: the exact marginal, the
    one-sweep kernel :math:`K(v, v') = \sum_h p(h|v) p(v'|h)`, and per visible state the
    statistics :math:`-\partial_\theta F(v) = (v\,\sigma(c + W^\top v)^\top, v,
    \sigma(c + W^\top v))`, all by enumeration in JAX."""
    n_w = CD_VISIBLE * CD_HIDDEN
    w, b, c = (
        x[:n_w].reshape(CD_VISIBLE, CD_HIDDEN),
        x[n_w : n_w + CD_VISIBLE],
        x[n_w + CD_VISIBLE :],
    )
    V = jnp.asarray(brute_states(CD_VISIBLE))
    H = jnp.asarray(brute_states(CD_HIDDEN))
    table = V @ w @ H.T + (V @ b)[:, None] + (H @ c)[None, :]  # -E(v, h)
    p_v = jax.nn.softmax(jax.nn.logsumexp(table, axis=1))
    kernel = jax.nn.softmax(table, axis=1) @ jax.nn.softmax(table, axis=0).T
    mu = jax.nn.sigmoid(c + V @ w)
    stats = jnp.concatenate([(V[:, :, None] * mu[:, None, :]).reshape(len(V), -1), V, mu], 1)
    return p_v, kernel, stats


def expected_cd_update(x, p0, k):
    r"""The exact expected CD-k update :math:`\langle -\partial F\rangle_{p_0} -
    \langle -\partial F\rangle_{p_k}`, :math:`p_k = p_0 K^k` (negative chains started at the
    data, k sweeps)."""
    _, kernel, stats = cd_model(x)
    p_k = p0 @ jnp.linalg.matrix_power(kernel, k)
    return (p0 - p_k) @ stats


def ml_gradient(x, p0):
    p_v, _, stats = cd_model(x)
    return (p0 - p_v) @ stats


def _kl(q, log_p):
    """KL(q || p) with 0 log 0 = 0."""
    safe_q = jnp.where(q > 0, q, 1.0)
    return jnp.sum(jnp.where(q > 0, q * (jnp.log(safe_q) - log_p), 0.0))


@jax.jit
def cd_quantities(x, p0):
    """Everything the CD test compares, in one compiled program: the Jacobians of the expected
    CD-1 update and of the likelihood gradient; for k = 1, 2 the gradient of Hinton's
    objective, the term CD drops and the update; the update's distance to the gradient for
    k = 1, 2, 8."""

    def p_k(x, k):
        p_v, kernel, _ = cd_model(x)
        return p_v, p0 @ jnp.linalg.matrix_power(kernel, k)

    def objective(x, k):  # KL(p0 || p_inf) - KL(p_k || p_inf)
        p_v, pk = p_k(x, k)
        return _kl(p0, jnp.log(p_v)) - _kl(pk, jnp.log(p_v))

    def dropped_term(x, k):  # sum_v p_k(v) ln(p_k / p_inf)(v), the log held fixed
        p_v, pk = p_k(x, k)
        return pk @ jax.lax.stop_gradient(jnp.log(pk) - jnp.log(p_v))

    ml = ml_gradient(x, p0)
    return {
        "jac_cd1": jax.jacfwd(lambda y: expected_cd_update(y, p0, 1))(x),
        "jac_ml": jax.jacfwd(lambda y: ml_gradient(y, p0))(x),
        "hinton": [
            (jax.grad(objective)(x, k), jax.grad(dropped_term)(x, k), expected_cd_update(x, p0, k))
            for k in (1, 2)
        ],
        "gaps": [jnp.abs(expected_cd_update(x, p0, k) - ml).max() for k in (1, 2, 8)],
    }


def test_expected_cd_update_is_no_gradient_and_drops_a_term_of_hintons_objective(x64):
    r"""On a 3x2 RBM, by enumeration:

    * the expected CD-1 update is not the gradient of any objective: the Jacobian of a
      gradient field is a Hessian, hence symmetric; the exact likelihood gradient's Jacobian
      is symmetric to rounding (antisymmetric part below 1e-12), CD-1's is not (above 1e-3;
      8.5e-3 here);
    * Hinton's objective :math:`\mathrm{CD}_k = \mathrm{KL}(p_0\|p_\infty) -
      \mathrm{KL}(p_k\|p_\infty)` has :math:`-\nabla \mathrm{CD}_k` = the expected CD-k
      update + :math:`\sum_v \partial_\theta p_k(v) \ln(p_k(v)/p_\infty(v))`; that last
      term, which CD drops, is not zero (k = 1: 6.0e-3, k = 2: 1.9e-4);
    * the expected CD-k update tends to the likelihood gradient as k grows."""
    x0, p0 = cd_setup()
    out = cd_quantities(x0, p0)
    antisym = {k: np.abs(out[k] - out[k].T).max() / 2 for k in ("jac_cd1", "jac_ml")}
    assert antisym["jac_ml"] < 1e-12 < 1e-3 < antisym["jac_cd1"], antisym
    for grad_objective, dropped, update in out["hinton"]:
        np.testing.assert_allclose(-grad_objective, update + dropped, rtol=1e-9, atol=1e-12)
    assert np.abs(out["hinton"][0][1]).max() > 1e-3
    assert np.abs(out["hinton"][1][1]).max() > 1e-5
    gaps = [float(g) for g in out["gaps"]]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-9, gaps


# --- continuous units: the interchange where Z is an integral -------------------------------


def _trapezoid_moments(log_density, grid, powers=(0, 1, 2)):
    """[int x^k exp(log_density(x)) dx for k in powers] on a uniform grid (trapezoid rule;
    spectrally accurate for integrands that vanish smoothly at both ends)."""
    dx = grid[1] - grid[0]
    f = np.exp(log_density(grid))
    return [np.trapezoid(grid**k * f, dx=dx) for k in powers]


def _quad_moments(log_density, lower, upper, powers=(0, 1, 2)):
    """The same moments by adaptive quadrature (scipy.integrate.quad)."""
    return [
        integrate.quad(
            lambda x, k=k: x**k * np.exp(log_density(x)),
            lower,
            upper,
            epsabs=0,
            epsrel=1e-13,
            limit=200,
        )[0]
        for k in powers
    ]


def library_gradient(params, data):
    """jax.grad of the library's exact mean log-likelihood, -mean F(v_n) - log Z."""
    return jit_grad(lambda p: jnp.mean(-free_energy(p, data)) - log_partition(p))(params)


def test_gaussian_bernoulli_gradient_against_numerical_integration(x64):
    r"""Gaussian visible (2 units, learnt log-precisions) and Bernoulli hidden units (3). The
    gradient of the mean log-likelihood, by jax.grad of the library's analytic
    :math:`\ln Z`, equals positive minus negative phase with the negative phase
    :math:`\mathbb E_{p(v,h)}[-\partial_\theta E]` computed by enumerating h and integrating v
    numerically (trapezoid rule, per visible unit given h): the derivative may be taken under
    the integral. And the library's estimator (``loss_gradient``) with the model expectation
    of the negative samples, by 2-D quadrature of :math:`p(v) = e^{-F(v)}/Z`, has expectation
    minus that gradient: unbiased with exact samples."""
    rng = np.random.default_rng(3)
    nv, nh = 2, 3
    w, b, c = 0.7 * rng.normal(size=(nv, nh)), 0.5 * rng.normal(size=nv), rng.normal(size=nh)
    log_lam = 0.3 * rng.normal(size=nv)
    params = RBMParams(
        jnp.asarray(w),
        jnp.asarray(b),
        jnp.asarray(c),
        visible_units="gaussian",
        hidden_units="bernoulli",
        visible_unit_params={"log_precision": jnp.asarray(log_lam)},
    )
    data = rng.normal(size=(6, nv))
    lam = np.exp(log_lam)
    H = brute_states(nh)

    def minus_de(v, h):  # -dE/dtheta at (v, h): (v h^T, v, h, d log mu / d log lambda)
        return np.concatenate([np.outer(v, h).ravel(), v, h, -0.5 * lam * v**2 + 0.5])

    def log_mu_i(x, i):  # the Gaussian unit's base measure, log mu(v_i)
        return -0.5 * lam[i] * x**2 + 0.5 * (log_lam[i] - np.log(2 * np.pi))

    pos = np.mean(
        [
            _softmax(np.array([b @ v + c @ h + v @ w @ h for h in H]))
            @ np.array([minus_de(v, h) for h in H])
            for v in data
        ],
        0,
    )
    # Negative phase: given h the visible units are independent; integrate each numerically.
    grid = np.linspace(-40.0, 40.0, 16001)
    log_weight, moments = [], []
    for h in H:
        phi = b + w @ h
        m = np.array(
            [
                _trapezoid_moments(lambda x, i=i, phi=phi: log_mu_i(x, i) + x * phi[i], grid)
                for i in range(nv)
            ]
        )  # (nv, 3): int mu e^{v phi}, int v mu e^{v phi}, int v^2 mu e^{v phi}
        log_weight.append(c @ h + np.log(m[:, 0]).sum())
        mean_v, mean_v2 = m[:, 1] / m[:, 0], m[:, 2] / m[:, 0]
        moments.append(
            np.concatenate([np.outer(mean_v, h).ravel(), mean_v, h, -0.5 * lam * mean_v2 + 0.5])
        )
    p_h = _softmax(np.array(log_weight))
    neg = p_h @ np.array(moments)
    np.testing.assert_allclose(
        np.log(np.exp(np.array(log_weight) - max(log_weight)).sum()) + max(log_weight),
        float(log_partition(params)),
        rtol=1e-10,
    )
    lib = library_gradient(params, jnp.asarray(data))
    lib_flat = np.concatenate([flat(lib), np.asarray(lib.visible_unit_params["log_precision"])])
    np.testing.assert_allclose(lib_flat, pos - neg, rtol=1e-8, atol=1e-10)
    assert np.abs(pos - neg).max() > 0.05

    # The estimator's expectation: exact p(v) on a 2-D grid as weights of the negative samples.
    axis = np.linspace(-12.0, 12.0, 241)
    v_grid = jnp.asarray(np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, nv))
    log_p = -free_energy(params, v_grid) - log_partition(params)
    cell = (axis[1] - axis[0]) ** nv
    np.testing.assert_allclose(float(jnp.sum(jnp.exp(log_p))) * cell, 1.0, rtol=1e-10)
    est = jax.jit(loss_gradient)(
        params, jnp.asarray(data), Weighted(v_grid, jnp.exp(log_p) * cell)
    )
    est_flat = np.concatenate([flat(est), np.asarray(est.visible_unit_params["log_precision"])])
    np.testing.assert_allclose(-est_flat, pos - neg, rtol=1e-8, atol=1e-10)


def test_bernoulli_relu_gradient_against_numerical_integration(x64):
    r"""Bernoulli visible (4 units) and ReLU hidden units (2, learnt log-curvatures). The
    library's gradient (jax.grad through its erfcx form of :math:`\ln Z`) equals positive minus
    negative phase, each computed by enumerating v and integrating every hidden unit's
    :math:`h, h^2` moments by adaptive quadrature (:math:`p(h_j|v) \propto e^{-\gamma_j h^2/2
    + \phi_j h}` on :math:`h \ge 0`); and the library's estimator with the exact p(v) (from the
    same quadrature) as the weights of its negative samples has expectation minus it."""
    rng = np.random.default_rng(4)
    nv, nh = 4, 2
    w, b, c = rng.normal(size=(nv, nh)), 0.5 * rng.normal(size=nv), 0.5 * rng.normal(size=nh)
    log_gamma = 0.3 * rng.normal(size=nh)
    params = RBMParams(
        jnp.asarray(w),
        jnp.asarray(b),
        jnp.asarray(c),
        visible_units="bernoulli",
        hidden_units="relu",
        hidden_unit_params={"log_gamma": jnp.asarray(log_gamma)},
    )
    gamma = np.exp(log_gamma)
    V = brute_states(nv)
    data = V[[1, 6, 7, 11, 14, 15]]
    log_weight, stats = [], []
    for v in V:
        phi = c + v @ w
        m = np.array(
            [
                _quad_moments(
                    lambda x, j=j, phi=phi: -0.5 * gamma[j] * x**2 + phi[j] * x, 0.0, np.inf
                )
                for j in range(nh)
            ]
        )
        log_weight.append(b @ v + np.log(m[:, 0]).sum())
        mean_h, mean_h2 = m[:, 1] / m[:, 0], m[:, 2] / m[:, 0]
        # -dE/dtheta averaged over p(h|v): (v E[h]^T, v, E[h], -gamma E[h^2] / 2)
        stats.append(
            np.concatenate([np.outer(v, mean_h).ravel(), v, mean_h, -0.5 * gamma * mean_h2])
        )
    stats, p_v = np.array(stats), _softmax(np.array(log_weight))
    pos = stats[state_index(data)].mean(0)
    neg = p_v @ stats
    # ln Z = log sum_v e^{-F(v)}: the library's free energy integrates h analytically.
    lib = jit_grad(
        lambda p: (
            jnp.mean(-free_energy(p, jnp.asarray(data)))
            - jax.nn.logsumexp(-free_energy(p, jnp.asarray(V)))
        )
    )(params)
    lib_flat = np.concatenate([flat(lib), np.asarray(lib.hidden_unit_params["log_gamma"])])
    np.testing.assert_allclose(lib_flat, pos - neg, rtol=1e-8, atol=1e-10)
    assert np.abs(pos - neg).max() > 0.05
    est = jax.jit(loss_gradient)(
        params, jnp.asarray(data), Weighted(jnp.asarray(V), jnp.asarray(p_v))
    )
    est_flat = np.concatenate([flat(est), np.asarray(est.hidden_unit_params["log_gamma"])])
    np.testing.assert_allclose(-est_flat, pos - neg, rtol=1e-8, atol=1e-10)
