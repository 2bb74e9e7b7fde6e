r"""Learning an RBM inside a NumPyro model: ``RBM(params, log_z=sml(...))``.

With ``log_z=sml(...)`` the distribution's :math:`\log Z` has the value of the best estimate
at hand and the gradient of stochastic maximum likelihood
(:func:`numpyro_rbm.learning.sml.sml_log_z`): ``jax.grad`` of ``log_prob`` is the PCD (or
parallel-tempering) gradient at persistent chains. The chains live in a
:func:`numpyro.primitives.mutable` site of the model; each run of the model reads them, takes
the gradient at them as they stand, and advances them by the negative phase's ``step``
(:mod:`numpyro_rbm.learning.negative`) under the current parameters. :class:`numpyro.infer.SVI`
carries mutable sites from one update to the next, so SVI with any optax optimiser *is*
PCD/PT training, and ``numpyro.plate(..., subsample_size=...)`` gives its minibatches::

    def model(data):
        w = numpyro.param("w", 0.01 * jax.random.normal(jax.random.key(0), (64, 16)))
        b = numpyro.param("b", jnp.zeros(64))
        c = numpyro.param("c", jnp.zeros(16))
        rbm = nrbm.RBM(nrbm.RBMParams(w, b, c), log_z=nrbm.sml(nrbm.learning.pcd(1, 100)))
        with numpyro.plate("n", data.shape[0], subsample_size=10) as idx:
            numpyro.sample("v", rbm, obs=data[idx])

    svi = SVI(model, lambda data: None, optax.adam(1e-2), Trace_ELBO())

Only SVI (or one's own loop that carries ``numpyro.mutable`` state) can keep the chains: a
model run outside any handler, or under MCMC's potential energy (whose evaluations are
independent), raises :class:`SMLContextError` saying what to use instead.

**Incomplete data** (NaN entries): :func:`incomplete` keeps one persistent imputation per
example in a second mutable site; inside the subsampled plate, ``obs=missing.complete(params,
idx)`` advances the rows ``idx`` by clamped Gibbs sweeps and observes the completed rows, the
positive phase of :func:`numpyro_rbm.fit` on the same data (``docs/models.md``, "Incomplete
data in SVI").
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import primitives

from .ais import choose_method
from .core import RBMParams
from .learning.missing import IncompleteData, impute_batch
from .learning.negative import PCD, NegativePhase
from .learning.sml import (
    TrackedLogZ,
    fresh_log_z,
    initial_tracked,
    refreshed,
    sml_log_z,
    tracked_step,
)
from .units import as_unit_type, check_incomplete_data

__all__ = ["SML", "SMLLogZ", "SMLContextError", "sml", "Incomplete", "incomplete"]

_VALUES = ("auto", "exact", "tracked")


class SMLContextError(RuntimeError):
    """``log_z=sml(...)`` used where its persistent chains cannot persist."""


class SMLLogZ(NamedTuple):
    r""":math:`\log Z` of one model run, with what its value is worth."""

    #: The value, with the SML gradient (:func:`~numpyro_rbm.learning.sml.sml_log_z`).
    log_z: jax.Array
    #: ``"exact"`` (enumerated this run) or ``"tracked"``.
    method: str
    #: Standard error of the value from sampling, in nats (0 when exact).
    stderr: jax.Array
    #: Updates since the last fresh (exact or AIS) estimate (0 when exact).
    age: jax.Array
    #: The negative samples the gradient uses, ``(M, n_visible)``.
    v_model: jax.Array
    #: The negative phase's info of this step (e.g. PT's swap rates).
    info: dict


@dataclasses.dataclass(frozen=True, eq=False)
class SML:
    r"""A stochastic-maximum-likelihood :math:`\log Z` (see :func:`sml`)."""

    phase: NegativePhase = PCD(1, 100)
    name: str = "rbm_sml"
    value: str = "auto"
    refresh_every: int = 100
    tolerance: float | None = None
    ais_runs: int = 100
    ais_betas: int = 1000
    init_data: Any = None

    def __post_init__(self):
        if not isinstance(self.phase, NegativePhase):
            raise TypeError(
                "sml(phase=...) takes a numpyro_rbm.learning.NegativePhase such as "
                f"numpyro_rbm.learning.pcd(k, num_chains), got {type(self.phase).__name__}"
            )
        if not self.phase.persistent:
            raise ValueError(
                f"sml needs a negative phase with persistent chains (pcd, pt, sklearn_pcd); "
                f"{type(self.phase).__name__} restarts from the data at every update, which "
                "a log Z cannot see: use numpyro_rbm.learning.pcd(k) or pt(k)"
            )
        if self.value not in _VALUES:
            raise ValueError(f"sml(value=...) must be one of {_VALUES}, got {self.value!r}")
        if not (isinstance(self.refresh_every, int) and self.refresh_every >= 1):
            raise ValueError(f"refresh_every must be a positive int, got {self.refresh_every!r}")
        if self.tolerance is not None and not self.tolerance > 0:
            raise ValueError(f"tolerance must be positive (nats), got {self.tolerance!r}")

    def method(self, params: RBMParams) -> str:
        """``"exact"`` or ``"tracked"``: ``"auto"`` enumerates every run when the library's
        chooser would (:func:`numpyro_rbm.ais.choose_method`)."""
        if self.value != "auto":
            return self.value
        return "exact" if choose_method(params) == "exact" else "tracked"

    def state_key(self, params: RBMParams) -> str:
        """The state's key for the chains: names the unit types, so that chains of another
        model's layers are caught at trace time."""
        return f"chains[{params.visible_units.spec},{params.hidden_units.spec}]"

    def init_state(self, key, params: RBMParams) -> dict:
        """The state before the first run: the phase's chains from ``init_data`` (random
        layer states when there is none) and a tracked estimate due for a refresh.

        Every run evaluates it (``numpyro.mutable`` takes its initial value), also inside a
        compiled SVI update, where JAX would trace even constant rows; computing on
        ``init_data`` at trace time keeps them concrete, so that phases may compute from
        them with NumPy (parallel tempering's base-rate model)."""
        data = self.init_data
        if data is None:
            data = _random_rows(key, params, getattr(self.phase, "num_chains", 100))
        try:
            with jax.ensure_compile_time_eval():  # concrete inputs give concrete values
                if self.init_data is not None:
                    data = jnp.asarray(np.asarray(data, params.weights.dtype))
                chains = self.phase.init(key, params, data, data.shape[0])
        except jax.errors.TracerArrayConversionError:
            raise ValueError(
                f"{type(self.phase).__name__}.init computes from its starting rows (e.g. "
                "parallel tempering's base-rate model), which random starts inside a traced "
                "model cannot give: pass sml(..., init_data=training_rows)"
            ) from None
        state = {self.state_key(params): chains}
        if self.method(params) == "tracked":
            state["log_z"] = initial_tracked(params, self.refresh_every)
        return state

    def resolve_log_z(self, params: RBMParams) -> SMLLogZ:
        """One model run: reads the chains, takes the gradient at them, advances them, and
        returns :math:`\\log Z` (called by :class:`~numpyro_rbm.RBM`)."""
        _check_context(self.name)
        if params.batch_shape != ():
            raise ValueError(
                f"log_z=sml(...) trains one RBM; got parameters with batch shape "
                f"{params.batch_shape}"
            )
        key_init, key_step = jax.random.split(primitives.prng_key())
        state = primitives.mutable(self.name, self.init_state(key_init, params))
        chains = self._checked_chains(state, params)
        settings = (self.refresh_every, self.tolerance, self.ais_runs, self.ais_betas)
        v_model, chains, tracked, value, variance, age, info = _advance(
            self.phase, settings, key_step, jax.lax.stop_gradient(params), chains,
            state.get("log_z"),
        )  # fmt: skip
        state[self.state_key(params)] = chains
        if tracked is not None:
            state["log_z"] = tracked
        log_z = sml_log_z(params, v_model, value)
        method = "exact" if tracked is None else "tracked"
        return SMLLogZ(log_z, method, jnp.sqrt(variance), age, v_model, info)

    def _checked_chains(self, state, params: RBMParams):
        key = self.state_key(params)
        if key not in state:
            found = [k for k in state if k.startswith("chains[")]
            raise ValueError(
                f"the mutable site {self.name!r} holds {found or list(state)}, not {key!r}: "
                "its chains belong to an RBM with other unit types. Give each RBM's sml its "
                "own name (sml(..., name=...)) or start SVI again (svi.init)"
            )
        chains = self.phase.chains(state[key])
        expected = params.n_visible
        if jnp.ndim(chains) != 2 or jnp.shape(chains)[-1] != expected:
            raise ValueError(
                f"the chains in the mutable site {self.name!r} have shape "
                f"{jnp.shape(chains)}, but the RBM's visible layer has {expected} units: "
                "they belong to another model. Give each RBM's sml its own name or start "
                "SVI again (svi.init)"
            )
        return state[key]


@partial(jax.jit, static_argnums=2)
def _random_rows(key, params: RBMParams, num: int):
    """``num`` random visible layer states (the unit type's ``random_layer``)."""
    field = jnp.broadcast_to(params.visible_bias, (num, params.n_visible))
    return params.visible_layer.random_layer(jax.random.fold_in(key, 1), field)


@partial(jax.jit, static_argnums=(0, 1))
def _advance(phase: NegativePhase, settings, key, params: RBMParams, chains, tracked):
    """One run's pure part, compiled once per phase and settings: the negative samples, the
    next chains, and the value of log Z (exact, or the tracked estimate moved to ``params``
    with the chains as they stood, then refreshed when due)."""
    refresh_every, tolerance, ais_runs, ais_betas = settings
    key_step, key_fresh = jax.random.split(key)
    v_before = phase.chains(chains)
    v_model, chains, info = phase.step(key_step, params, chains, None)
    v_model = getattr(v_model, "v", v_model)
    if tracked is None:
        value, variance = fresh_log_z(key_fresh, params, ais_runs=ais_runs, ais_betas=ais_betas)
        age = jnp.zeros((), jnp.int32)
    else:
        tracked = tracked_step(TrackedLogZ(*tracked), params, v_before)
        tracked = refreshed(
            key_fresh, tracked, refresh_every, tolerance, ais_runs=ais_runs, ais_betas=ais_betas
        )
        value, variance, age = tracked.log_z, tracked.variance, tracked.age
    return v_model, chains, tracked, value, variance, age, info


def _check_context(name: str, user: str = "log_z=sml(...)", kept: str = "persistent chains"):
    """Raises :class:`SMLContextError` where ``numpyro.mutable`` state cannot persist (``user``
    keeps ``kept`` in the site ``name``)."""
    if not primitives._PYRO_STACK:
        raise SMLContextError(
            f"{user} keeps {kept} in the numpyro.mutable site {name!r}, "
            "and outside a NumPyro handler nothing carries them from one run to the next. "
            "Train the model with numpyro.infer.SVI (it carries mutable state); to evaluate "
            "a trained RBM, use log_z='exact' (small models) or an AIS estimate "
            "(log_z=numpyro_rbm.ais(params, key).log_z)."
        )
    try:
        from numpyro.infer.util import _unconstrain_params
    except ImportError:  # pragma: no cover - older or newer NumPyro without the class
        return
    if any(isinstance(h, _unconstrain_params) for h in primitives._PYRO_STACK):
        raise SMLContextError(
            f"{user} needs its {kept} (the numpyro.mutable site {name!r}) "
            "to carry over from one update to the next, and MCMC's potential energy "
            "(HMC, NUTS, and the initialisation of AutoGuides) evaluates the model without "
            "keeping them. For maximum likelihood use SVI with a hand-written guide (or "
            "numpyro_rbm.fit); for MCMC over the RBM's parameters use log_z='exact', whose "
            "gradient is exact (models whose smaller layer enumerates)."
        )


def sml(
    phase: NegativePhase | None = None,
    *,
    name: str = "rbm_sml",
    value: str = "auto",
    refresh_every: int = 100,
    tolerance: float | None = None,
    ais_runs: int = 100,
    ais_betas: int = 1000,
    init_data=None,
) -> SML:
    r"""A stochastic-maximum-likelihood :math:`\log Z` for ``RBM(params, log_z=sml(...))``.

    Its gradient with respect to every parameter is the SML negative phase
    :math:`-\frac1M\sum_j \nabla_\theta F_\theta(v_j)` at persistent chains :math:`v_j`, which
    live in the ``numpyro.mutable`` site ``name`` and advance by ``phase.step`` at every run
    of the model; so SVI is PCD (or PT) training. Its value is ``value="exact"``: enumerated
    every run; ``"tracked"``: refreshed every ``refresh_every`` runs (exact when the smaller
    layer enumerates, else AIS with ``ais_runs`` runs and ``ais_betas`` temperatures) and
    moved by importance sampling with the chains in between (age and standard error in
    ``rbm.log_z_info``), and with a ``tolerance`` refreshed early, when the drift rate
    measured at refreshes says it may be that many nats off
    (:mod:`numpyro_rbm.learning.sml`); ``"auto"``: exact when the library's chooser
    enumerates, else tracked.

    Args:
        phase: a persistent negative phase (default ``numpyro_rbm.learning.pcd(1, 100)``).
        name: the mutable site's name (one per RBM in a model).
        tolerance: nats; refresh the tracked value early once its age times the drift rate
            measured at the last refresh, plus its standard error, exceeds this, or its age
            is twice the last interval (default: every ``refresh_every`` runs only). Keep it
            well above an AIS refresh's standard error, else the refreshes come ever sooner.
        init_data: rows to start the chains from (default: random layer states).
    """
    return SML(
        PCD(1, 100) if phase is None else phase,
        name, value, int(refresh_every), None if tolerance is None else float(tolerance),
        int(ais_runs), int(ais_betas), init_data,
    )  # fmt: skip


# --- incomplete data: the positive phase's persistent imputations ---------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class Incomplete:
    r"""Training rows with missing entries and their persistent imputations as model state
    (see :func:`incomplete`)."""

    #: The filled layer and the mask of observed layer units, ``(N, n_visible)`` each.
    data: IncompleteData
    #: The visible unit type the rows were checked against.
    units: Any
    sweeps: int = 1
    name: str = "rbm_imputations"

    @property
    def num_examples(self) -> int:
        """:math:`N`, the size of the plate the rows are observed in."""
        return self.data.values.shape[0]

    def complete(self, params, idx) -> jax.Array:
        r"""The rows ``idx`` completed: their imputations advance :attr:`sweeps` clamped Gibbs
        sweeps under ``params`` (gradients stopped: they are samples of
        :math:`p(v_M \mid v_O)`) and are written back to the mutable site.

        Args:
            params: the RBM's :class:`~numpyro_rbm.RBMParams` (or the :class:`~numpyro_rbm.RBM`).
            idx: the rows, ``(B,)`` integers: the plate's subsample indices.

        Returns:
            The completed rows as site values ``(B, site_size)``: the observed entries, and
            the imputations where entries are missing. Observe them at the RBM site.
        """
        params = getattr(params, "params", params)  # an RBM distribution, or RBMParams
        _check_context(self.name, "incomplete(...).complete", "per-example imputations")
        self._check_params(params)
        dtype = params.weights.dtype
        data = IncompleteData(
            jnp.asarray(self.data.values, dtype), jnp.asarray(self.data.observed)
        )
        state = primitives.mutable(self.name, {"imputations": data.values})
        imputations = state["imputations"]
        if jnp.shape(imputations) != data.values.shape:
            raise ValueError(
                f"the mutable site {self.name!r} holds imputations of shape "
                f"{jnp.shape(imputations)}, not {data.values.shape}: they belong to other "
                "data. Give each incomplete(...) its own name or start SVI again (svi.init)"
            )
        idx = jnp.asarray(idx)
        if idx.ndim != 1 or not jnp.issubdtype(idx.dtype, jnp.integer):
            raise ValueError(
                f"complete(params, idx) takes the plate's subsample indices, a 1-d integer "
                f"array; got shape {idx.shape}, dtype {idx.dtype}"
            )
        batch, state["imputations"] = _impute_batch(
            primitives.prng_key(), jax.lax.stop_gradient(params), imputations, data, idx,
            self.sweeps,
        )  # fmt: skip
        return params.visible_units.from_layer(batch)

    def _check_params(self, params: RBMParams):
        if params.visible_units != self.units:
            raise ValueError(
                f"incomplete(data, units={self.units.spec!r}) checked the rows as "
                f"{self.units.spec} units, but the RBM's visible units are "
                f"{params.visible_units.spec}: pass units={params.visible_units.spec!r}"
            )
        if params.batch_shape != () or params.n_visible != self.data.values.shape[1]:
            raise ValueError(
                f"the rows have {self.data.values.shape[1]} layer units, the RBM "
                f"{params.n_visible} visible units (batch shape {params.batch_shape}); "
                "complete(...) takes the parameters of one RBM of the data's width"
            )


#: The rows' step, compiled once per number of sweeps (a model run outside ``jit``, as at
#: ``svi.init``, would otherwise trace the Gibbs scan anew every run).
_impute_batch = jax.jit(impute_batch, static_argnums=5)


def incomplete(
    data, units="bernoulli", *, sweeps: int = 1, name: str = "rbm_imputations", seed: int = 0
) -> Incomplete:
    r"""Rows with missing entries (NaN) for an observed RBM site trained by SVI: the positive
    phase of a stochastic-approximation EM, as :func:`numpyro_rbm.fit` runs it.

    For an example with observed entries :math:`v_O`, :math:`\log p(v_O) = \log \sum_{v_M}
    e^{-F(v_O, v_M)} - \log Z`, whose gradient is
    :math:`-\mathbb E_{v_M \sim p(v_M \mid v_O)}[\nabla F(v_O, v_M)] + \nabla \log Z`. Each
    example keeps a persistent imputation of its missing entries in the ``numpyro.mutable``
    site ``name``; :meth:`Incomplete.complete` advances the rows of a minibatch by ``sweeps``
    clamped Gibbs sweeps (:func:`numpyro_rbm.learning.missing.impute_batch`, the step of
    ``fit``) and returns them completed. Observed at an RBM site whose ``log_z`` has the right
    gradient (:func:`sml`, or ``"exact"``), :math:`\nabla \log p(v_O, v_M)` is then the
    positive phase at the completed rows minus the negative phase: an unbiased estimate of
    :math:`\nabla \log p(v_O)` when :math:`v_M \sim p(v_M \mid v_O)` (Salakhutdinov, Mnih
    & Hinton 2007). The site's log density is :math:`\log p(v_O, v_M)`, not
    :math:`\log p(v_O)`: for discrete units a lower bound on it, by
    :math:`\log p(v_M \mid v_O) \le 0` (``docs/models.md``)::

        missing = nrbm.incomplete(data_with_nans)
        with numpyro.plate("n", missing.num_examples, subsample_size=10) as idx:
            numpyro.sample("v", rbm, obs=missing.complete(rbm, idx))

    Args:
        data: ``(N, n_sites)`` with NaN where an entry is missing; checked as
            :func:`numpyro_rbm.fit` checks it (:func:`numpyro_rbm.units.check_incomplete_data`:
            a row or column with no observed entry is an error naming it). The imputations
            start as ``fit``'s do: each missing entry from the same column of a random row
            where it is observed (NumPy's PCG64 from ``seed``).
        units: the RBM's visible unit type.
        sweeps: clamped Gibbs sweeps per visit of an example (``fit``'s ``impute_sweeps``).
        name: the mutable site's name (one per data set in a model).
    """
    units = as_unit_type(units)
    if not (isinstance(sweeps, (int, np.integer)) and sweeps >= 1):
        raise ValueError(f"sweeps must be an integer >= 1, got {sweeps!r}")
    layer, observed = check_incomplete_data(data, units, "data", seed=seed)
    if observed is None:  # complete data: nothing to impute, every unit observed
        observed = np.ones(np.shape(layer), bool)
    return Incomplete(
        IncompleteData(np.asarray(layer), np.asarray(observed)), units, int(sweeps), name
    )
