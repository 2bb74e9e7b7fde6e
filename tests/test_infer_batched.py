"""RBMGibbs on batched RBM sites (plates, ``.expand().to_event()``, batched parameters) and on
models with enumerated discrete sites, against exact enumeration.

Two examples of a 3-visible RBM make 2^6 = 64 joint states, so every update's exact transition
kernel is built by enumeration (per example it is a kernel of ``tests/test_infer.py``; joint
states are ordered as ``brute_states(6)``, the first example's units most significant, so
per-example kernels combine by ``np.kron``). The draws are checked by the transition test
(``conftest.transition_gof_pvalue``; tests/audit_sample.md gives each test's false-failure
probability), which needs no burn-in or ESS. Every configuration runs once, with four
vectorized chains, in one module fixture.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from conftest import P_MIN, brute_states, state_index, transition_gof_pvalue
from numpyro.infer import NUTS, Gibbs
from scipy import stats
from scipy.special import logsumexp
from scipy.stats import beta as beta_dist
from test_infer import (
    batch_means_t,
    exact_log_p,
    metropolis_kernel,
    metropolis_rows,
    random_params,
    run,
    sweep_kernel,
)

import numpyro_rbm as nrbm
from numpyro_rbm import RBMGibbs
from numpyro_rbm.core import RBMParams, free_energy

SHARED = random_params(3, 3, 2, 1.5)
PAIR = jax.tree.map(  # two different RBMs: parameters with batch shape (2,)
    lambda a, b: jnp.stack([a, b]), random_params(4, 3, 2, 1.5), random_params(5, 3, 2, 1.5)
)
Y = jnp.array([[1.0, 0.2, 0.6], [-0.1, 1.1, 0.9]])
SIGMA = 0.6
S_OBS, S_SIGMA = 1.0, 0.8  # an observation of the total number of active units of both
CLAMP = jnp.array([[True, False, False], [False, False, True]])
CLAMP_VALUES = jnp.array([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
STATES = brute_states(3)
JOINT = brute_states(6)


def one(params, n):
    """Example ``n`` of a batched RBMParams (the shared one as it is)."""
    if params.weights.ndim == 2:
        return params
    return jax.tree.map(lambda x: x[n], params)


def gauss_loglik(n):
    """log N(Y[n] | v, SIGMA) of every state of one example (8,)."""
    return stats.norm.logpdf(np.asarray(Y[n], np.float64)[None], STATES, SIGMA).sum(1)


def joint_sum(a, b):
    """(64,) array ``a[i] + b[j]`` over joint states ``(i, j)``."""
    return (np.asarray(a)[:, None] + np.asarray(b)[None, :]).ravel()


def clamped_sweep(params, mask, values):
    """The exact sweep of a clamped RBM over full states (8, 8): ``h ~ p(h | v)``, then the free
    units from ``p(v_F | h)`` and the clamped ones at their values."""
    p_h, p_v = sweep_kernel(params)
    ok = np.all(np.where(np.asarray(mask), STATES == np.asarray(values), True), 1)
    p_v = p_v * ok[None]
    return p_h @ (p_v / p_v.sum(1, keepdims=True))


def factorized_kernel1(params, loglik):
    """Exact sweeps of ``p(v, h) L(v)`` for a factorising ``L`` (one example, 8 x 8)."""
    p_h, p_v = sweep_kernel(params)
    tilted = p_v * np.exp(loglik - loglik.max())[None]
    return p_h @ (tilted / tilted.sum(1, keepdims=True))


def log_prior(params, mask=None, values=None):
    lp = exact_log_p(params)
    if mask is not None:
        ok = np.all(np.where(np.asarray(mask), STATES == np.asarray(values), True), 1)
        lp = np.where(ok, lp, -np.inf)
    return lp - logsumexp(lp)


# --- the models --------------------------------------------------------------------------------


def plate_pair_coupled(y):
    """Two different RBMs (batched parameters), one unit of each clamped, in a plate, with a
    Gaussian observation per example and one site outside the plate that couples them: the
    two-stage Metropolis update (per example, then jointly for the coupling)."""
    with numpyro.plate("n", 2):
        v = numpyro.sample("v", nrbm.ClampedRBM(PAIR, CLAMP, CLAMP_VALUES, log_z=None))
        numpyro.sample("y", dist.Normal(v, SIGMA).to_event(1), obs=y)
    numpyro.sample("s", dist.Normal(jnp.sum(v), S_SIGMA), obs=S_OBS)


def plate_shared(y):
    with numpyro.plate("n", 2):
        v = numpyro.sample("v", nrbm.RBM(SHARED, log_z=None))
        numpyro.sample("y", dist.Normal(v, SIGMA).to_event(1), obs=y)


def expanded_prior(y):
    """No plate: one event of two images, and nothing else (``"auto"`` picks the prior)."""
    numpyro.sample("v", nrbm.RBM(SHARED, log_z=None).expand([2]).to_event(1))


def coupling_loglik():
    """log N(S_OBS | sum of both images' units, S_SIGMA) of every joint state (64,)."""
    return stats.norm.logpdf(S_OBS, JOINT.sum(1), S_SIGMA)


def exact_kernels():
    """``{case: (kernel (64, 64), target (64,))}`` by enumeration."""
    ll = [gauss_loglik(0), gauss_loglik(1)]
    prior = [log_prior(one(PAIR, n), CLAMP[n], CLAMP_VALUES[n]) for n in range(2)]
    sweeps = [clamped_sweep(one(PAIR, n), CLAMP[n], CLAMP_VALUES[n]) for n in range(2)]
    per_example = np.kron(*(metropolis_kernel(sweeps[n], ll[n]) for n in range(2)))
    p_shared = exact_log_p(SHARED)
    sweep = np.matmul(*sweep_kernel(SHARED))
    out = {
        "plate-pair-coupled": (
            metropolis_kernel(per_example, coupling_loglik()),
            joint_sum(prior[0] + ll[0], prior[1] + ll[1]) + coupling_loglik(),
        ),
        "plate-factorized": (
            np.kron(*(factorized_kernel1(SHARED, ll[n]) for n in range(2))),
            joint_sum(p_shared + ll[0], p_shared + ll[1]),
        ),
        "expand-prior": (np.kron(sweep, sweep), joint_sum(p_shared, p_shared)),
    }
    for name, (kernel, log_target) in out.items():
        out[name] = (kernel, np.exp(log_target - logsumexp(log_target)))
    return out


CASES = {
    "plate-pair-coupled": (plate_pair_coupled, "metropolis"),
    "plate-factorized": (plate_shared, "factorized"),
    "expand-prior": (expanded_prior, "auto"),
}
FIELDS = ("log_likelihood", "example_log_likelihood", "free_energy")


@pytest.fixture(scope="module")
def batched_runs():
    runs = {}
    for name, (model, update) in CASES.items():
        kernel = RBMGibbs(model, update=update)
        runs[name] = (
            kernel,
            run(kernel, Y, num_chains=4, chain_method="vectorized", seed=7, extra_fields=FIELDS),
        )
    return runs


@pytest.mark.statistical
@pytest.mark.parametrize("case", list(CASES))
def test_batched_site_matches_the_exact_kernel(batched_runs, case):
    """Each update on a batch of two latent images against its exact kernel over the 64 joint
    states: the two-stage Metropolis update in a plate, with batched parameters, a clamp and
    a site outside the plate; the factorized update in a plate; the prior sweep of an
    ``.expand([2]).to_event(1)`` site."""
    kernel, target = exact_kernels()[case]
    np.testing.assert_allclose(target @ kernel, target, atol=1e-12)
    v = np.asarray(batched_runs[case][1].get_samples(group_by_chain=True)["v"])
    assert v.shape == (4, 1500, 2, 3)
    x = state_index(v.reshape(4, 1500, 6))
    p = transition_gof_pvalue(x, kernel[x[:, :-1]], JOINT)
    assert p > P_MIN, f"{case}: transition test p = {p:.2e}"


def test_batched_fields_match_the_states(batched_runs):
    """The kernel resolved each site (plate, expand/to_event, batched parameters) and
    recorded, at every draw, each example's own log-likelihood, the total with the coupling
    site, and the free energy summed over the examples (deterministic)."""
    kernel, mcmc = batched_runs["plate-pair-coupled"]
    assert (kernel.site, kernel.update, kernel._config.shared) == ("v", "metropolis", ("s",))
    v = np.asarray(mcmc.get_samples()["v"], np.float64)  # (6000, 2, 3)
    extra = mcmc.get_extra_fields()
    per = stats.norm.logpdf(np.asarray(Y)[None], v, SIGMA).sum(-1)
    coupling = stats.norm.logpdf(S_OBS, v.sum((1, 2)), S_SIGMA)
    np.testing.assert_allclose(extra["example_log_likelihood"], per, rtol=1e-5)
    np.testing.assert_allclose(extra["log_likelihood"], per.sum(1) + coupling, rtol=1e-5)
    fe = np.asarray(free_energy(PAIR, jnp.asarray(v, jnp.float32))).sum(1)
    np.testing.assert_allclose(extra["free_energy"], fe, rtol=1e-5, atol=1e-5)
    kernel, mcmc = batched_runs["expand-prior"]
    assert kernel.update == "prior"
    kernel, mcmc = batched_runs["plate-factorized"]
    extra = mcmc.get_extra_fields()
    v = np.asarray(mcmc.get_samples()["v"], np.float64)
    per = stats.norm.logpdf(np.asarray(Y)[None], v, SIGMA).sum((-2, -1))
    np.testing.assert_allclose(extra["log_likelihood"], per, rtol=1e-5)


# --- several images, one noise rate sampled by NUTS ----------------------------------------

A, B = 2.0, 6.0
Y_BITS = jnp.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])


def denoise(y):
    """A flip rate shared by every image, and each image its own latent RBM state."""
    eps = numpyro.sample("eps", dist.Beta(A, B))
    with numpyro.plate("images", y.shape[0]):
        v = numpyro.sample("v", nrbm.RBM(SHARED, log_z=None))
        flip = jnp.where(v == 1, 1 - eps, eps)
        numpyro.sample("y", dist.Bernoulli(probs=flip).to_event(1), obs=y)


def flip_loglik(n, eps):
    """log p(Y_BITS[n] | v, eps) of every state of one example, flip rates (T,) -> (T, 8)."""
    agree = (STATES == np.asarray(Y_BITS[n])[None]).sum(1)
    eps = np.asarray(eps, np.float64)[:, None]
    return agree * np.log1p(-eps) + (3 - agree) * np.log(eps)


@pytest.mark.statistical
def test_denoising_several_images_with_nuts_matches_exact_posterior():
    """Gibbs(RBMGibbs on the images, NUTS on the flip rate): the image steps against their
    exact per-example Metropolis kernels at each step's flip rate (the transition test), the
    flip rate's posterior mean against quadrature over it and enumeration of both images (a
    batch-means t statistic)."""
    kernel = Gibbs([(RBMGibbs(denoise), ["v"]), (NUTS(denoise), None)])
    mcmc = run(kernel, Y_BITS, num_warmup=300, num_samples=2000, seed=2)
    samples = mcmc.get_samples(group_by_chain=True)
    x = state_index(np.asarray(samples["v"]).reshape(1, 2000, 6))
    eps = np.asarray(samples["eps"], np.float64)[0]
    sweep = np.matmul(*sweep_kernel(SHARED))
    start = [x[0, :-1] // 8, x[0, :-1] % 8]
    rows = [metropolis_rows(sweep[start[n]], flip_loglik(n, eps[:-1]), start[n]) for n in (0, 1)]
    joint_rows = np.einsum("ta,tb->tab", *rows).reshape(-1, 64)
    p = transition_gof_pvalue(x, joint_rows[None], JOINT)
    assert p > P_MIN, f"images: transition test p = {p:.2e}"

    grid = (np.arange(20000) + 0.5) / 20000
    log_v = exact_log_p(SHARED)
    log_joint = beta_dist.logpdf(grid, A, B) + sum(
        logsumexp(log_v[None] + flip_loglik(n, grid), 1) for n in (0, 1)
    )
    eps_mean = float(np.sum(np.exp(log_joint - logsumexp(log_joint)) * grid))
    t = batch_means_t(eps, eps_mean)
    assert abs(t) < stats.t.isf(P_MIN / 2, 19), f"posterior mean of eps: t = {t:.2f}"


# --- enumerated discrete sites --------------------------------------------------------------

MIX = RBMParams(jnp.full((3, 2), 0.3), jnp.zeros(3), jnp.zeros(2))


def mixture(y):
    """The reproduction of issue 16: a discrete switch z summed out of the likelihood."""
    v = numpyro.sample("v", nrbm.RBM(MIX, log_z=None))
    z = numpyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
    numpyro.sample("y", dist.Normal(jnp.where(z == 1, v.sum(), 3 - v.sum()), 0.5), obs=y)


def mixture_loglik():
    s = STATES.sum(1)
    return np.logaddexp(
        np.log(0.5) + stats.norm.logpdf(0.0, s, 0.5),
        np.log(0.5) + stats.norm.logpdf(0.0, 3 - s, 0.5),
    )


@pytest.mark.statistical
def test_enumerated_site_gives_the_exact_marginal_posterior():
    """The issue's reproduction: E[sum(v) | y] = 2.080 exactly (not 0.36, the posterior at
    z = 1). The recorded likelihood is the marginal one at every draw; transition test
    against the Metropolis kernel with the marginal likelihood, and a batch-means t statistic
    of the posterior mean (10 batches of 150 draws per chain)."""
    log_post = exact_log_p(MIX) + mixture_loglik()
    post = np.exp(log_post - logsumexp(log_post))
    exact_mean = float(post @ STATES.sum(1))
    assert round(exact_mean, 3) == 2.080
    kernel = RBMGibbs(mixture)
    mcmc = run(
        kernel,
        0.0,
        num_chains=4,
        chain_method="vectorized",
        seed=5,
        extra_fields=("log_likelihood",),
    )
    assert kernel.update == "metropolis"
    v = np.asarray(mcmc.get_samples(group_by_chain=True)["v"])
    x = state_index(v)
    # the recorded log L(v) is log sum_z p(z) p(y | v, z) at every draw (deterministic)
    ll = mcmc.get_extra_fields(group_by_chain=True)["log_likelihood"]
    np.testing.assert_allclose(ll, mixture_loglik()[x], rtol=1e-5)
    kernel = metropolis_kernel(np.matmul(*sweep_kernel(MIX)), mixture_loglik())
    np.testing.assert_allclose(post @ kernel, post, atol=1e-12)
    p = transition_gof_pvalue(x, kernel[x[:, :-1]], STATES)
    means = v.sum(-1).reshape(40, -1).mean(1)  # 4 chains x 10 batches
    t = (means.mean() - exact_mean) / (means.std(ddof=1) / np.sqrt(len(means)))
    assert p > P_MIN / 2, f"transition test p = {p:.2e}"
    assert abs(t) < stats.t.isf(P_MIN / 4, len(means) - 1), f"E[sum v]: t = {t:.2f}"


# --- errors -------------------------------------------------------------------------------------


def test_enumeration_and_scale_errors_are_clear():
    def init(model, **kwargs):
        RBMGibbs(model, **kwargs).init(jax.random.key(0), 0, None, (0.0,), {})

    with pytest.raises(ValueError, match="factorise"):
        init(mixture, update="factorized")

    def before(y):
        z = numpyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        v = numpyro.sample("v", nrbm.RBM(MIX, log_z=None))
        numpyro.sample("y", dist.Normal(v.sum() * z, 1.0), obs=y)

    with pytest.raises(ValueError, match="comes before the RBM site"):
        init(before)

    def too_many(y):
        v = numpyro.sample("v", nrbm.RBM(MIX, log_z=None))
        with numpyro.plate("k", 11):
            z = numpyro.sample("z", dist.Bernoulli(0.5), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Normal(v.sum() + z.sum(), 1.0), obs=y)

    with pytest.raises(ValueError, match="2048 joint values"):
        init(too_many)

    def recorded_after(y):
        mixture(y)
        numpyro.deterministic("d", 1.0)

    with pytest.raises(ValueError, match="deterministic sites \\['d'\\] come after"):
        init(recorded_after)

    def continuous(y):
        v = numpyro.sample("v", nrbm.RBM(MIX, log_z=None))
        x = numpyro.sample("x", dist.Normal(), infer={"enumerate": "parallel"})
        numpyro.sample("y", dist.Normal(v.sum() + x, 1.0), obs=y)

    with pytest.raises(ValueError, match="no enumerable support"):
        init(continuous)

    def subsampled(y):
        with numpyro.plate("n", 4, subsample_size=2):
            numpyro.sample("v", nrbm.RBM(MIX, log_z=None))

    with pytest.raises(ValueError, match="scale"):
        init(subsampled)


def test_enumerated_sites_inside_a_plate_are_summed_jointly():
    """A switch per element of a plate: 2^3 joint values, each one model evaluation."""

    def per_unit(y):
        v = numpyro.sample("v", nrbm.RBM(MIX, log_z=None))
        with numpyro.plate("units", 3):
            z = numpyro.sample("z", dist.Bernoulli(0.3), infer={"enumerate": "parallel"})
            numpyro.sample("y", dist.Normal(jnp.where(z == 1, v, -v), 1.0), obs=y)

    y = jnp.array([0.5, -1.0, 2.0])
    v = jnp.array([1.0, 0.0, 1.0])
    state = RBMGibbs(per_unit).init(jax.random.key(0), 0, {"v": v}, (y,), {})
    terms = [
        np.sum(np.where(z, np.log(0.3), np.log(0.7)))
        + stats.norm.logpdf(np.asarray(y), np.where(z, v, -v), 1.0).sum()
        for z in map(np.array, itertools.product([False, True], repeat=3))
    ]
    np.testing.assert_allclose(state.log_likelihood, logsumexp(terms), rtol=1e-5)
