"""The SML log Z of ``RBM(params, log_z=nrbm.sml(...))``: its gradient against the closed form
and exact enumeration, SVI's update against the learning engine's ``loss_gradient``, the tracked
value, and the errors for contexts and states where the chains cannot persist."""

import dataclasses
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from conftest import Z_MAX
from numpyro import handlers
from numpyro.infer import MCMC, NUTS, SVI, Trace_ELBO
from test_derivation import (
    N_HIDDEN,
    N_VISIBLE,
    UNITS,
    brute_log_z,
    make_data,
    make_params,
)

import numpyro_rbm as nrbm
from numpyro_rbm.learning.sml import (
    TrackedLogZ,
    initial_tracked,
    refreshed,
    sml_log_z,
    tracked_step,
)
from numpyro_rbm.partition import sample_exact

# One negative phase for every model run here: the compiled run is shared between tests.
PHASE = nrbm.learning.pcd(1, 40)


def sml_mean_log_likelihood(params, data, v_model, value=0.0):
    """:math:`\\frac1N\\sum_n -F(v_n) - \\log Z` with the SML log Z at ``v_model``."""
    return jnp.mean(-nrbm.free_energy(params, data)) - sml_log_z(params, v_model, value)


# --- the custom gradient -------------------------------------------------------------------


@pytest.mark.parametrize("units", UNITS, ids=lambda u: "-".join(u))
def test_custom_gradient_is_the_closed_form_sml_gradient(x64, units):
    r"""d/dtheta of sml_log_z at chains v_j is :math:`\frac1M\sum_j v_j \mathbb E[h|v_j]^\top`
    (W), :math:`\bar v` (b), :math:`\overline{\mathbb E[h|v_j]}` (c), written out here; its
    value is the one given."""
    params = make_params(units)
    chains = make_data(units, n=37, seed=5)
    W, c = np.asarray(params.weights), np.asarray(params.hidden_bias)
    mean_h = {"bernoulli": lambda x: 1 / (1 + np.exp(-x)), "spin": np.tanh}[units[1]]
    mu = mean_h(c + chains @ W)
    grads = jax.jit(jax.grad(sml_log_z))(params, jnp.asarray(chains), jnp.asarray(1.25))
    np.testing.assert_allclose(grads.weights, chains.T @ mu / len(chains), rtol=1e-12)
    np.testing.assert_allclose(grads.visible_bias, chains.mean(0), rtol=1e-12)
    np.testing.assert_allclose(grads.hidden_bias, mu.mean(0), rtol=1e-12)
    assert float(sml_log_z(params, jnp.asarray(chains), jnp.asarray(1.25))) == 1.25


def test_custom_gradient_reaches_unit_parameters(x64):
    """Every leaf gets the negative phase, the Gaussian precisions included: the gradient is
    ``-grad mean F(chains)`` leaf by leaf (for the log precisions also written out in closed
    form), and ``jax.grad`` of the mean log-likelihood is
    minus the engine's ``loss_gradient`` at the same chains."""
    key = jax.random.key(3)
    params = nrbm.init_params(key, 4, 3, visible_units="gaussian", weight_scale=0.5)
    data = jax.random.normal(jax.random.key(1), (9, 4))
    chains = jax.random.normal(jax.random.key(2), (11, 4))

    @jax.jit
    def gradients(params):
        grads = jax.grad(sml_log_z)(params, chains, jnp.asarray(0.0))
        expected = jax.grad(lambda p: -jnp.mean(nrbm.free_energy(p, chains)))(params)
        ll_grad = jax.grad(sml_mean_log_likelihood)(params, data, chains)
        return grads, expected, ll_grad, nrbm.loss_gradient(params, data, chains)

    grads, expected, ll_grad, loss_grad = gradients(params)
    assert set(grads.visible_unit_params) == {"log_precision"}
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert float(jnp.abs(grads.visible_unit_params["log_precision"]).max()) > 1e-3
    # Closed form: dF/d(log lambda_i) = lambda_i v_i^2 / 2 - 1/2 (the base measure's only).
    lam = np.exp(np.asarray(params.visible_unit_params["log_precision"]))
    closed = np.mean(0.5 - 0.5 * lam * np.asarray(chains) ** 2, axis=0)
    # (float32 parameters: float32 precision)
    np.testing.assert_allclose(grads.visible_unit_params["log_precision"], closed, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(ll_grad), jax.tree.leaves(loss_grad), strict=True):
        np.testing.assert_allclose(got, -want, rtol=1e-12, atol=1e-14)


# --- SVI is PCD ----------------------------------------------------------------------------


def rbm_model(batch, n_total, init, sml):
    w = numpyro.param("w", init.weights)
    b = numpyro.param("b", init.visible_bias)
    c = numpyro.param("c", init.hidden_bias)
    rbm = nrbm.RBM(nrbm.RBMParams(w, b, c, init.visible_units, init.hidden_units), log_z=sml)
    with numpyro.plate("n", n_total, subsample_size=batch.shape[0]):
        numpyro.sample("v", rbm, obs=batch)


def no_guide(*args, **kwargs):
    pass


@jax.jit
def expected_step(params, batch, chains):
    """The engine's gradient at ``chains``, and the exact log-likelihoods of the batch."""
    lp = -nrbm.free_energy(params, batch) - brute_log_z(params)
    return nrbm.loss_gradient(params, batch, chains), lp


def _params(p, units):
    return nrbm.RBMParams(p["w"], p["b"], p["c"], *units)


def test_svi_update_is_the_engines_pcd_update():
    """SVI with SGD at step size 1 / n_total moves the parameters by the ELBO's gradient over
    n_total, which must be ``-loss_gradient`` at the minibatch and at the chains as they
    stood (to float32 precision), and advances the chains by the PCD phase's step, update
    after update; the log Z's value is exact (a 5 x 3 model enumerates)."""
    units = UNITS[0]
    init = jax.tree.map(lambda x: x.astype(jnp.float32), make_params(units))
    data = jnp.asarray(make_data(units, n=40), jnp.float32)
    sml = nrbm.sml(PHASE)
    svi = SVI(rbm_model, no_guide, optax.sgd(1.0 / 40), Trace_ELBO())
    batches = [data[10 * i : 10 * (i + 1)] for i in range(3)]
    state = jax.jit(svi.init, static_argnums=(2, 4))(jax.random.key(0), batches[0], 40, init, sml)
    update = jax.jit(svi.update, static_argnums=(2, 4))
    for batch in batches:
        before = _params(svi.get_params(state), units)
        chains = state.mutable_state["rbm_sml"]["chains[bernoulli,bernoulli]"]
        state, loss = update(state, batch, 40, init, sml)
        after = _params(svi.get_params(state), units)
        expected, lp = expected_step(before, batch, chains)
        for leaf in ("weights", "visible_bias", "hidden_bias"):
            moved = getattr(after, leaf) - getattr(before, leaf)
            np.testing.assert_allclose(
                moved, -getattr(expected, leaf), rtol=1e-5, atol=1e-6, err_msg=leaf
            )
        new_chains = state.mutable_state["rbm_sml"]["chains[bernoulli,bernoulli]"]
        assert new_chains.shape == chains.shape and bool(jnp.any(new_chains != chains))
        # The loss is -(n_total/B) sum_n log p(v_n) with the exact log Z.
        np.testing.assert_allclose(loss, -40 * jnp.mean(lp), rtol=1e-5)


# Parallel tempering: 3 replicas of 20 chains (the model's is the last).
PT_PHASE = nrbm.learning.pt(1, 20, 3)
PT_VISIBLE = ("bernoulli", "gaussian")


def pt_model(visible):
    """A 5 x 3 model and 40 rows: Bernoulli (test_derivation's), or Gaussian visible units
    with distinct log precisions (-0.6 to 0.6) and standard normal rows; float32."""
    if visible == "bernoulli":
        init, data = make_params(UNITS[0]), make_data(UNITS[0], n=40)
    else:
        init = make_params(("gaussian", "bernoulli"), scale=0.3)
        log_precision = jnp.linspace(-0.6, 0.6, N_VISIBLE)
        init = init.replace(visible_unit_params={"log_precision": log_precision})
        data = np.random.default_rng(2).normal(size=(40, N_VISIBLE))
    to32 = partial(jnp.asarray, dtype=jnp.float32)
    return jax.tree.map(to32, init), to32(data)


def rbms_model(batches, n_total, inits, smls):
    """One observed, subsampled RBM site per model, each with its own ``sml``; every leaf of
    each ``init`` (unit parameters included) is a ``numpyro.param``. (Two RBMs in one model:
    one compilation for both unit types.)"""
    for j, (batch, init, sml) in enumerate(zip(batches, inits, smls, strict=True)):
        leaves, treedef = jax.tree.flatten(init)
        leaves = [numpyro.param(f"rbm{j}_leaf{i}", x) for i, x in enumerate(leaves)]
        rbm = nrbm.RBM(jax.tree.unflatten(treedef, leaves), log_z=sml)
        with numpyro.plate(f"n{j}", n_total, subsample_size=batch.shape[0]):
            numpyro.sample(f"v{j}", rbm, obs=batch)


@jax.jit
def expected_pt_steps(params, batches, v_models):
    """Per model: the engine's gradient at ``v_model``, and the exact mean log-likelihood of
    the batch."""

    def one(p, batch, v_model):
        ll = jnp.mean(-nrbm.free_energy(p, batch)) - nrbm.partition.log_partition(p)
        return nrbm.loss_gradient(p, batch, v_model), ll

    return [one(*args) for args in zip(params, batches, v_models, strict=True)]


@dataclasses.dataclass(frozen=True)
class PTStart(nrbm.learning.PT):
    """PT's initial state, left as it is: ``svi.init`` with it compiles no sweeps, so PT's
    step compiles once, in the update."""

    def step(self, key, params, state, batch):
        return state.replicas[-1], state, {}


PT_START = PTStart(PT_PHASE.k, PT_PHASE.num_chains, PT_PHASE.num_temperatures)


def test_svi_update_is_the_engines_pt_update():
    """``sml(pt(...))`` for Bernoulli and for Gaussian visible units: SVI with SGD at step
    size 1 / n_total moves every leaf (the log precisions included) by ``-loss_gradient`` at
    the minibatch and at the phase's beta = 1 replica after the update's sweeps and swaps
    (PT's negative samples, as in ``fit``), to float32 precision; the replicas advance and the
    ladder stays. Regression test: with Gaussian units the tempered ladder's unit parameters
    stopped the trace with a ``vmap`` size error, and PT's base-rate model could not be
    computed from ``init_data`` inside the compiled update."""
    models = [pt_model(visible) for visible in PT_VISIBLE]
    inits, data = tuple(m[0] for m in models), [m[1] for m in models]
    treedefs = [jax.tree.structure(init) for init in inits]
    paths = [[jax.tree_util.keystr(k) for k, _ in jax.tree.leaves_with_path(i)] for i in inits]

    def smls(phase):
        return tuple(
            nrbm.sml(phase, value="exact", init_data=rows, name=f"rbm_sml_{visible}")
            for visible, rows in zip(PT_VISIBLE, data, strict=True)
        )

    def current(state):
        p = svi.get_params(state)
        params = tuple(
            jax.tree.unflatten(t, [p[f"rbm{j}_leaf{i}"] for i in range(t.num_leaves)])
            for j, t in enumerate(treedefs)
        )
        sites = zip(pt_smls, inits, strict=True)
        return params, [state.mutable_state[s.name][s.state_key(i)] for s, i in sites]

    svi = SVI(rbms_model, no_guide, optax.sgd(1.0 / 40), Trace_ELBO())
    init_svi, update = (jax.jit(f, static_argnums=(2, 4)) for f in (svi.init, svi.update))
    pt_smls = smls(PT_PHASE)
    state = init_svi(jax.random.key(0), tuple(d[:10] for d in data), 40, inits, smls(PT_START))
    for step in range(2):
        batches = tuple(d[10 * (step + 1) : 10 * (step + 2)] for d in data)
        before, chains = current(state)
        state, loss = update(state, batches, 40, inits, pt_smls)
        after, advanced = current(state)
        expected = expected_pt_steps(before, batches, [a.replicas[-1] for a in advanced])
        for visible, old, new, b, a, (grad, _), names in zip(
            PT_VISIBLE, chains, advanced, before, after, expected, paths, strict=True
        ):
            assert new.replicas.shape == (3, 20, N_VISIBLE)
            assert np.any(np.asarray(new.replicas) != np.asarray(old.replicas)), visible
            np.testing.assert_array_equal(new.betas, old.betas)
            np.testing.assert_array_equal(new.base_bias, old.base_bias)
            moves = jax.tree.map(lambda x, y: np.asarray(x) - np.asarray(y), a, b)
            leaves = zip(names, jax.tree.leaves(moves), jax.tree.leaves(grad), strict=True)
            for name, moved, want in leaves:
                np.testing.assert_allclose(
                    moved, -want, rtol=1e-5, atol=1e-6, err_msg=f"{visible}{name}"
                )
        # The loss is -(n_total/B) sum_n log p(v_n) over both sites, with the exact log Z.
        np.testing.assert_allclose(loss, -40 * sum(ll for _, ll in expected), rtol=1e-5)


@pytest.mark.statistical
def test_rbm_reports_tracked_log_z_with_age_and_error(x64):
    """``value="tracked"``: exact at a refresh (age 0), then moved by importance sampling
    with an age and a positive standard error; a model run under handlers records it."""
    units = UNITS[0]
    params, data = make_params(units), jnp.asarray(make_data(units, n=20))
    sml = nrbm.sml(PHASE, value="tracked", refresh_every=3, init_data=data)

    @jax.jit
    def run(state, p, key):
        with handlers.trace() as tr, handlers.seed(rng_seed=key):
            with handlers.substitute(data={"rbm_sml": state}):
                rbm = nrbm.RBM(p, log_z=sml)
        info = rbm.log_z_info
        return tr["rbm_sml"]["value"], rbm.log_z, info.age, info.stderr, brute_log_z(p)

    state = sml.init_state(jax.random.key(0), params)
    ages, values = [], []
    for i in range(5):
        p = params.replace(weights=params.weights * (1 + 0.02 * i))
        state, log_z, age, se, exact = run(state, p, jax.random.key(i))
        ages.append(int(age))
        values.append((float(log_z), float(exact), float(se)))
    with handlers.seed(rng_seed=0), handlers.substitute(data={"rbm_sml": state}):
        rbm = nrbm.RBM(params, log_z=sml)
    assert rbm.log_z_mode == "sml" and rbm.is_normalized
    assert ages == [0, 1, 2, 0, 1]
    for (value, exact, se), age in zip(values, ages, strict=True):
        if age == 0:
            assert value == pytest.approx(exact, abs=1e-10) and se == 0
        else:
            assert se > 0 and abs(value - exact) < 0.5


@pytest.mark.statistical
def test_tracked_step_is_consistent_with_exact_log_z(x64):
    """The importance-sampling step from theta' to theta with M = 2000 exact samples of
    theta' lands within Z_MAX of its reported standard errors of the exact log Z(theta), for a
    step large enough that the error is not negligible (se about 0.01 nats)."""
    units = UNITS[0]
    old = make_params(units)
    new = old.replace(weights=1.3 * old.weights, hidden_bias=old.hidden_bias + 0.3)

    @jax.jit
    def step(key):
        v_old, _ = sample_exact(key, old, (2000,), max_units=None)
        start = TrackedLogZ(brute_log_z(old), jnp.asarray(0.0), jnp.asarray(0), old)
        return tracked_step(start, new, v_old), brute_log_z(new)

    tracked, exact = step(jax.random.key(11))
    se = float(jnp.sqrt(tracked.variance))
    error = float(tracked.log_z - exact)
    assert 0.002 < se < 0.05 and abs(error) <= Z_MAX * se, (error, se)
    assert int(tracked.age) == 1
    np.testing.assert_array_equal(tracked.anchor.weights, new.weights)


def test_tracked_step_adds_the_second_order_term(x64):
    """The step is log of the mean weight plus the delta method's second-order term
    Var(w) / (2 M mean(w)^2), written out here with numpy from the same free energies."""
    units = UNITS[0]
    old, chains = make_params(units), make_data(units, n=23, seed=4)
    new = old.replace(weights=1.2 * old.weights)
    start = TrackedLogZ(jnp.asarray(0.5), jnp.asarray(0.0), jnp.asarray(0), old)
    got = jax.jit(tracked_step)(start, new, jnp.asarray(chains))
    w = np.exp(np.asarray(nrbm.free_energy(old, chains) - nrbm.free_energy(new, chains)))
    rel_var = np.var(w, ddof=1) / (len(w) * np.mean(w) ** 2)
    np.testing.assert_allclose(got.log_z, 0.5 + np.log(np.mean(w)) + rel_var / 2, rtol=1e-12)
    np.testing.assert_allclose(got.variance, rel_var, rtol=1e-12)


DRIFT_STEPS = 300


def drift_errors(tolerance):
    """Tracked minus exact log Z along a path of parameters (weights x1 to x2.5, hidden biases
    +0 to +1 over 300 updates) with stale chains (40 fixed data rows: the lag at its worst),
    exact refreshes, ``refresh_every=1000``; and whether each update refreshed."""
    units = UNITS[0]
    start, chains = make_params(units), jnp.asarray(make_data(units, n=40))

    def path(t):
        s = t / DRIFT_STEPS
        return start.replace(
            weights=start.weights * (1 + 1.5 * s), hidden_bias=start.hidden_bias + s
        )

    def step(tracked, t):
        tracked = tracked_step(tracked, path(t), chains)
        tracked = refreshed(jax.random.key(0), tracked, 1000, tolerance)
        return tracked, (tracked.log_z - brute_log_z(path(t)), tracked.age == 0)

    tracked = refreshed(jax.random.key(0), initial_tracked(start, 1000), 1000)
    return jax.lax.scan(step, tracked, jnp.arange(1, DRIFT_STEPS + 1))[1]


def test_tolerance_bounds_the_drift_of_the_tracked_value(x64):
    """Deterministic (no random draws: fixed chains, exact refreshes): without a tolerance the
    tracked value drifts by more than 0.5 nats in 300 updates; with ``tolerance`` tau it stays
    within 3 tau of the exact log Z (docs/models.md: the measured bound) with fewer than one
    refresh per five updates."""
    error, fresh = jax.jit(partial(drift_errors, None))()
    assert float(jnp.abs(error[-1])) > 0.5 and int(fresh.sum()) == 0
    taus = jnp.asarray([0.05, 0.02])
    errors, fresh = jax.jit(jax.vmap(drift_errors))(taus)
    for tau, error, refreshes in zip(taus, errors, fresh, strict=True):
        assert float(jnp.abs(error).max()) <= 3 * tau, (float(tau), float(jnp.abs(error).max()))
        assert 0 < int(refreshes.sum()) < DRIFT_STEPS // 5


# --- where the chains cannot persist, and states that are not this model's ------------------


def test_sml_outside_a_handler_is_an_error():
    params = make_params(UNITS[0])
    with pytest.raises(nrbm.SMLContextError, match="SVI"):
        nrbm.RBM(params, log_z=nrbm.sml(PHASE))


def test_sml_under_mcmc_is_an_error():
    """MCMC over the RBM's parameters cannot carry the chains: a clear error at init, not a
    chain that silently samples from a wrong density."""

    def model(data):
        w = numpyro.sample("w", dist.Normal(jnp.zeros((N_VISIBLE, N_HIDDEN)), 1.0).to_event(2))
        params = nrbm.RBMParams(w, jnp.zeros(N_VISIBLE), jnp.zeros(N_HIDDEN))
        with numpyro.plate("n", data.shape[0]):
            numpyro.sample("v", nrbm.RBM(params, log_z=nrbm.sml(PHASE)), obs=data)

    mcmc = MCMC(NUTS(model), num_warmup=2, num_samples=2, progress_bar=False)
    with pytest.raises(nrbm.SMLContextError, match="log_z='exact'"):
        mcmc.run(jax.random.key(0), jnp.asarray(make_data(UNITS[0])))


@pytest.mark.parametrize("bad", ["shape", "units"])
def test_chains_of_another_model_are_an_error_at_trace_time(bad):
    units = UNITS[0]
    params = make_params(units)
    sml = nrbm.sml(PHASE)
    with handlers.trace() as tr, handlers.seed(rng_seed=0):
        nrbm.RBM(params, log_z=sml)
    state = tr["rbm_sml"]["value"]
    if bad == "shape":
        other = nrbm.init_params(jax.random.key(0), N_VISIBLE + 1, N_HIDDEN)
        match = "visible layer has 6 units"
    else:
        other = params.replace(visible_units="spin")
        match = "other unit types"
    with pytest.raises(ValueError, match=match):
        with handlers.seed(rng_seed=1), handlers.substitute(data={"rbm_sml": state}):
            nrbm.RBM(other, log_z=sml)


def test_bad_sml_settings_are_errors():
    with pytest.raises(ValueError, match="persistent chains"):
        nrbm.sml(nrbm.learning.cd(1))
    with pytest.raises(TypeError, match="NegativePhase"):
        nrbm.sml("pcd")
    with pytest.raises(ValueError, match="value"):
        nrbm.sml(value="ais")
    batched = nrbm.init_params(jax.random.key(0), 4, 2)
    batched = batched.replace(weights=jnp.stack([batched.weights] * 2))
    batched = batched.replace(visible_bias=jnp.zeros((2, 4)), hidden_bias=jnp.zeros((2, 2)))
    with handlers.seed(rng_seed=0), pytest.raises(ValueError, match="batch shape"):
        nrbm.RBM(batched, log_z=nrbm.sml())
