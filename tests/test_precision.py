"""The matmul precision policy (``docs/performance.md``, "Precision"), on the CPU.

On a GPU JAX's default float32 matmul is TF32: both inputs rounded to 10 mantissa bits,
products accumulated in float32. The CPU always computes in full float32, so its effect is
emulated here with ``jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10)``. Every
matmul of a field multiplies a layer of two-state units (exact in TF32) by the weights, so a
TF32 field is *exactly* the float32 field of the model whose weights are rounded to TF32, and
a TF32 Gibbs sweep is an exact sweep of that rounded model: the sampler's stationary
distribution is the rounded model's, and exact enumeration measures its error with no Monte
Carlo at all. Everything here is deterministic (no random verdict).
"""

import jax
import jax.numpy as jnp
import numpy as np
from conftest import brute_states
from scipy.special import expit, logsumexp

import numpyro_rbm as nrbm
from numpyro_rbm import RBMParams, core
from numpyro_rbm.ais import log_likelihood
from numpyro_rbm.kernels import gibbs
from numpyro_rbm.learning import monitors


def tf32(x):
    """The rounding of a TF32 matmul's inputs (nearest, ties to even)."""
    return jax.lax.reduce_precision(x, exponent_bits=8, mantissa_bits=10)


def _model(nv, nh, scale, seed=0):
    r = np.random.default_rng(seed)
    w, b, c = scale * r.normal(size=(nv, nh)), 0.5 * r.normal(size=nv), 0.5 * r.normal(size=nh)
    return w, b, c


def _dot_precisions(fn, *args):
    """The ``precision`` of every dot_general in the jaxpr of ``fn(*args)``, sub-jaxprs too."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "dot_general":
                found.append(eqn.params["precision"])
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple | list) else (value,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    assert found, "no matmul found: the walk is broken"
    return set(found)


def test_evaluation_runs_at_highest_precision_and_sampling_at_the_default():
    params = nrbm.init_params(jax.random.key(0), 8, 4, weight_scale=0.5)
    v = jnp.zeros((3, 8))
    highest = {(jax.lax.Precision.HIGHEST,) * 2}
    betas = np.linspace(0.0, 1.0, 5)
    evaluations = {
        "exact log Z": lambda p: nrbm.log_partition(p),
        "exact sampling": lambda p: nrbm.sample_exact(jax.random.key(0), p, (2,))[0],
        "AIS": lambda p: nrbm.ais(p, jax.random.key(0), num_runs=4, betas=betas).log_z,
        "reverse AIS": lambda p: (
            nrbm.reverse_ais(p, jax.random.key(0), v, num_chains=2, betas=betas).log_z
        ),
        "log-likelihood": lambda p: log_likelihood(p, v, 0.0).mean,
        "pseudo-log-likelihood": lambda p: monitors._pseudo_log_likelihood(p, v),
        "mean -F (monitor)": lambda p: monitors._mean_neg_free_energy(p, v),
    }
    for name, fn in evaluations.items():
        assert _dot_precisions(fn, params) == highest, name
    # The sampler: JAX's default (None: TF32 on a GPU), whatever encloses it.
    sweep = lambda p: gibbs(jax.random.key(0), p, v, 2)[0]  # noqa: E731
    assert _dot_precisions(sweep, params) == {None}
    assert core.EVALUATION_PRECISION == "highest"


def test_tf32_gibbs_bias_is_far_below_monte_carlo_error(x64):
    """(a) A TF32 sweep samples the rounded model exactly (binary layers are exact in TF32):
    the bias it leaves in the statistics of the gradient, max |E[v_i h_j]| over all pairs,
    is computed by enumeration of a 10x6 model with weights of scale 1 (fields of several
    units; trained models are mostly smaller). Measured 1.1e-4 (TV distance of p(v) 1.2e-4;
    2.2e-5 at scale 0.1, 6.4e-4 at scale 3), against a Monte Carlo standard error of
    0.5 / sqrt(M) = 5e-3 for M = 10,000 independent chains: asserted below 5% of it."""
    w, b, c = _model(10, 6, 1.0)
    v = brute_states(10)
    assert np.array_equal(np.asarray(tf32(jnp.asarray(v))), v)  # two-state layers: exact

    def moments(weights):
        log_p = v @ b + np.sum(np.logaddexp(0.0, c + v @ weights), axis=1)
        p = np.exp(log_p - logsumexp(log_p))
        return p, np.einsum("s,si,sj->ij", p, v, expit(c + v @ weights))

    p, exact = moments(w)
    q, rounded = moments(np.asarray(tf32(jnp.asarray(w))))
    assert np.abs(rounded - exact).max() < 0.05 * 0.5 / np.sqrt(10_000)
    assert 0.5 * np.abs(p - q).sum() < 1e-3
    assert np.abs(rounded - exact).max() > 0  # the rounding does change the weights


def test_tf32_log_partition_error_is_far_above_float32(x64):
    """(b) Exact log Z of a 784x12 model (weights of scale 0.3): TF32-rounded weights move it
    by 1.1e-3 nats where full float32 (the library's float32 enumeration at
    EVALUATION_PRECISION) is off by 3e-5; asserted: the TF32 error exceeds 5e-4 nats and 10x
    the float32 one. It grows with the hidden layer (784x16: 2.3e-3), and a log-likelihood
    compares two such sums; hence evaluation at full float32."""
    w, b, c = _model(784, 12, 0.3)
    params = RBMParams(*(jnp.asarray(x) for x in (w, b, c)))
    exact = float(nrbm.log_partition(params))
    rounded = float(nrbm.log_partition(params.replace(weights=tf32(params.weights))))
    single = float(nrbm.log_partition(jax.tree.map(lambda x: x.astype(jnp.float32), params)))
    assert abs(rounded - exact) > 5e-4
    assert abs(rounded - exact) > 10 * abs(single - exact)
