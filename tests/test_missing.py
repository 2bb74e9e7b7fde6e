"""Training from incomplete data (NaN entries): the clamped imputation step against its exact
kernel, the positive phase's expected gradient against the exact gradient of the observed
entries' log-likelihood, the errors, and checkpoint resume. Enumeration in float64 NumPy."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from conftest import P_MIN, brute_joint_table, brute_states, state_index, transition_gof_pvalue
from scipy import stats
from scipy.special import logsumexp
from test_infer import random_params, sweep_kernel

from numpyro_rbm import datasets, fit, io
from numpyro_rbm.core import free_energy
from numpyro_rbm.learning import NegativePhase, Weighted, build_trainer, loss_gradient, missing
from numpyro_rbm.learning.fitting import CHECKPOINT_FILE
from numpyro_rbm.units import check_incomplete_data

N_V = 5
#: Examples of 5 units with missing entries (NaN); the last is complete.
ROWS = np.array(
    [
        [1, np.nan, 0, np.nan, 1],
        [np.nan, np.nan, np.nan, 1, 0],
        [0, 1, np.nan, np.nan, np.nan],
        [np.nan, 0, 1, 1, np.nan],
        [1, 1, 0, np.nan, 0],
        [0, 1, 1, 0, 1],
    ]
)


#: (rows, states): which of brute_states(N_V) agree with each row's observed entries.
CONSISTENT = np.all(
    np.isnan(ROWS)[:, None] | (brute_states(N_V)[None] == np.nan_to_num(ROWS)[:, None]), -1
)


def exact_conditionals(params):
    """log p(v | v_O) of ROWS over brute_states(n) (-inf off the observed values)."""
    _, _, table = brute_joint_table(params)
    log_w = np.where(CONSISTENT, logsumexp(table, axis=1)[None], -np.inf)
    return log_w - logsumexp(log_w, axis=1, keepdims=True)


@pytest.mark.statistical
def test_imputation_step_is_the_exact_clamped_kernel():
    """missing.impute with k=1, for 6 missing patterns at once, step by step against the exact
    clamped sweep K = P(h | v) P(v_M | h) (transition test, conftest.transition_gof_pvalue:
    false failure P_MIN), whose stationary distribution is checked to be the exact p(v_M | v_O);
    the observed entries never move."""
    params = random_params(2, N_V, 3, 2.0)  # strongly coupled
    observed, values = ~np.isnan(ROWS), np.nan_to_num(ROWS)
    per_row, draws = 20, 200  # 120 chains
    obs, vals = np.repeat(observed, per_row, 0), np.repeat(values, per_row, 0)
    pattern = np.repeat(np.arange(len(ROWS)), per_row)

    def step(v, key):
        v = missing.impute(key, params, v, jnp.asarray(obs), jnp.asarray(vals), 1)
        return v, v

    _, trace = jax.lax.scan(step, jnp.asarray(vals), jax.random.split(jax.random.key(0), draws))
    trace = np.swapaxes(np.asarray(trace), 0, 1)  # (chains, draws, n)
    held = np.broadcast_to(obs[:, None], trace.shape)
    assert np.all(trace[held] == np.broadcast_to(vals[:, None], trace.shape)[held])
    log_cond = exact_conditionals(params)
    p_h, p_v = sweep_kernel(params)
    kernels = []
    for r in range(len(ROWS)):
        p_free = np.where(CONSISTENT[r], p_v, 0.0)
        kernel = p_h @ (p_free / p_free.sum(1, keepdims=True))
        target = np.exp(log_cond[r])
        np.testing.assert_allclose(target @ kernel, target, atol=1e-12)
        kernels.append(kernel)
    x = state_index(trace)
    next_probs = np.stack([kernels[pattern[c]][x[c, :-1]] for c in range(len(x))])
    p = transition_gof_pvalue(x, next_probs, brute_states(N_V))
    assert p > P_MIN, f"clamped imputation: transition test p = {p:.2e}"


@dataclasses.dataclass(frozen=True)
class ExactExpectation(NegativePhase):
    """The model expectation itself: every state weighted by its exact probability."""

    persistent = False

    def init(self, key, params, data, batch_size):
        return None

    def step(self, key, params, state, batch):
        v = jnp.asarray(brute_states(params.n_visible), params.weights.dtype)
        return Weighted(v, jax.nn.softmax(-free_energy(params, v))), state, {}


@jax.jit
@jax.grad
def observed_log_likelihood_grad(params):
    """The gradient of the mean exact log p(v_O) of ROWS, by enumeration."""
    log_pv = -free_energy(params, jnp.asarray(brute_states(params.n_visible)))
    log_pv = log_pv - jax.nn.logsumexp(log_pv)
    return jnp.mean(jax.nn.logsumexp(jnp.where(CONSISTENT, log_pv, -jnp.inf), axis=1))


@pytest.mark.statistical
def test_positive_phase_gives_the_exact_gradient_of_the_observed_entries(x64):
    """Trainer.step_incomplete (2 clamped sweeps, then the update) from imputations drawn
    exactly from p(v_M | v_O), with the model expectation exact: one SGD step at rate 1,
    averaged over 300 keys, equals the exact gradient of the mean log-likelihood of the
    observed entries (jax.grad of enumeration). Every one of the 23 coordinates within
    z = norm.isf(P_MIN / 46) standard errors (Bonferroni: false failure <= P_MIN for normal
    means; the t tail at 299 dof adds about 20%)."""
    params = random_params(3, N_V, 3, 1.0)
    params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
    observed, values = ~np.isnan(ROWS), np.nan_to_num(ROWS)
    data = missing.IncompleteData(jnp.asarray(values), jnp.asarray(observed))
    trainer = build_trainer(ExactExpectation(), optax.sgd(1.0), centering=False, impute_sweeps=5)
    state = trainer.init(jax.random.key(0), params, data.values, len(ROWS))
    log_cond = exact_conditionals(params)
    v_all = jnp.asarray(brute_states(N_V))
    index = jnp.arange(len(ROWS))

    def update(key):
        key_exact, key_step = jax.random.split(key)
        start = v_all[jax.random.categorical(key_exact, jnp.asarray(log_cond))]
        new = trainer.step_incomplete(state._replace(imputations=start), index, key_step, data)
        new = new[0].params
        return jnp.concatenate(
            [jnp.ravel(getattr(new, f) - getattr(params, f))
             for f in ("weights", "visible_bias", "hidden_bias")]
        )  # fmt: skip

    updates = np.asarray(jax.jit(jax.vmap(update))(jax.random.split(jax.random.key(1), 1000)))
    grad = observed_log_likelihood_grad(params)
    exact = np.concatenate(
        [np.ravel(getattr(grad, f)) for f in ("weights", "visible_bias", "hidden_bias")]
    )
    z = np.abs(updates.mean(0) - exact) / (updates.std(0, ddof=1) / math.sqrt(len(updates)))
    assert np.all(z < stats.norm.isf(P_MIN / (2 * len(z)))), z.max()


def test_the_expected_positive_phase_is_the_observed_entries_gradient(x64):
    """The identity itself, exactly: the free-energy loss at every completion weighted by
    p(v_M | v_O) / N, minus the exact model term, has gradient -grad mean log p(v_O)."""
    params = jax.tree.map(lambda x: x.astype(jnp.float64), random_params(4, N_V, 3, 1.0))
    log_cond = exact_conditionals(params)
    v = jnp.asarray(brute_states(N_V))
    weights = np.exp(log_cond) / len(ROWS)  # (rows, states)
    completions = Weighted(jnp.tile(v, (len(ROWS), 1)), jnp.asarray(weights.ravel()))
    model = ExactExpectation().step(None, params, None, None)[0]
    grad = jax.jit(loss_gradient)(params, completions, model)
    exact = observed_log_likelihood_grad(params)
    for f in ("weights", "visible_bias", "hidden_bias"):
        np.testing.assert_allclose(-getattr(grad, f), getattr(exact, f), atol=1e-12)


def test_incomplete_data_errors_name_what_is_wrong():
    x = np.array(datasets.bars_and_stripes(3), float)
    x[3, 1] = np.nan
    bad = x.copy()
    bad[5] = np.nan
    with pytest.raises(ValueError, match=r"data row 5 has no observed entry .*drop it"):
        fit(bad, 4, epochs=1, progress=False)
    col = x.copy()
    col[:, 2] = np.nan
    with pytest.raises(ValueError, match=r"data column 2 has no observed entry"):
        fit(col, 4, epochs=1, progress=False)
    # every visible type clamps: the mask of observed entries becomes one of layer units
    layer, observed = check_incomplete_data(x, "gaussian")
    assert observed.shape == layer.shape and not observed[3, 1] and observed.sum() == x.size - 1
    layer, observed = check_incomplete_data(x, "potts(3)")
    assert observed.shape == layer.shape == (14, 27)
    assert not observed[3, 3:6].any() and observed.sum() == 27 * 14 - 3
    with pytest.raises(ValueError, match=r"test_data row 3, column 1 is missing"):
        fit(np.nan_to_num(x), 4, epochs=1, test_data=x, progress=False)
    with pytest.raises(ValueError, match="impute_sweeps must be an integer >= 1"):
        fit(x, 4, epochs=1, impute_sweeps=0, progress=False)
    layer, observed = check_incomplete_data(np.nan_to_num(x), "bernoulli")
    assert observed is None  # complete data: today's path


def test_resume_with_missing_entries_equals_uninterrupted_run(tmp_path):
    """The imputations are part of the checkpointed state: a run stopped at epoch 2 and
    resumed equals the uninterrupted one bitwise; complete data cannot resume it."""
    x = np.tile(datasets.bars_and_stripes(3), (5, 1)).astype(float)
    x[np.random.default_rng(0).random(x.shape) < 0.3] = np.nan
    x[np.isnan(x).all(1), 0] = 1.0
    kwargs = dict(epochs=4, batch_size=14, eval_every=2, progress=False, seed=3, num_chains=20)
    full = fit(x, 5, checkpoint_dir=tmp_path / "a", **kwargs)
    part = fit(x, 5, checkpoint_dir=tmp_path / "b", callbacks=[lambda e, p, m: e == 2], **kwargs)
    assert part.history["epoch"] == [2]
    resumed = fit(x, 5, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
    for a, b in zip(jax.tree.leaves(full.state), jax.tree.leaves(resumed.state), strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert full.history == resumed.history
    imputed = np.asarray(full.state.imputations)
    observed = ~np.isnan(x)
    np.testing.assert_array_equal(imputed[observed], x[observed])
    assert set(np.unique(imputed)) <= {0.0, 1.0}
    arrays, _ = io.load_checkpoint(tmp_path / "b" / CHECKPOINT_FILE)
    assert any(a.shape == x.shape for a in arrays.values())  # the imputations are saved
    with pytest.raises(ValueError, match="different settings.*missing_units"):
        fit(np.nan_to_num(x), 5, checkpoint_dir=tmp_path / "b", resume=True, **kwargs)
