"""Shared test helpers: brute-force enumeration written independently of the library."""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from numpyro_rbm import RBMParams

VALUES = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0)}
ROOT = Path(__file__).resolve().parents[1]


def run_with_host_devices(script: str, n_devices: int, *args: str, timeout: int = 600):
    """Runs ``script`` (with ``args``) in a fresh interpreter on ``n_devices`` forced CPU
    devices (the device count is fixed when JAX starts, hence the subprocess) and returns the
    JSON it printed on its last line of output."""
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}",
    )
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=timeout,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def brute_states(n, units="bernoulli"):
    """All states of n two-state units, as a float64 numpy array (2**n, n)."""
    return np.array(list(itertools.product(VALUES[units], repeat=n)), dtype=np.float64)


def brute_joint_log_weights(weights, visible_bias, hidden_bias, vu="bernoulli", hu="bernoulli"):
    """-E(v, h) for every joint state: (V, H, table) with table[a, b] = -E(V[a], H[b])."""
    W = np.asarray(weights, np.float64)
    V = brute_states(W.shape[0], vu)
    H = brute_states(W.shape[1], hu)
    table = (
        (V @ np.asarray(visible_bias, np.float64))[:, None]
        + (H @ np.asarray(hidden_bias, np.float64))[None, :]
        + V @ W @ H.T
    )
    return V, H, table


def brute_joint_table(params):
    """``brute_joint_log_weights`` of an ``RBMParams`` (its arrays and unit types)."""
    return brute_joint_log_weights(
        params.weights,
        params.visible_bias,
        params.hidden_bias,
        params.visible_units.name,
        params.hidden_units.name,
    )


@pytest.fixture
def x64():
    """Run a test in float64 (jax.enable_x64 is a context manager; no global state leaks)."""
    with jax.enable_x64(True):
        yield


def state_index(x, units="bernoulli"):
    """Row of ``brute_states(n, units)`` equal to each state in ``x`` (..., n), as int64."""
    low, high = VALUES[units]
    bits = (np.asarray(x, np.float64) - low) / (high - low)
    assert np.all((bits == 0) | (bits == 1)), "states outside the unit's values"
    n = bits.shape[-1]
    # itertools.product varies the last unit fastest: unit 0 is the most significant bit.
    return (bits @ (2.0 ** np.arange(n - 1, -1, -1))).astype(np.int64)


def g_test_pvalue(observed, expected, min_expected=5.0):
    """p-value of the likelihood-ratio (G) goodness-of-fit test of counts against expectations.

    ``observed`` and ``expected`` have shape (groups, cells) (or (cells,)); each group is an
    independent multinomial whose expected counts sum to its observed total. Per group, cells
    expected fewer than ``min_expected`` counts are pooled into one cell (the chi-square
    approximation of G needs moderate expected counts); the statistic and its degrees of
    freedom (kept cells - 1 per group) add over groups.
    """
    from scipy import stats

    observed = np.atleast_2d(np.asarray(observed, np.float64))
    expected = np.atleast_2d(np.asarray(expected, np.float64))
    assert observed.shape == expected.shape
    np.testing.assert_allclose(observed.sum(-1), expected.sum(-1), rtol=1e-9)
    g, dof = 0.0, 0
    for o, e in zip(observed, expected, strict=True):
        small = e < min_expected
        o = np.append(o[~small], o[small].sum())
        e = np.append(e[~small], e[small].sum())
        keep = e > 0
        assert not np.any(o[~keep]), "counts in cells of probability zero"
        o, e = o[keep], e[keep]
        nz = o > 0
        g += 2.0 * np.sum(o[nz] * np.log(o[nz] / e[nz]))
        dof += len(e) - 1
    return float(stats.chi2.sf(g, dof)) if dof > 0 else 1.0


def make_params(seed, n_v, n_h, scale, vu="bernoulli", hu="bernoulli", dtype=np.float32):
    """Random params and their exact float64 values (the dtype-rounded arrays, widened)."""
    rng = np.random.default_rng(seed)
    arrays = [
        (scale * rng.standard_normal(shape)).astype(dtype)
        for shape in ((n_v, n_h), (n_v,), (n_h,))
    ]
    params = RBMParams(*(jnp.asarray(a) for a in arrays), visible_units=vu, hidden_units=hu)
    return params, [a.astype(np.float64) for a in arrays]


# --- thresholds shared by the statistical tests (tests/README.md gives the audit) ----------

#: A z-score beyond this fails: P(|Z| > 4.5) = 6.8e-6 for one Gaussian statistic.
Z_MAX = 4.5
#: The smallest acceptable goodness-of-fit p-value: a correct sampler fails one such test with
#: probability 1e-5.
P_MIN = 1e-5
