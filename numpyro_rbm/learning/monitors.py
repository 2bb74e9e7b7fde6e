r"""Monitors: what :func:`~numpyro_rbm.fit` measures at each evaluation.

A monitor is any function ``monitor(ctx) -> {name: value}`` of a :class:`MonitorContext`
(the epoch, the parameters in standard coordinates, the training state, the negative phase,
its info, the training and test layers, and a PRNG key for this evaluation); the values
(floats, or lists of floats) are appended to ``FitResult.history[name]``. ``fit`` runs
:func:`default_monitors` and then the user's ``monitors=``.

The built-in ones:

* :func:`reconstruction_error`: mean squared error of the mean-field reconstruction
  :math:`\mathbb{E}[v \mid h = \mathbb{E}[h \mid v]]` (cheap, but not a likelihood);
* :func:`pseudo_log_likelihood_monitor`: Besag's (1975) pseudo-log-likelihood over the
  visible sites (exact for two-state and Potts units, a 33-point quadrature for Gaussian
  units);
* :func:`log_likelihood_monitor`: exact or AIS log-likelihood of the training and test sets,
  chosen by :func:`numpyro_rbm.ais.choose_method`;
* :func:`chain_rhat`: split :math:`\hat R` of the persistent chains, run on by the negative
  phase's own transition at fixed parameters (:mod:`numpyro_rbm.diagnostics`);
* :func:`info_monitor`: what the negative phase reports (parallel tempering's swap rates).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from .._threefry import threefry_split
from ..ais import estimate_log_z
from ..core import (
    RBMParams,
    at_evaluation_precision,
    free_energy,
    hidden_field,
    hidden_mean,
    visible_mean,
)
from .negative import PCD, NegativePhase

__all__ = [
    "MonitorContext",
    "reconstruction_error",
    "pseudo_log_likelihood",
    "site_log_conditionals",
    "pseudo_log_likelihood_monitor",
    "reconstruction_error_monitor",
    "log_likelihood_monitor",
    "chain_rhat",
    "monitor_rhat",
    "info_monitor",
    "default_monitors",
]

#: Rows of the training set the cheap monitors read (a fixed subset bounds their cost).
MONITOR_ROWS = 1000


class MonitorContext(NamedTuple):
    """What a monitor sees at one evaluation."""

    #: The number of epochs done.
    epoch: int
    #: The parameters, standard coordinates.
    params: RBMParams
    #: The full :class:`~numpyro_rbm.learning.trainer.TrainState`.
    state: Any
    #: The negative phase being trained with.
    negative_phase: NegativePhase
    #: The negative phase's info, averaged over the last epoch's updates.
    info: dict
    #: The training layer ``(N, n_visible)``.
    train: jax.Array
    #: The test layer, or ``None``.
    test: jax.Array | None
    #: A PRNG key for this evaluation.
    key: jax.Array


# --- pure measures -------------------------------------------------------------------------------


def reconstruction_error(params: RBMParams, v):
    r"""Mean squared error per unit of the mean-field reconstruction
    :math:`\mathbb{E}[v \mid h = \mathbb{E}[h \mid v]]`. Cheap, but not a likelihood: a
    small value does not mean a good model."""
    recon = visible_mean(params, hidden_mean(params, v))
    return jnp.mean((v - recon) ** 2)


def site_log_conditionals(params: RBMParams, v):
    r""":math:`\log p(x_s \mid x_{-s})` of every visible site :math:`s` (a unit; a Potts
    site's one-hot block) at the layers ``v`` ``(..., n_visible)``, shape ``(..., n_sites)``.

    Changing site :math:`s` from :math:`x_s` to :math:`y` changes the free energy by
    :math:`-r_s(y) + r_s(x_s) - \log\mu_s(y) + \log\mu_s(x_s)`, with

    .. math::

        r_s(y) - r_s(x_s) = b_s^\top (y - x_s) + \sum_j \Big[A_h\big(\phi_j + W_{sj}^\top
            (y - x_s)\big) - A_h(\phi_j)\Big], \qquad \phi = c + W^\top v,

    and the visible unit type turns these into the conditional
    (:meth:`~numpyro_rbm.units.UnitType.site_log_conditional`): exactly, over both values of
    a two-state unit and the q states of a Potts site; by a quadrature for a Gaussian unit.
    """
    field = hidden_field(params, v)
    a = params.hidden_layer.log_partition
    a_here = a(field)[..., None, None]
    n_hidden = params.n_hidden

    def log_ratio(y):  # y: (..., n_sites, K, units per site)
        n_sites, width = y.shape[-3], y.shape[-1]
        d = y - v.reshape(v.shape[:-1] + (n_sites, 1, width))
        weights = params.weights.reshape(n_sites, width, n_hidden)
        shift = jnp.einsum("...skw,swh->...skh", d, weights)
        bias = jnp.sum(d * params.visible_bias.reshape(n_sites, 1, width), axis=-1)
        return bias + a(field[..., None, None, :] + shift) - a_here

    return params.visible_layer.site_log_conditional(v, log_ratio)


def pseudo_log_likelihood(params: RBMParams, v):
    r"""Average exact pseudo-log-likelihood :math:`\frac1N\sum_n\sum_s \log p(x_{ns} \mid
    x_{n,-s})` over the visible *sites* (Besag 1975): units for two-state and Gaussian units,
    one categorical variable per site for Potts units (Ekeberg et al. 2013), from
    :func:`site_log_conditionals`. Two-state units: :math:`\log p(v_i \mid v_{-i}) =
    \log\sigma\big(F(\bar v^{(i)}) - F(v)\big)` where :math:`\bar v^{(i)}` flips unit
    :math:`i`. Potts units: the site's q states summed. Gaussian units: a log *density*, the
    normaliser :math:`\int e^{-F}\, dv_i` by the trapezoid rule on 33 points spaced by the
    unit's conditional standard deviation (relative error below :math:`10^{-8}`; see
    :meth:`numpyro_rbm.units.Gaussian.site_log_conditional`)."""
    return jnp.mean(jnp.sum(site_log_conditionals(params, v), axis=-1))


_reconstruction_error = jax.jit(reconstruction_error)
_pseudo_log_likelihood = jax.jit(at_evaluation_precision(pseudo_log_likelihood))


# --- monitors ----------------------------------------------------------------------------------


def reconstruction_error_monitor(ctx: MonitorContext) -> dict:
    """``{"reconstruction_error": ...}`` on the first 1000 training rows."""
    value = _reconstruction_error(ctx.params, ctx.train[:MONITOR_ROWS])
    return {"reconstruction_error": float(value)}


def pseudo_log_likelihood_monitor(ctx: MonitorContext) -> dict:
    """``{"pseudo_log_likelihood": ...}`` on the first 1000 training rows (NaN for visible
    units without a site conditional, e.g. a user's unit type that does not define one)."""
    try:
        value = _pseudo_log_likelihood(ctx.params, ctx.train[:MONITOR_ROWS])
    except NotImplementedError:
        return {"pseudo_log_likelihood": math.nan}
    return {"pseudo_log_likelihood": float(value)}


@jax.jit
@at_evaluation_precision
def _mean_neg_free_energy(params, v):
    return jnp.mean(-free_energy(params, v))


def log_likelihood_monitor(method: str = "auto", *, num_runs: int = 64, betas=1000) -> Callable:
    """A monitor of ``train_log_likelihood`` (and ``test_log_likelihood`` with test data): exact,
    or AIS with ``num_runs`` runs of ``betas`` temperatures (base model from the training set),
    as :func:`numpyro_rbm.ais.choose_method` decides for ``method``."""

    def monitor(ctx: MonitorContext) -> dict:
        log_z = estimate_log_z(
            ctx.params, method=method, key=ctx.key, data=ctx.train, num_runs=num_runs,
            betas=betas,
        )  # fmt: skip
        log_z = float(getattr(log_z, "log_z", log_z))
        out = {"train_log_likelihood": float(_mean_neg_free_energy(ctx.params, ctx.train)) - log_z}
        if ctx.test is not None:
            test = float(_mean_neg_free_energy(ctx.params, ctx.test))
            out["test_log_likelihood"] = test - log_z
        return out

    monitor.method = method
    return monitor


@partial(jax.jit, static_argnums=(0, 4))
def _phase_trace(phase: NegativePhase, params, state, key, num_draws: int):
    """The model's chains after each of ``num_draws`` steps of the negative phase at fixed
    parameters: ``(chains, draws, n_visible)``."""

    def body(state, key):
        state = phase.step(key, params, state, None)[1]
        return state, phase.chains(state)

    _, trace = jax.lax.scan(body, state, threefry_split(key, num_draws))
    return jnp.swapaxes(trace, 0, 1)


def monitor_rhat(params: RBMParams, chains, key, negative_phase: NegativePhase | None = None):
    """The monitor's R-hat of persistent chains: ``chains`` (the negative phase's state; by
    default PCD-1 chains ``(M, n_visible)``) run on for
    :data:`~numpyro_rbm.diagnostics.MONITOR_SWEEPS` steps of the phase's own transition at
    fixed ``params``, diagnosed by :func:`numpyro_rbm.diagnostics.mixing_rhat` (the largest
    R-hat of the free energy and the mean activation, ``inf`` when they never move;
    ``docs/diagnostics.md``). NaN for fewer than two chains."""
    from .. import diagnostics

    phase = PCD(1, np.shape(chains)[0]) if negative_phase is None else negative_phase
    if np.shape(phase.chains(chains))[0] < 2:
        return math.nan
    trace = _phase_trace(phase, params, chains, key, diagnostics.MONITOR_SWEEPS)
    return diagnostics.mixing_rhat(diagnostics.chain_statistics(params, trace))


def chain_rhat(ctx: MonitorContext) -> dict:
    """``{"chain_rhat": ...}``: :func:`monitor_rhat` of the persistent chains under the
    negative phase's own transition (for parallel tempering, sweeps *and* swaps: the chain that
    really supplies the samples). Empty for negative phases without persistent chains."""
    if not ctx.negative_phase.persistent:
        return {}
    return {"chain_rhat": monitor_rhat(ctx.params, ctx.state.chains, ctx.key, ctx.negative_phase)}


def info_monitor(ctx: MonitorContext) -> dict:
    """The negative phase's info as lists of floats (e.g. ``swap_rate`` per pair of rungs)."""
    return {name: [float(x) for x in np.ravel(value)] for name, value in ctx.info.items()}


def default_monitors(log_likelihood: str | None = "auto") -> tuple[Callable, ...]:
    """``fit``'s monitors: reconstruction error, pseudo-log-likelihood, log-likelihood (unless
    ``log_likelihood`` is ``None``), chain R-hat and the negative phase's info."""
    monitors = [reconstruction_error_monitor, pseudo_log_likelihood_monitor]
    if log_likelihood is not None:
        monitors.append(log_likelihood_monitor(log_likelihood))
    return (*monitors, chain_rhat, info_monitor)
