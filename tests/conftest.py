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

# The command line keeps compiled programs in the user's cache folder; tests calling it
# in-process must not write there (tests/test_compile_cache.py turns it on in subprocesses).
os.environ.setdefault("NUMPYRO_RBM_COMPILE_CACHE", "0")

VALUES = {"bernoulli": (0.0, 1.0), "spin": (-1.0, 1.0)}
ROOT = Path(__file__).resolve().parents[1]


def run_with_host_devices(script: str, n_devices: int, *args: str, timeout: int = 600):
    """Runs ``script`` (with ``args``) in a fresh interpreter on ``n_devices`` forced CPU
    devices (the device count is fixed when JAX starts, hence the subprocess) and returns the
    JSON it printed on its last line of output. Flags already in ``XLA_FLAGS`` (such as the
    lower instruction set of CI's second run) are kept."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={n_devices}"
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags.strip())
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


def transition_gof_pvalue(states, next_probs, features):
    """p-value that each step of Markov chains was drawn from its exact transition row.

    ``states`` (chains, draws) are state indices of consecutive draws of each chain;
    ``next_probs`` (chains, draws - 1, n_states) is the exact distribution of ``states[:, t+1]``
    given everything up to draw ``t`` (``P[states[:, :-1]]`` for a fixed kernel ``P``);
    ``features`` (n_states, d) are the unit values of each state (its visible vector).

    Two statistics, Bonferroni-combined (twice the smaller p-value, at most 1):

    - a G-test of the successor counts of each starting state against the summed predicted
      probabilities (``g_test_pvalue``, one group per starting state): power against any
      wrong row;
    - the martingale test of the unit values: ``r = sum_t (f(x_{t+1}) - E[f(x_{t+1}) | x_t])``
      has the exact covariance ``sum_t Cov[f(x_{t+1}) | x_t]`` (from the rows), and
      ``r' Cov^+ r`` is chi-square with rank(Cov) degrees of freedom: power against a
      small systematic bias of the units (a shifted field), which the G-test spreads over
      hundreds of cells.

    Why this is exact for correlated draws: the successors of the visits to one state of a
    Markov chain are independent draws from that state's row (Anderson & Goodman, Ann. Math.
    Stat. 28, 1957; Billingsley, Ann. Math. Stat. 32, 1961), and the residuals of ``f`` are a
    martingale, normal by the martingale central limit theorem: no autocorrelation time or
    ESS to estimate, and no stationarity or burn-in needed. When the rows vary over time
    (another Gibbs block changes the kernel between steps) the G-test groups sums of
    categorical draws with different probabilities, whose counts vary less than the
    multinomial's: it is then conservative; the martingale test stays exact.
    """
    from scipy import stats

    states = np.asarray(states)
    next_probs = np.asarray(next_probs, np.float64)
    features = np.asarray(features, np.float64)
    n_states = next_probs.shape[-1]
    assert states.ndim == 2 and next_probs.shape == states[:, :-1].shape + (n_states,)
    start, succ = states[:, :-1].ravel(), states[:, 1:].ravel()
    probs = next_probs.reshape(-1, n_states)
    observed = np.zeros((n_states, n_states))
    np.add.at(observed, (start, succ), 1.0)
    expected = np.zeros((n_states, n_states))
    np.add.at(expected, start, probs)
    visited = observed.sum(1) > 0
    p_counts = g_test_pvalue(observed[visited], expected[visited])

    mean = probs @ features  # E[f(x_{t+1}) | x_t], (steps, d)
    resid = np.sum(features[succ] - mean, axis=0)
    second = np.einsum("ts,si,sj->ij", probs, features, features)
    cov = second - mean.T @ mean
    rank = np.linalg.matrix_rank(cov, tol=1e-9 * max(np.abs(cov).max(), 1e-300))
    x2 = float(resid @ np.linalg.pinv(cov, rcond=1e-9, hermitian=True) @ resid)
    p_units = float(stats.chi2.sf(x2, rank)) if rank > 0 else 1.0
    return min(1.0, 2.0 * min(p_counts, p_units))
