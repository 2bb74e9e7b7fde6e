r"""The ``numpyro-rbm`` command: train, evaluate and sample RBMs from the shell.

.. code-block:: console

    $ numpyro-rbm train                        # 8x8 digits, 16 hidden units, PCD
    $ numpyro-rbm evaluate runs/<run>          # exact log-likelihood of the test split
    $ numpyro-rbm sample runs/<run> -n 64 --out samples.npy
    $ numpyro-rbm train --data table.csv       # real values: Gaussian visible units
    $ numpyro-rbm train --data family.fasta    # an alignment: Potts visible units

The visible unit type is inferred from the data unless ``--visible-units`` is given; real
values are standardised and the map recorded with the model (``evaluate`` applies it again,
``sample`` maps back to the data's units); an alignment's alphabet is recorded (``sample``
writes FASTA). Options shared with :func:`numpyro_rbm.fit` take fit's defaults (read from its
signature when a command runs).

``train`` writes a run folder with the model, the metric history (CSV and JSON), figures
(learning curves, weight filters, samples, trace and rank plots of the chains) and a
``summary.json``, then prints the exact test log-likelihood

.. math::

    \frac{1}{N} \sum_{n=1}^N \log p(v_n) = -\frac{1}{N} \sum_{n=1}^N F(v_n) - \log Z,

with :math:`\log Z` from exact enumeration of the smaller layer
(:func:`numpyro_rbm.partition.log_partition`), and a verdict on the persistent chains: after
training they are run on for more Gibbs sweeps, and the verdict is
:mod:`numpyro_rbm.diagnostics`' (the same R-hat and threshold as the progress bar's, over the
longer run, plus the effective sample size); ``docs/diagnostics.md`` explains it and
``docs/cli.md`` describes every subcommand.

User errors (a missing file, bad values, bad options) print one line and exit with status 2.
Set ``NUMPYRO_RBM_DEBUG=1`` to see the full traceback instead.

This module only parses the command line: JAX, NumPyro and ArviZ are imported once a
command runs (by :mod:`numpyro_rbm._commands`), so ``numpyro-rbm --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import warnings

__all__ = ["main", "build_parser", "UsageError"]

# Defaults of `train`; options left unset on the command line fall back to the run folder's
# config.json on --resume, then to these. None for the options FIT_OPTIONS names: those take
# `numpyro_rbm.fit`'s own defaults, read from its signature when a command runs (so the
# command and the API train the same model from the same data; parsing imports no JAX).
TRAIN_DEFAULTS = dict(
    data="digits",
    key=None,
    units=None,  # inferred from the data (_commands.infer_units)
    alphabet=None,
    test_data=None,
    test_fraction=0.2,
    image_shape=None,
    hidden=16,
    hidden_units=None,
    method=None,
    epochs=None,
    batch_size=None,
    learning_rate=None,
    k=None,
    chains=None,
    seed=None,
    float64=False,
)

#: `train` option -> the `numpyro_rbm.fit` argument whose default it takes.
FIT_OPTIONS = dict(
    hidden_units="hidden_units",
    method="method",
    epochs="epochs",
    batch_size="batch_size",
    learning_rate="learning_rate",
    k="k",
    chains="num_chains",
    seed="seed",
)

#: Visible unit types `train` reads data for, and the hidden ones it offers.
VISIBLE_UNITS = ("bernoulli", "spin", "gaussian", "potts")
HIDDEN_UNITS = ("bernoulli", "spin", "relu", "drelu")
#: File extensions read as FASTA alignments (Potts visible units).
FASTA_EXTENSIONS = (".fasta", ".fas", ".fa", ".faa", ".afa")

_FIT = "default: numpyro_rbm.fit's"


class UsageError(ValueError):
    """A mistake in the command line or the files it names: reported in one line, status 2."""


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="numpyro-rbm",
        description="Train, evaluate and sample Restricted Boltzmann Machines (NumPyro / JAX).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train(sub)
    _add_evaluate(sub)
    _add_sample(sub)
    return parser


def _add_train(sub):
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
        help="digits (default), bars-and-stripes:N, a .npy/.npz/.csv table (one example per "
        "row: 0/1 or -1/+1 values for binary units, real values for Gaussian units) or a "
        "FASTA alignment (.fasta, .fa, .fas, .faa, .afa) for Potts units",
    )
    add("--key", metavar="NAME", help="the array to read from a .npz file holding several")
    add(
        "--visible-units",
        "--units",
        dest="units",
        choices=VISIBLE_UNITS,
        help="visible unit type (default: inferred from the data: potts for a FASTA file, "
        "bernoulli for 0/1 values, spin for -1/+1, gaussian for other real values)",
    )
    add(
        "--hidden-units",
        choices=HIDDEN_UNITS,
        help=f"hidden unit type ({_FIT}, bernoulli)",
    )
    add(
        "--alphabet",
        metavar="SYMBOLS",
        help="the symbols of a FASTA alignment, e.g. ACGT- (default: the 20 amino acids and "
        "the gap, ACDEFGHIKLMNPQRSTVWY-)",
    )
    add("--test-data", metavar="FILE", help="held-out examples (default: a split of --data)")
    add("--test-fraction", type=float, metavar="F", help="share of --data held out (default 0.2)")
    add("--image-shape", type=_parse_image_shape, metavar="HxW", help="draw rows as images")
    add("--hidden", type=int, metavar="N", help=f"hidden units (default {D['hidden']})")
    add("--method", choices=["cd", "pcd", "pt"], help=f"estimator ({_FIT})")
    add(
        "--epochs",
        type=int,
        metavar="N",
        help=f"passes over the data ({_FIT}: 300, or more for 10,000 updates)",
    )
    add("--batch-size", type=int, metavar="N", help=f"examples per step ({_FIT})")
    add("--learning-rate", type=float, metavar="LR", help=f"initial Adam step size ({_FIT})")
    add("--k", type=int, metavar="N", help=f"Gibbs sweeps per step ({_FIT})")
    add("--chains", type=int, metavar="N", help=f"persistent chains ({_FIT})")
    add("--seed", type=int, metavar="N", help=f"random seed ({_FIT})")
    add("--float64", action="store_const", const=True, help="compute in double precision")
    add("--out", metavar="DIR", help="run folder (default runs/NAME or runs/<timestamp>)")
    add("--name", metavar="NAME", help="run name, for the folder runs/NAME")
    add("--resume", action="store_true", help="continue an interrupted run in --out")
    add(
        "--diagnostic-sweeps",
        type=int,
        default=500,
        metavar="N",
        help="Gibbs sweeps of the persistent chains recorded for the verdict and the trace "
        "plots, after half as many discarded (default 500)",
    )
    add("--quiet", action="store_true", help="print only the final report")


def _add_evaluate(sub):
    e = sub.add_parser(
        "evaluate",
        help="print the log-likelihood of a trained model",
        description="Print the exact log-likelihood (AIS when too large to enumerate).",
    )
    add = e.add_argument
    add("model", help="a run folder or its model.npz")
    add(
        "--data",
        metavar="FILE",
        help="a .npy/.npz/.csv table or a FASTA alignment, as the run was trained on (default: "
        "the run's test split); real values are standardised as the training data were",
    )
    add("--key", metavar="NAME", help="the array to read from a .npz file holding several")
    add(
        "--max-units",
        type=int,
        metavar="N",
        help="enumerate <= 2^N states, else AIS (default: the library's cut-off, "
        "numpyro_rbm.partition.EXACT_MAX_UNITS)",
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


def _add_sample(sub):
    s = sub.add_parser(
        "sample",
        help="draw samples from a trained model",
        description="Draw samples: exact when enumerable, else independent Gibbs chains. "
        "Writes FILE.npy (or FILE.csv), in the data's own units for real-valued data; a FASTA "
        "file of sequences for a model of an alignment; with --png also image tiles FILE.png.",
    )
    add = s.add_argument
    add("model", help="a run folder or its model.npz")
    add("-n", type=int, default=64, help="number of samples (default 64)")
    add(
        "--out",
        required=True,
        metavar="FILE",
        help="the file to write: .npy (default) or .csv; .fasta for a model of an alignment",
    )
    add("--method", choices=["auto", "exact", "gibbs"], default="auto", help="default auto")
    add("--sweeps", type=int, default=1000, metavar="N", help="Gibbs sweeps per chain (1000)")
    add(
        "--max-units",
        type=int,
        metavar="N",
        help="exact up to 2^N states (default: numpyro_rbm.partition.EXACT_MAX_UNITS)",
    )
    add("--seed", type=int, default=0, metavar="N", help="random seed (default 0)")
    add(
        "--png",
        action="store_true",
        help="also draw the first 256 samples as image tiles in FILE.png (models trained on "
        "images)",
    )


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
    with warnings.catch_warnings():
        warnings.showwarning = _WarningPrinter()
        try:
            from . import compile_cache  # JAX, NumPyro, ArviZ: only now

            if compile_cache.cache_enabled_by_environment():
                compile_cache.enable_compile_cache()  # a second run starts without compiling
            from . import _commands

            return getattr(_commands, f"cmd_{args.command}")(args)
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
