r"""``fit``: validate into a frozen configuration, build the trainer, run epochs, monitor,
checkpoint.

Everything that learns lives in the pieces :func:`fit` composes: the negative phase
(:mod:`~numpyro_rbm.learning.negative`), the optimiser and penalties
(:mod:`~numpyro_rbm.learning.optim`), the trainer and its compiled epoch loop
(:mod:`~numpyro_rbm.learning.trainer`) and the monitors
(:mod:`~numpyro_rbm.learning.monitors`). ``fit`` itself checks the arguments, initialises the
model from the data, and between compiled runs of epochs evaluates, calls back, checkpoints
atomically and stops with the last good state saved if the parameters stop being finite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import diagnostics, io
from .._progress import Progress
from ..core import RBMParams, init_params
from ..normalisable import check_normalisable, require_normalisable
from ..units import as_unit_type, base_rate_bias, device_layer
from .missing import IncompleteData
from .monitors import MonitorContext, default_monitors
from .negative import NegativePhase, from_method
from .optim import CosineAdam, Penalized
from .trainer import DATA_AXIS, Trainer, TrainState, build_trainer, run_epochs, state_shardings

__all__ = [
    "fit",
    "FitResult",
    "FitConfig",
    "TrainingDiverged",
    "LeftNormalisableRegion",
    "ChainsNotMixing",
]

METHODS = ("cd", "pcd", "pt")
CHECKPOINT_FILE = "checkpoint.npz"
PARAMS_FILE = "params.npz"
# epochs=None trains for DEFAULT_EPOCHS epochs or MIN_UPDATES parameter updates, whichever is
# more: small data sets (bars-and-stripes: 30 patterns, 3 updates an epoch) need the updates.
# The defaults (300 epochs, learning_rate 0.03, l1_decay 1e-3) were chosen by validation
# log-likelihood on digits (docs/training.md, "Quality on digits").
DEFAULT_EPOCHS = 300
MIN_UPDATES = 10_000
# eval_every="auto" evaluates at most about this many times per run, and skips evaluations
# that would take monitoring above this fraction of the run's wall time (the last epoch is
# always evaluated).
MAX_EVALUATIONS = 100
MONITOR_BUDGET = 0.15


class TrainingDiverged(FloatingPointError):
    """Raised when the parameters become NaN or infinite during :func:`fit`."""


class ChainsNotMixing(RuntimeWarning):
    """Warned (once per run) when fit's monitor finds the persistent chains not mixing:
    :func:`numpyro_rbm.diagnostics.mixing_rhat` above ``RHAT_THRESHOLD``."""

    def __init__(self, message, epoch, rhat):
        super().__init__(message)
        self.epoch, self.rhat = epoch, rhat


class FitResult(NamedTuple):
    """What :func:`fit` returns."""

    #: The trained :class:`~numpyro_rbm.core.RBMParams` (standard coordinates).
    params: RBMParams
    #: The model's persistent chains ``(num_chains, n_visible)`` (for parallel tempering the
    #: :math:`\beta = 1` replica; for CD, the last negative samples).
    chains: jax.Array
    #: ``{metric: list}``, one entry per evaluation: ``"epoch"``, ``"reconstruction_error"``,
    #: ``"pseudo_log_likelihood"``, ``"train_log_likelihood"`` and ``"test_log_likelihood"``
    #: (exact when enumerable, AIS otherwise; absent when neither is available),
    #: ``"chain_rhat"`` (persistent chains) and ``"swap_rate"`` (tempering), and whatever the
    #: user's monitors return.
    history: dict
    #: The optimiser state.
    opt_state: Any
    #: The PRNG key after training.
    key: jax.Array
    #: The full :class:`~numpyro_rbm.learning.trainer.TrainState`.
    state: TrainState
    #: ``{"compile_s", "train_s", "eval_s"}``, wall-clock seconds (``compile_s`` is near zero
    #: when an earlier call compiled the same settings and shapes), ``"eval_compile_s"``, the
    #: part of ``eval_s`` spent compiling the monitors (once per settings and shapes; left out
    #: of the monitoring budget's schedule), and ``"evaluations"``, ``"evaluations_skipped"``
    #: (by the monitoring budget of ``eval_every="auto"``).
    timings: dict


@dataclasses.dataclass(frozen=True)
class FitConfig:
    """The validated settings of one :func:`fit` call (see its arguments)."""

    n_hidden: int
    negative_phase: NegativePhase
    method: str
    epochs: int
    batch_size: int
    optimizer: Any
    centering: bool
    seed: int
    dtype: Any
    visible_units: Any
    hidden_units: Any
    weight_scale: float
    eval_every: int | None
    log_likelihood: str | None
    checkpoint_dir: str | None
    resume: bool
    progress: bool
    callbacks: tuple
    devices: tuple | None
    monitors: tuple
    #: Largest fraction of the wall time monitoring may take (``eval_every="auto"``); ``None``:
    #: every ``eval_every`` epochs whatever it costs.
    eval_budget: float | None = None
    #: Clamped sweeps of an incomplete example's imputations per visit.
    impute_sweeps: int = 1

    @property
    def checkpoint_path(self) -> str | None:
        if self.checkpoint_dir is None:
            return None
        return os.path.join(self.checkpoint_dir, CHECKPOINT_FILE)

    def signature(self, n_examples: int, n_visible: int, n_missing: int = 0) -> dict:
        """What a checkpoint must match to be resumed (JSON-serialisable); incomplete data
        (``n_missing`` layer units missing) add their count and the sweeps per visit."""
        phase = self.negative_phase
        opt = self.optimizer
        missing = {}
        if n_missing:
            missing = dict(missing_units=n_missing, impute_sweeps=self.impute_sweeps)
        return dict(
            method=self.method,
            k=getattr(phase, "k", None),
            batch_size=self.batch_size,
            centering=self.centering,
            offset_rate=0.01,
            weight_decay=float(getattr(opt, "weight_decay", 0.0)),
            l1_decay=float(getattr(opt, "l1_decay", 0.0)),
            n_visible=n_visible,
            n_hidden=self.n_hidden,
            epochs=self.epochs,
            num_chains=getattr(phase, "num_chains", None),
            num_temperatures=getattr(phase, "num_temperatures", None),
            seed=self.seed,
            dtype=str(self.dtype),
            n_examples=n_examples,
            visible_units=self.visible_units.spec,
            hidden_units=self.hidden_units.spec,
            **missing,
        )


# --- argument checks ----------------------------------------------------------------------------


def _positive_int(name, value, minimum=1):
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_dtype(dtype):
    try:
        dtype = jnp.dtype(dtype)
    except TypeError as err:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from err
    if dtype not in (jnp.dtype("float32"), jnp.dtype("float64")):
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype}")
    if dtype == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            "dtype='float64' needs 64-bit JAX: run inside `with jax.enable_x64(True):` or set "
            "jax.config.update('jax_enable_x64', True) at startup"
        )
    return dtype


def _check_penalties(weight_decay, l1_decay):
    for name, value in (("weight_decay", weight_decay), ("l1_decay", l1_decay)):
        if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def _check_devices(devices, phase, batch_size):
    try:
        devices = tuple(devices)
    except TypeError as err:
        raise TypeError(
            f"devices must be a sequence of jax devices, e.g. jax.devices(): {err}"
        ) from err
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(
            f"devices must be a non-empty sequence of jax devices, e.g. jax.devices(); got "
            f"{list(devices)!r}"
        )
    n = len(devices)
    split = {"batch_size": batch_size}
    if phase.persistent and hasattr(phase, "num_chains"):
        split["num_chains"] = phase.num_chains
    for name, value in split.items():
        if value % n:
            raise ValueError(
                f"{name}={value} cannot be split evenly across {n} devices; use a multiple of {n}"
            )
    return devices


def _optimizer(optimizer, learning_rate, total_steps, weight_decay, l1_decay):
    if optimizer is not None:
        if not isinstance(optimizer, optax.GradientTransformation):
            raise TypeError(
                f"optimizer must be an optax.GradientTransformation (e.g. optax.adam(1e-3)), "
                f"got {type(optimizer).__name__}"
            )
    elif callable(learning_rate):
        optimizer = CosineAdam(learning_rate)
    elif (
        isinstance(learning_rate, int | float)
        and math.isfinite(learning_rate)
        and (learning_rate > 0)
    ):
        optimizer = CosineAdam(float(learning_rate), int(total_steps))
    else:
        raise ValueError(
            f"learning_rate must be a positive number or an optax schedule, got {learning_rate!r}"
        )
    if weight_decay or l1_decay:
        return Penalized(optimizer, float(weight_decay), float(l1_decay))
    return optimizer


def _check_eval_every(eval_every):
    if eval_every is None or eval_every == "auto":
        return eval_every
    if isinstance(eval_every, bool) or not isinstance(eval_every, int | np.integer):
        raise ValueError(f"eval_every must be an integer >= 1, 'auto' or None, got {eval_every!r}")
    return _positive_int("eval_every", eval_every)


def _negative_phase(method, k, num_chains, num_temperatures):
    if isinstance(method, NegativePhase):
        return method, method.name
    k = _positive_int("k", k)
    num_chains = _positive_int("num_chains", num_chains)
    num_temperatures = _positive_int("num_temperatures", num_temperatures, minimum=2)
    if method not in METHODS:
        raise ValueError(
            f"method must be one of {METHODS} or a numpyro_rbm.learning.NegativePhase, got "
            f"{method!r}"
        )
    return from_method(method, k, num_chains, num_temperatures), method


def _check_test_data(test_data, vis, n_visible, dtype):
    """The held-out layer on the device; NaN is refused (its log-likelihood would need the
    observed entries' marginal, which the monitors do not compute)."""
    refuse = (
        "held-out examples must be complete (the monitors compute the log-likelihood of "
        "whole examples); drop the incomplete rows from test_data"
    )
    return device_layer(test_data, vis, "test_data", n_visible, dtype, missing=refuse)[0]


def _configure(data, test_data, n_hidden, a: dict):
    """Checks every argument; returns ``(FitConfig, train, test, observed)`` (the layers on
    the device in the training dtype, checked there: :func:`~numpyro_rbm.units.device_layer`;
    ``observed`` is the mask of observed units of incomplete data, else ``None``)."""
    phase, method = _negative_phase(a["method"], a["k"], a["num_chains"], a["num_temperatures"])
    vis, hid = as_unit_type(a["visible_units"]), as_unit_type(a["hidden_units"])
    n_hidden = _positive_int("n_hidden", n_hidden)
    epochs = None if a["epochs"] is None else _positive_int("epochs", a["epochs"])
    batch_size = _positive_int("batch_size", a["batch_size"])
    eval_every = _check_eval_every(a["eval_every"])
    _check_penalties(a["weight_decay"], a["l1_decay"])
    dtype = _check_dtype(a["dtype"])
    if a["log_likelihood"] not in ("auto", "exact", "ais", None):
        raise ValueError(
            f"log_likelihood must be 'auto', 'exact', 'ais' or None, got {a['log_likelihood']!r}"
        )
    if a["resume"] and a["checkpoint_dir"] is None:
        raise ValueError("resume=True needs checkpoint_dir, the folder of the checkpoint")
    for fn in (*a["callbacks"], *a["monitors"]):
        if not callable(fn):
            raise TypeError(f"callbacks and monitors must be callables, got {fn!r}")
    impute_sweeps = _positive_int("impute_sweeps", a["impute_sweeps"])
    train, observed = device_layer(
        data, vis, "data", dtype=dtype, missing=True, seed=int(a["seed"])
    )
    n = train.shape[0]
    if batch_size > n:
        raise ValueError(
            f"batch_size={batch_size} exceeds the {n} training examples; use batch_size <= {n}"
        )
    test = None if test_data is None else _check_test_data(test_data, vis, train.shape[1], dtype)
    devices = a["devices"]
    if devices is not None:
        devices = _check_devices(devices, phase, batch_size)
    if epochs is None:
        epochs = max(DEFAULT_EPOCHS, math.ceil(MIN_UPDATES / (n // batch_size)))
    eval_budget = MONITOR_BUDGET if eval_every == "auto" else None
    if eval_every == "auto":
        eval_every = max(1, epochs // MAX_EVALUATIONS)
    optimizer = _optimizer(
        a["optimizer"], a["learning_rate"], epochs * (n // batch_size), a["weight_decay"],
        a["l1_decay"],
    )  # fmt: skip
    checkpoint_dir = None if a["checkpoint_dir"] is None else os.fspath(a["checkpoint_dir"])
    config = FitConfig(
        n_hidden, phase, method, epochs, batch_size, optimizer, bool(a["centering"]),
        int(a["seed"]), dtype, vis, hid, a["weight_scale"], eval_every, a["log_likelihood"],
        checkpoint_dir, bool(a["resume"]), bool(a["progress"]), tuple(a["callbacks"]), devices,
        tuple(a["monitors"]), eval_budget, impute_sweeps,
    )  # fmt: skip
    return config, train, test, observed


# --- the initial state, checkpoints -----------------------------------------------------------


def _initial_state(config: FitConfig, trainer: Trainer, train, keys, observed):
    """Model initialisation from the data (base-rate visible biases, small random weights,
    unit parameters from the data) and the trainer's state; returns it with the data the
    loop reads. ``train`` is the checked layer on the device in the training dtype; the
    statistics are computed there and only per-column figures come back (no pass of the
    host over the data: a fixed cost of every call, issue 17). With ``observed`` (incomplete
    data) the filled layer is also the imputations' start, and the loop reads
    :class:`~.missing.IncompleteData`."""
    key_init, key_chains, key_run = keys
    vis, dtype = config.visible_units, config.dtype
    params = init_params(
        key_init, train.shape[1], config.n_hidden, weight_scale=config.weight_scale,
        visible_bias=base_rate_bias(train, vis), visible_units=vis,
        hidden_units=config.hidden_units, dtype=dtype,
    )  # fmt: skip
    params = params.replace(visible_unit_params=vis.unit_params_from_data(train, dtype))
    require_normalisable(
        params, "fit's initial model (unit parameters from the data)", strict=True,
        fix="Standardise the data (numpyro_rbm.datasets.standardize) or lower weight_scale.",
    )  # fmt: skip
    state = trainer.init(key_chains, params, train, config.batch_size, key_run)
    if observed is None:
        return state, train
    return state._replace(imputations=train), IncompleteData(train, jnp.asarray(observed))


def _state_to_arrays(state: TrainState) -> dict:
    arrays = {}
    for i, leaf in enumerate(jax.tree.leaves(state._replace(key=None))):
        arrays[f"leaf_{i:04d}"] = np.asarray(leaf)
    arrays["key"] = np.asarray(jax.random.key_data(state.key))
    return arrays


def _state_from_arrays(template: TrainState, arrays: dict) -> TrainState:
    leaves, treedef = jax.tree.flatten(template._replace(key=None))
    if sum(name.startswith("leaf_") for name in arrays) != len(leaves):
        raise ValueError(
            f"the checkpoint holds {sum(n.startswith('leaf_') for n in arrays)} state arrays, "
            f"this run's state has {len(leaves)}: it was written by another negative phase or "
            "optimiser, or by a release whose state differs (parallel tempering's before the "
            "learning engine); start a new run, or read it with numpyro_rbm.io.load_checkpoint"
        )
    new_leaves = []
    for i, old in enumerate(leaves):
        new = arrays[f"leaf_{i:04d}"]
        if new.shape != np.shape(old):
            raise ValueError(
                f"checkpoint array {i} has shape {new.shape}, this run expects {np.shape(old)}"
            )
        new_leaves.append(jnp.asarray(new, dtype=jnp.result_type(old)))
    state = jax.tree.unflatten(treedef, new_leaves)
    return state._replace(key=jax.random.wrap_key_data(jnp.asarray(arrays["key"])))


def _resume(path, signature, state):
    """``(state, history, epoch)`` from the checkpoint at ``path``, if it matches."""
    arrays, meta = io.load_checkpoint(path)
    if meta["signature"] != signature:
        saved = meta["signature"]
        diff = {
            name: (saved.get(name), signature.get(name))
            for name in {**saved, **signature}
            if saved.get(name) != signature.get(name)
        }
        raise ValueError(
            f"cannot resume from {path}: it was written with different settings "
            f"(name: (checkpoint, now)) {diff}"
        )
    return _state_from_arrays(state, arrays), meta["history"], int(meta["epoch"])


def _diverged(epoch, path, last_good):
    where = (
        f"the last good checkpoint (epoch {last_good}) is intact at {path}; resume from it "
        "with fit(..., resume=True) after changing the settings that diverged, or read it with "
        "numpyro_rbm.io.load_checkpoint"
        if path is not None and os.path.exists(path)
        else "pass checkpoint_dir to keep the last good state"
    )
    return TrainingDiverged(
        f"the parameters became NaN or infinite during epoch {epoch}; {where}. Lower the "
        "learning_rate or add weight_decay."
    )


class LeftNormalisableRegion(TrainingDiverged):
    """Raised when an update of :func:`fit` would have made :math:`Z` infinite (continuous
    units on both layers; ``docs/units.md``, "When is Z finite"). ``params`` and ``state``
    hold the last parameters before that update (normalisable), ``epoch`` the epoch it was
    in."""

    def __init__(self, message, params, state, epoch):
        super().__init__(message)
        self.params, self.state, self.epoch = params, state, epoch


def _left_region(trainer, state, epoch, config, last_good):
    params = trainer.standard_params(state)
    verdict = check_normalisable(params)
    path = config.checkpoint_path
    saved = (
        f"the checkpoint of epoch {last_good} is intact at {path}"
        if path is not None and os.path.exists(path)
        else "pass checkpoint_dir to keep a checkpoint of each epoch"
    )
    return LeftNormalisableRegion(
        f"stopped during epoch {epoch}: the next update would have left the normalisable region "
        f"(a direction along which -E grows without bound was found, so Z would be infinite "
        f"and the Gibbs chains would run to infinity). {verdict.reason}. The last parameters "
        f"before it are in this error's .params (margin {verdict.margin:.3g}) and .state; "
        f"{saved}. Lower the learning_rate, add weight_decay, use more Gibbs sweeps (k) or "
        "method='pt', so that the negative phase keeps up with the model",
        params, state, epoch,
    )  # fmt: skip


# --- the loop -----------------------------------------------------------------------------------


class _Loop:
    """The host side of training: when to stop the compiled loop, what to do there."""

    def __init__(self, config, trainer, train, test, key_eval, history, signature):
        self.config, self.trainer = config, trainer
        self.train, self.test = train, test
        self.key_eval = key_eval
        self.history, self.signature = history, signature
        self.monitors = default_monitors(config.log_likelihood) + config.monitors
        self.timings = {"compile_s": 0.0, "train_s": 0.0, "eval_s": 0.0, "eval_compile_s": 0.0}
        self.report = None
        self.warned = False
        self.next_eval = self.start = None  # the next epoch to evaluate at; run's first epoch
        self.evaluations = self.skipped = 0

    def next_stop(self, done):
        """The next epoch at which Python must look at the state (evaluation, checkpoint,
        end); the epochs up to it run inside one compiled call."""
        cfg = self.config
        if cfg.checkpoint_dir is not None:
            return done + 1
        stop = cfg.epochs
        if cfg.eval_every is not None:
            stop = min(stop, self.next_eval)
        if self.report is not None:  # let the bar move (and Ctrl-C answer) at least every 1%
            stop = min(stop, done + max(1, cfg.epochs // MAX_EVALUATIONS))
        return stop

    def schedule_next_eval(self, epoch, cost):
        r"""The next evaluation after one at ``epoch`` that took ``cost`` seconds, compiling
        excluded: the next multiple of ``eval_every``, and under a budget :math:`B` the first
        multiple at which the run's monitoring share stays at most :math:`B` if the next
        evaluation costs as much as this one (:math:`c`) and leaves room for the last one:
        :math:`E + 2c \le B\,(T + t\Delta + E + 2c)` for :math:`E` seconds of monitoring so
        far, :math:`T` of training (compilation included), :math:`t` per epoch, :math:`\Delta`
        epochs from now. The last epoch is always evaluated.

        The monitors' compilation (``timings["eval_compile_s"]``, paid once by the first
        evaluation) is left out of :math:`E` and :math:`c`: no schedule can avoid it, and
        charging it would let one slow compile (29 s seen under load) skip every evaluation
        for the next ~6x that long, or all of a short run. It is reported instead, in the
        timings and the progress report."""
        cfg, every = self.config, self.config.eval_every
        step = every
        if cfg.eval_budget is not None and cost is not None:
            recurring = self.timings["eval_s"] - self.timings.get("eval_compile_s", 0.0)
            spent = recurring + 2 * cost  # E + c, and room for the last one
            trained = self.timings["train_s"] + self.timings["compile_s"]
            per_epoch = self.timings["train_s"] / max(1, epoch - self.start)
            wait = (spent * (1 - cfg.eval_budget) / cfg.eval_budget - trained) / per_epoch
            step = max(every, every * math.ceil(max(wait, 0.0) / every))
        planned = min(epoch // every * every + step, cfg.epochs)
        regular = min(epoch // every * every + every, cfg.epochs)
        self.skipped += (planned - regular) // every
        self.next_eval = planned

    def evaluate(self, epoch, state, info):
        """Runs the monitors; returns the metrics (also appended to the history). With
        incomplete data the monitors read the training examples as completed now."""
        params = self.trainer.standard_params(state)
        key = jax.random.fold_in(self.key_eval, epoch)
        train = self.train if state.imputations is None else state.imputations
        ctx = MonitorContext(
            epoch, params, state, self.config.negative_phase, info, train, self.test, key
        )
        metrics = {"epoch": epoch}
        with _compile_clock() as compiling:
            for i, monitor in enumerate(self.monitors):  # each monitor its own key
                metrics.update(monitor(ctx._replace(key=jax.random.fold_in(key, i))))
        self.timings["eval_compile_s"] += compiling[0]
        for name, value in metrics.items():
            self.history.setdefault(name, []).append(value)
        self.warn_if_not_mixing(epoch, metrics.get("chain_rhat"))
        return metrics

    def warn_if_not_mixing(self, epoch, rhat):
        if rhat is None or rhat <= diagnostics.RHAT_THRESHOLD or self.warned:
            return
        self.warned = True  # once per run: later values are in history["chain_rhat"]
        message = (
            f"epoch {epoch}: the persistent chains are not mixing (R-hat of their free energy "
            f"and mean activation over {diagnostics.MONITOR_SWEEPS} sweeps {rhat:.2f} > "
            f"{diagnostics.RHAT_THRESHOLD}); the negative phase is unreliable. Try "
            "method='pt', more sweeps k, or a smaller learning_rate (history['chain_rhat'] has "
            "the value at every evaluation; docs/diagnostics.md explains the test)"
        )
        warnings.warn(ChainsNotMixing(message, epoch, rhat), stacklevel=4)

    def checkpoint(self, epoch, state):
        meta = {"epoch": epoch, "history": self.history, "signature": self.signature}
        io.save_checkpoint(self.config.checkpoint_path, _state_to_arrays(state), meta)

    def run(self, state, start):
        cfg, epoch, last_good = self.config, start, start
        self.start = start
        if cfg.eval_every is not None:
            self.schedule_next_eval(start, None)
        while epoch < cfg.epochs:
            t0 = time.perf_counter()
            n_run = self.next_stop(epoch) - epoch
            new_state, info, finite, ran, unbounded = run_epochs(
                self.trainer, state, self.train, n_run, batch_size=cfg.batch_size,
                devices=cfg.devices,
            )  # fmt: skip
            finite = bool(finite)  # blocks until the epochs are done
            self.timings["train_s"] += time.perf_counter() - t0
            if not finite:
                raise _diverged(epoch + int(ran), cfg.checkpoint_path, last_good)
            if bool(unbounded):
                raise _left_region(self.trainer, new_state, epoch + int(ran), cfg, last_good)
            epoch, state, stop = epoch + int(ran), new_state, False
            if cfg.eval_every is not None and epoch >= self.next_eval:
                t0 = time.perf_counter()
                before = compiled = self.timings["eval_compile_s"]
                metrics = self.evaluate(epoch, state, info)
                cost = time.perf_counter() - t0
                self.timings["eval_s"] += cost
                self.evaluations += 1
                # (nested traces can report overlapping spans: never more than the cost)
                compiled = min(self.timings["eval_compile_s"] - compiled, cost)
                self.timings["eval_compile_s"] = before + compiled
                self.schedule_next_eval(epoch, cost - compiled)
                if self.report is not None:
                    self.report.metrics(metrics)
                params = self.trainer.standard_params(state)
                stop = any(bool(cb(epoch, params, metrics)) for cb in cfg.callbacks)
            if cfg.checkpoint_dir is not None:
                self.checkpoint(epoch, state)
                last_good = epoch
            if self.report is not None:
                self.report.update(int(ran))
            if stop:
                break
        self.timings["evaluations"], self.timings["evaluations_skipped"] = (
            self.evaluations,
            self.skipped,
        )
        return state

    def budget_note(self) -> str | None:
        """What monitoring cost (its one-off compilation apart) and what the budget skipped,
        for the progress report."""
        if not self.evaluations:
            return None
        t = self.timings
        note = (
            f"monitoring: {self.evaluations} evaluations took {t['eval_s']:.1f} s, of which "
            f"{t['eval_compile_s']:.1f} s compiling the monitors (once per settings and shapes)"
        )
        if not self.skipped:
            return note
        return (
            f"{note}; {self.skipped} skipped to keep the rest within "
            f"{self.config.eval_budget:.0%} of the wall time (pass eval_every=N to evaluate "
            "every N epochs)"
        )


#: The events JAX records for each trace, lowering and compilation (jax.monitoring).
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


@contextlib.contextmanager
def _compile_clock():
    """Yields a one-element list that, on exit, holds the seconds JAX spent tracing, lowering
    and compiling inside the block (summed from :mod:`jax.monitoring` duration events)."""
    total = [0.0]

    def listen(event, duration, **_):
        if event in _COMPILE_EVENTS:
            total[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield total
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def _place(config: FitConfig, state: TrainState, train):
    """Puts the state and the data on the devices of data-parallel training."""
    if config.devices is None:
        return state, train
    mesh = Mesh(np.asarray(config.devices), (DATA_AXIS,))
    state = jax.device_put(state, state_shardings(config.negative_phase, state, mesh))
    return state, jax.device_put(train, NamedSharding(mesh, PartitionSpec()))


def fit(
    data,
    n_hidden: int,
    *,
    method: str | NegativePhase = "pcd",
    epochs: int | None = None,
    batch_size: int = 10,
    learning_rate: float | Callable = 0.03,
    optimizer: optax.GradientTransformation | None = None,
    k: int = 1,
    num_chains: int = 100,
    num_temperatures: int = 10,
    centering: bool = True,
    weight_decay: float = 0.0,
    l1_decay: float = 1e-3,
    seed: int = 0,
    dtype="float32",
    visible_units="bernoulli",
    hidden_units="bernoulli",
    weight_scale: float = 0.01,
    test_data=None,
    eval_every: int | str | None = "auto",
    log_likelihood: str | None = "auto",
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[Callable] = (),
    devices: Sequence[jax.Device] | None = None,
    monitors: Sequence[Callable] = (),
    impute_sweeps: int = 1,
) -> FitResult:
    r"""Trains an RBM on ``data`` by stochastic maximum likelihood.

    Each epoch shuffles the data, cuts it into ``len(data) // batch_size`` minibatches (the
    remainder is left out of that epoch; a different remainder each epoch) and makes one
    optimiser update per minibatch inside a :func:`jax.lax.scan`; the epochs between two
    evaluations run in one compiled :func:`jax.lax.while_loop`, compiled once per settings
    and shapes (later calls with the same ones reuse it). Visible biases start at the data's
    base rates (Hinton's guide), weights at :math:`\mathcal N(0, \text{weight\_scale}^2)`.
    Everything is a function of ``seed``: the same call gives the same parameters, and a
    resumed run equals an uninterrupted one. ``fit`` composes the pieces of
    :mod:`numpyro_rbm.learning` (``docs/architecture.md``).

    Args:
        data: training examples ``(N, n_visible)`` holding the visible unit values; NaN
            marks a missing entry (for Potts units, a missing site).
            Each incomplete example then carries a persistent chain of its missing entries,
            advanced ``impute_sweeps`` clamped Gibbs sweeps each time its minibatch is
            visited, and the completed examples enter the gradient: stochastic maximum
            likelihood of the observed entries (:mod:`numpyro_rbm.learning.missing`;
            ``docs/training.md``). Every row must have an observed entry. The training
            metrics are then those of the completed examples; ``test_data`` must be complete.
        n_hidden: number of hidden units.
        method: ``"pcd"`` (persistent contrastive divergence / SML), ``"cd"`` (CD-k), ``"pt"``
            (parallel tempering), or a :class:`~numpyro_rbm.learning.NegativePhase` (which
            carries its own settings: ``k``, ``num_chains`` and ``num_temperatures`` are then
            not used).
        epochs: total number of passes over the data. ``None`` (the default) trains for 300
            epochs or 10,000 parameter updates, whichever is more, so that a small data set
            (30 bars-and-stripes patterns make 3 updates an epoch) still gets enough updates.
        batch_size: examples per update.
        learning_rate: initial step size of the default optimiser, Adam with the step size
            decayed to 1% of ``learning_rate`` over the run by a cosine schedule; or an optax
            schedule, used as is.
        optimizer: any ``optax.GradientTransformation``; overrides ``learning_rate``.
        k: Gibbs sweeps per update (per replica for ``"pt"``).
        num_chains: persistent chains (per temperature for ``"pt"``).
        num_temperatures: rungs of the parallel-tempering ladder, :math:`\beta` evenly spaced
            in :math:`[0, 1]`.
        centering: train in centered coordinates (recommended; see
            :mod:`numpyro_rbm.learning.loss`).
        weight_decay: L2 penalty :math:`\tfrac{\lambda_2}{2}\|W\|^2` on the weights.
        l1_decay: L1 penalty :math:`\lambda_1 \|W\|_1` on the weights (default
            :math:`10^{-3}`: with ``learning_rate=0.03`` and 300 epochs, the setting of best
            validation log-likelihood on digits, ``docs/training.md``; 0 turns it off).
        seed: the integer seed of all randomness.
        dtype: ``"float32"`` or ``"float64"`` (needs ``jax.enable_x64``).
        visible_units, hidden_units: unit types (``"bernoulli"`` or ``"spin"``; visible also
            ``"gaussian"`` (real data) or ``Potts(q)`` (integer sequences), hidden also
            ``"relu"``; see ``docs/units.md``).
        weight_scale: standard deviation of the initial weights.
        test_data: optional held-out examples, monitored alongside the training data.
        eval_every: evaluate the monitoring metrics every this many epochs (and after the
            last); ``"auto"`` (the default) every ``max(1, epochs // 100)`` epochs, at most
            about 100 evaluations, skipping those that would take monitoring above
            ``MONITOR_BUDGET`` (15%) of the wall time (``timings["evaluations_skipped"]`` and
            the progress report say how many); ``None`` turns monitoring off. The epochs
            between two evaluations (or checkpoints) run inside one compiled call.
        log_likelihood: ``"auto"`` (exact when the smaller layer has at most 20 units, else
            AIS; :func:`numpyro_rbm.ais.choose_method`), ``"exact"``, ``"ais"`` or ``None``.
        checkpoint_dir: folder for an atomic checkpoint after every epoch and the final
            ``params.npz``.
        resume: continue from the checkpoint in ``checkpoint_dir`` up to ``epochs``.
        progress: report progress on stderr: what is being compiled, then a tqdm bar with
            the latest metrics on a terminal, or, when stderr is a file or a pipe, a line at
            most every 10 seconds (``chain_rhat`` is shown as ``R-hat(50 sweeps)``).
        callbacks: functions ``callback(epoch, params, metrics) -> bool | None`` called after
            each evaluation; returning ``True`` stops training.
        devices: data-parallel training over these devices (e.g. ``jax.devices()``): every
            minibatch and the persistent chains are split evenly across them, parameters and
            optimiser state are replicated, and XLA reduces the gradients. ``batch_size`` and
            ``num_chains`` must be multiples of ``len(devices)``. Same seed, same result as on
            one device, up to the order of floating-point sums. ``None``: one device.
        monitors: more monitors, ``monitor(ctx) -> {name: value}`` of a
            :class:`~numpyro_rbm.learning.MonitorContext`, run after the built-in ones.
        impute_sweeps: clamped Gibbs sweeps of an incomplete example's missing entries each
            time its minibatch is visited (data with NaN only).

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for invalid arguments or data, with what to change.
        TrainingDiverged: when the parameters become NaN or infinite; the last good
            checkpoint (if ``checkpoint_dir`` is set) is left intact.
        LeftNormalisableRegion: (a ``TrainingDiverged``) when an update would leave the
            region where :math:`Z` is finite (continuous units on both layers, e.g. Gaussian
            visible and ReLU hidden; ``docs/units.md``); the update is not taken, the error
            holds the last parameters before it. A model that starts outside the region
            raises ``NotNormalisable`` before training.
    """
    args = dict(locals())
    config, train, test, observed = _configure(
        args.pop("data"), args.pop("test_data"), n_hidden, args
    )
    report = None
    if config.progress:  # the initial state and the loop compile now: say so before the wait
        report = Progress(f"fit[{config.method}]", config.epochs)
        report.say("compiling the training loop (once per settings and shapes)")
    trainer = build_trainer(
        config.negative_phase, config.optimizer, centering=config.centering,
        impute_sweeps=config.impute_sweeps,
    )  # fmt: skip
    *keys, key_eval = jax.random.split(jax.random.key(config.seed), 5)[:4]
    signature = config.signature(*train.shape, 0 if observed is None else int(np.sum(~observed)))
    state, train = _initial_state(config, trainer, train, tuple(keys), observed)
    history, start = {}, 0
    if config.resume and os.path.exists(config.checkpoint_path):
        state, history, start = _resume(config.checkpoint_path, signature, state)
    t0 = time.perf_counter()
    if report is not None:
        report.resume_at(start)
        if start:
            report.say(f"resuming at epoch {start} of {config.epochs}")
    state, train = _place(config, state, train)
    # Compile (or find the cached loop) now, so that train_s is pure training time.
    jax.block_until_ready(
        run_epochs(trainer, state, train, 0, batch_size=config.batch_size, devices=config.devices)
    )
    loop = _Loop(config, trainer, train, test, key_eval, history, signature)
    loop.timings["compile_s"] = time.perf_counter() - t0
    if report is not None:
        monitors = "" if config.eval_every is None else "; the first evaluation compiles monitors"
        report.start(f" (loop compiled in {loop.timings['compile_s']:.1f} s{monitors})")
        loop.report = report
    try:
        state = loop.run(state, start)
    finally:
        if loop.report is not None:
            if loop.budget_note():
                loop.report.say(loop.budget_note())
            loop.report.close()
    params = trainer.standard_params(state)
    if config.checkpoint_dir is not None:
        path = os.path.join(config.checkpoint_dir, PARAMS_FILE)
        io.save_params(path, params, {"signature": signature})
    chains = config.negative_phase.chains(state.chains)
    return FitResult(params, chains, loop.history, state.opt_state, state.key, state, loop.timings)
