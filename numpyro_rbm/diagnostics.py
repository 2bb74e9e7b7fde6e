r"""Convergence diagnostics for RBM chains, through ArviZ.

The R-hat of one binary unit says little (a unit stuck at 1 in every chain looks converged,
and a rare unit has no variance to compare), so the diagnostics here are computed on scalar
*chain statistics* that summarise the whole visible vector:

- ``free_energy``: :math:`F(v)`, which moves whenever the chain changes mode;
- ``mean_activation``: the mean of the site value, :math:`\bar v = \frac1n \sum_i v_i` (the
  magnetisation for spin units; the mean feature for Gaussian units; the mean state index
  :math:`\frac1L \sum_i x_i` for Potts sequences, whose one-hot layer always averages 1/q);
- ``overlap`` (given a ``reference`` state :math:`r`), which tells which basin a chain sits in:
  :math:`q = \frac1n \sum_i s(v_i)\,s(r_i)` with :math:`s` mapping a unit's two values to
  :math:`\pm 1` (the Edwards–Anderson overlap), :math:`\frac1L \sum_i (q\,\delta_{x_i r_i} -
  1)/(q - 1)` for Potts sequences, the cosine similarity for Gaussian units
  (:meth:`~numpyro_rbm.units.UnitType.overlap`);
- ``energy`` and ``hidden_activation`` (given the hidden states): :math:`E(v, h)` and
  :math:`\bar h`.

For each statistic the rank-normalised split :math:`\hat R`, the bulk and tail effective sample
sizes (Vehtari, Gelman, Simpson, Carpenter and Bürkner, *Rank-normalization, folding, and
localization: an improved* :math:`\hat R` *for assessing convergence of MCMC*, Bayesian
Analysis 16, 2021), the lag-1 autocorrelation and the integrated autocorrelation time
:math:`\tau = N / \mathrm{ESS}_\text{bulk}` are computed with ArviZ.

This module is the single definition of "the chains mix", used by :func:`numpyro_rbm.fit`'s
monitor and warning, its progress bar, the ``numpyro-rbm train`` verdict and
:func:`chain_diagnostics`:

- the statistic is :func:`mixing_rhat`, the largest rank-normalised split :math:`\hat R` of
  the chain statistics (for persistent chains: :math:`F(v)` and :math:`\bar v`);
- chains mix when it is at most :data:`RHAT_THRESHOLD` (1.3);
- a final verdict (:func:`chain_diagnostics`, the command's) also asks for bulk and tail ESS
  of at least :data:`MIN_ESS` (400, in total over the chains).

For chains in equilibrium whose statistic has integrated autocorrelation time :math:`\tau`
(in draws), split :math:`\hat R` over :math:`D` draws per chain is close to
:math:`\sqrt{1 + 2(\tau - 1)/D}`, the relation of Vats and Knudson (*Revisiting the
Gelman-Rubin diagnostic*, Statistical Science 36, 2021) between :math:`\hat R` and the effective
sample size. Over the 50 sweeps of fit's monitor, chains with :math:`\tau = 10` sweeps, which
mix well, have :math:`\hat R \approx 1.19`, so the 1.01 of Vehtari et al. (meant for long
final runs) would flag nearly every run; 1.3 passes any such chains (false alarms below
:math:`10^{-4}`) and still flags chains stuck in different modes. For the usual few long
chains the ESS requirement is the binding one: 400 effective draws from 4 chains implies
:math:`\hat R \lesssim 1.01`. ``docs/diagnostics.md`` gives the measurements.

The pure-array entry point is :func:`chain_diagnostics` (chains shaped
``(num_chains, num_draws, n_sites)``, site values as MCMC records them, or the layer
``(num_chains, num_draws, n_visible)``, e.g. persistent training chains);
:func:`mcmc_diagnostics` reads a finished :class:`numpyro.infer.MCMC` run.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import TYPE_CHECKING

import jax.numpy as jnp
import numpy as np

from .core import RBMParams, energy, free_energy

if TYPE_CHECKING:
    import arviz as az

__all__ = [
    "ChainDiagnostics",
    "chain_statistics",
    "chain_diagnostics",
    "mcmc_diagnostics",
    "diagnose_statistics",
    "mixing_rhat",
    "RHAT_THRESHOLD",
    "MIN_ESS",
    "MONITOR_SWEEPS",
]

#: Chains mix when :func:`mixing_rhat` is at most this (fit's warning, its progress bar, the
#: command's verdict and :func:`chain_diagnostics`; see the module docstring).
RHAT_THRESHOLD = 1.3
#: A final verdict also needs bulk and tail ESS of at least this, summed over the chains
#: (Vehtari et al. 2021: 100 per chain for their default of four chains).
MIN_ESS = 400
#: Gibbs sweeps of the persistent chains that :func:`numpyro_rbm.fit` records at each
#: evaluation for its R-hat (the ``chain_rhat`` metric).
MONITOR_SWEEPS = 50


def _arviz():
    """ArviZ, imported on first use: it takes seconds, which ``import numpyro_rbm`` and
    ``numpyro-rbm --help`` should not pay."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor
        import arviz
    return arviz


def _as_layer(params: RBMParams, x, name: str, lead: tuple):
    """Visible states ``lead + (width,)`` as the layer: site values (Potts: integer sequences,
    as MCMC records them) or the layer itself (e.g. persistent training chains)."""
    units = params.visible_units
    x = jnp.asarray(x)
    n_sites = units.site_size(params.n_visible)
    if x.shape[:-1] != lead or x.shape[-1] not in (n_sites, params.n_visible):
        layer = "" if n_sites == params.n_visible else f" or the layer ({params.n_visible},)"
        raise ValueError(
            f"{name} must have shape {lead + (n_sites,)} ({units.site_noun} per state{layer}), "
            f"got {x.shape}"
        )
    if x.shape[-1] == params.n_visible:
        return x.astype(params.weights.dtype)
    return units.to_layer(x, params.weights.dtype)


def chain_statistics(params: RBMParams, chains, *, hidden=None, reference=None) -> dict:
    """Scalar statistics of every draw.

    Args:
        params: the RBM (unbatched).
        chains: visible states, ``(num_chains, num_draws, n_sites)``: site values as
            :class:`~numpyro_rbm.RBMGibbs` records them (integer sequences for Potts units), or
            the layer ``(num_chains, num_draws, n_visible)``.
        hidden: optional hidden states, ``(num_chains, num_draws, n_hidden)``.
        reference: optional visible state (a site value or the layer) for the overlap.

    Returns:
        ``{name: array (num_chains, num_draws)}`` as float64 numpy arrays: ``free_energy``,
        ``mean_activation`` (the mean of the site value: of the units for two-state and
        Gaussian units, of the state indices for Potts sequences, whose one-hot mean is
        always 1/q), ``overlap`` (:meth:`~numpyro_rbm.units.UnitType.overlap`), ``energy``
        and ``hidden_activation``.
    """
    if jnp.ndim(chains) != 3:
        raise ValueError(
            "chains must have shape (num_chains, num_draws, n_visible) (site values, or "
            f"the layer), got {jnp.shape(chains)}; add a leading axis for one chain"
        )
    lead = tuple(jnp.shape(chains)[:2])
    chains = _as_layer(params, chains, "chains", lead)
    units = params.visible_units
    stats = {
        "free_energy": free_energy(params, chains),
        "mean_activation": jnp.mean(units.from_layer(chains, chains.dtype), axis=-1),
    }
    if reference is not None:
        reference = _as_layer(params, reference, "reference", ())
        stats["overlap"] = params.visible_layer.overlap(chains, reference)
    if hidden is not None:
        hidden = jnp.asarray(hidden, chains.dtype)
        if hidden.shape != chains.shape[:2] + (params.n_hidden,):
            raise ValueError(
                f"hidden must have shape {chains.shape[:2] + (params.n_hidden,)}, "
                f"got {hidden.shape}"
            )
        stats["energy"] = energy(params, chains, hidden)
        stats["hidden_activation"] = jnp.mean(hidden, axis=-1)
    return {k: np.asarray(v, np.float64) for k, v in stats.items()}


@dataclasses.dataclass(frozen=True)
class ChainDiagnostics:
    """Result of :func:`chain_diagnostics`.

    Attributes:
        statistics: ``{name: (num_chains, num_draws)}`` chain statistics.
        table: ``{name: {"r_hat", "ess_bulk", "ess_tail", "autocorr_lag1", "tau"}}``.
        converged: whether every statistic passes the thresholds.
        problems: one line per failed check, e.g. ``"R-hat 1.31 > 1.01 for free_energy"``.
        verdict: a one-line summary a user can act on.
    """

    statistics: dict
    table: dict
    converged: bool
    problems: tuple
    verdict: str

    def to_inference_data(self) -> az.InferenceData:
        """The statistics as the posterior group of an ArviZ ``InferenceData`` (for
        ``az.plot_trace``, ``az.plot_rank``, ``az.summary``)."""
        return _arviz().from_dict(posterior=self.statistics)

    def __str__(self) -> str:
        head = f"{'statistic':<18}{'r_hat':>8}{'ess_bulk':>10}{'ess_tail':>10}{'acf(1)':>8}"
        lines = [head + f"{'tau':>8}"]
        for name, row in self.table.items():
            lines.append(
                f"{name:<18}{row['r_hat']:>8.3f}{row['ess_bulk']:>10.0f}{row['ess_tail']:>10.0f}"
                f"{row['autocorr_lag1']:>8.3f}{row['tau']:>8.1f}"
            )
        return "\n".join(lines + [self.verdict])


def _split_single_chain(x):
    # ArviZ needs two chains for R-hat; a single chain is compared with itself in halves.
    if x.shape[0] > 1:
        return x
    half = x.shape[1] // 2
    return np.stack([x[0, :half], x[0, half : 2 * half]])


def _rhat(x) -> float:
    """Rank-normalised split R-hat of one statistic ``(num_chains, num_draws)`` (ArviZ's
    default: the larger of the bulk and the folded, tail, R-hat)."""
    with np.errstate(all="ignore"):  # chains constant within themselves: R-hat is inf / nan
        return float(_arviz().rhat(_split_single_chain(np.asarray(x, np.float64))))


def mixing_rhat(statistics: dict) -> float:
    r"""The R-hat that decides whether chains mix: the largest rank-normalised split R-hat
    (ArviZ) of the ``statistics`` ``{name: (num_chains, num_draws)}``. Infinite when a
    statistic never changes or its R-hat is undefined: chains frozen within themselves do not
    mix either. Chains mix when it is at most :data:`RHAT_THRESHOLD`."""
    if not statistics:
        raise ValueError("mixing_rhat needs at least one statistic")
    values = []
    for x in statistics.values():
        x = np.asarray(x, np.float64)
        r = math.inf if np.ptp(x) == 0 else _rhat(x)
        values.append(math.inf if math.isnan(r) else r)
    return max(values)


def _row(x) -> dict:
    n_total = x.size
    xs = _split_single_chain(x)
    az = _arviz()
    with np.errstate(all="ignore"):
        ess_bulk = float(az.ess(xs, method="bulk"))
        ess_tail = float(az.ess(xs, method="tail"))
    centred = x - x.mean(axis=1, keepdims=True)
    var = np.mean(centred**2, axis=1)
    lag1 = np.mean(centred[:, 1:] * centred[:, :-1], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        acf1 = float(np.mean(np.where(var > 0, lag1 / var, np.nan)))
    tau = n_total / ess_bulk if ess_bulk > 0 else np.inf
    return dict(r_hat=_rhat(x), ess_bulk=ess_bulk, ess_tail=ess_tail, autocorr_lag1=acf1, tau=tau)


def diagnose_statistics(
    statistics: dict,
    *,
    rhat_threshold: float | None = None,
    min_ess: float | None = None,
) -> ChainDiagnostics:
    """Diagnostics of precomputed statistics ``{name: (num_chains, num_draws)}``.

    Args:
        statistics: the chain statistics.
        rhat_threshold: largest acceptable R-hat (default :data:`RHAT_THRESHOLD`).
        min_ess: smallest acceptable bulk and tail ESS, in total over the chains (default
            :data:`MIN_ESS`).
    """
    rhat_threshold = RHAT_THRESHOLD if rhat_threshold is None else rhat_threshold
    min_ess = MIN_ESS if min_ess is None else min_ess
    table, problems, low_ess = {}, [], []
    for name, x in statistics.items():
        x = np.asarray(x, np.float64)
        if x.ndim != 2 or x.shape[1] < 8:
            raise ValueError(
                f"statistic {name!r} must have shape (num_chains, num_draws) with at least 8 "
                f"draws, got {x.shape}"
            )
        if np.ptp(x) == 0:
            # constant over every draw of every chain: nothing to compare, but say so
            problems.append(f"{name} never changes (every chain stuck at {x.flat[0]:.4g})")
            table[name] = dict(
                r_hat=np.nan, ess_bulk=np.nan, ess_tail=np.nan, autocorr_lag1=np.nan, tau=np.inf
            )
            continue
        row = _row(x)
        table[name] = row
        if not row["r_hat"] <= rhat_threshold:  # also catches NaN
            problems.append(f"R-hat {row['r_hat']:.3g} > {rhat_threshold} for {name}")
        for kind in ("bulk", "tail"):
            ess = row[f"ess_{kind}"]
            if not ess >= min_ess:
                problems.append(f"{kind} ESS {ess:.0f} < {min_ess:.0f} for {name}")
                low_ess.append((ess, kind, name))
    if problems:
        # R-hat failures one by one; ESS failures summarised by the worst
        clauses = [p for p in problems if "ESS" not in p]
        if low_ess:
            ess, kind, name = min(low_ess)
            others = sorted({n for _, _, n in low_ess} - {name})
            also = f" (also low for {', '.join(others)})" if others else ""
            clauses.append(f"{kind} ESS {ess:.0f} < {min_ess:.0f} for {name}{also}")
        verdict = (
            "not converged: "
            + "; ".join(clauses)
            + ". Run longer (num_warmup / num_samples), use more sweeps per step, or start "
            "chains from data; for strongly coupled RBMs consider tempering."
        )
    else:
        worst = max(table.values(), key=lambda r: r["r_hat"])
        min_ess_seen = min(min(r["ess_bulk"], r["ess_tail"]) for r in table.values())
        verdict = (
            f"converged: max R-hat {worst['r_hat']:.3f} <= {rhat_threshold}, min ESS "
            f"{min_ess_seen:.0f} >= {min_ess:.0f} over {', '.join(table)}"
        )
    return ChainDiagnostics(
        {k: np.asarray(v, np.float64) for k, v in statistics.items()},
        table,
        not problems,
        tuple(problems),
        verdict,
    )


def chain_diagnostics(
    params: RBMParams,
    chains,
    *,
    hidden=None,
    reference=None,
    rhat_threshold: float | None = None,
    min_ess: float | None = None,
) -> ChainDiagnostics:
    """R-hat, ESS and autocorrelation of the chain statistics of ``chains``.

    Args:
        params: the RBM.
        chains: ``(num_chains, num_draws, n_sites)`` site values (integer sequences for Potts
            units) or the layer ``(num_chains, num_draws, n_visible)``.
        hidden: optional ``(num_chains, num_draws, n_hidden)`` hidden states.
        reference: optional ``(n_visible,)`` state for the overlap statistic.
        rhat_threshold: largest acceptable R-hat (default :data:`RHAT_THRESHOLD`).
        min_ess: smallest acceptable bulk and tail ESS, in total over the chains (default
            :data:`MIN_ESS`).

    Returns:
        :class:`ChainDiagnostics`; ``print`` it for a table and the verdict.
    """
    stats = chain_statistics(params, chains, hidden=hidden, reference=reference)
    return diagnose_statistics(stats, rhat_threshold=rhat_threshold, min_ess=min_ess)


def mcmc_diagnostics(
    mcmc, params: RBMParams | None = None, *, site: str | None = None, reference=None, **kwargs
) -> ChainDiagnostics:
    """:func:`chain_diagnostics` of a finished :class:`numpyro.infer.MCMC` run.

    Args:
        mcmc: the run; its samples of the RBM site are read grouped by chain, and the hidden
            states too when ``extra_fields=("h",)`` was collected.
        params: the RBM; by default read from the model's RBM site (which must then not
            depend on other latent sites).
        site: the RBM site (default: the kernel's, or ``"v"``).
        reference: optional state for the overlap statistic.
        **kwargs: thresholds passed to :func:`chain_diagnostics`.
    """
    site = site or getattr(mcmc.sampler, "site", None) or "v"
    samples = mcmc.get_samples(group_by_chain=True)
    if site not in samples:
        raise ValueError(f"the run has no samples of site {site!r}; pass site=...")
    if params is None:
        params = _params_from_model(mcmc, site)
    hidden = mcmc.get_extra_fields(group_by_chain=True).get("h")
    if hidden is not None and np.ndim(hidden) != 3:
        hidden = None  # batched RBM sites: hidden states are not one vector per draw
    return chain_diagnostics(params, samples[site], hidden=hidden, reference=reference, **kwargs)


def _params_from_model(mcmc, site) -> RBMParams:
    import jax
    from numpyro.handlers import seed, substitute, trace

    model = getattr(mcmc.sampler, "model", None)
    if model is None:
        raise ValueError("the MCMC kernel has no model; pass params=...")
    value = mcmc.get_samples()[site][0]
    model = substitute(seed(model, jax.random.key(0)), data={site: value})
    tr = trace(model).get_trace(*mcmc._args, **mcmc._kwargs)
    params = getattr(tr[site]["fn"], "params", None)
    if not isinstance(params, RBMParams):
        raise ValueError(f"site {site!r} is not an RBM site; pass params=...")
    return params
