"""The fused threefry words equal ``jax.random.bits`` bit for bit, so no random stream changes."""

import jax
import jax.numpy as jnp
import pytest

from numpyro_rbm._threefry import threefry_bits32, threefry_split, threefry_uniform32

SHAPES = [(), (1,), (5,), (3, 7), (2, 3, 5), (100, 80)]
KEYS = {
    "key(0)": lambda: jax.random.key(0),
    "key(2**31 + 5)": lambda: jax.random.key(2**31 + 5),
    "legacy PRNGKey": lambda: jax.random.PRNGKey(7),
    "split key": lambda: jax.random.split(jax.random.key(3))[1],
    "folded key": lambda: jax.random.fold_in(jax.random.key(11), 2**30),
}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("key_name", sorted(KEYS))
def test_equals_jax_random_bits(key_name, shape):
    key = KEYS[key_name]()
    expected = jax.random.bits(key, shape, jnp.uint32)
    got = threefry_bits32(key, shape)
    assert got.shape == expected.shape and got.dtype == jnp.uint32
    assert bool(jnp.all(got == expected))


def test_equal_under_jit_and_vmap_over_keys():
    keys = jax.random.split(jax.random.key(1), 4)
    expected = jax.vmap(lambda k: jax.random.bits(k, (6, 5), jnp.uint32))(keys)
    got = jax.jit(jax.vmap(lambda k: threefry_bits32(k, (6, 5))))(keys)
    assert bool(jnp.all(got == expected))
    # distinct keys give distinct words (the key really enters the hash)
    assert not bool(jnp.all(got[0] == got[1]))


def test_other_generators_fall_back_to_jax_random_bits():
    key = jax.random.key(0, impl="rbg")
    assert bool(jnp.all(threefry_bits32(key, (4, 3)) == jax.random.bits(key, (4, 3), jnp.uint32)))


@pytest.mark.parametrize("num", [1, 2, 5])
@pytest.mark.parametrize("key_name", sorted(KEYS))
def test_split_equals_jax_random_split(key_name, num):
    key = KEYS[key_name]()
    expected = jax.random.split(key, num)
    got = threefry_split(key, num)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    if jnp.issubdtype(got.dtype, jax.dtypes.prng_key):
        got, expected = jax.random.key_data(got), jax.random.key_data(expected)
    assert bool(jnp.all(got == expected))


@pytest.mark.parametrize("shape", [(7,), (3, 4, 5)])
def test_uniform_equals_jax_random_uniform(shape):
    key = jax.random.key(5)
    expected = jax.random.uniform(key, shape, jnp.float32)
    got = threefry_uniform32(key, shape)
    assert got.dtype == jnp.float32 and bool(jnp.all(got == expected))
