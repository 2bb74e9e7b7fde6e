"""Exact log Z and exact sampling (``numpyro_rbm.partition``) against brute-force enumeration.

References are float64 numpy sums over every joint state (``brute_joint_log_weights``).
float32 log Z of at most a few hundred errs by well under ``1e-4``. The sampling checks are
G-tests of joint frequencies against enumeration with the shared threshold ``P_MIN``: a
correct sampler fails one with probability ``P_MIN = 1e-5``, while the sample sizes used make
a wrong joint distribution fail with p-values far below it.
"""

import dataclasses
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
from scipy.special import logsumexp

import numpyro_rbm as nrbm
from numpyro_rbm import partition
from numpyro_rbm.units import UnitType

UNIT_NAMES = ("bernoulli", "spin")
UNIT_PAIRS = list(itertools.product(UNIT_NAMES, UNIT_NAMES))
RTOL, ATOL = 1e-5, 1e-4


def brute_log_z(w, b, c, vu="bernoulli", hu="bernoulli"):
    return logsumexp(brute_joint_log_weights(w, b, c, vu, hu)[2])


def joint_counts(v, h, vu, hu):
    """Counts of each joint state (v, h) in samples of shape (N, n_v), (N, n_h)."""
    n_v, n_h = v.shape[-1], h.shape[-1]
    counts = np.zeros((2**n_v, 2**n_h))
    np.add.at(counts, (state_index(v, vu), state_index(h, hu)), 1)
    return counts


# --- log Z ---------------------------------------------------------------------------------


@settings(max_examples=15, deadline=None, derandomize=True)
@given(
    n_v=st.integers(1, 6),
    n_h=st.integers(1, 6),
    vu=st.sampled_from(UNIT_NAMES),
    hu=st.sampled_from(UNIT_NAMES),
    scale=st.floats(0.01, 5.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_log_partition_matches_enumeration(n_v, n_h, vu, hu, scale, seed):
    params, arrays = make_params(seed, n_v, n_h, scale, vu, hu)
    log_z = jax.jit(partition.log_partition)(params)
    assert log_z.shape == () and log_z.dtype == jnp.float32
    np.testing.assert_allclose(log_z, brute_log_z(*arrays, vu, hu), rtol=RTOL, atol=ATOL)
    # The smaller layer is enumerated (the hidden one on ties).
    assert partition.enumerated_layer(params) == ("visible" if n_v < n_h else "hidden")


# (n_v, n_h, units): the enumerated layer is hidden, visible, and hidden on a tie.
CHUNK_CASES = [(6, 4, "spin", "bernoulli"), (3, 5, "bernoulli", "spin"), (4, 4, "spin", "spin")]


@pytest.mark.parametrize("n_v,n_h,vu,hu", CHUNK_CASES)
def test_log_partition_is_independent_of_chunk_bits(n_v, n_h, vu, hu):
    params, arrays = make_params(11, n_v, n_h, 1.5, vu, hu)
    expected = brute_log_z(*arrays, vu, hu)
    n = min(n_v, n_h)
    for chunk_bits in (0, 1, n - 1, n, n + 3, None):  # n + 3 is clipped to n
        got = partition.log_partition(params, chunk_bits=chunk_bits)
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL, err_msg=str(chunk_bits))
    with pytest.raises(ValueError, match="chunk_bits must be >= 0, got -1"):
        partition.log_partition(params, chunk_bits=-1)


@pytest.mark.parametrize(
    "platform,n,m,bits",
    [
        ("cpu", 28, 64, 12),  # 2^12 x 64 fields = 2^18 values (1 MiB): cache-sized
        ("cpu", 24, 784, 8),
        ("cpu", 4, 64, 4),  # never more states than the layer has
        ("gpu", 28, 64, 20),  # device-filling, at most 2^20 states (H200 optimum 18-20)
        ("gpu", 24, 784, 17),  # 2^17 x 784 values <= 2^27 (512 MiB)
        ("tpu", 20, 784, 17),
        ("gpu", 10, 784, 10),
    ],
)
def test_default_chunk_is_sized_for_the_device(platform, n, m, bits):
    assert partition._chunk_bits(n, m, None, platform) == bits
    assert partition._chunk_bits(n, m, 3, platform) == 3  # an explicit choice always wins


def test_log_partition_sizes_chunks_for_the_device_of_its_params(monkeypatch):
    params, _ = make_params(11, 6, 4, 1.5, "bernoulli", "bernoulli")
    seen = []
    real = partition._chunk_bits
    monkeypatch.setattr(partition, "_chunk_bits", lambda *a: seen.append(a) or real(*a))
    partition.log_partition(params)
    assert seen[-1][-1] == params.weights.devices().pop().platform == "cpu"


def test_log_partition_of_batched_params_is_per_rbm():
    singles = [make_params(s, 3, 4, 1.0, "spin", "bernoulli") for s in range(6)]
    stacked = jax.tree.map(
        lambda *xs: jnp.stack(xs).reshape((2, 3) + xs[0].shape), *[p for p, _ in singles]
    )
    assert stacked.batch_shape == (2, 3)
    log_z = partition.log_partition(stacked)
    assert log_z.shape == (2, 3)
    expected = [brute_log_z(*a, "spin", "bernoulli") for _, a in singles]
    np.testing.assert_allclose(log_z.ravel(), expected, rtol=RTOL, atol=ATOL)
    # Weights shared, biases batched: batch shape and log Z follow the biases.
    w0 = singles[0][1][0]
    shared = stacked.replace(weights=stacked.weights[0, 0])
    assert shared.batch_shape == (2, 3)
    expected = [brute_log_z(w0, b, c, "spin", "bernoulli") for _, (_, b, c) in singles]
    np.testing.assert_allclose(
        partition.log_partition(shared).ravel(), expected, rtol=RTOL, atol=ATOL
    )


@pytest.mark.parametrize("n_v,n_h,vu,hu", CHUNK_CASES[:2])
def test_log_partition_gradient_is_the_model_expectation(n_v, n_h, vu, hu):
    r""":math:`\nabla_W \log Z = \mathbb{E}_p[v h^\top]`, :math:`\nabla_b = \mathbb{E}_p[v]`,
    :math:`\nabla_c = \mathbb{E}_p[h]`, through the chunked ``lax.map`` and log-sum-exp."""
    params, arrays = make_params(12, n_v, n_h, 1.0, vu, hu)
    V, H, table = brute_joint_log_weights(*arrays, vu, hu)
    p = np.exp(table - logsumexp(table))
    grads = jax.jit(jax.grad(lambda q: partition.log_partition(q, chunk_bits=1)))(params)
    np.testing.assert_allclose(grads.weights, V.T @ p @ H, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.visible_bias, p.sum(1) @ V, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads.hidden_bias, p.sum(0) @ H, rtol=1e-4, atol=1e-5)


def test_all_states_order_and_values():
    for units in UNIT_NAMES:
        states = np.asarray(partition.all_states(4, units))
        # Row i holds the bits of i with unit 0 least significant: brute_states reversed.
        np.testing.assert_array_equal(states, brute_states(4, units)[:, ::-1])
    with pytest.raises(partition.EnumerationTooLarge, match="2\\^25 rows"):
        partition.all_states(25)


# --- limits and errors ---------------------------------------------------------------------


def test_enumeration_too_large_says_what_and_what_to_do():
    params = nrbm.RBMParams(jnp.zeros((40, 31)), jnp.zeros(40), jnp.zeros(31))
    message = (
        r"exact enumeration sums over 2\^31 states of the hidden layer \(31 units\), above "
        r"the limit max_units=30\. Estimate log Z with annealed importance sampling"
    )
    for call in (
        lambda: partition.log_partition(params),
        lambda: partition.sample_exact(jax.random.key(0), params, (2,)),
        lambda: partition.enumerated_layer(params),
    ):
        with pytest.raises(partition.EnumerationTooLarge, match=message) as info:
            call()
        assert isinstance(info.value, ValueError) and "raise max_units" in str(info.value)


def test_max_units_limit_and_none():
    params, arrays = make_params(13, 5, 7, 1.0)
    with pytest.raises(partition.EnumerationTooLarge, match="visible layer \\(5 units\\)"):
        partition.log_partition(params, max_units=4)
    expected = brute_log_z(*arrays)
    for max_units in (5, None):
        np.testing.assert_allclose(
            partition.log_partition(params, max_units=max_units), expected, rtol=RTOL, atol=ATOL
        )


@dataclasses.dataclass(frozen=True)
class _Continuous(UnitType):
    """A unit type without a finite set of values (only its enumerability matters here)."""

    name = "continuous-for-tests"


def test_enumerated_layer_needs_a_discrete_layer():
    both = nrbm.RBMParams(
        jnp.zeros((2, 3)), jnp.zeros(2), jnp.zeros(3), _Continuous(), _Continuous()
    )
    with pytest.raises(partition.EnumerationTooLarge, match="needs a layer of discrete units"):
        partition.enumerated_layer(both)
    # Only the hidden layer is discrete: it is enumerated although it is the larger one.
    mixed = both.replace(hidden_units=nrbm.Bernoulli())
    assert partition.enumerated_layer(mixed) == "hidden"


# --- exact sampling ------------------------------------------------------------------------

# (n_v, n_h, vu, hu, chunk_bits): both enumerated layers, one- and two-stage draws.
SAMPLE_CASES = [
    (4, 3, "bernoulli", "bernoulli", 1),
    (3, 4, "spin", "spin", 1),
    (4, 3, "spin", "bernoulli", 12),
    (3, 4, "bernoulli", "spin", 12),
]


@pytest.mark.statistical
@pytest.mark.parametrize("n_v,n_h,vu,hu,chunk_bits", SAMPLE_CASES)
def test_sample_exact_joint_frequencies_match_enumeration(n_v, n_h, vu, hu, chunk_bits):
    params, arrays = make_params(14, n_v, n_h, 0.8, vu, hu)
    _, _, table = brute_joint_log_weights(*arrays, vu, hu)
    n = 30000
    v, h = partition.sample_exact(jax.random.key(15), params, (n,), chunk_bits=chunk_bits)
    assert v.shape == (n, n_v) and h.shape == (n, n_h)
    assert v.dtype == h.dtype == jnp.float32
    counts = joint_counts(np.asarray(v), np.asarray(h), vu, hu)  # asserts values in support
    p = np.exp(table - logsumexp(table))
    assert g_test_pvalue(counts.ravel(), n * p.ravel()) >= P_MIN


@pytest.mark.statistical
def test_sample_exact_batched_shapes_and_per_rbm_distributions():
    (p1, a1), (p2, a2) = (make_params(s, 2, 3, 1.5, "spin", "bernoulli") for s in (16, 17))
    params = jax.tree.map(lambda *xs: jnp.stack(xs), p1, p2, p1)  # RBMs 0 and 2 are twins
    v, h = partition.sample_exact(jax.random.key(18), params, (2500, 2))
    assert v.shape == (2500, 2, 3, 2) and h.shape == (2500, 2, 3, 3)
    for i, arrays in enumerate((a1, a2)):
        _, _, table = brute_joint_log_weights(*arrays, "spin", "bernoulli")
        v_i, h_i = np.asarray(v[:, :, i]).reshape(-1, 2), np.asarray(h[:, :, i]).reshape(-1, 3)
        counts = joint_counts(v_i, h_i, "spin", "bernoulli")
        expected = 5000 * np.exp(table - logsumexp(table))
        assert g_test_pvalue(counts.ravel(), expected.ravel()) >= P_MIN
    # Identical RBMs of a batch draw independently (each its own key).
    assert not np.array_equal(v[:, :, 0], v[:, :, 2])
    # An empty sample shape gives one draw per RBM.
    v1, h1 = partition.sample_exact(jax.random.key(19), params)
    assert v1.shape == (3, 2) and h1.shape == (3, 3)


# --- size, memory and numerical stability --------------------------------------------------


def test_64_visible_by_24_hidden_is_exact_with_bounded_memory():
    """2^24 hidden states in chunks. Only 8 hidden units, spread over the low block and the
    high prefixes of the enumeration, couple to the visible layer, so an exact float64
    reference needs just 2^8 states: log Z = log Z(64 x 8 RBM) + sum of the free hidden
    units' softplus(c_j)."""
    rng = np.random.default_rng(21)
    n_v, n_h = 64, 24
    coupled = np.array([0, 5, 11, 15, 16, 19, 22, 23])
    w = np.zeros((n_v, n_h), np.float32)
    w[:, coupled] = 0.3 * rng.standard_normal((n_v, len(coupled)))
    b = (0.5 * rng.standard_normal(n_v)).astype(np.float32)
    c = rng.standard_normal(n_h).astype(np.float32)
    params = nrbm.RBMParams(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c))
    assert partition.enumerated_layer(params) == "hidden"

    H = brute_states(len(coupled))
    field = b.astype(np.float64) + H @ w[:, coupled].T.astype(np.float64)  # (256, 64)
    sub = H @ c[coupled].astype(np.float64) + np.logaddexp(0.0, field).sum(1)
    free = np.delete(np.arange(n_h), coupled)
    expected = logsumexp(sub) + np.logaddexp(0.0, c[free].astype(np.float64)).sum()

    log_z_fn = jax.jit(partition.log_partition)
    compiled = log_z_fn.lower(params).compile()
    # A full (2^24, 64) float32 field table would take 4 GiB; the default chunk ~16 MiB.
    temp = compiled.memory_analysis().temp_size_in_bytes
    assert temp < 128 * 2**20, f"log_partition needs {temp / 2**20:.0f} MiB of temporaries"
    np.testing.assert_allclose(compiled(params), expected, rtol=1e-5)


@pytest.mark.slow
def test_64_by_24_dense_float32_matches_float64_other_chunking():
    params, _ = make_params(22, 64, 24, 0.3)
    log_z32 = partition.log_partition(params)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: x.astype(jnp.float64), params)
        log_z64 = partition.log_partition(p64, chunk_bits=10)
        assert log_z64.dtype == jnp.float64
    np.testing.assert_allclose(log_z32, log_z64, rtol=1e-5)


@pytest.mark.statistical
@pytest.mark.parametrize("vu,hu", UNIT_PAIRS)
def test_large_weights_log_z_gradients_and_samples(vu, hu):
    """Weights of magnitude 50: log Z of order 1e3 is finite and matches float64, its gradient
    (the model expectations) too, and exact samples land on the dominant states. The last
    check is random: of the 2^7 joint states, those of probability below 1e-12 hold less than
    1.3e-10 of the mass together, so 500 exact samples hit one with probability below 7e-8."""
    rng = np.random.default_rng(23)
    w = (50.0 * rng.choice([-1.0, 1.0], (4, 3))).astype(np.float32)
    b = rng.choice([-25.0, 25.0], 4).astype(np.float32)
    c = rng.choice([-25.0, 25.0], 3).astype(np.float32)
    params = nrbm.RBMParams(jnp.asarray(w), jnp.asarray(b), jnp.asarray(c), vu, hu)
    V, H, table = brute_joint_log_weights(w, b, c, vu, hu)
    log_z, grads = jax.jit(jax.value_and_grad(partition.log_partition))(params)
    np.testing.assert_allclose(log_z, logsumexp(table), rtol=1e-6)
    p = np.exp(table - logsumexp(table))
    for x in jax.tree.leaves(grads):
        assert np.all(np.isfinite(x))
    np.testing.assert_allclose(grads.weights, V.T @ p @ H, rtol=1e-5, atol=1e-5)
    v, h = partition.sample_exact(jax.random.key(24), params, (500,))
    counts = joint_counts(np.asarray(v), np.asarray(h), vu, hu)
    # Every sample is a state of probability above 1e-12 (the others hold < 1.3e-10 mass).
    assert np.all(p[counts > 0] > 1e-12)


def test_float64_params_give_float64_log_z_and_samples(x64):
    params, arrays = make_params(25, 3, 4, 2.0, "spin", "bernoulli", dtype=np.float64)
    log_z = partition.log_partition(params)
    assert log_z.dtype == jnp.float64
    np.testing.assert_allclose(log_z, brute_log_z(*arrays, "spin", "bernoulli"), rtol=1e-12)
    v, h = partition.sample_exact(jax.random.key(26), params, (3,))
    assert v.dtype == h.dtype == jnp.float64


# --- the one-log-per-state log-partition of enumeration (float64 accuracy) ---------------


@pytest.mark.parametrize("name", UNIT_NAMES)
@pytest.mark.parametrize("m", [1, 7, 64, 65, 150])
def test_summed_log_partition_matches_per_unit_sum_in_float64(x64, name, m):
    """The product form sum(relu) + log prod(1 + e^-|phi|) against the unit's own per-unit
    sum, for fields from 1e-3 to 1e3 in magnitude (products of up to 64 factors in [1, 2],
    blocks above that): relative 1e-12, or absolute 4 m eps where the sum itself is tiny (a
    factor 1 + e^-|phi| rounds to 1 once e^-|phi| < eps/2)."""
    rng = np.random.default_rng(m)
    field = rng.standard_normal((50, m)) * 10.0 ** rng.uniform(-3, 3, (50, m))
    unit = nrbm.units.as_unit_type(name)
    got = partition._summed_log_partition(unit, jnp.asarray(field))
    assert got.dtype == jnp.float64
    per_unit = np.logaddexp(0, field) if name == "bernoulli" else np.logaddexp(field, -field)
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(got, per_unit.sum(-1), rtol=1e-12, atol=4 * m * eps)


def numpy_log_z(w, b, c, vu, hu):
    """log Z by enumerating the hidden layer in float64 numpy, visible layer summed out."""
    h = brute_states(w.shape[1], hu)
    field = b + h @ w.T
    a = np.logaddexp(0, field) if vu == "bernoulli" else np.logaddexp(field, -field)
    return logsumexp(h @ c + a.sum(-1))


# Mixed pairs cover both unit types in the summed-out (visible) and enumerated layers.
@pytest.mark.parametrize("vu,hu", [("bernoulli", "spin"), ("spin", "bernoulli")])
def test_log_partition_is_exact_to_1e_10_in_float64_with_large_weights(x64, vu, hu):
    """64 and 100 visible units (one and two product blocks), 10 hidden units enumerated in
    chunks of 2^3 and 2^10 states, weights of scale 0.1 and 1 (the exp-free factored path)
    and 8 (fields in the hundreds: the one-exp-per-element path)."""
    for n_v, chunk_bits in ((64, 3), (100, None)):
        for scale in (0.1, 1.0, 8.0):
            params, arrays = make_params(3, n_v, 10, scale, vu, hu, dtype=np.float64)
            got = partition.log_partition(params, chunk_bits=chunk_bits)
            np.testing.assert_allclose(got, numpy_log_z(*arrays, vu, hu), rtol=1e-10)


def test_other_unit_types_keep_their_own_log_partition():
    """Only the exact Bernoulli and Spin types take the product form: a subclass with another
    log-partition is summed with its own (here a tempered softplus, 0.5 softplus(2 phi))."""

    @dataclasses.dataclass(frozen=True)
    class Tempered(nrbm.units.Bernoulli):
        def log_partition(self, field):
            return jnp.sum(0.5 * jax.nn.softplus(2.0 * field), axis=-1)

    params, (w, b, c) = make_params(4, 9, 5, 1.0)
    params = params.replace(visible_units=Tempered())
    h = brute_states(5)
    expected = logsumexp(h @ c + (0.5 * np.logaddexp(0, 2 * (b + h @ w.T))).sum(-1))
    np.testing.assert_allclose(partition.log_partition(params), expected, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", UNIT_NAMES)
def test_summed_log_partition_does_not_overflow_in_float32(name):
    """300 factors of 2 (fields at 0) would overflow float32 (2^300): blocks of 64 do not."""
    unit = nrbm.units.as_unit_type(name)
    got = partition._summed_log_partition(unit, jnp.zeros((2, 300), jnp.float32))
    np.testing.assert_allclose(got, 300 * np.log(2.0), rtol=1e-6)
