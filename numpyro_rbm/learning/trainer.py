r"""A trainer built from parts: a negative phase, an optimiser, centering.

:func:`build_trainer` returns a :class:`Trainer`, a frozen (hashable) value with two pure
methods over a :class:`TrainState`:

* ``init(key, params, data, batch_size)``: the centering offsets, the optimiser state and the
  negative phase's chains;
* ``step(state, batch, key)``: one update: the negative samples at the current parameters,
  the gradient of :func:`~numpyro_rbm.learning.loss.free_energy_loss`, the optimiser's
  update, and the move of the hidden offset.

:func:`run_epochs` scans ``step`` over shuffled minibatches, epoch after epoch, inside one
compiled ``while_loop`` that stops at the first epoch whose parameters are not finite (or at
the first update that would leave the normalisable region of continuous units). The
compiled loop is cached on ``(trainer, batch_size, devices)``, so every later call with equal
settings and the same shapes reuses it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .._threefry import threefry_split
from ..core import RBMParams, hidden_mean
from ..normalisable import unbounded_direction_found
from .loss import loss_gradient, move_hidden_offset, to_standard
from .missing import IncompleteData, impute_batch
from .negative import NegativePhase
from .optim import as_transformation

__all__ = ["TrainState", "Trainer", "build_trainer", "run_epochs", "DATA_AXIS"]

#: The mesh axis data-parallel training splits minibatches and chains along.
DATA_AXIS = "data"


class TrainState(NamedTuple):
    """Everything that evolves during training (a pytree; what a checkpoint stores)."""

    #: The trained parameters in centered coordinates (see :func:`~.loss.to_standard`).
    params: RBMParams
    #: The visible offset :math:`\mu` (zeros without centering).
    visible_offset: jax.Array
    #: The hidden offset :math:`\lambda` (zeros without centering).
    hidden_offset: jax.Array
    #: The optax optimiser state.
    opt_state: Any
    #: The negative phase's state: persistent chains ``(M, n_visible)`` for PCD, the tempering
    #: state for PT, the last negative samples for CD.
    chains: Any
    #: The PRNG key of the next epoch.
    key: jax.Array
    #: Training from incomplete data: every example completed by its persistent clamped
    #: chain ``(N, n_visible)`` (:mod:`~numpyro_rbm.learning.missing`); ``None`` for complete
    #: data.
    imputations: Any = None


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A negative phase, an optimiser (an optax transformation or a spec from
    :mod:`~numpyro_rbm.learning.optim`) and centering, as one hashable value."""

    negative_phase: NegativePhase
    optimizer: Any
    centering: bool = True
    offset_rate: float = 0.01
    #: Clamped Gibbs sweeps of a minibatch's imputations per visit (incomplete data only).
    impute_sweeps: int = 1

    @property
    def transformation(self) -> optax.GradientTransformation:
        return as_transformation(self.optimizer)

    def init(self, key, params: RBMParams, data, batch_size: int, run_key=None) -> TrainState:
        """The state before the first update; ``params`` in standard coordinates, ``key`` for
        the negative phase's chains and ``run_key`` for training (default: both split from
        ``key``). With centering, :math:`\\mu` is the data mean and :math:`\\lambda` the mean
        hidden activation, and the centered biases are chosen so that ``to_standard`` gives
        ``params`` back."""
        dtype = params.weights.dtype
        if self.centering:
            mu = jnp.mean(data, axis=0)
            lam = jnp.mean(hidden_mean(params, data), axis=0)
        else:
            mu = jnp.zeros((params.n_visible,), dtype)
            lam = jnp.zeros((params.n_hidden,), dtype)
        centered = params.replace(
            visible_bias=params.visible_bias + params.weights @ lam,
            hidden_bias=params.hidden_bias + mu @ params.weights,
        )
        if run_key is None:
            key, run_key = threefry_split(key)
        chains = self.negative_phase.init(key, params, data, batch_size)
        opt_state = self.transformation.init(centered)
        return TrainState(centered, mu, lam, opt_state, chains, run_key)

    def step(self, state: TrainState, batch, key) -> tuple[TrainState, dict]:
        """One update on ``batch`` (an array, or :class:`~.loss.Weighted` examples)."""
        offsets = (state.visible_offset, state.hidden_offset)
        standard = to_standard(state.params, *offsets)
        v_model, chains, info = self.negative_phase.step(key, standard, state.chains, batch)
        grads = loss_gradient(state.params, batch, v_model, offsets)
        updates, opt_state = self.transformation.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        hidden_offset = state.hidden_offset
        if self.centering:
            # A running mean of the data's hidden activations; b' moves so that the standard
            # visible bias b = b' - W lambda is unchanged by the offset's move.
            v = getattr(batch, "v", batch)
            new = (1 - self.offset_rate) * hidden_offset + self.offset_rate * jnp.mean(
                hidden_mean(standard, v), axis=0
            )
            params = move_hidden_offset(params, hidden_offset, new)
            hidden_offset = new
        state = TrainState(
            params, state.visible_offset, hidden_offset, opt_state, chains, state.key,
            state.imputations,
        )  # fmt: skip
        return state, info

    def step_incomplete(self, state: TrainState, index, key, data: IncompleteData):
        """One update on the examples ``index`` of incomplete ``data``: their imputations
        advance :attr:`impute_sweeps` clamped sweeps (:func:`~.missing.impute_batch`) and
        the completed examples are the minibatch of :meth:`step`."""
        key_impute, key = threefry_split(key)
        batch, imputations = impute_batch(
            key_impute, self.standard_params(state), state.imputations, data, index,
            self.impute_sweeps,
        )  # fmt: skip
        return self.step(state._replace(imputations=imputations), batch, key)

    def standard_params(self, state: TrainState) -> RBMParams:
        """The parameters of ``state`` in standard coordinates."""
        return to_standard(state.params, state.visible_offset, state.hidden_offset)


def build_trainer(
    negative_phase: NegativePhase, optimizer, *, centering: bool = True, offset_rate=0.01,
    impute_sweeps: int = 1,
) -> Trainer:  # fmt: skip
    """A :class:`Trainer` from its parts; ``optimizer`` is an optax transformation (e.g.
    ``optax.adam(1e-3)``, penalties chained in front) or a hashable spec such as
    :class:`~numpyro_rbm.learning.optim.CosineAdam`; ``impute_sweeps`` clamped sweeps per
    visit of an incomplete example."""
    if not isinstance(negative_phase, NegativePhase):
        raise TypeError(
            "negative_phase must be a numpyro_rbm.learning.NegativePhase (e.g. "
            f"numpyro_rbm.learning.pcd()), got {type(negative_phase).__name__}"
        )
    return Trainer(
        negative_phase, optimizer, bool(centering), float(offset_rate), int(impute_sweeps)
    )


def state_shardings(phase: NegativePhase, state: TrainState, mesh: Mesh) -> TrainState:
    """Shardings for data-parallel training: the chains split along their chain axes (as the
    negative phase declares them), everything else replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def along(axis):
        if axis is None:
            return replicated
        return NamedSharding(mesh, PartitionSpec(*([None] * axis), DATA_AXIS))

    chains = jax.tree.map(along, phase.chain_axes(state.chains), is_leaf=lambda x: x is None)
    return TrainState(
        params=jax.tree.map(lambda _: replicated, state.params),
        visible_offset=replicated,
        hidden_offset=replicated,
        opt_state=jax.tree.map(lambda _: replicated, state.opt_state),
        chains=chains,
        key=replicated,
        imputations=jax.tree.map(lambda _: replicated, state.imputations),
    )


def data_size(data) -> int:
    """The number of training examples of a layer or of :class:`~.missing.IncompleteData`."""
    return jax.tree.leaves(data)[0].shape[0]


def _is_finite(params):
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))


@functools.lru_cache(maxsize=32)
def _compiled_run(trainer: Trainer, batch_size: int, devices: tuple | None):
    """The jit-compiled loop of epochs for these settings (see :func:`run_epochs`)."""
    mesh = None if devices is None else Mesh(np.asarray(devices), (DATA_AXIS,))

    def constrain(state):
        if mesh is None:
            return state
        shardings = state_shardings(trainer.negative_phase, state, mesh)
        return jax.lax.with_sharding_constraint(state, shardings)

    def epoch(state: TrainState, data):
        # All of an epoch's update keys in one split: a split per update would add its own
        # small kernels to every update's critical path (measured about 2x slower on digits
        # at batch 10).
        key, key_perm, key_updates = threefry_split(state.key, 3)
        n_batches = data_size(data) // batch_size
        update_keys = threefry_split(key_updates, n_batches)
        perm = jax.random.permutation(key_perm, data_size(data))[: n_batches * batch_size]
        if state.imputations is None:
            batches = data[perm].reshape(n_batches, batch_size, data.shape[1])
            step = trainer.step
        else:  # incomplete data: the minibatches are the examples' indices
            batches = perm.reshape(n_batches, batch_size)
            step = functools.partial(trainer.step_incomplete, data=data)
        if mesh is not None:  # each device gets its share of every minibatch
            sharding = NamedSharding(mesh, PartitionSpec(None, DATA_AXIS))
            batches = jax.lax.with_sharding_constraint(batches, sharding)

        def update(carry, batch_and_key):
            state, stopped = carry
            new, info = step(state, *batch_and_key)
            unbounded = unbounded_direction_found(new.params)
            if unbounded is False:  # a bounded layer: Z is finite whatever the update
                return (constrain(new), stopped), info
            # An update that leaves the normalisable region is not taken, nor any after it.
            stopped = stopped | unbounded
            state = jax.lax.cond(stopped, lambda: state, lambda: new)
            return (constrain(state), stopped), info

        carry = (state._replace(key=key), jnp.array(False))
        (state, stopped), infos = jax.lax.scan(update, carry, (batches, update_keys))
        return state, jax.tree.map(lambda x: jnp.mean(x, axis=0), infos), stopped

    def run(state: TrainState, data, n_epochs):
        state = constrain(state)
        layer = data if state.imputations is None else state.imputations
        batch = jax.ShapeDtypeStruct((batch_size, layer.shape[1]), layer.dtype)
        info0 = jax.eval_shape(trainer.step, state, batch, state.key)[1]
        info0 = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), info0)

        def cond(carry):
            _, _, finite, done, stopped = carry
            return finite & ~stopped & (done < n_epochs)

        def body(carry):
            state, _, _, done, _ = carry
            state, info, stopped = epoch(state, data)
            return state, info, _is_finite(state.params), done + 1, stopped

        init = (state, info0, jnp.array(True), jnp.array(0, jnp.int32), jnp.array(False))
        return jax.lax.while_loop(cond, body, init)

    return jax.jit(run)


def run_epochs(trainer: Trainer, state: TrainState, data, n_epochs, *, batch_size: int,
               devices=None):  # fmt: skip
    """Runs ``n_epochs`` epochs (traced: any count reuses the compiled loop), each a shuffle of
    ``data`` into ``len(data) // batch_size`` minibatches and a scan of ``trainer.step`` over
    them, stopping early after the first epoch whose parameters are not finite, or at the
    first update after which a direction with no normaliser is found
    (:func:`~numpyro_rbm.normalisable.unbounded_direction_found`; models with a bounded layer
    are never checked): that update and the rest of its epoch are not taken. With
    :class:`~.missing.IncompleteData` (and ``state.imputations`` set) the scan runs
    ``trainer.step_incomplete`` over shuffled example indices instead.

    Returns:
        ``(state, info, finite, epochs_run, unbounded)``: ``info`` is the last epoch's mean of
        the negative phase's info (e.g. PT's swap rates); ``unbounded`` says that training
        stopped before an update that would have made :math:`Z` infinite, ``state`` being
        the last state before it.
    """
    devices = None if devices is None else tuple(devices)
    return _compiled_run(trainer, int(batch_size), devices)(state, data, np.int32(n_epochs))
