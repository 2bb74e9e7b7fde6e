"""Incomplete data in SVI (``nrbm.incomplete``): SVI's update on rows with missing entries is
the engine's update at the completed rows and the chains as they stood, the imputations are
per-example model state that only the visited rows' missing entries change, and the errors.
The training claim (SVI reaches ``fit``'s held-out log-likelihood on 30%-incomplete digits) is
``tests/test_examples.py::test_svi_missing``."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
import pytest
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO
from test_derivation import UNITS, make_data, make_params
from test_sml import PHASE, _params, expected_step, no_guide

import numpyro_rbm as nrbm

N, B = 40, 10


def incomplete_rows(units, seed=2):
    """make_data's rows with about 30% of the entries NaN (every row keeps one)."""
    x = make_data(units, n=N).astype(float)
    gone = np.random.default_rng(seed).random(x.shape) < 0.3
    gone[:, 0] &= ~gone.all(1)
    x[gone] = np.nan
    return x


def missing_model(idx, init, sml, missing):
    """One observed RBM site over the completed rows ``idx`` (the plate's subsample is
    substituted, so the test knows which rows each update visits)."""
    w = numpyro.param("w", init.weights)
    b = numpyro.param("b", init.visible_bias)
    c = numpyro.param("c", init.hidden_bias)
    rbm = nrbm.RBM(nrbm.RBMParams(w, b, c, init.visible_units, init.hidden_units), log_z=sml)
    with handlers.substitute(data={"n": idx}):
        with numpyro.plate("n", missing.num_examples, subsample_size=idx.shape[0]) as rows:
            numpyro.sample("v", rbm, obs=missing.complete(rbm, rows))


def test_svi_update_on_incomplete_rows_is_the_engines_update():
    """SVI with SGD at 1 / N moves the parameters by ``-loss_gradient`` at the minibatch as
    completed by its persistent imputations (read back from the mutable state) and at the
    chains as they stood (float32 precision); the imputations keep every observed entry,
    change only the visited rows, and persist between updates (two minibatches overlap).
    The one verdict left to the draws, that some of the 43 missing entries drawn moved, fails
    with probability below 1e-9 on any stream: each draw repeats its old value with probability
    at most max over h of max(p, 1 - p) of its conditional, whose product here is 8e-10."""
    units = UNITS[0]
    init = jax.tree.map(lambda x: x.astype(jnp.float32), make_params(units, scale=0.3))
    x = incomplete_rows(units)
    observed = ~np.isnan(x)
    missing = nrbm.incomplete(x)
    sml = nrbm.sml(PHASE)
    svi = SVI(missing_model, no_guide, optax.sgd(1.0 / N), Trace_ELBO())
    batches = [jnp.arange(0, B), jnp.arange(5, 5 + B), jnp.arange(N - B, N)]
    state = svi.init(jax.random.key(0), batches[0], init, sml, missing)
    first = np.asarray(state.mutable_state["rbm_imputations"]["imputations"])
    np.testing.assert_array_equal(first[observed], x[observed])
    update = jax.jit(svi.update, static_argnums=(3, 4))
    moved_entries = 0
    for idx in batches:
        before = _params(svi.get_params(state), units)
        chains = state.mutable_state["rbm_sml"]["chains[bernoulli,bernoulli]"]
        imputed = np.asarray(state.mutable_state["rbm_imputations"]["imputations"])
        state, loss = update(state, idx, init, sml, missing)
        after_imputed = np.asarray(state.mutable_state["rbm_imputations"]["imputations"])
        completed = after_imputed[idx]
        expected, lp = expected_step(before, jnp.asarray(completed), chains)
        after = _params(svi.get_params(state), units)
        for leaf in ("weights", "visible_bias", "hidden_bias"):
            moved = getattr(after, leaf) - getattr(before, leaf)
            np.testing.assert_allclose(
                moved, -getattr(expected, leaf), rtol=1e-5, atol=1e-6, err_msg=leaf
            )
        # The loss is -(N/B) sum_n log p(completed row n), log Z exact (5 x 3 enumerates).
        np.testing.assert_allclose(loss, -N * jnp.mean(lp), rtol=1e-5)
        changed = after_imputed != imputed
        assert not changed[observed].any() and set(np.unique(after_imputed)) <= {0.0, 1.0}
        others = np.setdiff1d(np.arange(N), np.asarray(idx))
        assert not changed[others].any()
        moved_entries += int(changed.sum())
    assert moved_entries > 0  # the missing entries are sampled, not frozen


def test_incomplete_data_errors_in_svi():
    units = UNITS[0]
    params = make_params(units)
    x = incomplete_rows(units)
    bad = x.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"data row 7 has no observed entry .*drop it"):
        nrbm.incomplete(bad)
    with pytest.raises(ValueError, match="sweeps must be an integer >= 1"):
        nrbm.incomplete(x, sweeps=0)
    missing = nrbm.incomplete(x)
    with pytest.raises(nrbm.SMLContextError, match="per-example imputations.*SVI"):
        missing.complete(params, jnp.arange(3))
    with handlers.seed(rng_seed=0), handlers.trace():
        with pytest.raises(ValueError, match="visible units are spin"):
            missing.complete(params.replace(visible_units="spin"), jnp.arange(3))
        other = nrbm.incomplete(x[:, :4])
        with pytest.raises(ValueError, match="4 layer units, the RBM 5 visible units"):
            other.complete(params, jnp.arange(3))
    with (
        handlers.seed(rng_seed=0),
        handlers.substitute(data={"rbm_imputations": {"imputations": jnp.zeros((N + 1, 5))}}),
    ):
        with pytest.raises(ValueError, match="belong to other data"):
            missing.complete(params, jnp.arange(3))
    # A NaN observation without imputations: a clear error where the value is concrete.
    row, col = np.argwhere(np.isnan(x[3:6]))[0]
    with pytest.raises(ValueError, match=rf"NaN\) at index \({row}, {col}\).*incomplete"):
        nrbm.RBM(params).log_prob(jnp.asarray(x[3:6]))
