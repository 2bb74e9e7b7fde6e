"""Shared test helpers: brute-force enumeration written independently of the library."""

import itertools

import jax
import numpy as np
import pytest

VALUES = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0)}


def brute_states(n, units="bernoulli"):
    """All states of n two-state units, as a float64 numpy array (2**n, n)."""
    return np.array(list(itertools.product(VALUES[units], repeat=n)), dtype=np.float64)


def brute_joint_log_weights(weights, visible_bias, hidden_bias, vu="bernoulli", hu="bernoulli"):
    """-E(v, h) for every joint state: (V, H, table) with table[a, b] = -E(V[a], H[b])."""
    W = np.asarray(weights, np.float64)
    V = brute_states(W.shape[0], vu)
    H = brute_states(W.shape[1], hu)
    table = (V @ np.asarray(visible_bias, np.float64))[:, None] + (
        H @ np.asarray(hidden_bias, np.float64)
    )[None, :] + V @ W @ H.T
    return V, H, table


@pytest.fixture
def x64():
    """Run a test in float64 (jax.enable_x64 is a context manager; no global state leaks)."""
    with jax.enable_x64(True):
        yield
