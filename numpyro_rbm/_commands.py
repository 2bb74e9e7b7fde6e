r"""The ``numpyro-rbm`` subcommands (``train``, ``evaluate``, ``sample``): what runs once
:mod:`numpyro_rbm.cli` has parsed the command line. Kept apart so that parsing, and
``--help``, never import JAX, NumPyro or ArviZ.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import sys
import time
import warnings
from contextlib import nullcontext
from functools import partial

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

from . import core, datasets, diagnostics, io, kernels, partition
from .cli import FASTA_EXTENSIONS, FIT_OPTIONS, TRAIN_DEFAULTS, UsageError
from .units import as_unit_type, check_data

matplotlib.use("Agg")  # figures are files; never open a window or need a display

MODEL_FILE = "model.npz"
CONFIG_FILE = "config.json"
TRACE_CHAINS = 4  # chains drawn in the trace / rank plots (more are unreadable)


# --- data ---------------------------------------------------------------------------------


class _Data:
    """Train / test site values (what ``fit`` takes: binary values, standardised real values
    or integer sequences) with what the reports need to know about them."""

    def __init__(
        self, train, test, image_shape, name, optimum=None, units="bernoulli",
        standardization=None, alphabet=None,
    ):  # fmt: skip
        self.train, self.test, self.image_shape = train, test, image_shape
        self.name, self.optimum, self.units = name, optimum, units
        self.standardization, self.alphabet = standardization, alphabet

    @property
    def kind(self) -> str:
        """``"binary"``, ``"real"`` or ``"alignment"``: which figures suit the data."""
        return "real" if self.standardization else "alignment" if self.alphabet else "binary"


def _to_units(x, units):
    """Built-in data sets are {0, 1}; spins are 2x - 1."""
    return (2.0 * x - 1.0).astype(np.float32) if units == "spin" else x


_BARS = ("bars-and-stripes:", "bars:")


def _is_fasta(path) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in FASTA_EXTENSIONS


def infer_units(spec, key=None) -> tuple[str, str]:
    """The visible unit type for ``--data spec`` when ``--visible-units`` is not given, and
    why: ``potts`` for a FASTA file, ``bernoulli`` (``spin``) when every value is 0 or 1 (-1
    or +1), ``gaussian`` otherwise (naming the first value that is not binary)."""
    if spec == "digits" or spec.startswith(_BARS):
        return "bernoulli", f"the built-in {spec} data are 0/1"
    if _is_fasta(spec):
        return "potts", f"{spec} is a FASTA alignment"
    x = _read_table(spec, key, "--data")
    for units in ("bernoulli", "spin"):
        if np.isin(x, as_unit_type(units).values).all():
            return units, f"{spec} holds only the values {_pair(as_unit_type(units))}"
    row, column = np.argwhere(~np.isin(x, (0.0, 1.0)))[0]
    return "gaussian", (
        f"{spec} holds real values (row {row}, column {column} is {x[row, column]:g}; rows and "
        "columns count from 0); pass --visible-units bernoulli if the data should be 0/1"
    )


def load_data(
    spec, *, units=None, key=None, test_data=None, test_fraction=0.2, seed=0,
    image_shape=None, alphabet=None, standardization=None,
) -> _Data:  # fmt: skip
    """Resolves ``--data``: ``digits``, ``bars-and-stripes:N``, a ``.npy``/``.npz``/``.csv``
    table or a FASTA alignment (split into train and test by a seeded permutation unless
    ``test_data`` is given). ``units=None`` infers the visible units (:func:`infer_units`).
    Real values are standardised by the training rows' means and standard deviations
    (:func:`numpyro_rbm.datasets.standardize`), or by ``standardization`` when given (a
    trained model's); an alignment is read with ``alphabet`` (default the amino acids)."""
    optimum = None
    builtin = spec == "digits" or spec.startswith(_BARS)
    if test_data is not None and builtin:
        raise UsageError(f"--test-data applies to --data FILE, not to the built-in {spec!r}")
    if units is None:
        units = infer_units(spec, key)[0]
    if builtin and units not in ("bernoulli", "spin"):
        raise UsageError(
            f"--visible-units {units}: the built-in {spec} data are binary; pass a "
            f"{'FASTA alignment' if units == 'potts' else 'real-valued table'} with --data FILE"
        )
    if spec == "digits":
        if not 0 < test_fraction < 1:
            raise UsageError(
                f"--test-fraction {test_fraction}: the built-in digits need a test split; "
                "use a fraction between 0 and 1"
            )
        d = datasets.digits(test_fraction=test_fraction, seed=seed)
        train, test, shape, name = d.train, d.test, d.image_shape, d.name
        train, test = _to_units(train, units), _to_units(test, units)
    elif spec.startswith(_BARS):
        n_text = spec.split(":", 1)[1]
        if not (n_text.isdigit() and 1 <= int(n_text) <= 16):
            raise UsageError(f"--data {spec}: expected bars-and-stripes:N with N from 1 to 16")
        n = int(n_text)
        x = _to_units(datasets.bars_and_stripes(n), units)
        # Every pattern is equally likely, so the data set is its own test set and the best
        # possible mean log-likelihood is -log(number of patterns).
        train, test, shape, name = x, x, (n, n), f"bars-and-stripes-{n}"
        optimum = -math.log(len(x))
    else:
        x, alphabet = read_rows(spec, units, key, "--data", f"--visible-units {units}", alphabet)
        name, shape = os.path.splitext(os.path.basename(spec))[0], None
        if test_data is not None:
            train = x
            test = read_rows(
                test_data, units, key, "--test-data", f"--visible-units {units}", alphabet
            )[0]
            if test.shape[1] != train.shape[1]:
                raise UsageError(
                    f"--test-data {test_data} has {test.shape[1]} columns but --data {spec} "
                    f"has {train.shape[1]}"
                )
        elif test_fraction > 0:
            order = np.random.default_rng(seed).permutation(len(x))
            n_test = int(round(test_fraction * len(x)))
            if not 0 < n_test < len(x):
                raise UsageError(
                    f"--test-fraction {test_fraction} leaves {n_test} of {len(x)} rows of "
                    f"{spec} for testing; use --test-fraction 0 to train on all rows"
                )
            train, test = x[order[n_test:]], x[order[:n_test]]
        else:
            train, test = x, None
    if units == "gaussian":
        if standardization is None:
            standardization = datasets.standardize(train, name=f"--data {spec}")[1]
        train = standardization.apply(train)
        test = None if test is None else standardization.apply(test)
    if image_shape is not None:
        shape = tuple(image_shape)
    n_visible = train.shape[1]
    if shape is not None and shape[0] * shape[1] != n_visible:
        raise UsageError(
            f"--image-shape {shape[0]}x{shape[1]} has {shape[0] * shape[1]} pixels but the data "
            f"have {n_visible} columns"
        )
    spec_units = f"potts({len(alphabet)})" if units == "potts" else units
    return _Data(
        train, test, shape, name, optimum, spec_units,
        standardization if units == "gaussian" else None,
        alphabet if units == "potts" else None,
    )  # fmt: skip


def read_rows(path, units, key, flag, units_flag, alphabet=None):
    """The rows of a data file for ``units``: 0/1 or -1/+1 values (:func:`read_data`), real
    values as they are (:func:`numpyro_rbm.datasets.read_table`) or the integer sequences of
    a FASTA alignment (:func:`numpyro_rbm.datasets.read_fasta`, with ``alphabet``).

    Returns:
        ``(rows, alphabet)``; ``alphabet`` is the one used (``None`` unless Potts).
    """
    path = os.fspath(path)
    name = as_unit_type(units).name
    fasta = _is_fasta(path)
    if name == "potts" and not fasta:
        raise UsageError(
            f"{flag} {path}: {units_flag} reads FASTA alignments ({', '.join(FASTA_EXTENSIONS)}),"
            " not a table; omit it to infer the units from the file"
        )
    if name != "potts" and fasta:
        raise UsageError(
            f"{flag} {path} is a FASTA alignment, which Potts units read, but {units_flag} "
            "was asked for; omit it or pass --visible-units potts"
        )
    if name == "potts":
        if key is not None:
            raise UsageError(f"--key {key}: {flag} {path} is not an .npz file")
        alphabet = datasets.AMINO_ACIDS if alphabet is None else alphabet
        try:
            alignment = datasets.read_fasta(path, alphabet)
        except FileNotFoundError:
            raise UsageError(f"{flag} {path}: no such file") from None
        except ValueError as err:
            message = str(err).replace("pass alphabet=...", "pass --alphabet SYMBOLS")
            raise UsageError(f"{flag} {message}") from None
        return alignment.sequences, alignment.alphabet
    if name == "gaussian":
        return _read_table(path, key, flag), None
    return read_data(path, units, key, flag, units_flag), None


def _read_table(path, key, flag):
    """:func:`numpyro_rbm.datasets.read_table` with its errors in the command line's words."""
    _check_key(path, key, flag)
    try:
        return datasets.read_table(path, key=key)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except ValueError as err:
        raise UsageError(f"{flag} {err}") from None


def _check_key(path, key, flag):
    """--key names an array of an .npz file; an .npz of several arrays needs it."""
    if key is not None and not path.lower().endswith(".npz"):
        raise UsageError(f"--key {key}: {flag} {path} is not an .npz file (only those hold names)")
    if key is None and path.lower().endswith(".npz") and os.path.isfile(path):
        try:
            with np.load(path, allow_pickle=False) as archive:
                names = list(archive.files)
        except Exception:  # not a readable .npz: the reader says what is wrong
            names = None
        if names is not None and len(names) != 1:
            raise UsageError(
                f"{flag} {path} holds {len(names)} arrays {names}; choose one with --key NAME"
            )


def read_data(path, units, key, flag, units_flag):
    """:func:`numpyro_rbm.datasets.load` with its errors worded for the command line: the
    option that named the file, flags rather than Python arguments, one short line.

    Args:
        flag: the option that named ``path`` (``--data``, ``--test-data``).
        units_flag: what chose ``units``, e.g. ``--visible-units spin`` or ``the model (spin
            units)``.
    """
    path = os.fspath(path)
    _check_key(path, key, flag)
    try:
        return datasets.load(path, units, key=key)
    except FileNotFoundError:
        raise UsageError(f"{flag} {path}: no such file") from None
    except ValueError as err:
        raise UsageError(_data_error(str(err), path, units, key, flag, units_flag)) from None


def _pair(units):
    """'0/1', '-1/+1': a two-state unit's values as the help text writes them."""
    low, high = units.values
    return f"{low:g}/{high:+g}" if low < 0 else f"{low:g}/{high:g}"


def _data_error(message, path, units, key, flag, units_flag):
    units = as_unit_type(units)
    if units.values is None:  # Gaussian, Potts: not what the command line reads
        return f"{flag} {path}: {units.name} units cannot read it (0/1 and -1/+1 files only)"
    other = as_unit_type("spin" if units.name == "bernoulli" else "bernoulli")
    try:
        datasets.load(path, other, key=key)
    except ValueError:
        pass
    else:
        return (
            f"{flag} {path} holds {_pair(other)} values ({other.name} units) but "
            f"{units_flag} expects {_pair(units)}"
            + (f"; pass --visible-units {other.name}" if units_flag.startswith("--vis") else "")
        )
    first = re.search(r"^(.*), found row (\d+), columns? (\d+) \(value ([^)]*)\)", message)
    n_bad = re.search(r"; (\d+) bad rows?\)$", message)
    if first and n_bad:  # the first offending value, and how many rows have one
        head, row, column, value = first.groups()
        rows = int(n_bad.group(1))
        more = f"; {rows} rows have such values" if rows > 1 else ""
        message = f"{head}, found row {row}, column {column} (value {value}){more}"
        message += " (rows and columns count from 0)"
    return f"{flag} {message}"


# --- evaluation ---------------------------------------------------------------------------


def log_likelihood(params, x, *, max_units=None, seed=0, ais_runs=100, ais_betas=None):
    r"""Per-example :math:`\log p(v)` and the :math:`\log Z` used, and how it was computed.

    Exact when the smaller layer has at most ``max_units`` units (default
    :data:`~numpyro_rbm.partition.EXACT_MAX_UNITS`); otherwise an annealed importance sampling
    estimate of :math:`\log Z` (:func:`numpyro_rbm.ais.ais`, with the base model's biases from
    the marginals of ``x``): the library's one choice, :func:`numpyro_rbm.ais.estimate_log_z`.

    Args:
        x: site values (0/1 or -1/+1 values, standardised real values, integer sequences),
            encoded to the layer by :func:`numpyro_rbm.units.check_data`.

    Returns:
        ``(log_p, log_z, method)`` with ``log_p`` a NumPy array ``(n_examples,)`` and
        ``method`` a description (``"exact"`` or the AIS settings and standard error).
    """
    from .ais import estimate_log_z

    max_units = partition.EXACT_MAX_UNITS if max_units is None else max_units
    x = jnp.asarray(check_data(x, params.visible_units), params.weights.dtype)
    result = estimate_log_z(
        params, key=jax.random.key(seed), data=x, num_runs=ais_runs, betas=ais_betas,
        max_units=max_units,
    )  # fmt: skip
    neg_f = np.asarray(_neg_free_energy(params, x), np.float64)
    if hasattr(result, "log_z"):
        method = (
            f"AIS estimate, {ais_runs} runs, log Z standard error {float(result.stderr):.3f}; "
            "AIS tends to overestimate log p"
        )
        return neg_f - float(result.log_z), float(result.log_z), method
    return neg_f - float(result), float(result), "exact"


@jax.jit
def _neg_free_energy(params, x):
    return -core.free_energy(params, x)


@partial(jax.jit, static_argnums=2)
def _exact_samples_jit(key, params, n):
    return partition.sample_exact(key, params, (n,), max_units=None)[0]


def _exact_samples(key, params, n, max_units):
    partition.enumerated_layer(params, max_units)  # raises EnumerationTooLarge when too large
    return _exact_samples_jit(key, params, n)


def _verdict_statistics(params, v):
    """F(v) and the mean site value (the mean activation for binary and real units; for
    Potts units the mean state index, since the one-hot layer's mean is a constant 1/q)."""
    sites = params.visible_units.from_layer(v, v.dtype)
    return core.free_energy(params, v), jnp.mean(sites, axis=-1)


@partial(jax.jit, static_argnums=(3, 4))
def _trace_statistics(key, params, chains, num_sweeps, warmup):
    return kernels.gibbs_trace(key, params, chains, num_sweeps, _verdict_statistics, warmup=warmup)


def chain_trace(key, params, chains, num_sweeps, warmup=0):
    r"""Runs block-Gibbs sweeps from each chain (:func:`numpyro_rbm.kernels.gibbs_trace`) and
    records, after each, the chain statistics of the verdict: the free energy :math:`F(v_t)`
    and the mean activation :math:`\bar v_t`.

    Args:
        chains: visible states ``(num_chains, n_visible)``.
        num_sweeps: sweeps recorded.
        warmup: sweeps run first and discarded.

    Returns:
        ``(statistics, final_chains)``: ``{"free_energy", "mean_activation"}``, each a NumPy
        array ``(num_chains, num_sweeps)``, and the chains after the last sweep.
    """
    chains = jnp.asarray(chains, params.weights.dtype)
    final, (f, m) = _trace_statistics(key, params, chains, int(num_sweeps), int(warmup))
    stats = {"free_energy": f, "mean_activation": m}
    return {k: np.asarray(v, np.float64) for k, v in stats.items()}, final


def chain_verdict(statistics, method="pcd"):
    """The verdict of :mod:`numpyro_rbm.diagnostics` on chain statistics
    ``{name: (chains, sweeps)}`` (R-hat at most ``RHAT_THRESHOLD``, bulk and tail ESS at least
    ``MIN_ESS``), with a line that says what it means and what to try."""
    diag = diagnostics.diagnose_statistics(statistics)
    rhat = diagnostics.mixing_rhat(statistics)
    ess_bulk = min(row["ess_bulk"] for row in diag.table.values())
    ess_tail = min(row["ess_tail"] for row in diag.table.values())
    num_chains, num_sweeps = np.shape(next(iter(statistics.values())))
    limit, min_ess = diagnostics.RHAT_THRESHOLD, diagnostics.MIN_ESS
    ess = min(ess_bulk, ess_tail)
    line = (
        f"R-hat {rhat:.4f} ({'<=' if rhat <= limit else '>'} {limit}) and ESS {ess:.0f} "
        f"({'>=' if ess >= min_ess else '<'} {min_ess}) over {num_sweeps} sweeps of "
        f"{num_chains} chains"
    )
    advice = "a smaller --learning-rate" + (" or --method pt" if method != "pt" else "")
    consequence = (
        "Gibbs samples need many sweeps (sample --sweeps) and the training gradients may be "
        f"biased; try {advice}"
    )
    if diag.converged:
        verdict = f"OK, the chains mix: {line}"
    elif rhat > limit:
        verdict = f"WARNING, the chains do not mix: {line}. {consequence}"
    elif num_chains * num_sweeps < min_ess:
        verdict = (
            f"WARNING, too few draws for a verdict: {line}, and {num_chains * num_sweeps} "
            f"draws cannot make an ESS of {min_ess}; raise --diagnostic-sweeps"
        )
    else:
        verdict = f"WARNING, the chains mix slowly: {line}. {consequence}"
    return dict(
        rhat=rhat,
        ess_bulk=ess_bulk,
        ess_tail=ess_tail,
        ok=bool(diag.converged),
        sweeps=int(num_sweeps),
        verdict=verdict,
    )


# --- run folder ---------------------------------------------------------------------------


def _write_json(path, obj):
    """Strict JSON (readable by any parser): NaN and infinities become null."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, list | tuple):
            return [clean(v) for v in x]
        return x

    with open(path, "w") as f:
        json.dump(clean(obj), f, indent=1, allow_nan=False)


def _write_history(history, folder):
    """All metrics to history.json; those with one number per evaluation to history.csv."""
    _write_json(
        os.path.join(folder, "history.json"),
        {k: np.asarray(v).tolist() for k, v in history.items()},
    )
    columns = {k: np.asarray(v).tolist() for k, v in history.items() if np.ndim(v) == 1}
    length = max((len(v) for v in columns.values()), default=0)
    with open(os.path.join(folder, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(columns))
        for i in range(length):
            writer.writerow([v[i] if i < len(v) else "" for v in columns.values()])


def _resolve_run_folder(args):
    if args.out is not None:
        return args.out
    name = args.name or time.strftime("%Y%m%d-%H%M%S")
    return os.path.join("runs", name)


def fit_defaults() -> dict:
    """The defaults of the `train` options that :data:`~numpyro_rbm.cli.FIT_OPTIONS` maps to
    :func:`numpyro_rbm.fit` arguments, read from fit's signature: the one place they live."""
    import inspect

    from .learning import fitting

    parameters = inspect.signature(fitting.fit).parameters
    return {option: parameters[name].default for option, name in FIT_OPTIONS.items()}


def _fit_default(name):
    """The default of :func:`numpyro_rbm.fit`'s argument ``name`` (one `train` uses without
    an option of its own, such as ``l1_decay``), read from fit's signature."""
    import inspect

    from .learning import fitting

    return inspect.signature(fitting.fit).parameters[name].default


def _train_config(args, folder):
    """Command-line options, falling back to the stored config on --resume, then defaults
    (``fit``'s own, :func:`fit_defaults`, for the options it shares)."""
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None}
    stored = {}
    config_path = os.path.join(folder, CONFIG_FILE)
    if args.resume:
        if not os.path.exists(config_path):
            raise UsageError(
                f"--resume: {folder} is not a run folder (no {CONFIG_FILE}); train without "
                "--resume first, or point --out at an existing run"
            )
        with open(config_path) as f:
            stored = json.load(f)
        _check_resume(folder, stored, given)
    elif os.path.exists(os.path.join(folder, MODEL_FILE)) or os.path.isdir(
        os.path.join(folder, "checkpoints")
    ):
        raise UsageError(
            f"{folder} already holds a run; pass --resume to continue it or choose another --out"
        )
    config = {**TRAIN_DEFAULTS, **fit_defaults(), **stored, **given}
    if config["image_shape"] is not None:
        config["image_shape"] = list(config["image_shape"])
    for name in ("hidden", "epochs", "batch_size", "k", "chains"):
        if config[name] is not None and config[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {config[name]}")
    if not config["learning_rate"] > 0:
        raise UsageError(f"--learning-rate must be positive, got {config['learning_rate']}")
    if not 0 <= config["test_fraction"] < 1:
        raise UsageError(f"--test-fraction must be in [0, 1), got {config['test_fraction']}")
    return config


# Settings a resumed run may change: the step size and the image shape (plots only).
_RESUME_MAY_CHANGE = ("learning_rate", "image_shape")


def _check_resume(folder, stored, given):
    """--resume continues a run with its own settings: a changed setting that defines the run
    (and its checkpoint) is refused, naming the flags."""
    changed = [
        f"--{name.replace('_', '-')} {_flag_value(stored.get(name))} (not {_flag_value(value)})"
        for name, value in given.items()
        if name not in _RESUME_MAY_CHANGE and name in stored and stored[name] != value
    ]
    if changed:
        raise UsageError(
            f"--resume continues the run in {folder} with its own settings; it was trained "
            f"with {', '.join(changed)}: omit the options that differ, or start a new run "
            "with another --out"
        )


def _flag_value(value):
    return "(on)" if value is True else "(off)" if value in (False, None) else value


# --- commands -----------------------------------------------------------------------------


def _precision(use_float64):
    return jax.enable_x64(True) if use_float64 else nullcontext()


def cmd_train(args) -> int:
    if args.diagnostic_sweeps < 8:
        raise UsageError(f"--diagnostic-sweeps must be at least 8, got {args.diagnostic_sweeps}")
    folder = _resolve_run_folder(args)
    config = _train_config(args, folder)
    with _precision(config["float64"]):
        return _train(args, folder, config)


def _train(args, folder, config) -> int:
    from . import learning  # optax and tqdm: imported on use

    started = time.perf_counter()
    say = (lambda *a: None) if args.quiet else partial(print, flush=True)
    units = config["units"]
    if units is None:
        units, why = infer_units(config["data"], config["key"])
        say(f"visible units: {units} (inferred: {why})")
    data = load_data(
        config["data"],
        units=units,
        key=config["key"],
        test_data=config["test_data"],
        test_fraction=config["test_fraction"],
        seed=config["seed"],
        image_shape=config["image_shape"],
        alphabet=config["alphabet"],
    )
    if config["batch_size"] > len(data.train):
        raise UsageError(
            f"--batch-size {config['batch_size']} exceeds the {len(data.train)} training "
            f"examples; use --batch-size {len(data.train)} or less"
        )
    n_test = 0 if data.test is None else len(data.test)
    images = f" ({data.image_shape[0]}x{data.image_shape[1]} images)" if data.image_shape else ""
    what = {
        "binary": f"{data.units} units",
        "real": "real values, standardised by the training rows' means and standard "
        "deviations (recorded in the model), for Gaussian units",
        "alignment": f"sites of the alphabet {data.alphabet!r}, for {data.units} units",
    }[data.kind]
    say(
        f"data: {data.name}, {len(data.train)} train / {n_test} test examples of "
        f"{data.train.shape[1]} {what}{images}"
    )
    os.makedirs(folder, exist_ok=True)
    if not args.resume:  # a resumed run keeps its config until the new settings have worked
        _write_json(os.path.join(folder, CONFIG_FILE), config)
    epochs = (
        f"{config['epochs']} epochs"
        if config["epochs"] is not None
        else f"fit's default epochs ({learning.fitting.DEFAULT_EPOCHS}, or more to make "
        f"{learning.fitting.MIN_UPDATES:,} updates)"
    )
    say(
        f"training: {config['hidden']} {config['hidden_units']} hidden units, "
        f"{config['method'].upper()}, {epochs}, batch {config['batch_size']}, "
        f"learning rate {config['learning_rate']}, L1 penalty {_fit_default('l1_decay')}, "
        f"{'float64' if config['float64'] else 'float32'}"
    )
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _CommandLineWarnings(config["method"], warnings.showwarning)
            result = learning.fit(
                data.train,
                config["hidden"],
                method=config["method"],
                epochs=config["epochs"],
                batch_size=config["batch_size"],
                learning_rate=config["learning_rate"],
                k=config["k"],
                num_chains=config["chains"],
                seed=config["seed"],
                dtype="float64" if config["float64"] else "float32",
                visible_units=data.units,
                hidden_units=config["hidden_units"],
                test_data=data.test,
                checkpoint_dir=os.path.join(folder, "checkpoints"),
                resume=args.resume,
                progress=not args.quiet,
            )
    except KeyboardInterrupt:
        print(
            f"interrupted: every finished epoch is checkpointed in {folder}; continue with "
            f"`numpyro-rbm train --out {folder} --resume`",
            file=sys.stderr,
        )
        return 130  # the shell's status for Ctrl-C
    _write_json(os.path.join(folder, CONFIG_FILE), config)

    summary = dict(data=data.name, n_train=len(data.train), n_test=n_test, config=config)
    key_chains, key_samples = jax.random.split(jax.random.key(config["seed"] + 1))
    summary.update(_evaluate_fit(result.params, data, config["seed"], say))
    statistics, final_chains = _diagnose_chains(
        result, data, args.diagnostic_sweeps, key_chains, say
    )
    summary["chains"] = chain_verdict(statistics, config["method"])
    _save_run(folder, result, data, config, summary)
    say(f"plotting: {len(FIGURES[data.kind])} figures")
    _draw_figures(folder, result, data, statistics, final_chains, key_samples)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    _write_json(os.path.join(folder, "summary.json"), summary)
    _print_report(folder, data, summary)
    return 0


class _CommandLineWarnings:
    """fit's warnings in the words of the command line: its "not mixing" warning names Python
    arguments (method='pt', k, learning_rate), the command's flags."""

    def __init__(self, method, show):
        self.method, self.show = method, show

    def __call__(self, message, category, *args, **kwargs):
        from .learning import ChainsNotMixing

        if isinstance(message, ChainsNotMixing):
            pt = "--method pt, " if self.method != "pt" else ""
            message = (
                f"epoch {message.epoch}: the persistent chains do not mix (R-hat over "
                f"{diagnostics.MONITOR_SWEEPS} sweeps {message.rhat:.2f} > "
                f"{diagnostics.RHAT_THRESHOLD}), so the training gradients may be biased; "
                f"try {pt}a larger --k or a smaller --learning-rate (docs/diagnostics.md)"
            )
        self.show(message, category, *args, **kwargs)


_CHAIN_FIGURES = ("chains_trace.png", "chains_rank.png")
#: The figures of a run folder, by the kind of data (:attr:`_Data.kind`).
FIGURES = {
    "binary": ("learning_curves.png", "filters.png", "samples.png") + _CHAIN_FIGURES,
    "real": ("learning_curves.png", "filters.png", "marginals.png", "correlations.png")
    + _CHAIN_FIGURES,
    "alignment": (
        "learning_curves.png", "filters.png", "site_frequencies.png", "pair_correlations.png",
        "site_logo.png",
    ) + _CHAIN_FIGURES,
}  # fmt: skip
FIGURE_SAMPLES = 2000  # exact model samples drawn for the figures of real data and alignments


def log_jacobian(standardization) -> float:
    r""":math:`-\sum_j \log s_j`: what turns the log-density of standardised values
    :math:`z = (x - m)/s` into that of the data's own values, :math:`\log p(x) = \log p(z) -
    \sum_j \log s_j`."""
    return -float(np.sum(np.log(standardization.scale)))


def _evaluate_fit(params, data, seed, say) -> dict:
    """Exact (or AIS) log-likelihood of the final model on the train and test data."""
    from .ais import choose_method

    if choose_method(params) == "exact":
        layer = partition.enumerated_layer(params, None)
        n = params.n_hidden if layer == "hidden" else params.n_visible
        how = f"log Z by enumerating the 2^{n} states of the {layer} layer"
    else:
        how = "log Z by annealed importance sampling"
    say(f"evaluating: log-likelihood of the train and test data ({how})")
    summary = {}
    for split, x in (("train", data.train), ("test", data.test)):
        if x is None:
            continue
        log_p, log_z, method = log_likelihood(params, x, seed=seed)
        summary[f"{split}_log_likelihood"] = float(log_p.mean())
        if data.standardization is not None:
            summary[f"{split}_log_likelihood_data_units"] = float(
                log_p.mean() + log_jacobian(data.standardization)
            )
        summary[f"{split}_log_likelihood_se"] = float(log_p.std() / math.sqrt(len(log_p)))
        summary.update(log_z=log_z, log_likelihood_method=method)
    return summary


def _diagnose_chains(result, data, sweeps, key, say):
    """Runs the persistent chains on at the final parameters: ``sweeps // 2`` discarded, then
    ``sweeps`` recorded for the verdict and the trace plots."""
    chains = np.asarray(result.chains).reshape(-1, result.params.n_visible)
    say(
        f"diagnosing: {sweeps // 2} + {sweeps} more Gibbs sweeps of the {len(chains)} "
        "persistent chains for the R-hat and ESS verdict"
    )
    return chain_trace(key, result.params, chains, sweeps, warmup=sweeps // 2)


def _save_run(folder, result, data, config, summary):
    metadata = dict(
        data=config["data"],
        data_name=data.name,
        image_shape=None if data.image_shape is None else list(data.image_shape),
        units=data.units,
        alphabet=data.alphabet,
        key=config["key"],
        test_data=config["test_data"],
        test_fraction=config["test_fraction"],
        seed=config["seed"],
        method=config["method"],
        test_log_likelihood=summary.get("test_log_likelihood"),
        log_likelihood_optimum=data.optimum,
        **(data.standardization.to_metadata() if data.standardization else {}),
    )
    io.save_params(os.path.join(folder, MODEL_FILE), result.params, metadata)
    _write_history(result.history, folder)


def _draw_figures(folder, result, data, statistics, final_chains, key):
    from . import plots  # pyplot: imported on use

    params, figures = result.params, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's FutureWarning about its refactor
        figures["learning_curves.png"] = plots.plot_learning_curves(
            result.history, optimum=data.optimum
        )
        figures["filters.png"] = plots.plot_filters(params.weights, data.image_shape)
        draw = {"binary": _binary_figures, "real": _real_figures, "alignment": _site_figures}
        figures.update(draw[data.kind](plots, params, data, final_chains, key))
        draws = statistics["free_energy"]
        shown = draws[:TRACE_CHAINS]
        of = f"{len(shown)} of {len(draws)} persistent chains"
        figures["chains_trace.png"] = plots.plot_chain_trace(
            shown, "free_energy", f"Free energy F(v) along {of}, continued after training"
        )
        figures["chains_rank.png"] = plots.plot_chain_rank(
            shown, "free_energy", f"Rank plot of F(v), {of} (flat bars = chains agree)"
        )
    for name, fig in figures.items():
        plots.save(fig, os.path.join(folder, name))


def _binary_figures(plots, params, data, final_chains, key):
    panels = [("training data", data.train[:64])]
    try:
        samples = _exact_samples(key, params, 64, max_units=20)
        panels.append(("exact samples from the model", np.asarray(samples)))
    except partition.EnumerationTooLarge:
        pass
    panels.append(("persistent chains after diagnostics", np.asarray(final_chains)[:64]))
    return {"samples.png": plots.plot_images(panels, data.image_shape, ncols=8)}


def _model_samples(key, params, final_chains):
    """Site values of :data:`FIGURE_SAMPLES` exact samples when the model is enumerable, else
    of the persistent chains after the diagnostic sweeps; and what they are."""
    try:
        v, label = _exact_samples(key, params, FIGURE_SAMPLES, max_units=20), "exact samples"
    except partition.EnumerationTooLarge:
        v, label = jnp.asarray(final_chains), f"{len(final_chains)} persistent chains"
    return np.asarray(params.visible_units.from_layer(v)), label


def _real_figures(plots, params, data, final_chains, key):
    """Marginals and correlations in the data's units: the training rows against model
    samples, both mapped back by the recorded standardisation."""
    samples, label = _model_samples(key, params, final_chains)
    x = data.standardization.invert(data.train)
    y = data.standardization.invert(samples)
    return {
        "marginals.png": plots.plot_marginals(x, y, label),
        "correlations.png": plots.plot_correlations(x, y, label),
    }


_MAX_PAIR_POINTS = 20_000  # pair correlations drawn (a fixed random subset beyond that)


def _site_figures(plots, params, data, final_chains, key):
    """Site frequencies, pair correlations and site logos: the training sequences against
    model samples (:func:`numpyro_rbm.potts.site_frequencies`)."""
    from . import potts

    samples, label = _model_samples(key, params, final_chains)
    q = len(data.alphabet)
    f_data = potts.site_frequencies(data.train, q)
    f_model = potts.site_frequencies(samples, q)
    c_data, c_model = _pair_correlations(data.train, q), _pair_correlations(samples, q)
    if len(c_data) > _MAX_PAIR_POINTS:
        keep = np.random.default_rng(0).choice(len(c_data), _MAX_PAIR_POINTS, replace=False)
        c_data, c_model = c_data[keep], c_model[keep]
    return {
        "site_frequencies.png": plots.plot_site_frequencies(f_data, f_model, label),
        "pair_correlations.png": plots.plot_pair_correlations(c_data, c_model, label),
        "site_logo.png": plots.plot_site_logo(f_data, f_model, data.alphabet, label),
    }


def _pair_correlations(sequences, q):
    r"""The connected correlations :math:`C_{ij}(a, b) = f_{ij}(a, b) - f_i(a) f_j(b)` of all
    site pairs :math:`i < j`, flattened: :func:`numpyro_rbm.potts.pair_frequencies` as one
    matrix product of the one-hot sequences (its einsum is slow for long alignments)."""
    x = np.eye(q)[np.asarray(sequences)]  # (N, L, q)
    n, length = x.shape[:2]
    flat = x.reshape(n, length * q)
    f = flat.mean(0)
    c = (flat.T @ flat / n - np.outer(f, f)).reshape(length, q, length, q)
    i, j = np.triu_indices(length, k=1)
    return c[i, :, j, :].reshape(-1)


def _print_report(folder, data, summary):
    print(f"run folder: {folder} (model, history.csv/json, {len(FIGURES[data.kind])} figures)")
    if "test_log_likelihood" in summary:
        optimum = "" if data.optimum is None else f" (optimum {data.optimum:.4f})"
        print(
            f"test log-likelihood ({summary['log_likelihood_method']}): "
            f"{summary['test_log_likelihood']:.4f} +- {summary['test_log_likelihood_se']:.4f} "
            f"nats per example{optimum}; train {summary['train_log_likelihood']:.4f}; "
            f"log Z = {summary['log_z']:.4f}"
        )
    else:
        print(
            f"train log-likelihood ({summary['log_likelihood_method']}): "
            f"{summary['train_log_likelihood']:.4f} nats per example (no test data)"
        )
    if data.standardization is not None:
        split = "test" if "test_log_likelihood" in summary else "train"
        print(
            f"(of the standardised values; the {split} log-density of the values in the data's "
            f"units is {summary[f'{split}_log_likelihood_data_units']:.4f} nats per example)"
        )
    print(f"chains: {summary['chains']['verdict']}", flush=True)


def _load_model(path):
    model_path = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.exists(model_path):
        where = f"{path} has no {MODEL_FILE}" if os.path.isdir(path) else f"{path}: no such file"
        raise UsageError(f"{where}; pass a run folder written by `numpyro-rbm train` or its model")
    with jax.enable_x64(True):  # keeps a float64 model in float64; float32 stays float32
        params, metadata = io.load_params(model_path)
    return params, dict(metadata or {})


def _standardization(meta):
    """The run's recorded standardisation (real-valued data), else ``None``."""
    return datasets.Standardization.from_metadata(meta) if "standardization" in meta else None


def cmd_evaluate(args) -> int:
    params, meta = _load_model(args.model)
    units = params.visible_units
    standardization = _standardization(meta)
    use_float64 = args.float64 or params.weights.dtype == np.float64
    with _precision(use_float64):
        if use_float64:
            params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        if args.data is None and meta.get("data") is None:
            raise UsageError(f"{args.model} does not record its data set; pass --data FILE")
        if args.data is None:
            data = load_data(
                meta["data"],
                units=as_unit_type(meta.get("units", "bernoulli")).name,
                key=meta.get("key"),
                test_data=meta.get("test_data"),
                test_fraction=meta.get("test_fraction", 0.2),
                seed=meta.get("seed", 0),
                alphabet=meta.get("alphabet"),
                standardization=standardization,
            )
            x, what = (data.test, "test split") if data.test is not None else (data.train, "data")
            what = f"{data.name} {what}"
        else:
            x = read_rows(
                args.data, units.name, args.key, "--data", f"the model ({units.spec} units)",
                meta.get("alphabet"),
            )[0]  # fmt: skip
            if standardization is not None and x.shape[1] == params.n_visible:
                x = standardization.apply(x)
            what = args.data
        n_sites = units.site_size(params.n_visible)
        if x.shape[1] != n_sites:
            noun = "sites" if n_sites != params.n_visible else "visible units"
            raise UsageError(f"{what} has {x.shape[1]} columns but the model has {n_sites} {noun}")
        log_p, log_z, how = log_likelihood(
            params, x, max_units=args.max_units, seed=args.seed, ais_runs=args.ais_runs,
            ais_betas=args.ais_betas,
        )  # fmt: skip
    se = log_p.std() / math.sqrt(len(log_p))
    print(
        f"log-likelihood ({how}) of {what}: {log_p.mean():.4f} +- {se:.4f} nats per example "
        f"over {len(log_p)} examples; log Z = {log_z:.4f}"
    )
    if standardization is not None:
        print(
            f"(of the values standardised as the training data were; in the data's units the "
            f"log-density is {log_p.mean() + log_jacobian(standardization):.4f} nats per example)"
        )
    return 0


_SAMPLE_FORMATS = (".npy", ".csv", ".fasta", ".fa")


def _sample_path(out, alignment):
    """--out with its format: .npy (default), .csv, or FASTA for a model of an alignment."""
    ext = os.path.splitext(out)[1].lower()
    if ext not in _SAMPLE_FORMATS:
        out, ext = (out + ".fasta", ".fasta") if alignment else (out + ".npy", ".npy")
    if ext in (".fasta", ".fa") and not alignment:
        raise UsageError(f"--out {out}: FASTA holds sequences; this model's samples are numbers")
    if ext == ".csv" and alignment:
        raise UsageError(f"--out {out}: write an alignment's samples as .fasta (or .npy)")
    parent = os.path.dirname(out)
    if parent and not os.path.isdir(parent):
        raise UsageError(f"--out {out}: folder {parent} does not exist")
    return out, ext


def _write_samples(path, ext, sites, meta):
    """Site values to ``path``: real values mapped back to the data's units by the recorded
    standardisation; sequences decoded by the recorded alphabet."""
    standardization = _standardization(meta)
    if standardization is not None:
        sites = standardization.invert(sites)  # float64, in the data's units
    if ext in (".fasta", ".fa"):
        strings = datasets.Alignment(sites, [], meta["alphabet"]).decode()
        with open(path, "w") as f:
            f.writelines(f">sample_{i}\n{seq}\n" for i, seq in enumerate(strings))
    elif ext == ".csv":
        np.savetxt(path, sites, delimiter=",", fmt="%.17g" if sites.dtype == np.float64 else "%g")
    else:
        np.save(path, sites)


def cmd_sample(args) -> int:
    params, meta = _load_model(args.model)
    for flag, value in (("-n", args.n), ("--sweeps", args.sweeps)):
        if value < 1:
            raise UsageError(f"{flag} must be at least 1, got {value}")
    out, ext = _sample_path(args.out, meta.get("alphabet") is not None)
    shape = meta.get("image_shape")
    if args.png and shape is None:
        raise UsageError(
            f"--png: {args.model} records no image shape (train with --image-shape HxW)"
        )
    key = jax.random.key(args.seed)
    max_units = partition.EXACT_MAX_UNITS if args.max_units is None else args.max_units
    with _precision(params.weights.dtype == np.float64):
        method = args.method
        if method == "auto":
            from .ais import choose_method

            cut_off = min(partition.EXACT_MAX_UNITS, max_units)
            method = "exact" if choose_method(params, "auto", cut_off) == "exact" else "gibbs"
        if method == "exact":
            try:
                v = _exact_samples(key, params, args.n, max_units)
            except partition.EnumerationTooLarge:
                raise UsageError(
                    f"--method exact: the model's smaller layer has more than --max-units "
                    f"{max_units} units; use --method gibbs or a larger --max-units"
                ) from None
            how = "exact"
        else:
            v = _gibbs_samples(key, params, args.n, args.sweeps)
            how = f"{args.n} independent Gibbs chains after {args.sweeps} sweeps each"
        sites = np.asarray(params.visible_units.from_layer(v))
    if sites.dtype.kind == "f":
        sites = sites.astype(np.float32)
    _write_samples(out, ext, sites, meta)
    units = " in the data's units" if "standardization" in meta else ""
    wrote = f"wrote {len(sites)} samples ({how}){units} to {out}"
    if args.png:
        from . import plots  # pyplot: imported on use

        png = os.path.splitext(out)[0] + ".png"
        fig = plots.plot_images(
            [(f"{min(len(v), 256)} samples ({'exact' if how == 'exact' else 'Gibbs'})", v[:256])],
            tuple(shape),
        )
        plots.save(fig, png)
        wrote += f" and image tiles to {png}"
    print(wrote)
    return 0


@partial(jax.jit, static_argnums=(2, 3))
def _gibbs_samples(key, params, n, sweeps):
    """``n`` independent chains from random states (the unit type's
    :meth:`~numpyro_rbm.units.UnitType.random_layer`), after ``sweeps`` sweeps
    (:func:`numpyro_rbm.kernels.gibbs`)."""
    key_init, key_run = jax.random.split(key)
    field = jnp.broadcast_to(params.visible_bias, (n, params.n_visible))
    v0 = params.visible_layer.random_layer(key_init, field)
    return kernels.gibbs(key_run, params, v0, sweeps)[0]
