r"""Negative phases: where the model samples of the gradient come from, as values.

A :class:`NegativePhase` is a frozen dataclass (hashable: it keys the compilation cache) with
two pure methods over an explicit state,

* ``init(key, params, data, batch_size) -> state``: the chains, from the training data;
* ``step(key, params, state, batch) -> (v_model, state, info)``: the negative samples for one
  update at the current parameters, the next state, and a dict of arrays to monitor,

and it declares where its chains lie (:meth:`~NegativePhase.chains`,
:meth:`~NegativePhase.chain_axes`, what data-parallel training shards). The estimators differ
only in where the samples come from:

* **CD-k** (Hinton 2002), :func:`cd`: :math:`k` Gibbs sweeps started at the minibatch (biased,
  cheap).
* **PCD-k / SML** (Younes 1989; Tieleman 2008), :func:`pcd`: :math:`k` sweeps of persistent
  chains that carry over from one update to the next. The update's samples are the chains as
  they stand; the chains then advance by :math:`k` sweeps under the same parameters, so the
  sweep's first product :math:`v'W` is the gradient's own (XLA computes it once).
* **Parallel tempering** (Desjardins et al. 2010; Cho, Raiko & Ilin 2010), :func:`pt`:
  persistent replicas on the tempered path of :mod:`numpyro_rbm.kernels` from the data's
  base-rate model (:math:`\beta = 0`) to the model (:math:`\beta = 1`), swapped between
  neighbours after every :math:`k` sweeps.
* **scikit-learn's PCD**, :func:`sklearn_pcd`: persistent *hidden* chains, sampled by
  comparing uniforms with the conditional means (the algorithm of
  :class:`sklearn.neural_network.BernoulliRBM`).

A method of one's own is one class (see ``docs/architecture.md``), or one function through
:func:`negative_phase`.

References:
    * G. E. Hinton, *Training products of experts by minimizing contrastive divergence*,
      Neural Computation 14 (2002).
    * L. Younes, *Parametric inference for imperfectly observed Gibbsian fields*, Probability
      Theory and Related Fields 82 (1989).
    * T. Tieleman, *Training restricted Boltzmann machines using approximations to the
      likelihood gradient*, ICML 2008.
    * G. Desjardins, A. Courville, Y. Bengio, P. Vincent and O. Delalleau, *Tempered Markov
      chain Monte Carlo for training of restricted Boltzmann machines*, AISTATS 2010.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import ClassVar, NamedTuple

import jax
import jax.numpy as jnp

from .._threefry import threefry_split, threefry_uniform32
from ..core import RBMParams, hidden_field, visible_field
from ..kernels import gibbs, parallel_tempering
from ..units import base_rate_bias
from .loss import Weighted

__all__ = [
    "NegativePhase",
    "CD",
    "PCD",
    "PT",
    "PTState",
    "HiddenPCD",
    "FunctionPhase",
    "cd",
    "pcd",
    "pt",
    "sklearn_pcd",
    "negative_phase",
    "uniform_sampler",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
]


@dataclasses.dataclass(frozen=True)
class NegativePhase:
    """Base class of negative phases (see the module docstring for the contract)."""

    #: A short name (progress bars, messages).
    name: ClassVar[str] = "custom"
    #: Whether the state holds chains that persist between updates (then
    #: :func:`~numpyro_rbm.fit` diagnoses their mixing by running :meth:`step` on).
    persistent: ClassVar[bool] = True

    def init(self, key, params: RBMParams, data, batch_size: int):
        """The initial state, from the training data (the layer, ``(N, n_visible)``)."""
        raise NotImplementedError

    def step(self, key, params: RBMParams, state, batch):
        """``(v_model, state, info)`` for one update at ``params`` (standard coordinates);
        ``batch`` is the update's minibatch (an array, or :class:`~.loss.Weighted`)."""
        raise NotImplementedError

    def chains(self, state):
        """The model's chains in ``state``, ``(M, n_visible)`` (what a fit returns)."""
        return state

    def chain_axes(self, state):
        """The chain axis of every leaf of ``state`` (``None``: not split across devices)."""
        return jax.tree.map(lambda _: 0, state)


def uniform_sampler(key, layer, field):
    r""":math:`x = \mathbb 1[u < \mathbb E[x \mid \phi]]` with float32 uniforms :math:`u` (the same
    numbers as ``jax.random.uniform``), for {0, 1} units: scikit-learn's sampler. Float32 even
    for float64 fields, so that a float32 and a float64 fit take the same random decisions."""
    return _below(threefry_uniform32(key, jnp.shape(field)), layer, field)


def _below(u, layer, field):
    """:func:`uniform_sampler` with its uniforms ``u`` given."""
    mean = layer.mean(field)
    return (u < mean).astype(mean.dtype)


def _unweighted(batch):
    return batch.v if isinstance(batch, Weighted) else batch


@dataclasses.dataclass(frozen=True)
class CD(NegativePhase):
    """CD-k: ``k`` sweeps from the minibatch; the state is the last negative samples."""

    k: int = 1
    sampler: Callable | None = None
    name: ClassVar[str] = "cd"
    persistent: ClassVar[bool] = False

    def init(self, key, params, data, batch_size):
        return data[:batch_size]

    def step(self, key, params, state, batch):
        v_model = gibbs(key, params, _unweighted(batch), self.k, sampler=self.sampler)[0]
        if isinstance(batch, Weighted):  # each sample weighs like the row it started from
            return Weighted(v_model, batch.weights), v_model, {}
        return v_model, v_model, {}


@dataclasses.dataclass(frozen=True)
class PCD(NegativePhase):
    """PCD-k / SML over ``num_chains`` persistent chains started at random training rows."""

    k: int = 1
    num_chains: int = 100
    sampler: Callable | None = None
    name: ClassVar[str] = "pcd"

    def init(self, key, params, data, batch_size):
        return data[jax.random.randint(key, (self.num_chains,), 0, data.shape[0])]

    def step(self, key, params, state, batch):
        # The samples are the chains as they are; then k sweeps advance them.
        return state, gibbs(key, params, state, self.k, sampler=self.sampler)[0], {}


class PTState(NamedTuple):
    """Parallel tempering's state."""

    #: Replicas ``(T, M, n_visible)``, ordered like ``betas``; the last is the model's.
    replicas: jax.Array
    #: The inverse temperatures ``(T,)``, from 0 to 1.
    betas: jax.Array
    #: The visible biases of the :math:`\beta = 0` model.
    base_bias: jax.Array


@dataclasses.dataclass(frozen=True)
class PT(NegativePhase):
    r"""Parallel tempering over ``num_temperatures`` replicas of ``num_chains`` chains, with
    :math:`\beta` evenly spaced in :math:`[0, 1]`.

    Args:
        base: ``"data"``: the :math:`\beta = 0` model is the data's base-rate model;
            ``"zero"``: zero visible biases (uniform for {0, 1} units).
        init_from: ``"data"``: every replica starts at the same random training rows;
            ``"random"``: random layer states (:meth:`~numpyro_rbm.units.UnitType.random_layer`).
    """

    k: int = 1
    num_chains: int = 100
    num_temperatures: int = 10
    base: str = "data"
    init_from: str = "data"
    sampler: Callable | None = None
    name: ClassVar[str] = "pt"

    def init(self, key, params, data, batch_size):
        dtype = params.weights.dtype
        t, m, n = self.num_temperatures, self.num_chains, data.shape[1]
        if self.base == "data":
            base = jnp.asarray(base_rate_bias(data, params.visible_units), dtype)
        else:
            base = jnp.zeros((n,), dtype)
        if self.init_from == "data":
            starts = data[jax.random.randint(key, (m,), 0, data.shape[0])]
            replicas = jnp.broadcast_to(starts, (t,) + starts.shape)
        else:
            replicas = params.visible_layer.random_layer(key, jnp.zeros((t, m, n), dtype))
        return PTState(replicas, jnp.linspace(0.0, 1.0, t, dtype=dtype), base)

    def step(self, key, params, state, batch):
        replicas, rate = parallel_tempering(
            key, params, state.replicas, state.betas, state.base_bias, self.k, sampler=self.sampler
        )
        return replicas[-1], state._replace(replicas=replicas), {"swap_rate": rate}

    def chains(self, state):
        return state.replicas[-1]

    def chain_axes(self, state):
        return PTState(1, None, None)


@dataclasses.dataclass(frozen=True)
class HiddenPCD(NegativePhase):
    r"""scikit-learn's PCD-k: ``num_chains`` persistent *hidden* chains :math:`h` (zeros at
    first). Each update draws :math:`v' \sim p(v \mid h)`, runs :math:`k - 1` more sweeps, uses
    :math:`v'` as the negative samples and keeps :math:`h' \sim p(h \mid v')`, all with
    :func:`uniform_sampler`. Like scikit-learn, a sample weighs as much as one data row of a
    :class:`~.loss.Weighted` minibatch (its sums are divided by the minibatch's size)."""

    k: int = 1
    num_chains: int = 10
    name: ClassVar[str] = "pcd"

    def init(self, key, params, data, batch_size):
        return jnp.zeros((self.num_chains, params.n_hidden), params.weights.dtype)

    def step(self, key, params, state, batch):
        # One draw of the step's uniforms for v' and h' (one kernel, not three: at
        # scikit-learn's digits defaults the random numbers dominate an update's cost).
        key_sweeps, key_u = threefry_split(key) if self.k > 1 else (key, key)
        u = threefry_uniform32(key_u, (self.num_chains, params.n_visible + params.n_hidden))
        u_v, u_h = u[:, : params.n_visible], u[:, params.n_visible :]
        v = _below(u_v, params.visible_layer, visible_field(params, state))
        v = gibbs(key_sweeps, params, v, self.k - 1, sampler=uniform_sampler)[0]
        h = _below(u_h, params.hidden_layer, hidden_field(params, v))
        if isinstance(batch, Weighted):
            weight = jnp.max(batch.weights)  # 1 / (data rows in the minibatch)
            return Weighted(v, jnp.full(v.shape[:1], weight, v.dtype)), h, {}
        return v, h, {}


@dataclasses.dataclass(frozen=True)
class FunctionPhase(NegativePhase):
    """A negative phase from functions (see :func:`negative_phase`)."""

    step_fn: Callable
    init_fn: Callable | None = None

    @property
    def persistent(self) -> bool:  # type: ignore[override]
        return self.init_fn is not None

    def init(self, key, params, data, batch_size):
        return None if self.init_fn is None else self.init_fn(key, params, data, batch_size)

    def step(self, key, params, state, batch):
        return self.step_fn(key, params, state, batch)


def cd(k: int = 1) -> CD:
    """CD-k (contrastive divergence, Hinton 2002)."""
    return CD(k)


def pcd(k: int = 1, num_chains: int = 100) -> PCD:
    """PCD-k / SML (Younes 1989; Tieleman 2008) over ``num_chains`` persistent chains."""
    return PCD(k, num_chains)


def pt(k: int = 1, num_chains: int = 100, num_temperatures: int = 10) -> PT:
    """Parallel tempering (Desjardins et al. 2010) from the data's base-rate model."""
    return PT(k, num_chains, num_temperatures)


def sklearn_pcd(k: int = 1, num_chains: int = 10) -> HiddenPCD:
    """scikit-learn's PCD (persistent hidden chains, uniform-comparison sampling)."""
    return HiddenPCD(k, num_chains)


def negative_phase(step: Callable, init: Callable | None = None) -> FunctionPhase:
    """A negative phase from one function ``step(key, params, state, batch) -> (v_model,
    state, info)`` and, for persistent chains, ``init(key, params, data, batch_size) ->
    state`` (without it the state is ``None``). Module-level functions keep the compiled
    training loop cached across calls; new closures compile again."""
    return FunctionPhase(step, init)


# --- the estimators as plain functions ---------------------------------------------------------


def cd_negative(key, params: RBMParams, v_data, k: int = 1):
    """CD-k negative samples: ``k`` block-Gibbs sweeps started at the data."""
    return gibbs(key, params, v_data, k)[0]


def pcd_negative(key, params: RBMParams, chains, k: int = 1):
    """PCD-k / SML: advances the persistent ``chains`` ``(M, n_visible)`` by ``k`` sweeps;
    the result is both the negative samples and the next chain state."""
    return gibbs(key, params, chains, k)[0]


def pt_negative(key, params: RBMParams, chains, betas, base_bias, k: int = 1):
    """Parallel tempering, :func:`numpyro_rbm.kernels.parallel_tempering`: ``k`` sweeps of
    every replica ``(T, M, n_visible)``, then swaps; returns ``(chains, swap_rate)``."""
    return parallel_tempering(key, params, chains, betas, base_bias, k)


def from_method(method: str, k: int, num_chains: int, num_temperatures: int) -> NegativePhase:
    """The negative phase that ``fit(method=...)`` names."""
    phases = {"cd": lambda: CD(k), "pcd": lambda: PCD(k, num_chains)}
    phases["pt"] = lambda: PT(k, num_chains, num_temperatures)
    if method not in phases:
        raise ValueError(
            f"method must be one of {tuple(phases)} or a numpyro_rbm.learning.NegativePhase, "
            f"got {method!r}"
        )
    return phases[method]()
