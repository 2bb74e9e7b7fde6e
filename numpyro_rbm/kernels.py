r"""Markov kernels on the visible layer: the one block-Gibbs loop, traces, and tempering.

Every sampler in the library is built from :func:`numpyro_rbm.core.gibbs_sweep` and the loop
here: the MCMC kernel :class:`~numpyro_rbm.RBMGibbs`, the negative phases of training
(:mod:`numpyro_rbm.learning`), annealed importance sampling (:mod:`numpyro_rbm.ais`), the
scikit-learn estimator, the distribution's approximate sampler, the command line and the
chain diagnostics. A change to the sweep reaches all of them.

**Tempering.** The tempered RBM at inverse temperature :math:`\beta` with base biases
:math:`b_0` has parameters :math:`(\beta W,\ \beta b + (1-\beta) b_0,\ \beta c)`: at
:math:`\beta = 1` the model, at :math:`\beta = 0` the independent model with visible biases
:math:`b_0`. Annealed importance sampling walks this path; parallel tempering (Desjardins et
al. 2010; Cho, Raiko & Ilin 2010) runs a ladder of replicas on it and swaps neighbours with
the Metropolis probability :math:`\min\{1, e^{F_i(v_i) + F_j(v_j) - F_i(v_j) - F_j(v_i)}\}`,
which leaves the product of the replicas' distributions invariant.

References:
    * G. Desjardins, A. Courville, Y. Bengio, P. Vincent and O. Delalleau, *Tempered Markov
      chain Monte Carlo for training of restricted Boltzmann machines*, AISTATS 2010.
    * K. Cho, T. Raiko and A. Ilin, *Parallel tempering is efficient for learning restricted
      Boltzmann machines*, IJCNN 2010.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ._threefry import threefry_split
from .core import RBMParams, free_energy, gibbs_sweep

__all__ = ["gibbs", "gibbs_trace", "tempered_params", "parallel_tempering"]


def gibbs(key, params: RBMParams, v, num_sweeps: int, **sweep_options):
    r"""``num_sweeps`` block-Gibbs sweeps from ``v``: the library's one Gibbs loop.

    Args:
        key: PRNG key; sweep :math:`t` uses the :math:`t`-th key of ``split(key, num_sweeps)``.
        params: the RBM.
        v: visible states ``(..., n_visible)`` (any leading chain axes).
        num_sweeps: the number of sweeps (static).
        **sweep_options: conditioning passed to every sweep (``visible_offset``, ``mask`` and
            ``values``, ``sampler``; see :func:`~numpyro_rbm.core.gibbs_sweep`).

    Returns:
        ``(v, h)``: the final visible state and the hidden state it was drawn from (zeros
        when ``num_sweeps`` is 0).
    """
    h0 = jnp.zeros(jnp.shape(v)[:-1] + (params.n_hidden,), jnp.result_type(v))

    def sweep(carry, key):
        return gibbs_sweep(key, params, carry[0], **sweep_options), None

    (v, h), _ = jax.lax.scan(sweep, (v, h0), threefry_split(key, num_sweeps))
    return v, h


def gibbs_trace(
    key, params: RBMParams, v, num_sweeps: int, statistic=None, *, warmup: int = 0, **options
):
    r"""Runs ``warmup`` discarded sweeps, then ``num_sweeps`` recorded ones.

    Args:
        statistic: ``statistic(params, v)`` recorded after each sweep (e.g.
            :func:`~numpyro_rbm.core.free_energy`; a pytree of statistics is fine); ``None``
            records the states themselves.
        warmup: sweeps run first and discarded.

    The other arguments are :func:`gibbs`'s.

    Returns:
        ``(v_final, trace)``; the trace has the draw axis right after the chain axes of ``v``:
        ``(chains..., num_sweeps)`` for a scalar statistic, ``(chains..., num_sweeps,
        n_visible)`` for the states.
    """
    key_warmup, key_trace = threefry_split(key)
    if warmup:
        v = gibbs(key_warmup, params, v, warmup, **options)[0]
    record = (lambda p, x: x) if statistic is None else statistic

    def sweep(v, key):
        v = gibbs_sweep(key, params, v, **options)[0]
        return v, record(params, v)

    v, trace = jax.lax.scan(sweep, v, threefry_split(key_trace, num_sweeps))
    return v, jax.tree.map(lambda x: jnp.moveaxis(x, 0, jnp.ndim(v) - 1), trace)


def tempered_params(params: RBMParams, betas, base_bias) -> RBMParams:
    r"""The tempered RBMs :math:`(\beta W,\ \beta b + (1-\beta) b_0,\ \beta c)`, batched over
    the axes of ``betas`` (a scalar gives one RBM): :math:`\beta = 1` is the model,
    :math:`\beta = 0` the independent base-rate model with visible bias :math:`b_0`. Unit
    parameters (Gaussian precisions, ReLU curvatures) are shared by every rung: broadcast to
    the ladder's batch axes like every other leaf, so that the ladder is one batched
    :class:`RBMParams` that ``jax.vmap`` and slicing along the rungs take leaf by leaf."""
    betas = jnp.asarray(betas, params.weights.dtype)
    b = betas[..., None]
    batch = jnp.broadcast_shapes(betas.shape, params.batch_shape)

    def shared(unit_params):
        return jax.tree.map(lambda x: jnp.broadcast_to(x, batch + jnp.shape(x)[-1:]), unit_params)

    return params.replace(
        weights=b[..., None] * params.weights,
        visible_bias=b * params.visible_bias + (1 - b) * base_bias,
        hidden_bias=b * params.hidden_bias,
        visible_unit_params=shared(params.visible_unit_params),
        hidden_unit_params=shared(params.hidden_unit_params),
    )


def _swap(uniforms, ladder: RBMParams, chains, parity: int):
    """Metropolis swaps of replicas ``(t, t + 1)`` for all ``t`` of the given parity, driven
    by ``uniforms`` ``(T - 1, M)``. Only the free energies a swap needs are computed: each
    replica under its own model and under its neighbours' (``3T`` rather than ``T^2``)."""
    fe = jax.vmap(free_energy)  # replica t's model on chains t: (T, M)
    own_each = fe(ladder, chains)
    lower = jax.tree.map(lambda x: x[:-1], ladder)
    upper = jax.tree.map(lambda x: x[1:], ladder)
    own = own_each[:-1] + own_each[1:]
    crossed = fe(lower, chains[1:]) + fe(upper, chains[:-1])
    log_ratio = own - crossed  # (T - 1, M)
    accept_prob = jnp.exp(jnp.minimum(log_ratio, 0.0))
    t = jnp.arange(chains.shape[0] - 1)
    accept = (uniforms < accept_prob) & ((t % 2) == parity)[:, None]
    up = jnp.concatenate([accept, jnp.zeros_like(accept[:1])])  # t takes t + 1's state
    down = jnp.concatenate([jnp.zeros_like(accept[:1]), accept])  # t + 1 takes t's state
    new = jnp.where(up[..., None], jnp.roll(chains, -1, axis=0), chains)
    new = jnp.where(down[..., None], jnp.roll(chains, 1, axis=0), new)
    return new, jnp.mean(accept_prob, axis=-1)


def parallel_tempering(key, params: RBMParams, chains, betas, base_bias, k: int = 1, **options):
    r"""One parallel-tempering step: ``k`` sweeps of every replica, then swaps of the even and
    of the odd neighbouring pairs.

    Args:
        key: PRNG key.
        params: the model (:math:`\beta = 1`).
        chains: ``(T, M, n_visible)`` replicas, ordered like ``betas`` (the last is the model).
        betas: increasing inverse temperatures ``(T,)`` ending at 1.
        base_bias: visible bias :math:`b_0` of the :math:`\beta = 0` model.
        k: sweeps per replica between swaps.
        **options: passed to every sweep (e.g. ``sampler``).

    Returns:
        ``(chains, swap_rate)``: the new replicas (``chains[-1]`` are the model's) and the mean
        swap acceptance probability of each neighbouring pair ``(T - 1,)``.
    """
    ladder = tempered_params(params, betas, base_bias)
    n_temps, n_chains = chains.shape[:2]
    key_gibbs, key_even, key_odd = threefry_split(key, 3)
    keys = threefry_split(key_gibbs, n_temps)
    chains = jax.vmap(lambda kk, p, v: gibbs(kk, p, v, k, **options)[0])(keys, ladder, chains)
    u_even = jax.random.uniform(key_even, (n_temps - 1, n_chains), chains.dtype)
    chains, rate_even = _swap(u_even, ladder, chains, 0)
    u_odd = jax.random.uniform(key_odd, (n_temps - 1, n_chains), chains.dtype)
    chains, rate_odd = _swap(u_odd, ladder, chains, 1)
    pair = jnp.arange(n_temps - 1)
    return chains, jnp.where(pair % 2 == 0, rate_even, rate_odd)
