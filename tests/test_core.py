"""The core (units, energies, conditionals, samplers) against brute-force enumeration.

Every reference here is computed in float64 numpy from ``brute_joint_log_weights`` (the table
of :math:`-E(v, h)` over all joint states), independently of the library. Float32 results are
compared with ``rtol=1e-5, atol=1e-4``: the compared values are at most a few hundred in
magnitude and come from a few dozen float32 roundings (eps 1.2e-7), so a correct
implementation errs by well under 1e-4, while a wrong sign, term or axis errs by O(1).

Sampler tests count joint states and apply a G-test (``g_test_pvalue``) with threshold
``P_MIN = 1e-5`` (conftest): a correct sampler fails one such check with probability about
1e-5 on any machine (tests/README.md gives each test's rate), while the sample sizes (tens of
thousands) make a wrong conditional, a flipped field sign or a wrong axis give p-values below
1e-100.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import (
    P_MIN,
    brute_joint_log_weights,
    brute_states,
    g_test_pvalue,
    make_params,
    state_index,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit, logsumexp

import numpyro_rbm as nrbm
from numpyro_rbm import core, units

UNIT_NAMES = ("bernoulli", "spin")
UNIT_PAIRS = list(itertools.product(UNIT_NAMES, UNIT_NAMES))
RTOL, ATOL = 1e-5, 1e-4

# Few examples and deterministic draws: each new shape costs a JAX compilation.
SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)

unit_names = st.sampled_from(UNIT_NAMES)
layer_sizes = st.integers(1, 6)
scales = st.floats(0.01, 5.0)
seeds = st.integers(0, 2**32 - 1)


def conditionals(table):
    """log p(h | v) and log p(v | h) tables from the table of -E(v, h)."""
    log_h_given_v = table - logsumexp(table, axis=1, keepdims=True)
    log_v_given_h = table - logsumexp(table, axis=0, keepdims=True)
    return log_h_given_v, log_v_given_h


# --- unit types ---------------------------------------------------------------------------


@jax.jit
def _unit_quantities(field):
    return {
        name: (
            units.as_unit_type(name).log_partition(field),
            units.as_unit_type(name).mean(field),
        )
        for name in UNIT_NAMES
    }


@SETTINGS
@given(
    fields=st.lists(
        st.floats(-60.0, 60.0, allow_nan=False, allow_subnormal=False), min_size=1, max_size=6
    )
)
def test_unit_log_partition_and_mean_are_sums_over_the_unit_values(fields):
    field = np.asarray(fields, np.float32)
    got = _unit_quantities(jnp.asarray(field))
    phi = field.astype(np.float64)
    for name in UNIT_NAMES:
        values = np.asarray(units.as_unit_type(name).values)
        np.testing.assert_array_equal(values, brute_states(1, name)[:, 0])
        logits = phi[:, None] * values[None, :]  # (n_units, 2): log of x*phi for each x
        a = logsumexp(logits, axis=1)
        mean = np.sum(values * np.exp(logits - a[:, None]), axis=1)
        log_partition, unit_mean = got[name]
        np.testing.assert_allclose(log_partition, a.sum(), rtol=RTOL, atol=ATOL)
        np.testing.assert_allclose(unit_mean, mean, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_unit_support_and_base_measure(name):
    unit = units.as_unit_type(name)
    low, high = unit.values
    x = jnp.asarray([low, high, 0.5, 2.0, -1.0, 0.0])
    expected = np.isin(np.asarray(x), [low, high])
    np.testing.assert_array_equal(unit.in_support(x), expected)
    assert unit.enumerable
    np.testing.assert_array_equal(unit.base_log_measure(jnp.ones((3, 4))), np.zeros(3))
    np.testing.assert_array_equal(unit.states_from_bits(jnp.asarray([0.0, 1.0])), [low, high])


# --- energies, free energies and conditionals against enumeration -------------------------


@jax.jit
def _all_quantities(params, V, H):
    return dict(
        neg_energy=-nrbm.energy(params, V[:, None, :], H[None, :, :]),
        free_energy=nrbm.free_energy(params, V),
        hidden_free_energy=nrbm.hidden_free_energy(params, H),
        hidden_log_prob=nrbm.hidden_log_prob(params, H[None, :, :], V[:, None, :]),
        visible_log_prob=nrbm.visible_log_prob(params, V[:, None, :], H[None, :, :]),
        hidden_mean=nrbm.hidden_mean(params, V),
        visible_mean=nrbm.visible_mean(params, H),
        hidden_field=core.hidden_field(params, V),
        visible_field=core.visible_field(params, H),
    )


@SETTINGS
@given(n_v=layer_sizes, n_h=layer_sizes, vu=unit_names, hu=unit_names, scale=scales, seed=seeds)
def test_energies_and_conditionals_match_enumeration(n_v, n_h, vu, hu, scale, seed):
    params, (w, b, c) = make_params(seed, n_v, n_h, scale, vu, hu)
    V, H, table = brute_joint_log_weights(w, b, c, vu, hu)
    got = _all_quantities(params, jnp.asarray(V, jnp.float32), jnp.asarray(H, jnp.float32))
    log_h_given_v, log_v_given_h = conditionals(table)

    def close(name, expected):
        np.testing.assert_allclose(got[name], expected, rtol=RTOL, atol=ATOL, err_msg=name)

    close("neg_energy", table)
    close("free_energy", -logsumexp(table, axis=1))  # F(v) = -log sum_h exp(-E(v, h))
    close("hidden_free_energy", -logsumexp(table, axis=0))
    close("hidden_log_prob", log_h_given_v)
    close("visible_log_prob", log_v_given_h)
    close("hidden_mean", np.exp(log_h_given_v) @ H)
    close("visible_mean", np.exp(log_v_given_h).T @ V)
    close("hidden_field", c + V @ w)
    close("visible_field", b + H @ w.T)
    assert all(x.dtype == jnp.float32 for x in got.values())


# --- samplers: frequencies against the exact conditionals ---------------------------------


def _sampler_setup(vu, hu, n_v=3, n_h=3, seed=0, repeats=2500):
    """Params with well-spread conditionals and every visible/hidden state repeated."""
    params, (w, b, c) = make_params(seed, n_v, n_h, 1.0, vu, hu)
    V, H, table = brute_joint_log_weights(w, b, c, vu, hu)
    return params, V, H, table, repeats


@pytest.mark.statistical
@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_sample_hidden_frequencies_match_p_h_given_v(vu, hu):
    params, V, H, table, repeats = _sampler_setup(vu, hu)
    v = jnp.asarray(np.repeat(V, repeats, axis=0), jnp.float32)  # every v, `repeats` times
    h = jax.jit(nrbm.sample_hidden)(jax.random.key(1), params, v)
    assert h.shape == (len(V) * repeats, H.shape[1]) and h.dtype == jnp.float32
    counts = np.zeros((len(V), len(H)))
    np.add.at(counts, (np.repeat(np.arange(len(V)), repeats), state_index(h, hu)), 1)
    log_h_given_v, _ = conditionals(table)
    assert g_test_pvalue(counts, repeats * np.exp(log_h_given_v)) > P_MIN


@pytest.mark.statistical
@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_sample_visible_frequencies_match_p_v_given_h(vu, hu):
    params, V, H, table, repeats = _sampler_setup(vu, hu)
    h = jnp.asarray(np.repeat(H, repeats, axis=0), jnp.float32)
    v = jax.jit(nrbm.sample_visible)(jax.random.key(2), params, h)
    assert v.shape == (len(H) * repeats, V.shape[1]) and v.dtype == jnp.float32
    counts = np.zeros((len(H), len(V)))
    np.add.at(counts, (np.repeat(np.arange(len(H)), repeats), state_index(v, vu)), 1)
    _, log_v_given_h = conditionals(table)
    assert g_test_pvalue(counts, repeats * np.exp(log_v_given_h).T) > P_MIN


@pytest.mark.statistical
@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_gibbs_sweep_transition_matches_exact_kernel(vu, hu):
    """From each fixed v: (h, v') ~ p(h | v) p(v' | h), so v' ~ sum_h p(h | v) p(v' | h)."""
    params, V, H, table, repeats = _sampler_setup(vu, hu)
    v0 = jnp.asarray(np.repeat(V, repeats, axis=0), jnp.float32)
    v1, h = jax.jit(nrbm.gibbs_sweep)(jax.random.key(3), params, v0)
    assert v1.shape == v0.shape and h.shape == (len(v0), H.shape[1])
    start = np.repeat(np.arange(len(V)), repeats)
    p_h = np.exp(conditionals(table)[0])  # (v, h)
    p_v = np.exp(conditionals(table)[1]).T  # (h, v')
    joint = p_h[:, :, None] * p_v[None, :, :]  # (v, h, v')
    counts = np.zeros(joint.shape)
    np.add.at(counts, (start, state_index(h, hu), state_index(v1, vu)), 1)
    assert g_test_pvalue(counts.reshape(len(V), -1), repeats * joint.reshape(len(V), -1)) > P_MIN
    # The marginal kernel T(v' | v) = sum_h p(h | v) p(v' | h), with the h draws ignored.
    assert g_test_pvalue(counts.sum(1), repeats * (p_h @ p_v)) > P_MIN


@pytest.mark.statistical
def test_samplers_draw_per_rbm_of_a_batch():
    """Batched params: each RBM of the batch samples from its own conditional."""
    (p1, a1), (p2, a2) = (make_params(s, 2, 3, 1.5, "spin", "bernoulli") for s in (4, 5))
    params = jax.tree.map(lambda x, y: jnp.stack([x, y]), p1, p2)
    assert params.batch_shape == (2,)
    repeats = 3000
    V = brute_states(2, "spin")
    v = jnp.asarray(np.repeat(V, repeats, axis=0)[:, None, :].repeat(2, axis=1), jnp.float32)
    h = jax.jit(nrbm.sample_hidden)(jax.random.key(6), params, v)
    assert h.shape == (len(V) * repeats, 2, 3)
    for i, arrays in enumerate((a1, a2)):
        log_h_given_v, _ = conditionals(brute_joint_log_weights(*arrays, "spin")[2])
        counts = np.zeros(log_h_given_v.shape)
        np.add.at(counts, (np.repeat(np.arange(len(V)), repeats), state_index(h[:, i])), 1)
        assert g_test_pvalue(counts, repeats * np.exp(log_h_given_v)) > P_MIN


# --- batching, broadcasting, jit, vmap --------------------------------------------------------


def _stack(params_list):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *params_list)


@pytest.mark.parametrize("vu,hu", [("bernoulli", "spin"), ("spin", "bernoulli")])
def test_batched_params_broadcast_against_batched_states(vu, hu):
    n_v, n_h, batch = 3, 2, 5
    singles = [make_params(s, n_v, n_h, 1.0, vu, hu) for s in range(batch)]
    params = _stack([p for p, _ in singles])
    V = brute_states(n_v, vu)  # (8, n_v): broadcast against the params' batch axis
    H = brute_states(n_h, hu)
    # States (8, 1, n) broadcast against the params' batch (5,): results (8, 5), (8, 4, 5).
    v = jnp.asarray(V[:, None, :], jnp.float32)
    h = jnp.asarray(H[:, None, :], jnp.float32)
    got = _all_quantities(params, v, h)
    assert got["free_energy"].shape == (len(V), batch)
    assert got["hidden_free_energy"].shape == (len(H), batch)
    assert got["neg_energy"].shape == got["hidden_log_prob"].shape == (len(V), len(H), batch)
    assert got["hidden_mean"].shape == (len(V), batch, n_h)
    assert got["visible_mean"].shape == (len(H), batch, n_v)
    # Biases batched, weights shared: the batch shape is the biases'.
    shared = params.replace(weights=params.weights[0])
    assert shared.batch_shape == (batch,)
    got_shared = jax.jit(nrbm.free_energy)(shared, v[0, 0])  # one state, every RBM
    assert got_shared.shape == (batch,)
    for i, (_, (w, b, c)) in enumerate(singles):
        _, _, table = brute_joint_log_weights(w, b, c, vu, hu)
        log_h_given_v, log_v_given_h = conditionals(table)
        for name, expected in [
            ("neg_energy", table),
            ("free_energy", -logsumexp(table, axis=1)),
            ("hidden_free_energy", -logsumexp(table, axis=0)),
            ("hidden_log_prob", log_h_given_v),
            ("visible_log_prob", log_v_given_h),
            ("hidden_mean", np.exp(log_h_given_v) @ H),
            ("visible_mean", np.exp(log_v_given_h).T @ V),
        ]:
            np.testing.assert_allclose(
                got[name][..., i, :] if name.endswith("mean") else got[name][..., i],
                expected,
                rtol=RTOL,
                atol=ATOL,
                err_msg=name,
            )
        w0 = singles[0][1][0]
        _, _, table = brute_joint_log_weights(w0, b, c, vu, hu)
        np.testing.assert_allclose(got_shared[i], -logsumexp(table[0]), rtol=RTOL, atol=ATOL)


def test_jit_and_vmap_agree_with_eager():
    params = _stack([make_params(s, 4, 3, 1.0, "spin", "spin")[0] for s in range(3)])
    v = jnp.asarray(brute_states(4, "spin"), jnp.float32)
    eager = nrbm.free_energy(params, v[:, None, :])  # (16, 3)
    np.testing.assert_allclose(jax.jit(nrbm.free_energy)(params, v[:, None, :]), eager, rtol=1e-6)
    over_params = jax.jit(jax.vmap(nrbm.free_energy, in_axes=(0, None), out_axes=1))(params, v)
    np.testing.assert_allclose(over_params, eager, rtol=1e-6)
    over_states = jax.jit(jax.vmap(nrbm.hidden_free_energy, in_axes=(None, 0)))
    h = jnp.asarray(brute_states(3, "spin"), jnp.float32)
    np.testing.assert_allclose(
        over_states(params, h), jax.jit(nrbm.hidden_free_energy)(params, h[:, None]), rtol=1e-6
    )
    # Sampling under vmap over keys equals sampling with the same keys one by one.
    keys = jax.random.split(jax.random.key(0), 3)
    single = jax.tree.map(lambda x: x[0], params)
    sweeps = jax.jit(jax.vmap(nrbm.gibbs_sweep, in_axes=(0, None, None)))(keys, single, v[5])
    for i in range(3):
        one = jax.jit(nrbm.gibbs_sweep)(keys[i], single, v[5])
        np.testing.assert_array_equal(sweeps[0][i], one[0])
        np.testing.assert_array_equal(sweeps[1][i], one[1])


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_free_energy_gradient_is_minus_conditional_expectation(vu, hu):
    r""":math:`\nabla_\theta F(v) = \mathbb{E}_{h \mid v}[\nabla_\theta E(v, h)]`:
    :math:`-v\,\mathbb{E}[h|v]^\top`, :math:`-v`, :math:`-\mathbb{E}[h|v]`, and
    :math:`\nabla_v F = -b - W\,\mathbb{E}[h|v]` (from the enumerated conditional)."""
    params, (w, b, c) = make_params(7, 3, 4, 1.0, vu, hu)
    V, H, table = brute_joint_log_weights(w, b, c, vu, hu)
    mean_h = np.exp(conditionals(table)[0]) @ H  # E[h | v] by enumeration, (8, n_h)
    v = jnp.asarray(V, jnp.float32)

    grads = jax.jit(jax.grad(lambda p: nrbm.free_energy(p, v).sum()))(params)
    assert isinstance(grads, nrbm.RBMParams) and grads.hidden_units == params.hidden_units
    np.testing.assert_allclose(grads.weights, -V.T @ mean_h, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads.visible_bias, -V.sum(0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(grads.hidden_bias, -mean_h.sum(0), rtol=RTOL, atol=ATOL)
    dv = jax.jit(jax.vmap(jax.grad(nrbm.free_energy, argnums=1), in_axes=(None, 0)))(params, v)
    np.testing.assert_allclose(dv, -b - mean_h @ w.T, rtol=RTOL, atol=ATOL)

    # The mirror image for the hidden free energy, with E[v | h] by enumeration.
    mean_v = np.exp(conditionals(table)[1]).T @ V  # (16, n_v)
    hg = jax.jit(
        jax.grad(lambda p: nrbm.hidden_free_energy(p, jnp.asarray(H, jnp.float32)).sum())
    )(params)
    np.testing.assert_allclose(hg.weights, -mean_v.T @ H, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hg.visible_bias, -mean_v.sum(0), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(hg.hidden_bias, -H.sum(0), rtol=RTOL, atol=ATOL)


def test_gradients_match_finite_differences_in_float64(x64):
    params, _ = make_params(8, 3, 2, 1.5, "spin", "bernoulli", dtype=np.float64)
    v = jnp.asarray(brute_states(3, "spin"))
    h = jnp.asarray(np.tile(brute_states(2), (2, 1))[::-1])  # some h for each v

    def objective(p):
        return jnp.sum(
            jnp.sin(nrbm.free_energy(p, v))
            + nrbm.hidden_free_energy(p, h) ** 2
            + nrbm.hidden_log_prob(p, h, v) * nrbm.visible_log_prob(p, v, h)
            + nrbm.energy(p, v, h)
        )

    objective = jax.jit(objective)
    grads = jax.jit(jax.grad(objective))(params)
    eps = 1e-6
    for name in ("weights", "visible_bias", "hidden_bias"):
        x = np.asarray(getattr(params, name))
        fd = np.zeros_like(x)
        for idx in np.ndindex(x.shape):
            step = np.zeros_like(x)
            step[idx] = eps
            plus = objective(params.replace(**{name: jnp.asarray(x + step)}))
            minus = objective(params.replace(**{name: jnp.asarray(x - step)}))
            fd[idx] = (plus - minus) / (2 * eps)
        # central differences err by O(eps^2 f''') + O(1e-16 |f| / eps) ~ 1e-8 here
        np.testing.assert_allclose(getattr(grads, name), fd, rtol=1e-6, atol=1e-6, err_msg=name)
        assert getattr(grads, name).dtype == jnp.float64


# --- numerical stability and dtypes ------------------------------------------------------------


def test_units_are_stable_at_extreme_fields():
    field = jnp.asarray([-1e4, -50.0, -1e-3, 0.0, 50.0, 1e4], jnp.float32)
    phi = np.asarray(field, np.float64)
    refs = {
        "bernoulli": (np.logaddexp(0.0, phi), expit(phi), phi > 0),
        "spin": (np.logaddexp(phi, -phi), np.tanh(phi), phi > 0),
    }

    @jax.jit
    def evaluate(field):
        out = {}
        for name in UNIT_NAMES:
            unit = units.as_unit_type(name)
            one = lambda f, u=unit: u.log_partition(f[None])  # noqa: E731
            out[name] = (
                jax.vmap(one)(field),
                unit.mean(field),
                jax.vmap(jax.grad(one))(field),
                unit.sample(jax.random.key(0), jnp.broadcast_to(field, (1000, 6))),
            )
        return out

    got = evaluate(field)
    for name, (a, mean, positive) in refs.items():
        unit = units.as_unit_type(name)
        per_unit, unit_mean, grad, x = got[name]
        np.testing.assert_allclose(per_unit, a, rtol=1e-6, atol=1e-30)
        np.testing.assert_allclose(unit_mean, mean, rtol=1e-6, atol=1e-30)
        assert np.all(np.isfinite(grad))
        # A' is the mean; absolute 1e-6: float32 |phi| + softplus(-2|phi|) cancels near 0.
        np.testing.assert_allclose(grad, mean, rtol=1e-6, atol=1e-6)
        assert x.dtype == jnp.float32
        low, high = unit.values
        # |field| >= 50: the other value has probability < e^-50, never drawn.
        extreme = np.abs(phi) >= 50
        expected = np.where(positive, high, low)
        np.testing.assert_array_equal(x[:, extreme], np.broadcast_to(expected[extreme], (1000, 4)))


@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_large_weights_are_finite_and_match_float64(vu, hu):
    """Weights of magnitude 50 (fields of several hundred): nothing overflows in float32."""
    rng = np.random.default_rng(9)
    n_v, n_h = 4, 3
    w = (50.0 * rng.choice([-1.0, 1.0], (n_v, n_h))).astype(np.float32)
    # Biases of +-25: every field is 25 plus a multiple of 50, never near zero.
    b = rng.choice([-25.0, 25.0], n_v).astype(np.float32)
    c = rng.choice([-25.0, 25.0], n_h).astype(np.float32)
    params = nrbm.RBMParams(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c), vu, hu)
    V, H, table = brute_joint_log_weights(w, b, c, vu, hu)
    v, h = jnp.asarray(V, jnp.float32), jnp.asarray(H, jnp.float32)

    @jax.jit
    def evaluate(params):
        return dict(
            _all_quantities(params, v, h),
            grad_weights=jax.grad(lambda p: nrbm.free_energy(p, v).sum())(params).weights,
            h_draw=nrbm.sample_hidden(jax.random.key(1), params, v),
            v_draw=nrbm.gibbs_sweep(jax.random.key(2), params, v)[0],
        )

    got = evaluate(params)
    for x in got.values():
        assert np.all(np.isfinite(x))
    # Values of order 1e3: float32 keeps ~1e-4 absolute; compare with a relative tolerance.
    np.testing.assert_allclose(got["free_energy"], -logsumexp(table, axis=1), rtol=1e-6)
    np.testing.assert_allclose(got["hidden_free_energy"], -logsumexp(table, axis=0), rtol=1e-6)
    log_h_given_v, log_v_given_h = conditionals(table)
    np.testing.assert_allclose(got["hidden_log_prob"], log_h_given_v, rtol=1e-6, atol=1e-3)
    np.testing.assert_allclose(got["visible_log_prob"], log_v_given_h, rtol=1e-6, atol=1e-3)
    mean_h = np.exp(log_h_given_v) @ H
    np.testing.assert_allclose(got["grad_weights"], -V.T @ mean_h, rtol=1e-6, atol=1e-5)
    # |field| >= 25: each conditional is a point mass to within e^-25.
    np.testing.assert_array_equal(got["h_draw"], H[np.argmax(log_h_given_v, axis=1)])
    v_expected = V[np.argmax(log_v_given_h[:, np.argmax(log_h_given_v, axis=1)], axis=0)]
    np.testing.assert_array_equal(got["v_draw"], v_expected)


def test_default_dtype_is_float32():
    params = nrbm.init_params(jax.random.key(0), 5, 3)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
    v = jnp.ones((2, 5), jnp.float32)
    v_new, h = jax.jit(nrbm.gibbs_sweep)(jax.random.key(1), params, v)
    assert jax.jit(nrbm.free_energy)(params, v).dtype == jnp.float32
    assert v_new.dtype == h.dtype == jnp.float32


def test_float64_params_give_float64_results(x64):
    vu, hu = "spin", "bernoulli"
    params = nrbm.init_params(
        jax.random.key(0), 4, 3, weight_scale=1.0, visible_units=vu, hidden_units=hu,
        dtype=jnp.float64,
    )  # fmt: skip
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(params))
    v = jnp.asarray(brute_states(4, vu))
    h = jnp.asarray(brute_states(3, hu))
    got = _all_quantities(params, v, h)
    sweep = jax.jit(nrbm.gibbs_sweep)
    for x in (*got.values(), *sweep(jax.random.key(2), params, v)):
        assert x.dtype == jnp.float64
    # float32 params stay float32 even with x64 enabled.
    params32 = nrbm.init_params(jax.random.key(0), 4, 3, visible_units=vu, hidden_units=hu)
    assert sweep(jax.random.key(2), params32, v.astype(jnp.float32))[0].dtype == jnp.float32
    # float64 agrees with the brute-force table to rounding.
    _, _, table = brute_joint_log_weights(
        *(np.asarray(x) for x in jax.tree.leaves(params)), vu, hu
    )
    np.testing.assert_allclose(got["free_energy"], -logsumexp(table, 1), rtol=1e-12)
    np.testing.assert_allclose(got["neg_energy"], table, rtol=1e-12)


# --- bad inputs -------------------------------------------------------------------------------


@pytest.mark.parametrize("n_v,n_h", [(0, 3), (3, 0), (-1, 2)])
def test_init_params_rejects_empty_layers(n_v, n_h):
    with pytest.raises(ValueError, match="at least one unit per layer") as info:
        nrbm.init_params(jax.random.key(0), n_v, n_h)
    assert f"n_visible={n_v}" in str(info.value) and f"n_hidden={n_h}" in str(info.value)


def test_init_params_rejects_mismatched_visible_bias():
    with pytest.raises(ValueError, match=r"visible_bias has shape \(4,\), expected \(3,\)"):
        nrbm.init_params(jax.random.key(0), 3, 2, visible_bias=np.zeros(4))
    params = nrbm.init_params(jax.random.key(0), 3, 2, visible_bias=[0.5, -1.0, 2.0])
    np.testing.assert_array_equal(params.visible_bias, np.float32([0.5, -1.0, 2.0]))
    np.testing.assert_array_equal(params.hidden_bias, np.zeros(2))


@pytest.mark.parametrize("bad", ["gauss", "bernouli", 3, None])
def test_unknown_unit_types_are_rejected_with_the_valid_names(bad):
    for make in (
        lambda: nrbm.init_params(jax.random.key(0), 3, 2, visible_units=bad),
        lambda: nrbm.init_params(jax.random.key(0), 3, 2, hidden_units=bad),
        lambda: nrbm.RBMParams(jnp.zeros((3, 2)), jnp.zeros(3), jnp.zeros(2), hidden_units=bad),
    ):
        with pytest.raises(ValueError, match="unknown unit type") as info:
            make()
        message = str(info.value)
        assert repr(bad) in message and "'bernoulli'" in message and "'spin'" in message


def test_unit_names_are_case_insensitive_and_instances_pass_through():
    params = nrbm.init_params(jax.random.key(0), 3, 2, visible_units="Spin", hidden_units="SPIN")
    assert params.visible_units == units.Spin() and params.hidden_units == units.Spin()
    assert units.as_unit_type(units.Bernoulli()) == units.Bernoulli()
    assert (params.n_visible, params.n_hidden, params.batch_shape) == (3, 2, ())


# --- the two-state sampler: exact thresholds on 32-bit random words ----------------------


# Logits of both tails, far tails (p ~ 3e-7 and 1e-13) and exactly 1/2.
EXTREME_LOGITS = np.array([-30.0, -15.0, -2.0, -1e-3, 0.0, 1e-3, 2.0, 15.0, 30.0], np.float32)


def test_binary_threshold_is_exact_to_2_pow_minus_32():
    """P(high) = #{words mapped to high} / 2^32 is within 2^-32 + 2 float32 ulps of sigma(l).

    The map word -> value is checked to be a threshold (high below it for l <= 0, above it
    for l > 0) on a grid of words plus the words next to the ideal threshold
    :math:`2^{32}\\sigma(-|l|)`, so the count of high words is known exactly.
    """
    q = expit(-np.abs(EXTREME_LOGITS.astype(np.float64)))  # the smaller tail, float64
    ideal = q * 2.0**32
    # float32 sigma(-|l|) is within 2 ulps (relative 2.4e-7) of q: allow that, plus 1 word.
    slack = np.ceil(ideal * 2.4e-7) + 1
    grid = np.linspace(0, 2**32 - 1, 4097).astype(np.uint64)
    for logit, t, s in zip(EXTREME_LOGITS, ideal, slack, strict=True):
        near = np.floor(t) + np.arange(-3 * s - 2, 3 * s + 3)
        words = np.unique(np.concatenate([grid, near[(near >= 0) & (near < 2**32)]]))
        got = units._binary_from_words(
            jnp.asarray(words, jnp.uint32), jnp.full(words.shape, logit), 0.0, 1.0
        )
        got = np.asarray(got).astype(bool)
        in_tail = got if logit <= 0 else ~got
        # A threshold: every tail word is below every non-tail word.
        assert in_tail[: in_tail.sum()].all() and not in_tail[in_tail.sum() :].any(), logit
        threshold = words[in_tail].max() + 1 if in_tail.any() else 0
        assert abs(threshold - t) <= s, (logit, threshold, t)
        if logit == 0:
            assert threshold == 2**31  # exactly one half
    # Spin draws +1 with probability sigma(2 phi): the same map on the doubled field.
    spin = units._binary_from_words(jnp.asarray([2**31 - 1, 2**31], jnp.uint32), 0.0, -1.0, 1.0)
    np.testing.assert_array_equal(spin, [1.0, -1.0])


@pytest.mark.statistical
@pytest.mark.parametrize("name", UNIT_NAMES)
def test_sampler_frequencies_at_extreme_probabilities(name):
    """Draws at p = 1/2, sigma(+-2), sigma(+-15) ~ 3e-7 and sigma(+-30) ~ 1e-13: frequencies
    match (G-test), far tails are (almost) never hit, and the draws are deterministic given
    the key and equal under vmap over keys."""
    unit = units.as_unit_type(name)
    scale = 2.0 if name == "spin" else 1.0  # spins take +1 with probability sigma(2 phi)
    rows, repeats = 4096, 8
    field = jnp.broadcast_to(jnp.asarray(EXTREME_LOGITS / scale), (rows, len(EXTREME_LOGITS)))
    keys = jax.random.split(jax.random.key(42), repeats)
    draws = jax.jit(jax.vmap(lambda k: unit.sample(k, field)))(keys)
    np.testing.assert_array_equal(draws[0], unit.sample(keys[0], field))  # vmap == loop
    np.testing.assert_array_equal(draws[0], jax.jit(unit.sample)(keys[0], field))
    assert not np.array_equal(draws[0], unit.sample(jax.random.key(43), field))
    high = np.asarray(draws == unit.values[1]).reshape(-1, len(EXTREME_LOGITS)).sum(0)
    n = repeats * rows
    p = expit(EXTREME_LOGITS.astype(np.float64))
    moderate = np.abs(EXTREME_LOGITS) <= 2
    counts = np.stack([high[moderate], n - high[moderate]], -1)
    expected = n * np.stack([p[moderate], 1 - p[moderate]], -1)
    assert g_test_pvalue(counts, expected) > P_MIN
    # Far tails: Poisson with mean n * 3.06e-7 = 0.010 hits at |l| = 15, so at most 2 except
    # with probability 1.7e-7 per logit; never at |l| = 30 (mean 3e-9).
    tail_hits = np.where(EXTREME_LOGITS > 0, n - high, high)
    assert np.all(tail_hits[np.abs(EXTREME_LOGITS) == 15] <= 2)
    assert np.all(tail_hits[np.abs(EXTREME_LOGITS) == 30] == 0)
