"""Time to quality: held-out log-likelihood against wall-clock time, ours and scikit-learn's.

    python benchmarks/bench_quality.py [--quick] [--out benchmarks/results/quality.json]
                                       [--figure docs/images/time_to_quality.png]

Two data sets, each split into train / validation / test, every log-likelihood exact (the
hidden layer is enumerated with :func:`numpyro_rbm.partition.log_partition`):

* ``digits``: the bundled 8x8 digits binarised (:func:`numpyro_rbm.datasets.digits`), its
  test split (359 images) as the test set, 20% of its training split (288, drawn by
  ``default_rng(1)``) as the validation set, the other 1150 for training; 16 hidden units.
* ``mnist5k``: 5,000 MNIST digits binarised at 127, 4000 / 500 / 500
  (``benchmarks/data/mnist5k.npz``, see ``benchmarks/data/README.md``); 20 hidden units.

Contenders, each trained on the training split only:

* ours, defaults: ``fit(train, n_hidden, seed=s)`` with nothing else set;
* ours, tuned: ``fit`` with ``TUNED[data set]`` (chosen on the validation split);
* scikit-learn's ``BernoulliRBM`` (batch 10, ``n_iter`` epochs, float32 input, its faster
  mode) at every learning rate of ``LEARNING_RATES``; its best is the learning rate and the
  epoch with the highest *validation* log-likelihood, and its test log-likelihood there is
  the level to reach.

How time is counted. Ours: one ``fit`` call per seed, parameters taken at every
``eval_every`` epochs by a callback; the time of the parameters after epoch ``e`` of ``E`` is
``setup + train_s * e / E``, with ``train_s`` the call's own training time (every epoch does
the same work; the monitoring that ``fit`` runs at those epochs and our evaluations are
outside it) and ``setup`` the wall time of the *first* call of that setting in the process
less its training and monitoring: compilation and set-up, which a user waits for. Curves are
also drawn without it (training only). scikit-learn: its own training loop (``fit``'s, run
epoch by epoch, see ``sklearn_curve``), timed without the evaluations; it compiles nothing.

Rows: for each data set and each of ours, the seconds to first reach scikit-learn's best
test log-likelihood (target: at most 1/5 of the seconds scikit-learn took to its best), with
and without compilation; the final test log-likelihoods; on digits the exact-ML ceiling
(``bench_training.exact_ml``, full-batch Adam on the exact gradient on the same training
split, ``CEILING_STEPS`` steps or ``--ceiling-steps``) and the defaults' gap to it averaged
over the seeds (target: at most 0.1 nats, in under 10 s of compilation and training). The
figure plots every curve, time on a log axis.

``--quick`` (about a minute on 2 cores): one seed, two learning rates, fewer epochs (3 on
mnist5k, for ours too), 10 hidden units on mnist5k, a 300-step ceiling; checks that the script
runs, not the targets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from _common import SETTLE_S, print_rows, row, write_results
from bench_training import exact_ml, sklearn_params
from sklearn.neural_network import BernoulliRBM
from sklearn.utils import gen_even_slices

from numpyro_rbm import datasets
from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.partition import log_partition
from numpyro_rbm.training import fit

HERE = Path(__file__).resolve().parent
MNIST5K = HERE / "data" / "mnist5k.npz"
FIGURE = HERE.parent / "docs" / "images" / "time_to_quality.png"
LEARNING_RATES = (0.003, 0.01, 0.03, 0.1, 0.3)
SKLEARN_BATCH = 10  # scikit-learn's default
TUNED = {
    "digits": dict(batch_size=100, num_chains=100, learning_rate=0.03, epochs=100),
    "mnist5k": dict(epochs=10),
}
SPEEDUP_TARGET = 5.0  # reach scikit-learn's best in at most 1/5 of its time
CEILING_GAP, CEILING_SECONDS = 0.1, 10.0
# Full-batch steps of bench_training.exact_ml for the ceiling (bench_training uses 4000): each
# step enumerates 2^16 states with its gradient, about 0.2 s on 2 cores, so 4000 steps alone
# would take 13 minutes; the 1000-step ceiling's distance from the 4000-step one is in
# docs/performance.md.
CEILING_STEPS = 1000


# --- data -------------------------------------------------------------------------------------


class Split(NamedTuple):
    name: str
    train: np.ndarray  # float32 (n, n_visible) of 0/1
    valid: np.ndarray
    test: np.ndarray
    n_hidden: int


def digits_split(n_hidden: int = 16) -> Split:
    """The digits test split as is; the training split cut into training and validation."""
    d = datasets.digits()
    order = np.random.default_rng(1).permutation(len(d.train))
    n_valid = round(0.2 * len(d.train))
    return Split("digits", d.train[order[n_valid:]], d.train[order[:n_valid]], d.test, n_hidden)


def load_mnist5k(path=MNIST5K, n_hidden: int = 20) -> Split:
    """The bundled MNIST subset: bits unpacked to float32 rows of 784 (no code is executed
    on loading: ``allow_pickle=False``)."""
    with np.load(path, allow_pickle=False) as z:
        parts = [np.unpackbits(z[k], axis=1, count=784).astype(np.float32) for k in SPLITS]
    return Split("mnist5k", *parts, n_hidden)


SPLITS = ("train", "valid", "test")


def mean_ll(params: RBMParams, data, log_z=None) -> float:
    """Exact average log-likelihood: mean of -F(v) less log Z (enumeration, unless given)."""
    data = jnp.asarray(data, params.weights.dtype)
    log_z = log_partition(params) if log_z is None else log_z
    return float(jnp.mean(-free_energy(params, data)) - log_z)


# --- curves -----------------------------------------------------------------------------------


class Curve(NamedTuple):
    """Held-out quality at increasing training times of one contender (one seed)."""

    label: str
    seconds: np.ndarray  # training time at each point, set-up and compilation excluded
    setup_s: float  # compilation and set-up, paid once before the first update
    valid: np.ndarray  # validation log-likelihood at each point
    test: np.ndarray  # test log-likelihood at each point
    epochs: np.ndarray


START = time.perf_counter()


def clock() -> str:
    """Seconds since the script started, for the progress lines."""
    return f"{time.perf_counter() - START:6.1f} s"


def geometric_epochs(last: int, n: int) -> list[int]:
    """About ``n`` epochs from 1 to ``last``, evenly spaced on a log scale, ``last`` included."""
    return sorted({int(round(e)) for e in np.geomspace(1, last, n)} | {last})


def evaluate(label, split, snapshots, seconds, setup_s) -> Curve:
    epochs = np.array([e for e, _ in snapshots])
    params = [p for _, p in snapshots]
    log_z = [log_partition(p) for p in params]  # once per point: at 784x20 it is the cost
    return Curve(
        label,
        np.asarray(seconds, float),
        float(setup_s),
        np.array([mean_ll(p, split.valid, z) for p, z in zip(params, log_z, strict=True)]),
        np.array([mean_ll(p, split.test, z) for p, z in zip(params, log_z, strict=True)]),
        epochs,
    )


def ours_curve(split: Split, label: str, kwargs: dict, seed: int, points: int, setup_s=None):
    """One ``fit`` call; parameters kept at every ``eval_every`` epochs (``points`` of them
    evaluated, geometrically spaced). ``setup_s``: the compilation and set-up to charge (that
    of the first call of these settings); ``None`` charges this call's own."""
    planned = kwargs.get("epochs") or fit_default_epochs(len(split.train), kwargs)
    every = max(1, planned // 25)  # about 25 evaluations; `points` of them are kept
    kept = {}

    def keep(epoch, params, metrics):
        kept[epoch] = jax.tree.map(np.asarray, params)

    time.sleep(SETTLE_S)
    start = time.perf_counter()
    res = fit(
        split.train, split.n_hidden, seed=seed, eval_every=every, log_likelihood=None,
        progress=False, callbacks=[keep], **kwargs,
    )  # fmt: skip
    wall = time.perf_counter() - start
    t = res.timings
    own_setup = wall - t["train_s"] - t["eval_s"]
    epochs = max(kept)  # the last epoch is always evaluated
    wanted = geometric_epochs(epochs, points)
    chosen = sorted({min(kept, key=lambda k, w=w: abs(k - w)) for w in wanted})
    snapshots = [(e, jax.tree.map(jnp.asarray, kept[e])) for e in chosen]
    seconds = [t["train_s"] * e / epochs for e in chosen]
    return evaluate(label, split, snapshots, seconds, own_setup if setup_s is None else setup_s)


def fit_default_epochs(n_train: int, kwargs: dict) -> int:
    """``fit``'s default number of epochs: 100, or 10,000 updates if that is more."""
    per_epoch = n_train // kwargs.get("batch_size", 10)
    return max(100, -(-10_000 // per_epoch))


def sklearn_curve(split: Split, lr: float, seed: int, epochs: int, points: int) -> Curve:
    """``BernoulliRBM(learning_rate=lr, n_iter=epochs, random_state=seed).fit(train)`` run
    epoch by epoch: its initialisation and minibatch updates exactly as ``fit`` makes them
    (scikit-learn 1.x; ``tests/test_benchmarks.py`` checks the final parameters equal
    ``fit``'s), parameters copied at ``points`` epochs outside the timed part."""
    x = np.asarray(split.train, np.float32)
    rbm = BernoulliRBM(
        n_components=split.n_hidden, learning_rate=lr, batch_size=SKLEARN_BATCH,
        n_iter=epochs, random_state=seed,
    )  # fmt: skip
    time.sleep(SETTLE_S)
    start = time.perf_counter()
    rng = np.random.RandomState(seed)
    shape = (rbm.n_components, x.shape[1])
    rbm.components_ = np.asarray(rng.normal(0, 0.01, shape), order="F", dtype=x.dtype)
    rbm.intercept_hidden_ = np.zeros(rbm.n_components, dtype=x.dtype)
    rbm.intercept_visible_ = np.zeros(x.shape[1], dtype=x.dtype)
    rbm.h_samples_ = np.zeros((rbm.batch_size, rbm.n_components), dtype=x.dtype)
    n_batches = int(np.ceil(len(x) / rbm.batch_size))
    slices = list(gen_even_slices(n_batches * rbm.batch_size, n_batches, n_samples=len(x)))
    wanted, snapshots, seconds, elapsed = set(geometric_epochs(epochs, points)), [], [], 0.0
    for epoch in range(1, epochs + 1):
        for s in slices:
            rbm._fit(x[s], rng)
        if epoch in wanted:
            elapsed += time.perf_counter() - start
            snapshots.append((epoch, sklearn_params(rbm)))
            seconds.append(elapsed)
            start = time.perf_counter()
    return evaluate(f"scikit-learn lr {lr:g}", split, snapshots, seconds, 0.0)


def mean_curve(curves: list[Curve]) -> Curve:
    """The seeds' mean: log-likelihoods and training times averaged point by point (the
    seeds share their evaluation epochs), the set-up of the first (the one that compiled)."""
    c = curves[0]
    return Curve(
        c.label,
        np.mean([k.seconds for k in curves], axis=0),
        c.setup_s,
        np.mean([k.valid for k in curves], axis=0),
        np.mean([k.test for k in curves], axis=0),
        c.epochs,
    )


def time_to_reach(curve: Curve, level: float, with_setup: bool = True) -> float | None:
    """Seconds at which ``curve``'s test log-likelihood first reaches ``level`` (None:
    never); ``with_setup`` adds its compilation and set-up."""
    hits = np.flatnonzero(curve.test >= level)
    if not len(hits):
        return None
    return float(curve.seconds[hits[0]] + (curve.setup_s if with_setup else 0.0))


def best_on_validation(curves: list[Curve]) -> tuple[Curve, int]:
    """The curve and point with the highest validation log-likelihood."""
    scores = [(c.valid.max(), i) for i, c in enumerate(curves)]
    best = curves[max(scores)[1]]
    return best, int(np.argmax(best.valid))


# --- one data set -----------------------------------------------------------------------------


def run_dataset(split: Split, seeds, lrs, sk_epochs, points, ours_epochs=None, ceiling_steps=0):
    """Every contender's curve on one data set, and its rows."""
    configs = {"defaults": {}, "tuned": dict(TUNED[split.name])}
    if ours_epochs is not None:
        configs = {k: {**v, "epochs": min(v.get("epochs", ours_epochs), ours_epochs)}
                   for k, v in configs.items()}  # fmt: skip
    ours = {}
    for name, kwargs in configs.items():
        runs = []
        for seed in seeds:
            setup = runs[0].setup_s if runs else None
            runs.append(ours_curve(split, f"ours {name}", kwargs, seed, points, setup))
            last = runs[-1]
            print(f"[{clock()}] {split.name} ours {name} seed {seed}: test {last.test[-1]:.3f}, "
                  f"train {last.seconds[-1]:.2f} s, set-up {runs[0].setup_s:.2f} s",
                  flush=True)  # fmt: skip
        ours[name] = (mean_curve(runs), runs)
    sk_runs = {lr: [sklearn_curve(split, lr, s, sk_epochs, points) for s in seeds] for lr in lrs}
    sk_means = [mean_curve(r) for r in sk_runs.values()]
    for c in sk_means:
        print(f"[{clock()}] {split.name} {c.label}: best valid {c.valid.max():.3f}, final test "
              f"{c.test[-1]:.3f}, {c.seconds[-1]:.2f} s", flush=True)  # fmt: skip
    sk_best, at = best_on_validation(sk_means)
    level, sk_seconds = float(sk_best.test[at]), float(sk_best.seconds[at])
    ceiling = None
    if ceiling_steps:
        t0 = time.perf_counter()
        p, _ = exact_ml(split.train, split.n_hidden, steps=ceiling_steps)
        ceiling = (mean_ll(p, split.test), ceiling_steps, time.perf_counter() - t0)
    rows = dataset_rows(split, ours, sk_best, at, level, sk_seconds, len(list(seeds)), ceiling)
    curves = {"sklearn": sk_means, **{k: v[0] for k, v in ours.items()}}
    return rows, curves, dict(level=level, sklearn=sk_best.label, ceiling=ceiling and ceiling[0])


def dataset_rows(split, ours, sk_best, at, level, sk_seconds, n_seeds, ceiling):
    ds = f"{split.name} ({split.train.shape[1]}x{split.n_hidden}, {len(split.train)} train)"
    seeds = f"mean of {n_seeds} seed(s)"
    rows = [
        row(
            f"{ds}: sklearn BernoulliRBM, best on validation ({sk_best.label}, epoch "
            f"{sk_best.epochs[at]})",
            "test LL (nats)",
            level,
            note=f"{seeds}; learning rates {', '.join(f'{x:g}' for x in LEARNING_RATES)} (or "
            f"the --quick subset), batch {SKLEARN_BATCH}; {sk_seconds:.2f} s of training to "
            "that epoch",
        )
    ]
    for name, (curve, runs) in ours.items():
        case = f"{ds}: ours {name}" + (f" {TUNED[split.name]}" if name == "tuned" else "")
        for with_setup in (True, False):
            t = time_to_reach(curve, level, with_setup)
            r = row(
                case,
                "s to sklearn's best test LL"
                + (" incl. compile" if with_setup else ", training only"),  # fmt: skip
                t,
                "sklearn BernoulliRBM, s to its best",
                sk_seconds,
                f"<= {1 / SPEEDUP_TARGET:g}x" if with_setup else None,
                note=f"{seeds}; compile and set-up {curve.setup_s:.2f} s (first call); "
                + ("never reached" if t is None else "first evaluated epoch at or above it"),
            )
            if with_setup:
                r["met"] = bool(t is not None and t <= sk_seconds / SPEEDUP_TARGET)
            rows.append(r)
        final = float(curve.test[-1])
        r = row(case, "final test LL (nats)", final, "sklearn best test LL", level,
                note=f"{seeds}; epoch {curve.epochs[-1]}, {curve.seconds[-1]:.2f} s of "
                f"training; seeds' range [{min(c.test[-1] for c in runs):.3f}, "
                f"{max(c.test[-1] for c in runs):.3f}]")  # fmt: skip
        r["ratio"] = None  # a ratio of log-likelihoods means nothing
        rows.append(r)
        if ceiling is not None and name == "defaults":
            value, steps, took = ceiling
            total = curve.setup_s + float(curve.seconds[-1])
            r = row(
                case, "gap to exact-ML ceiling (nats)", value - final,
                "exact-ML test LL", value,
                target=f"<= {CEILING_GAP:g} in < {CEILING_SECONDS:g} s",
                note=f"{seeds}; ceiling: bench_training.exact_ml, {steps} full-batch Adam "
                f"steps on the same training split ({took:.0f} s); {total:.2f} s of "
                "compilation and training",
            )  # fmt: skip
            r["ratio"] = None
            r["met"] = bool(value - final <= CEILING_GAP and total < CEILING_SECONDS)
            rows.append(r)
    return rows


# --- figure -----------------------------------------------------------------------------------


def plot(results: dict, path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.0 * len(results), 4.4), squeeze=False)
    for ax, (name, (curves, info)) in zip(axes[0], results.items(), strict=True):
        for c in curves["sklearn"]:
            best = c.label == info["sklearn"]
            ax.plot(c.seconds, c.test, "o-" if best else "-", color="tab:gray",
                    alpha=1.0 if best else 0.35, ms=3, lw=1.5 if best else 1,
                    label=f"{c.label} (best on validation)" if best else None)  # fmt: skip
        others = [curves["defaults"], curves["tuned"]]
        for c, color in zip(others, ("tab:blue", "tab:orange"), strict=True):
            key = c.label.removeprefix("ours ")
            ax.plot(c.seconds + c.setup_s, c.test, "o-", color=color, ms=3,
                    label=f"ours {key}, incl. compile")  # fmt: skip
            ax.plot(c.seconds, c.test, "--", color=color, lw=1, label=f"ours {key}, training only")
        ax.axhline(info["level"], color="tab:gray", lw=0.8, ls=":")
        if info["ceiling"] is not None:
            ax.axhline(info["ceiling"], color="black", lw=0.8, ls="-.", label="exact-ML ceiling")
        ax.set_xscale("log")
        ax.set_xlabel("wall-clock seconds (log scale)")
        ax.set_ylabel("test log-likelihood per example (nats)")
        ax.set_title(name)
        top = max(float(np.max(c.test)) for c in [*curves["sklearn"], *others])
        bottom = info["level"] - max(2.0, 0.04 * abs(info["level"]))
        ax.set_ylim(bottom, top + 0.05 * (top - bottom))
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def as_json(curve: Curve) -> dict:
    return {
        k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in curve._asdict().items()
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about a minute: a smoke test")
    parser.add_argument("--seeds", type=int, default=None, help="digits seeds (default 5)")
    parser.add_argument("--out", default=None, help="JSON path")
    parser.add_argument("--figure", default=str(FIGURE), help="PNG path")
    parser.add_argument(
        "--ceiling-steps", type=int, default=None,
        help=f"steps of the exact-ML ceiling (default {CEILING_STEPS}; 300 with --quick)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from _common import device_string

    if args.quick:
        plan = {
            "digits": (digits_split(), dict(lrs=(0.03, 0.1), sk_epochs=20,
                                            ceiling_steps=args.ceiling_steps or 300)),
            "mnist5k": (load_mnist5k(n_hidden=10), dict(lrs=(0.03, 0.1), sk_epochs=3,
                                                         ours_epochs=3)),
        }  # fmt: skip
        seeds, points = range(args.seeds or 1), 6
    else:
        plan = {
            "digits": (digits_split(), dict(lrs=LEARNING_RATES, sk_epochs=100,
                                            ceiling_steps=args.ceiling_steps or CEILING_STEPS)),
            "mnist5k": (load_mnist5k(), dict(lrs=LEARNING_RATES, sk_epochs=50)),
        }  # fmt: skip
        seeds, points = range(args.seeds or 5), 9
    rows, results, dumps = [], {}, {}
    for name, (split, opts) in plan.items():
        ds_seeds = seeds if name == "digits" else range(1)
        r, curves, info = run_dataset(split, ds_seeds, points=points, **opts)
        rows += r
        results[name] = (curves, info)
        dumps[name] = {
            "info": info,
            "curves": {
                k: [as_json(c) for c in (v if isinstance(v, list) else [v])]
                for k, v in curves.items()
            },  # fmt: skip
        }
        print_rows(r)
    device = device_string()
    mode = "quick" if args.quick else "full"
    plot(results, args.figure, f"Held-out log-likelihood against time, {device}, {mode} mode "
         "(scikit-learn on the CPU)")  # fmt: skip
    extra = {"curves": dumps, "figure": "images/" + Path(args.figure).name}
    path = write_results("quality", rows, args.out, extra)
    print(f"[{clock()}] wrote {path} and {args.figure}")


if __name__ == "__main__":
    main()
