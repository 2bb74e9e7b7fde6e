r"""32-bit random words from a threefry key, unrolled so that XLA:CPU fuses them.

:func:`jax.random.bits` lowers the threefry-2x32 hash (Salmon et al. 2011) on the CPU as a
*rolled* loop of five 4-round blocks (to keep compile times short). XLA:CPU runs each loop
iteration as separate passes over the whole array, which gives every draw a fixed cost of tens
of microseconds and about 2.5-7 ns a word: on small RBMs the random numbers of a Gibbs sweep
cost more than its matrix products. :func:`threefry_bits32` computes the *same* function with
the 20 rounds unrolled in plain ``jax.numpy`` operations, which XLA fuses into one elementwise
kernel. For a threefry key and fewer than :math:`2^{32}` words its output is bitwise equal to
``jax.random.bits(key, shape, jnp.uint32)`` under JAX's default
``jax_threefry_partitionable=True`` (tested), so the random streams of the library do not
change; other keys, larger draws and that flag's legacy setting go through
:func:`jax.random.bits` itself.

Reference: J. K. Salmon, M. A. Moraes, R. O. Dror and D. E. Shaw, *Parallel random numbers: as
easy as 1, 2, 3*, SC 2011.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(x, r: int):
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _threefry2x32(k1, k2, x0, x1):
    """The threefry-2x32 hash with 20 rounds, unrolled (the same function as JAX's)."""
    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x0, x1 = x0 + ks[0], x1 + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _raw_threefry_key(key):
    """The ``uint32[2]`` data of a single threefry key, or ``None`` for any other key."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != "threefry2x32":
            return None
        key = jax.random.key_data(key)
    elif jax.config.jax_default_prng_impl != "threefry2x32":  # raw keys of another generator
        return None
    return key if key.shape == (2,) and key.dtype == jnp.uint32 else None


def threefry_bits32(key, shape) -> jax.Array:
    """Uniform ``uint32`` words of ``shape``, equal to ``jax.random.bits(key, shape)``."""
    shape = tuple(shape)
    raw = _raw_threefry_key(key)
    size = math.prod(shape)
    if raw is None or size >= 2**32 or not jax.config.jax_threefry_partitionable:
        return jax.random.bits(key, shape, jnp.uint32)
    # JAX's partitionable scheme hashes each element's flat index as the 64-bit counter
    # (high word 0 below 2^32 elements) and returns the xor of the two output words.
    counts = jax.lax.iota(jnp.uint32, size).reshape(shape)
    hi, lo = _threefry2x32(raw[0], raw[1], jnp.zeros_like(counts), counts)
    return hi ^ lo


def threefry_split(key, num: int = 2):
    """``num`` new keys, equal to ``jax.random.split(key, num)`` (same fallbacks as above)."""
    raw = _raw_threefry_key(key)
    if raw is None or not jax.config.jax_threefry_partitionable:
        return jax.random.split(key, num)
    counts = jax.lax.iota(jnp.uint32, num)
    hi, lo = _threefry2x32(raw[0], raw[1], jnp.zeros_like(counts), counts)
    data = jnp.stack([hi, lo], axis=-1)
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(data, impl="threefry2x32")
    return data


def threefry_uniform32(key, shape) -> jax.Array:
    """float32 uniforms on [0, 1), equal to ``jax.random.uniform(key, shape, jnp.float32)``:
    the top 23 bits of each word as the mantissa of a float in [1, 2), minus 1."""
    words = threefry_bits32(key, shape)
    one = np.array(1.0, np.float32).view(np.uint32)
    floats = jax.lax.bitcast_convert_type((words >> np.uint32(9)) | one, jnp.float32) - 1.0
    return jnp.maximum(floats, 0.0)
