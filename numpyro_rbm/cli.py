r"""The ``numpyro-rbm`` command: train, evaluate and sample RBMs from the shell.

.. code-block:: console

    $ numpyro-rbm train                        # 8x8 digits, 16 hidden units, PCD
    $ numpyro-rbm evaluate runs/<run>          # exact log-likelihood of the test split
    $ numpyro-rbm sample runs/<run> -n 64 --out samples.npy

``train`` writes a run folder with the model, the metric history (CSV and JSON), figures
(learning curves, weight filters, samples, trace and rank plots of the chains) and a
``summary.json``, then prints the exact test log-likelihood

.. math::

    \frac{1}{N} \sum_{n=1}^N \log p(v_n) = -\frac{1}{N} \sum_{n=1}^N F(v_n) - \log Z,

with :math:`\log Z` from exact enumeration of the smaller layer
(:func:`numpyro_rbm.partition.log_partition`), and a verdict on the persistent chains: after
training they are run on for more Gibbs sweeps and the rank-normalised split
:math:`\widehat{R}` and bulk effective sample size of their free energy :math:`F(v_t)` are
computed with ArviZ (Vehtari et al., *Rank-normalization, folding, and localization: an
improved* :math:`\widehat{R}` *for assessing convergence of MCMC*, Bayesian Analysis 2021).

User errors (a missing file, bad values, bad options) print one line and exit with status 2.
Set ``NUMPYRO_RBM_DEBUG=1`` to see the full traceback instead.
"""

from __future__ import annotations

import argparse
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
import numpy as np

from . import core, datasets, io, kernels, partition
from .partition import EXACT_MAX_UNITS

__all__ = ["main", "build_parser"]

MODEL_FILE = "model.npz"
CONFIG_FILE = "config.json"

# Defaults of `train`; options left unset on the command line fall back to the run folder's
# config.json on --resume, then to these.
TRAIN_DEFAULTS = dict(
    data="digits",
    key=None,
    units="bernoulli",
    test_data=None,
    test_fraction=0.2,
    image_shape=None,
    hidden=16,
    method="pcd",
    epochs=100,
    batch_size=32,
    learning_rate=0.005,
    k=1,
    chains=100,
    seed=0,
    float64=False,
)

# Verdict thresholds for the chains (Vehtari et al. 2021): rank-normalised R-hat at most 1.01,
# and a bulk ESS of at least 400, their minimum for trusting R-hat and Monte Carlo errors.
RHAT_MAX = 1.01
ESS_MIN = 400
TRACE_CHAINS = 4  # chains drawn in the trace / rank plots (more are unreadable)


class UsageError(ValueError):
    """A mistake in the command line or the files it names: reported in one line, status 2."""


# --- data ---------------------------------------------------------------------------------


class _Data:
    """Train / test arrays with what the reports need to know about them."""

    def __init__(self, train, test, image_shape, name, optimum=None):
        self.train, self.test, self.image_shape = train, test, image_shape
        self.name, self.optimum = name, optimum


def _parse_image_shape(text):
    try:
        h, w = (int(s) for s in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected HEIGHTxWIDTH such as 8x8, got {text!r}"
        ) from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"image sides must be positive, got {text!r}")
    return (h, w)


def _to_units(x, units):
    """Built-in data sets are {0, 1}; spins are 2x - 1."""
    return (2.0 * x - 1.0).astype(np.float32) if units == "spin" else x


def load_data(
    spec, *, units="bernoulli", key=None, test_data=None, test_fraction=0.2, seed=0,
    image_shape=None,
) -> _Data:  # fmt: skip
    """Resolves ``--data``: ``digits``, ``bars-and-stripes:N`` or a ``.npy``/``.npz``/``.csv``
    file (split into train and test by a seeded permutation unless ``test_data`` is given)."""
    optimum = None
    if test_data is not None and (spec == "digits" or spec.startswith("bars")):
        raise UsageError(f"--test-data applies to --data FILE, not to the built-in {spec!r}")
    if spec == "digits":
        d = datasets.digits(test_fraction=test_fraction, seed=seed)
        train, test, shape, name = d.train, d.test, d.image_shape, d.name
        train, test = _to_units(train, units), _to_units(test, units)
    elif spec.startswith(("bars-and-stripes:", "bars:")):
        n_text = spec.split(":", 1)[1]
        if not n_text.isdigit():
            raise UsageError(f"--data {spec}: expected bars-and-stripes:N with N an integer")
        n = int(n_text)
        x = _to_units(datasets.bars_and_stripes(n), units)
        # Every pattern is equally likely, so the data set is its own test set and the best
        # possible mean log-likelihood is -log(number of patterns).
        train, test, shape, name = x, x, (n, n), f"bars-and-stripes-{n}"
        optimum = -math.log(len(x))
    else:
        x = datasets.load(spec, units, key=key)
        name, shape = os.path.splitext(os.path.basename(spec))[0], None
        if test_data is not None:
            train, test = x, datasets.load(test_data, units, key=key)
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
    if image_shape is not None:
        shape = tuple(image_shape)
    n_visible = train.shape[1]
    if shape is not None and shape[0] * shape[1] != n_visible:
        raise UsageError(
            f"--image-shape {shape[0]}x{shape[1]} has {shape[0] * shape[1]} pixels but the data "
            f"have {n_visible} columns"
        )
    return _Data(train, test, shape, name, optimum)


# --- evaluation ---------------------------------------------------------------------------


def log_likelihood(params, x, *, max_units=EXACT_MAX_UNITS, seed=0, ais_runs=100, ais_betas=None):
    r"""Per-example :math:`\log p(v)` and the :math:`\log Z` used, and how it was computed.

    Exact when the smaller layer has at most ``max_units`` units; otherwise an annealed
    importance sampling estimate of :math:`\log Z` (:func:`numpyro_rbm.ais.ais`, with the
    base model's biases from the marginals of ``x``): the library's one choice,
    :func:`numpyro_rbm.ais.choose_method`.

    Returns:
        ``(log_p, log_z, method)`` with ``log_p`` a NumPy array ``(n_examples,)`` and
        ``method`` a description (``"exact"`` or the AIS settings and standard error).
    """
    from .ais import estimate_log_z

    x = jnp.asarray(x, params.weights.dtype)
    result = estimate_log_z(
        params, key=jax.random.key(seed), data=x, num_runs=ais_runs, betas=ais_betas,
        max_units=max_units,
    )  # fmt: skip
    log_p = np.asarray(_neg_free_energy(params, x), np.float64)
    if hasattr(result, "log_z"):
        method = (
            f"AIS estimate, {ais_runs} runs, log Z standard error {float(result.stderr):.3f}; "
            "AIS tends to overestimate log p"
        )
        return log_p - float(result.log_z), float(result.log_z), method
    return log_p - float(result), float(result), "exact"


@jax.jit
def _neg_free_energy(params, x):
    return -core.free_energy(params, x)


@partial(jax.jit, static_argnums=2)
def _exact_samples_jit(key, params, n):
    return partition.sample_exact(key, params, (n,), max_units=None)[0]


def _exact_samples(key, params, n, max_units):
    partition.enumerated_layer(params, max_units)  # raises EnumerationTooLarge when too large
    return _exact_samples_jit(key, params, n)


@partial(jax.jit, static_argnums=(3, 4))
def _trace_free_energies(key, params, chains, num_sweeps, warmup):
    return kernels.gibbs_trace(key, params, chains, num_sweeps, core.free_energy, warmup=warmup)


def chain_free_energies(key, params, chains, num_sweeps, warmup=0):
    r"""Runs block-Gibbs sweeps from each chain and records :math:`F(v_t)` after each
    (:func:`numpyro_rbm.kernels.gibbs_trace`).

    Args:
        chains: visible states ``(num_chains, n_visible)``.
        num_sweeps: sweeps recorded.
        warmup: sweeps run first and discarded.

    Returns:
        ``(draws, final_chains)``: the free energies ``(num_chains, num_sweeps)`` as NumPy and
        the chains after the last sweep.
    """
    chains = jnp.asarray(chains, params.weights.dtype)
    final, draws = _trace_free_energies(key, params, chains, int(num_sweeps), int(warmup))
    return np.asarray(draws, np.float64), final


def chain_verdict(draws, method="pcd"):
    """R-hat and bulk ESS of a scalar statistic ``(chains, draws)``, with a verdict line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # ArviZ announces its refactor
        import arviz as az

    idata = az.from_dict(posterior={"free_energy": np.asarray(draws, np.float64)})
    rhat = float(az.rhat(idata)["free_energy"])
    ess = float(az.ess(idata)["free_energy"])
    ok = rhat <= RHAT_MAX and ess >= ESS_MIN
    num_chains, num_draws = np.shape(draws)
    line = (
        f"R-hat {rhat:.4f} ({'<=' if rhat <= RHAT_MAX else '>'} {RHAT_MAX}), bulk ESS "
        f"{ess:.0f} ({'>=' if ess >= ESS_MIN else '<'} {ESS_MIN}) of the free energy of "
        f"{num_chains} chains x {num_draws} sweeps"
    )
    if ok:
        verdict = f"OK, the chains agree: {line}"
    else:
        advice = "a smaller --learning-rate" + (" or --method pt" if method != "pt" else "")
        verdict = (
            f"WARNING, Gibbs chains mix slowly on this model: {line}. Gibbs samples need many "
            f"sweeps (sample --sweeps) and the training gradients may be biased; try {advice}"
        )
    return dict(rhat=rhat, ess_bulk=ess, ok=ok, verdict=verdict)


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


def _train_config(args, folder):
    """Command-line options, falling back to the stored config on --resume, then defaults."""
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
    elif os.path.exists(os.path.join(folder, MODEL_FILE)) or os.path.isdir(
        os.path.join(folder, "checkpoints")
    ):
        raise UsageError(
            f"{folder} already holds a run; pass --resume to continue it or choose another --out"
        )
    config = {**TRAIN_DEFAULTS, **stored, **given}
    if config["image_shape"] is not None:
        config["image_shape"] = list(config["image_shape"])
    for name in ("hidden", "epochs", "batch_size", "k", "chains"):
        if config[name] < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {config[name]}")
    if not config["learning_rate"] > 0:
        raise UsageError(f"--learning-rate must be positive, got {config['learning_rate']}")
    if not 0 <= config["test_fraction"] < 1:
        raise UsageError(f"--test-fraction must be in [0, 1), got {config['test_fraction']}")
    return config


# --- commands -----------------------------------------------------------------------------


def _precision(use_float64):
    return jax.enable_x64(True) if use_float64 else nullcontext()


def cmd_train(args) -> int:
    folder = _resolve_run_folder(args)
    config = _train_config(args, folder)
    with _precision(config["float64"]):
        return _train(args, folder, config)


def _train(args, folder, config) -> int:
    from . import learning, plots  # imported on use: pyplot, optax and tqdm are slow

    started = time.perf_counter()
    say = (lambda *a: None) if args.quiet else print
    data = load_data(
        config["data"],
        units=config["units"],
        key=config["key"],
        test_data=config["test_data"],
        test_fraction=config["test_fraction"],
        seed=config["seed"],
        image_shape=config["image_shape"],
    )
    n_test = 0 if data.test is None else len(data.test)
    images = f" ({data.image_shape[0]}x{data.image_shape[1]} images)" if data.image_shape else ""
    say(
        f"data: {data.name}, {len(data.train)} train / {n_test} test examples of "
        f"{data.train.shape[1]} {config['units']} units{images}"
    )
    os.makedirs(folder, exist_ok=True)
    if not args.resume:  # a resumed run keeps its config until the new settings have worked
        _write_json(os.path.join(folder, CONFIG_FILE), config)
    say(
        f"training: {config['hidden']} hidden units, {config['method'].upper()}, "
        f"{config['epochs']} epochs, batch {config['batch_size']}, learning rate "
        f"{config['learning_rate']}, {'float64' if config['float64'] else 'float32'}"
    )
    dtype = "float64" if config["float64"] else "float32"
    try:
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
            dtype=dtype,
            visible_units=config["units"],
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
    params = result.params
    _write_json(os.path.join(folder, CONFIG_FILE), config)

    # Exact (or AIS) log-likelihood of the final model.
    summary = dict(data=data.name, n_train=len(data.train), n_test=n_test, config=config)
    key_chains, key_samples = jax.random.split(jax.random.key(config["seed"] + 1))
    for split, x in (("train", data.train), ("test", data.test)):
        if x is None:
            continue
        log_p, log_z, how = log_likelihood(params, x, seed=config["seed"])
        summary[f"{split}_log_likelihood"] = float(log_p.mean())
        summary[f"{split}_log_likelihood_se"] = float(log_p.std() / math.sqrt(len(log_p)))
        summary.update(log_z=log_z, log_likelihood_method=how)

    # Chain diagnostics: continue the persistent chains with the final parameters.
    chains = np.asarray(result.chains).reshape(-1, data.train.shape[1])
    draws, final_chains = chain_free_energies(
        key_chains, params, chains, args.diagnostic_sweeps, warmup=args.diagnostic_sweeps // 2
    )
    diag = chain_verdict(draws, config["method"])
    summary["chains"] = diag

    metadata = dict(
        data=config["data"],
        data_name=data.name,
        image_shape=None if data.image_shape is None else list(data.image_shape),
        units=config["units"],
        key=config["key"],
        test_data=config["test_data"],
        test_fraction=config["test_fraction"],
        seed=config["seed"],
        method=config["method"],
        test_log_likelihood=summary.get("test_log_likelihood"),
        log_likelihood_optimum=data.optimum,
    )
    io.save_params(os.path.join(folder, MODEL_FILE), params, metadata)
    _write_history(result.history, folder)

    # Figures.
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's FutureWarning about its refactor
        figures["learning_curves.png"] = plots.plot_learning_curves(
            result.history, optimum=data.optimum
        )
        figures["filters.png"] = plots.plot_filters(params.weights, data.image_shape)
        panels = [("training data", data.train[:64])]
        try:
            samples = _exact_samples(key_samples, params, 64, max_units=EXACT_MAX_UNITS)
            panels.append(("exact samples from the model", np.asarray(samples)))
        except partition.EnumerationTooLarge:
            pass
        panels.append(("persistent chains after diagnostics", np.asarray(final_chains)[:64]))
        figures["samples.png"] = plots.plot_images(panels, data.image_shape, ncols=8)
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

    summary["seconds"] = round(time.perf_counter() - started, 2)
    _write_json(os.path.join(folder, "summary.json"), summary)

    print(f"run folder: {folder} (model, history.csv/json, {len(figures)} figures)")
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
    print(f"chains: {diag['verdict']}")
    return 0


def _load_model(path):
    model_path = os.path.join(path, MODEL_FILE) if os.path.isdir(path) else path
    if not os.path.exists(model_path):
        where = f"{path} has no {MODEL_FILE}" if os.path.isdir(path) else f"{path}: no such file"
        raise UsageError(f"{where}; pass a run folder written by `numpyro-rbm train` or its model")
    with jax.enable_x64(True):  # keeps a float64 model in float64; float32 stays float32
        params, metadata = io.load_params(model_path)
    return params, dict(metadata or {})


def cmd_evaluate(args) -> int:
    params, meta = _load_model(args.model)
    use_float64 = args.float64 or params.weights.dtype == np.float64
    with _precision(use_float64):
        if use_float64:
            params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        if args.data is None and meta.get("data") is None:
            raise UsageError(f"{args.model} does not record its data set; pass --data FILE")
        if args.data is None:
            data = load_data(
                meta["data"],
                units=meta.get("units", "bernoulli"),
                key=meta.get("key"),
                test_data=meta.get("test_data"),
                test_fraction=meta.get("test_fraction", 0.2),
                seed=meta.get("seed", 0),
            )
            x, what = (data.test, "test split") if data.test is not None else (data.train, "data")
            what = f"{data.name} {what}"
        else:
            x = datasets.load(args.data, params.visible_units, key=args.key)
            what = args.data
        if x.shape[1] != params.n_visible:
            raise UsageError(
                f"{what} has {x.shape[1]} columns but the model has {params.n_visible} visible "
                "units"
            )
        log_p, log_z, how = log_likelihood(
            params, x, max_units=args.max_units, seed=args.seed, ais_runs=args.ais_runs,
            ais_betas=args.ais_betas,
        )  # fmt: skip
    se = log_p.std() / math.sqrt(len(log_p))
    print(
        f"log-likelihood ({how}) of {what}: {log_p.mean():.4f} +- {se:.4f} nats per example "
        f"over {len(log_p)} examples; log Z = {log_z:.4f}"
    )
    return 0


def cmd_sample(args) -> int:
    from . import plots

    params, meta = _load_model(args.model)
    if args.n < 1:
        raise UsageError(f"-n must be at least 1, got {args.n}")
    out = args.out if args.out.endswith(".npy") else args.out + ".npy"
    parent = os.path.dirname(out)
    if parent and not os.path.isdir(parent):
        raise UsageError(f"--out {args.out}: folder {parent} does not exist")
    key = jax.random.key(args.seed)
    with _precision(params.weights.dtype == np.float64):
        method = args.method
        if method == "auto":
            from .ais import choose_method

            method = "gibbs" if choose_method(params) == "ais" else "exact"
        if method == "exact":
            v = _exact_samples(key, params, args.n, args.max_units)
            how = "exact"
        else:
            key_init, key_run = jax.random.split(key)
            field = jnp.broadcast_to(params.visible_bias, (args.n, params.n_visible))
            v0 = params.visible_layer.random_layer(key_init, field)
            _, v = chain_free_energies(key_run, params, v0, args.sweeps)
            how = f"{args.n} independent Gibbs chains after {args.sweeps} sweeps each"
    v = np.asarray(v, np.float32)
    np.save(out, v)
    wrote = f"wrote {len(v)} samples ({how}) to {out}"
    shape = meta.get("image_shape")
    if shape is not None:
        png = out[: -len(".npy")] + ".png"
        fig = plots.plot_images(
            [(f"{min(len(v), 256)} samples ({'exact' if how == 'exact' else 'Gibbs'})", v[:256])],
            tuple(shape),
        )
        plots.save(fig, png)
        wrote += f" and image tiles to {png}"
    print(wrote)
    return 0


# --- argument parsing ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpyro-rbm",
        description="Train, evaluate and sample Restricted Boltzmann Machines (NumPyro / JAX).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    D = TRAIN_DEFAULTS

    t = sub.add_parser(
        "train",
        help="train an RBM and write a run folder (default: the 8x8 digits)",
        description="Train an RBM and write a run folder: model, metric history, figures, "
        "summary. Prints the exact test log-likelihood and a verdict on the chains.",
    )
    add = t.add_argument
    add(
        "--data",
        metavar="DATA",
        help="digits (default), bars-and-stripes:N, or a .npy/.npz/.csv file of 0/1 (or -1/+1 "
        "with --units spin) values, one example per row",
    )
    add("--key", metavar="NAME", help="the array to read from a .npz file holding several")
    add("--units", choices=["bernoulli", "spin"], help="visible unit type (default bernoulli)")
    add("--test-data", metavar="FILE", help="held-out examples (default: a split of --data)")
    add("--test-fraction", type=float, metavar="F", help="share of --data held out (default 0.2)")
    add("--image-shape", type=_parse_image_shape, metavar="HxW", help="draw rows as images")
    add("--hidden", type=int, metavar="N", help=f"hidden units (default {D['hidden']})")
    add("--method", choices=["cd", "pcd", "pt"], help=f"estimator (default {D['method']})")
    add("--epochs", type=int, metavar="N", help=f"passes over the data (default {D['epochs']})")
    add("--batch-size", type=int, metavar="N", help=f"per step (default {D['batch_size']})")
    add(
        "--learning-rate",
        type=float,
        metavar="LR",
        help=f"initial Adam step size (default {D['learning_rate']})",
    )
    add("--k", type=int, metavar="N", help=f"Gibbs sweeps per step (default {D['k']})")
    add("--chains", type=int, metavar="N", help=f"persistent chains (default {D['chains']})")
    add("--seed", type=int, metavar="N", help=f"random seed (default {D['seed']})")
    add("--float64", action="store_const", const=True, help="compute in double precision")
    add("--out", metavar="DIR", help="run folder (default runs/NAME or runs/<timestamp>)")
    add("--name", metavar="NAME", help="run name, for the folder runs/NAME")
    add("--resume", action="store_true", help="continue an interrupted run in --out")
    add(
        "--diagnostic-sweeps",
        type=int,
        default=500,
        metavar="N",
        help="Gibbs sweeps of the persistent chains recorded for the diagnostics, after half "
        "as many discarded (default 500)",
    )
    add("--quiet", action="store_true", help="print only the final report")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="print the log-likelihood of a trained model",
        description="Print the exact log-likelihood (AIS when too large to enumerate).",
    )
    add = e.add_argument
    add("model", help="a run folder or its model.npz")
    add("--data", metavar="FILE", help="a .npy/.npz/.csv file (default: the run's test split)")
    add("--key", metavar="NAME", help="the array to read from a .npz file holding several")
    add(
        "--max-units",
        type=int,
        default=EXACT_MAX_UNITS,
        metavar="N",
        help=f"enumerate <= 2^N states, else AIS (default {EXACT_MAX_UNITS})",
    )
    add("--seed", type=int, default=0, metavar="N", help="seed of AIS, when used")
    add("--ais-runs", type=int, default=100, metavar="N", help="AIS runs (default 100)")
    add(
        "--ais-betas",
        type=int,
        default=None,
        metavar="N",
        help="AIS inverse temperatures (default: the 14,501-step reference schedule)",
    )
    add("--float64", action="store_true", help="compute in double precision")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser(
        "sample",
        help="draw samples from a trained model",
        description="Draw samples: exact when enumerable, else independent Gibbs chains. "
        "Writes FILE.npy, and FILE.png image tiles when the data are images.",
    )
    add = s.add_argument
    add("model", help="a run folder or its model.npz")
    add("-n", type=int, default=64, help="number of samples (default 64)")
    add("--out", required=True, metavar="FILE", help="the .npy file to write")
    add("--method", choices=["auto", "exact", "gibbs"], default="auto", help="default auto")
    add("--sweeps", type=int, default=1000, metavar="N", help="Gibbs sweeps per chain (1000)")
    add(
        "--max-units",
        type=int,
        default=EXACT_MAX_UNITS,
        metavar="N",
        help=f"exact up to 2^N states (default {EXACT_MAX_UNITS})",
    )
    add("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    s.set_defaults(func=cmd_sample)
    return parser


def main(argv=None) -> int:
    """Entry point of the ``numpyro-rbm`` console script; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help (0) or a usage error (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")  # figures are files; never open a window or need a display
    with warnings.catch_warnings():
        warnings.showwarning = _WarningPrinter()
        try:
            return args.func(args)
        except (UsageError, ValueError, FileNotFoundError, OSError) as err:
            return _fail(args, err, 2)
        except FloatingPointError as err:  # training diverged: not bad input, but no traceback
            return _fail(args, err, 1)


def _fail(args, err, status):
    if os.environ.get("NUMPYRO_RBM_DEBUG"):
        raise err
    message = " ".join(str(err).split())  # one line
    print(f"numpyro-rbm {args.command}: error: {message}", file=sys.stderr)
    return status


class _WarningPrinter:
    """Shows warnings as one line on stderr, without the source line, once per kind (a
    warning repeated every epoch with new numbers is shown the first time only)."""

    def __init__(self):
        self.seen = set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        if issubclass(category, FutureWarning | DeprecationWarning):
            return
        kind = (category, re.sub(r"[-+.\d]+", "#", str(message)))
        if kind not in self.seen:
            self.seen.add(kind)
            print(f"warning: {message} (repeats not shown)", file=sys.stderr)
