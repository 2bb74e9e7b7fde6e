"""Clamped RBMs against brute-force conditionals p(v_F | v_C) computed in float64 numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from conftest import (
    P_MIN,
    brute_joint_log_weights,
    brute_joint_table,
    g_test_pvalue,
    state_index,
)
from scipy.special import logsumexp
from test_infer import mcmc_gof_pvalue, random_params, run, sweep_kernel

from numpyro_rbm import ClampedRBM, RBMGibbs, clamp_params, clamped_log_partition
from numpyro_rbm.core import RBMParams


def brute_conditional(params, mask, values):
    """log p(v_F | v_C) over all 2^n states (-inf where v disagrees with the clamp)."""
    V, _, table = brute_joint_table(params)
    consistent = np.all(np.where(mask, V == np.asarray(values), True), axis=1)
    log_w = np.where(consistent, logsumexp(table, axis=1), -np.inf)
    return V, log_w - logsumexp(log_w), consistent


@pytest.mark.parametrize("units", ["bernoulli", "spin"])
def test_log_partition_and_log_prob_match_brute_force(x64, units):
    params = random_params(3, 6, 4, 1.5, units)
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), params)
    low, high = params.visible_units.values
    mask = np.array([True, False, True, False, False, True])
    values = np.array([high, 0.0, low, 0.0, 0.0, high])  # unclamped entries are ignored
    V, log_cond, consistent = brute_conditional(params, mask, values)

    dist = ClampedRBM(params, mask, values)
    lp = np.asarray(dist.log_prob(jnp.asarray(V)))
    np.testing.assert_allclose(lp[consistent], log_cond[consistent], rtol=1e-10, atol=1e-10)
    assert np.all(np.isneginf(lp[~consistent]))

    # log Z_C on its own: the unnormalised conditional -F(v) + b_C^T v_C sums to it
    _, _, table = brute_joint_log_weights(
        params.weights, params.visible_bias, params.hidden_bias, units, units
    )
    shift = np.sum(np.where(mask, np.asarray(params.visible_bias) * values, 0.0))
    log_z_c = logsumexp(logsumexp(table, axis=1)[consistent]) - shift
    np.testing.assert_allclose(clamped_log_partition(params, mask, values), log_z_c, rtol=1e-12)

    # a batch of two masks gives two conditionals
    masks = np.stack([mask, ~mask])
    batched = clamped_log_partition(params, masks, np.broadcast_to(values, (2, 6)))
    assert batched.shape == (2,)
    np.testing.assert_allclose(batched[0], log_z_c, rtol=1e-12)


def test_clamp_params_is_the_conditional_rbm(x64):
    """The free units of clamp_params(...) have the conditional's exact distribution."""
    params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), random_params(4, 5, 3, 2.0))
    mask = np.array([False, True, True, False, False])
    values = np.array([0.0, 1.0, 0.0, 0.0, 0.0])
    cp = clamp_params(params, mask, values)
    np.testing.assert_allclose(cp.hidden_bias, params.hidden_bias + params.weights[1])
    V, log_cond, consistent = brute_conditional(params, mask, values)
    _, _, table = brute_joint_log_weights(cp.weights, cp.visible_bias, cp.hidden_bias)
    log_free = logsumexp(table, axis=1)  # clamped units of cp are free but decoupled
    np.testing.assert_allclose(
        log_free[consistent] - logsumexp(log_free[consistent]),
        log_cond[consistent],
        rtol=1e-10,
    )


@pytest.mark.statistical
def test_exact_sample_matches_conditional():
    params = random_params(5, 6, 3, 2.0)
    mask = np.array([True, True, False, False, False, False])
    values = np.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    v = ClampedRBM(params, mask, values).sample(jax.random.key(0), (20000,))
    assert v.shape == (20000, 6)
    np.testing.assert_array_equal(v[:, :2], np.broadcast_to([1.0, 0.0], (20000, 2)))
    _, log_cond, _ = brute_conditional(params, mask, values)
    counts = np.bincount(state_index(v), minlength=64)
    assert g_test_pvalue(counts, 20000 * np.exp(log_cond)) > P_MIN


def clamped_model(params, mask, values):
    numpyro.sample("v", ClampedRBM(params, mask, values))


@pytest.mark.statistical
def test_rbmgibbs_on_a_clamped_site_matches_exact_conditional():
    """Inpainting: RBMGibbs keeps the clamped units and its steps follow the exact clamped
    sweep, h ~ p(h | v), v_F ~ p(v_F | h) (transition test), whose stationary distribution
    is the exact conditional p(v_F | v_C)."""
    params = random_params(6, 6, 3, 2.5)  # strongly coupled
    mask = jnp.array([True, False, False, True, False, False])
    values = jnp.array([1.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    mcmc = run(
        RBMGibbs(clamped_model),
        params,
        mask,
        values,
        num_chains=4,
        chain_method="vectorized",
        num_samples=1500,
    )
    v = mcmc.get_samples(group_by_chain=True)["v"]
    assert np.all(v[..., 0] == 1.0) and np.all(v[..., 3] == 0.0)
    _, log_cond, consistent = brute_conditional(params, np.asarray(mask), np.asarray(values))
    p_h, p_v = sweep_kernel(params)
    p_free = np.where(consistent, p_v, 0.0)  # p(v | h) given the clamped units' values
    kernel = p_h @ (p_free / p_free.sum(1, keepdims=True))
    p = mcmc_gof_pvalue(v, kernel, np.exp(log_cond))
    assert p > P_MIN, f"clamped RBMGibbs: transition test p = {p:.2e}"


def test_bad_clamps_raise_clear_errors():
    params = random_params(7, 4, 2, 1.0)
    with pytest.raises(TypeError, match="boolean"):
        ClampedRBM(params, jnp.array([1, 0, 0, 0]), jnp.zeros(4))
    with pytest.raises(ValueError, match="n_visible"):
        ClampedRBM(params, jnp.zeros(3, bool), jnp.zeros(3))
    with pytest.raises(ValueError, match="bernoulli states"):
        ClampedRBM(params, jnp.ones(4, bool), jnp.full(4, 0.5))
    with pytest.raises(TypeError, match="RBMParams"):
        ClampedRBM(np.zeros((4, 2)), jnp.ones(4, bool), jnp.zeros(4))
    assert isinstance(ClampedRBM(params, jnp.ones(4, bool), jnp.zeros(4)).params, RBMParams)
