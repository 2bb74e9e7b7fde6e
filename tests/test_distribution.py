"""The RBM NumPyro distribution, checked against brute-force enumeration (tests/conftest.py).

Statistical tests use a G-test threshold of p > ``P_MIN`` = 1e-5 (conftest): a correct sampler
fails one such check with probability about 1e-5 on any machine (tests/README.md), while the
broken samplers checked below (and the one-sweep Gibbs chain) give p-values far below it.
"""

import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import P_MIN, brute_joint_log_weights, brute_states, g_test_pvalue, state_index
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer.util import log_density
from scipy.special import logsumexp
from scipy.stats import norm

import numpyro_rbm as nrbm
from numpyro_rbm import RBM, RBMParams
from numpyro_rbm import distribution as distribution_module


def random_arrays(seed, n_v, n_h, batch=(), scale=1.0):
    rng = np.random.default_rng(seed)
    return (
        scale * rng.normal(size=batch + (n_v, n_h)),
        rng.normal(size=batch + (n_v,)),
        rng.normal(size=batch + (n_h,)),
    )


def random_params(seed, n_v, n_h, batch=(), scale=1.0, vu="bernoulli", hu="bernoulli"):
    w, b, c = random_arrays(seed, n_v, n_h, batch, scale)
    return RBMParams(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c), vu, hu)


def brute_log_p(w, b, c, vu, hu):
    """Exact log p(v) for every state of brute_states(n_v, vu), independent of the library."""
    _, _, table = brute_joint_log_weights(w, b, c, vu, hu)
    return logsumexp(table, axis=1) - logsumexp(table)


def brute_log_p_batched(params):
    w, b, c = (
        np.asarray(x, np.float64)
        for x in (params.weights, params.visible_bias, params.hidden_bias)
    )
    batch = params.batch_shape
    w, b, c = (
        np.broadcast_to(x, batch + x.shape[x.ndim - nd :]) for x, nd in ((w, 2), (b, 1), (c, 1))
    )
    vu, hu = params.visible_units.name, params.hidden_units.name
    out = [brute_log_p(w[i], b[i], c[i], vu, hu) for i in np.ndindex(*batch)]
    return np.stack(out, -1).reshape((-1,) + batch)  # (states, *batch)


UNIT_CASES = [
    ("bernoulli", "bernoulli"),
    ("spin", "spin"),
    ("bernoulli", "spin"),
    ("spin", "bernoulli"),
]


# --- normalisation and log_prob against brute force ---------------------------------------


@pytest.mark.parametrize(
    "vu,hu,n_v,n_h,batch",
    [
        ("bernoulli", "bernoulli", 3, 5, ()),
        ("bernoulli", "bernoulli", 5, 3, ()),
        ("spin", "spin", 3, 5, ()),
        ("spin", "spin", 5, 3, ()),
        ("bernoulli", "spin", 4, 3, (2,)),
        ("spin", "bernoulli", 3, 4, (2, 1)),
    ],
)
def test_probabilities_sum_to_one(vu, hu, n_v, n_h, batch):
    # (3, 5): the visible layer is enumerated; (5, 3): the hidden one; the rest are batched.
    rbm = RBM(random_params(0, n_v, n_h, batch, vu=vu, hu=hu))
    assert rbm.batch_shape == batch and rbm.event_shape == (n_v,) and rbm.is_normalized
    states = jnp.asarray(brute_states(n_v, vu)).reshape((-1,) + (1,) * len(batch) + (n_v,))
    total = jnp.exp(rbm.log_prob(states)).sum(0)
    np.testing.assert_allclose(total, np.ones(batch), rtol=2e-5)


@pytest.mark.parametrize("vu,hu", UNIT_CASES)
def test_log_prob_matches_brute_force(x64, vu, hu):
    params = random_params(1, 4, 3, (3,), scale=1.5, vu=vu, hu=hu)
    rbm = RBM(params)
    states = jnp.asarray(brute_states(4, vu))[:, None, :]
    log_p = rbm.log_prob(states)
    assert log_p.dtype == jnp.float64 and log_p.shape == (16, 3)
    np.testing.assert_allclose(log_p, brute_log_p_batched(params), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rbm.log_z, nrbm.log_partition(params), rtol=1e-12)


def test_constructor_forms_agree(x64):
    w, b, c = random_arrays(2, 3, 2)
    params = RBMParams(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c), "spin", "bernoulli")
    from_params = RBM(params)
    from_arrays = RBM(w, b, c, visible_units="spin", hidden_units="bernoulli")
    v = jnp.asarray(brute_states(3, "spin"))
    np.testing.assert_array_equal(from_params.log_prob(v), from_arrays.log_prob(v))
    assert from_arrays.params.visible_units == nrbm.Spin()
    assert from_arrays.params.hidden_units == nrbm.Bernoulli()
    np.testing.assert_array_equal(from_arrays.params.weights, w)


def test_large_weights_do_not_overflow(x64):
    rng = np.random.default_rng(3)
    w = 50.0 * rng.choice([-1.0, 1.0], size=(4, 3))
    b, c = 50.0 * rng.normal(size=4), 50.0 * rng.normal(size=3)
    expected = brute_log_p(w, b, c, "bernoulli", "bernoulli")
    states = brute_states(4)
    with jax.enable_x64(False):
        log_p32 = RBM(w, b, c).log_prob(states)
        assert log_p32.dtype == jnp.float32
    assert np.all(np.isfinite(log_p32) | (expected < -80))
    finite = expected > -80  # where float32 can represent exp(log p) at all
    np.testing.assert_allclose(
        log_p32[finite], expected[finite], atol=2e-3 * np.abs(expected).max()
    )
    np.testing.assert_allclose(np.exp(np.asarray(log_p32, np.float64)).sum(), 1.0, rtol=1e-4)
    log_p64 = RBM(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c)).log_prob(states)
    np.testing.assert_allclose(log_p64, expected, rtol=1e-12, atol=1e-9)


def test_float32_default_and_float64_when_given(x64):
    w, b, c = random_arrays(4, 3, 2)
    rbm32 = RBM(*(jnp.asarray(x, jnp.float32) for x in (w, b, c)))
    rbm64 = RBM(*(jnp.asarray(x, jnp.float64) for x in (w, b, c)))
    key = jax.random.key(0)
    for rbm, dtype in ((rbm32, jnp.float32), (rbm64, jnp.float64)):
        assert rbm.weights.dtype == dtype and rbm.log_z.dtype == dtype
        assert rbm.log_prob(jnp.ones(3)).dtype == dtype
    # float32 draws are checked in test_exact_samples_match_enumeration
    assert rbm64.sample(key, (2,)).dtype == jnp.float64
    # integer inputs become float32, the library's default, even with x64 on
    assert RBM(np.ones((3, 2), int), np.zeros(3, int), np.zeros(2, int)).weights.dtype == (
        jnp.float32
    )


def test_log_prob_gradient_matches_brute_force(x64):
    w, b, c = random_arrays(5, 3, 4)
    V, H = jnp.asarray(brute_states(3)), jnp.asarray(brute_states(4))
    v = V[jnp.array([1, 6, 6, 7])]

    def brute(w, b, c):  # log p(v) by summing the joint table, written without the library
        table = (V @ b)[:, None] + (H @ c)[None, :] + V @ w @ H.T
        log_pv = jax.nn.logsumexp(table, 1) - jax.nn.logsumexp(table)
        return jnp.sum(log_pv[jnp.array([1, 6, 6, 7])])

    args = tuple(jnp.asarray(x) for x in (w, b, c))
    got = jax.jit(jax.grad(lambda w, b, c: RBM(w, b, c).log_prob(v).sum(), argnums=(0, 1, 2)))(
        *args
    )
    want = jax.jit(jax.grad(brute, argnums=(0, 1, 2)))(*args)
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


# --- the three log Z modes --------------------------------------------------------------


def test_unnormalized_mode_returns_minus_free_energy(x64):
    w, b, c = random_arrays(6, 4, 3)
    rbm = RBM(w, b, c, log_z=None)
    assert not rbm.is_normalized and rbm.log_z is None and rbm.log_z_mode is None
    states = brute_states(4)
    _, _, table = brute_joint_log_weights(w, b, c)
    np.testing.assert_allclose(rbm.log_prob(states), logsumexp(table, 1), rtol=1e-12)


def test_supplied_log_z_is_used_as_given(x64):
    params = random_params(7, 4, 3, (2,))
    estimate = jnp.array([1.5, -2.0])
    states = jnp.asarray(brute_states(4))[:, None, :]
    unnormalized = RBM(params, log_z=None).log_prob(states)
    for log_z in (estimate, types.SimpleNamespace(log_z=estimate)):  # array or AIS-like result
        rbm = RBM(params, log_z=log_z)
        assert rbm.is_normalized and rbm.log_z_mode == "supplied"
        np.testing.assert_allclose(rbm.log_prob(states), unnormalized - estimate, rtol=1e-12)


def test_exact_log_z_is_computed_once(monkeypatch):
    calls = []
    original = distribution_module.log_partition

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(distribution_module, "log_partition", counting)
    rbm = RBM(random_params(8, 3, 2))
    assert calls == []  # lazily: construction does not enumerate
    v = jnp.ones(3)
    first = rbm.log_prob(v)
    np.testing.assert_array_equal(rbm.log_prob(v), first)
    assert len(calls) == 1


def test_traced_log_z_is_not_cached():
    rbm = RBM(random_params(9, 3, 2))
    v = jnp.ones((4, 3))
    under_jit = jax.jit(rbm.log_prob)(v)

    def body(carry, x):
        return carry + rbm.log_prob(x), None

    under_scan, _ = jax.lax.scan(body, 0.0, v)
    eager = rbm.log_prob(v)  # would raise UnexpectedTracerError if a tracer had been cached
    assert not isinstance(rbm.log_z, jax.core.Tracer)
    np.testing.assert_allclose(under_jit, eager, rtol=1e-6)
    np.testing.assert_allclose(under_scan, eager.sum(), rtol=1e-5)


def test_too_large_for_exact_log_z_says_how_to_proceed():
    w = jnp.zeros((31, 32))
    with pytest.raises(nrbm.EnumerationTooLarge, match=r"log_z=None.*numpyro_rbm\.ais"):
        RBM(w, jnp.zeros(31), jnp.zeros(32))
    rbm = RBM(w, jnp.zeros(31), jnp.zeros(32), log_z=None, num_gibbs_sweeps=2)
    assert not rbm.exact_sampling
    v = rbm.sample(jax.random.key(0), (3,))
    assert v.shape == (3, 31) and set(np.unique(v)) <= {0.0, 1.0}
    assert np.isfinite(rbm.log_prob(v)).all()
    # one small layer is enough for exact work
    assert RBM(jnp.zeros((5, 40)), jnp.zeros(5), jnp.zeros(40)).exact_sampling


# --- sampling -----------------------------------------------------------------------------


@pytest.mark.statistical
@pytest.mark.parametrize(
    "vu,hu,n_v,n_h", [("bernoulli", "bernoulli", 4, 3), ("spin", "bernoulli", 3, 5)]
)
def test_exact_samples_match_enumeration(vu, hu, n_v, n_h):
    params = random_params(10, n_v, n_h, (2,), scale=1.0, vu=vu, hu=hu)
    rbm = RBM(params)
    assert rbm.exact_sampling
    n = 10_000
    v, (h,) = rbm.sample_with_intermediates(jax.random.key(1), (n,))
    assert v.shape == (n, 2, n_v) and h.shape == (n, 2, n_h)
    assert v.dtype == h.dtype == jnp.float32
    probs = np.exp(brute_log_p_batched(params)).T  # (batch, states)
    idx = state_index(v, vu)  # (n, 2)
    observed = np.stack([np.bincount(idx[:, i], minlength=2**n_v) for i in range(2)])
    assert g_test_pvalue(observed, n * probs) > P_MIN
    # the hidden draws are joint with v: compare the (v, h) table for the first RBM
    V, H, table = brute_joint_log_weights(
        *(np.asarray(x[0]) for x in (params.weights, params.visible_bias, params.hidden_bias)),
        vu,
        hu,
    )
    joint = np.exp(table - logsumexp(table)).ravel()
    cell = state_index(v[:, 0], vu) * len(H) + state_index(h[:, 0], hu)
    assert g_test_pvalue(np.bincount(cell, minlength=joint.size), n * joint) > P_MIN


@pytest.mark.statistical
@pytest.mark.parametrize("vu", ["bernoulli", "spin"])
def test_gibbs_fallback_is_approximately_right(vu):
    """max_units=1 forces the Gibbs path on a 4 x 3 model whose exact p(v) is known. Each draw
    is an independent chain of k sweeps from a uniform start, so its law is exactly
    u T^k (T the sweep kernel, by enumeration): the draws must match it for k = 1 and 30.
    30 sweeps are within 1e-9 of p(v) in total variation; one sweep is far from it, and the
    draws of one sweep fail the G-test against p(v) (which shows that test has power)."""
    params = random_params(11, 4, 3, scale=1.0, vu=vu)
    probs = np.exp(brute_log_p_batched(params))
    arrays = (
        np.asarray(x, np.float64)
        for x in (params.weights, params.visible_bias, params.hidden_bias)
    )
    _, _, table = brute_joint_log_weights(*arrays, vu, "bernoulli")
    sweep = (
        np.exp(table - logsumexp(table, 1, keepdims=True))
        @ np.exp(table - logsumexp(table, 0, keepdims=True)).T
    )
    n = 4000
    counts = {}
    for sweeps in (1, 30):
        rbm = RBM(params, log_z=None, max_units=1, num_gibbs_sweeps=sweeps)
        assert not rbm.exact_sampling
        v, (h,) = rbm.sample_with_intermediates(jax.random.key(2), (n,))
        assert v.shape == (n, 4) and h.shape == (n, 3)
        counts[sweeps] = np.bincount(state_index(v, vu), minlength=16)
        law = np.full(16, 1 / 16) @ np.linalg.matrix_power(sweep, sweeps)
        assert g_test_pvalue(counts[sweeps], n * law) > P_MIN, sweeps
    assert 0.5 * np.abs(law - probs).sum() < 1e-9  # 30 sweeps: p(v) to rounding
    assert g_test_pvalue(counts[1], n * probs) < P_MIN


def test_gibbs_fallback_batched_shapes_and_float64(x64):
    rbm = RBM(random_params(12, 3, 2, (2,)), log_z=None, max_units=1, num_gibbs_sweeps=3)
    v, (h,) = rbm.sample_with_intermediates(jax.random.key(0), (5,))
    assert v.shape == (5, 2, 3) and h.shape == (5, 2, 2)
    assert v.dtype == h.dtype == jnp.float64


# --- support and bad input ----------------------------------------------------------------


def test_support():
    bern = RBM(random_params(13, 3, 2))
    spin = RBM(random_params(13, 3, 2, vu="spin"))
    assert bern.support == constraints.independent(constraints.boolean, 1)
    assert spin.support == constraints.independent(distribution_module.spin, 1)
    assert spin.support.event_dim == 1 and spin.support.is_discrete
    x = jnp.array([[1.0, -1.0, 1.0], [1.0, 0.0, 1.0]])
    np.testing.assert_array_equal(spin.support(x), [True, False])
    assert spin.support(spin.support.feasible_like(jnp.zeros((2, 3)))).all()
    np.testing.assert_array_equal(
        bern.support(jnp.array([[1.0, 0.0, 1.0], [1.0, 0.5, 0.0]])), [True, False]
    )


@pytest.mark.parametrize("vu,bad", [("bernoulli", [2.0, 0.0, 1.0]), ("spin", [1.0, 0.0, -1.0])])
def test_out_of_support_is_minus_inf_and_warns_like_numpyro(vu, bad):
    params = random_params(14, 3, 2, vu=vu)
    good = brute_states(3, vu)[3]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log_p = RBM(params).log_prob(jnp.array([bad, good]))
        reference = dist.Bernoulli(probs=0.5).log_prob(2.0)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and messages[0] == messages[1]  # NumPyro's own warning text
    assert log_p[0] == -jnp.inf and np.isfinite(log_p[1]) and reference == -jnp.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning when validation is off...
        quiet = RBM(params, validate_args=False).log_prob(jnp.array(bad))
    assert quiet == -jnp.inf  # ...but still -inf


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda w, b, c: RBM(w.at[0, 1].set(jnp.nan), b, c), ValueError, "non-finite.*weights"),
        (lambda w, b, c: RBM(w, b.at[0].set(jnp.inf), c), ValueError, "visible_bias"),
        (lambda w, b, c: RBM(w, b, c, log_z=jnp.nan), ValueError, "non-finite.*log_z"),
        (lambda w, b, c: RBM(w, b[:2], c), ValueError, r"visible_bias.*n_visible=3"),
        (lambda w, b, c: RBM(w, b, jnp.zeros(3)), ValueError, r"hidden_bias.*n_hidden=2"),
        (lambda w, b, c: RBM(w[0], b, c), ValueError, r"\(\.\.\., n_visible, n_hidden\)"),
        (
            lambda w, b, c: RBM(jnp.zeros((2, 3, 2)), jnp.zeros((3, 3)), c),
            ValueError,
            "do not broadcast",
        ),
        (
            lambda w, b, c: RBM(w, b, c, visible_units="gaussianish"),
            ValueError,
            "unknown unit type",
        ),
        (lambda w, b, c: RBM(w, b, c, log_z="ais"), ValueError, "log_z must be"),
        (lambda w, b, c: RBM(w, b, c, log_z=jnp.zeros(4)), ValueError, "batch shape"),
        (lambda w, b, c: RBM(w, b, c, num_gibbs_sweeps=0), ValueError, "num_gibbs_sweeps"),
        (lambda w, b, c: RBM(w), ValueError, "weights, visible_bias and hidden_bias"),
        (lambda w, b, c: RBM(RBMParams(w, b, c), b, c), ValueError, "takes the biases"),
        (lambda w, b, c: RBM(RBMParams(w, b, c), visible_units="spin"), ValueError, "conflicts"),
        (
            lambda w, b, c: RBM(w, b, c).log_prob(jnp.ones(4)),
            ValueError,
            r"shape \(\.\.\., 3\).*got shape \(4,\)",
        ),
        (lambda w, b, c: RBM(w, b, c).log_prob(1.0), ValueError, r"shape \(\.\.\., 3\)"),
    ],
)
def test_bad_input_gives_a_clear_error(make, error, match):
    w, b, c = (jnp.asarray(x) for x in random_arrays(15, 3, 2))
    with pytest.raises(error, match=match):
        make(w, b, c)


def test_validation_off_skips_value_checks():
    w, b, c = (jnp.asarray(x) for x in random_arrays(16, 3, 2))
    rbm = RBM(w.at[0, 0].set(jnp.nan), b, c, validate_args=False)
    assert np.isnan(rbm.log_prob(jnp.ones(3)))


def test_infer_shapes():
    assert RBM.infer_shapes((5, 4, 3), (4,), (1, 3)) == ((5,), (4,))
    assert RBM.infer_shapes((4, 3), (2, 4), (3,)) == ((2,), (4,))


# --- NumPyro and JAX integration ----------------------------------------------------------


def test_pytree_round_trip_and_jit():
    params = random_params(17, 3, 2, vu="spin", hu="bernoulli")
    rbm = RBM(params, num_gibbs_sweeps=7, max_units=9)
    leaves, treedef = jax.tree.flatten(rbm)
    back = jax.tree.unflatten(treedef, leaves)
    assert (back.visible_units, back.hidden_units) == (nrbm.Spin(), nrbm.Bernoulli())
    assert (back.num_gibbs_sweeps, back.max_units, back.log_z_mode) == (7, 9, "exact")
    v = jnp.asarray(brute_states(3, "spin"))
    expected = rbm.log_prob(v)
    # the distribution as a jit argument ...
    np.testing.assert_allclose(jax.jit(lambda d, x: d.log_prob(x))(rbm, v), expected, rtol=1e-6)
    # ... and as a return value, built from traced arrays
    built = jax.jit(
        lambda w: RBM(w, params.visible_bias, params.hidden_bias, visible_units="spin", log_z=None)
    )(params.weights)
    assert isinstance(built, RBM) and built.visible_units == nrbm.Spin()
    assert built.log_z_mode is None and built.batch_shape == () and built.event_shape == (3,)
    np.testing.assert_allclose(built.log_prob(v), expected + rbm.log_z, rtol=1e-5)
    assert jax.jit(rbm.sample, static_argnums=1)(jax.random.key(0), (4,)).shape == (4, 3)


def test_vmap_over_parameters_and_values():
    params = random_params(18, 3, 2, (4,))
    v = jnp.asarray(brute_states(3)[:4])
    batched = RBM(params).log_prob(v)
    mapped = jax.vmap(lambda w, b, c, x: RBM(w, b, c).log_prob(x))(
        params.weights, params.visible_bias, params.hidden_bias, v
    )
    np.testing.assert_allclose(mapped, batched, rtol=1e-5)
    # the distribution itself as a vmapped argument (its leaves carry the batch axis)
    over_dist = jax.vmap(lambda d, x: d.log_prob(x))(RBM(params), v)
    np.testing.assert_allclose(over_dist, batched, rtol=1e-5)
    single = RBM(jax.tree.map(lambda x: x[0], params))
    np.testing.assert_allclose(jax.vmap(single.log_prob)(v), single.log_prob(v), rtol=1e-6)


def prior_model(rbm, beta, y=None):
    v = numpyro.sample("v", rbm)
    numpyro.sample("y", dist.Normal(v @ beta, 1.0), obs=y)
    return v


def test_seed_trace_and_log_density_with_a_dependent_site():
    rbm = RBM(random_params(19, 3, 2))
    beta, y = jnp.array([0.5, -1.0, 2.0]), jnp.array(1.2)
    trace = handlers.trace(handlers.seed(prior_model, 0)).get_trace(rbm, beta, y)
    site = trace["v"]
    assert site["fn"] is rbm and site["value"].shape == (3,) and site["type"] == "sample"
    assert set(np.unique(site["value"])) <= {0.0, 1.0}
    v = jnp.array([1.0, 0.0, 1.0])
    joint, _ = log_density(prior_model, (rbm, beta, y), {}, {"v": v})
    expected = rbm.log_prob(v) + norm.logpdf(float(y), float(v @ beta), 1.0)
    np.testing.assert_allclose(joint, expected, rtol=1e-5)
    # the same seed draws the same state
    again = handlers.trace(handlers.seed(prior_model, 0)).get_trace(rbm, beta, y)
    np.testing.assert_array_equal(again["v"]["value"], site["value"])


def test_substitute_and_condition():
    rbm = RBM(random_params(20, 3, 2))
    beta, v = jnp.ones(3), jnp.array([0.0, 1.0, 1.0])
    sub = handlers.trace(handlers.seed(handlers.substitute(prior_model, {"v": v}), 1)).get_trace(
        rbm, beta
    )
    np.testing.assert_array_equal(sub["v"]["value"], v)
    assert not sub["v"]["is_observed"]
    cond = handlers.condition(prior_model, {"v": v})
    trace = handlers.trace(handlers.seed(cond, 2)).get_trace(rbm, beta)
    assert trace["v"]["is_observed"]
    np.testing.assert_array_equal(trace["v"]["value"], v)
    joint, _ = log_density(cond, (rbm, beta, jnp.array(0.0)), {}, {})
    expected = rbm.log_prob(v) + norm.logpdf(0.0, float(v @ beta), 1.0)
    np.testing.assert_allclose(joint, expected, rtol=1e-5)


def test_plate_broadcasts_and_log_density_sums():
    rbm = RBM(random_params(21, 3, 2))

    def model():
        with numpyro.plate("data", 5):
            return numpyro.sample("v", rbm)

    trace = handlers.trace(handlers.seed(model, 0)).get_trace()
    values = trace["v"]["value"]
    assert values.shape == (5, 3) and trace["v"]["fn"].batch_shape == (5,)
    joint, _ = log_density(model, (), {}, {"v": values})
    np.testing.assert_allclose(joint, rbm.log_prob(values).sum(), rtol=1e-5)

    batched = RBM(random_params(22, 3, 2, (5,)))  # batch shape already matches the plate

    def batched_model():
        with numpyro.plate("data", 5):
            return numpyro.sample("v", batched)

    trace = handlers.trace(handlers.substitute(batched_model, {"v": values})).get_trace()
    assert trace["v"]["fn"] is batched  # not wrapped in an ExpandedDistribution


def test_expand_mask_and_to_event():
    rbm = RBM(random_params(23, 3, 2, (2,)))
    v = rbm.sample(jax.random.key(0), (4,))  # (4, 2, 3)
    expanded = rbm.expand((4, 2))
    assert expanded.batch_shape == (4, 2) and expanded.event_shape == (3,)
    assert expanded.sample(jax.random.key(1)).shape == (4, 2, 3)
    np.testing.assert_allclose(expanded.log_prob(v), rbm.log_prob(v), rtol=1e-6)
    masked = rbm.mask(jnp.array([True, False]))
    np.testing.assert_allclose(masked.log_prob(v), rbm.log_prob(v) * jnp.array([1.0, 0.0]))
    event = rbm.to_event(1)
    assert event.batch_shape == () and event.event_shape == (2, 3)
    np.testing.assert_allclose(event.log_prob(v), rbm.log_prob(v).sum(-1), rtol=1e-6)


def test_model_with_traced_parameters_under_jit():
    # RBM parameters as NumPyro params, log density jitted and differentiated: the usual
    # SVI/MLE pattern, with log Z computed inside the trace.
    w, b, c = (jnp.asarray(x) for x in random_arrays(24, 3, 2))
    data = jnp.asarray(brute_states(3)[[1, 5, 7]])

    def model():
        weights = numpyro.param("w", w)
        with numpyro.plate("data", 3):
            numpyro.sample("v", RBM(weights, b, c), obs=data)

    def loss(weights):
        return -log_density(model, (), {}, {"w": weights})[0]

    value, grad = jax.jit(jax.value_and_grad(loss))(w)
    np.testing.assert_allclose(value, -RBM(w, b, c).log_prob(data).sum(), rtol=1e-5)
    assert grad.shape == w.shape and np.all(np.isfinite(grad))


@pytest.mark.statistical
def test_predictive_draws_prior_samples():
    # Predictive vmaps the seeded model over keys: sampling must work under vmap.
    rbm = RBM(random_params(25, 3, 2))
    draws = numpyro.infer.Predictive(prior_model, num_samples=2000)(
        jax.random.key(3), rbm, jnp.array([0.5, -1.0, 2.0])
    )
    assert draws["v"].shape == (2000, 3) and draws["y"].shape == (2000,)
    counts = np.bincount(state_index(draws["v"]), minlength=8)
    probs = np.exp(brute_log_p_batched(rbm.params))
    assert g_test_pvalue(counts, 2000 * probs) > P_MIN
