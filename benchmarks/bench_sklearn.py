"""numpyro_rbm.sklearn.BernoulliRBM against scikit-learn's BernoulliRBM: fit time and quality.

Cases (each a row of the JSON written with ``--out``):

* ``digits-defaults``: both estimators at scikit-learn's defaults (256 hidden units, learning
  rate 0.1, batch 10, 10 epochs) on the 1797 digits scaled to [0, 1] (float64, as
  ``load_digits`` gives them; the same data in float32 as a second case). Fit time of a second
  fit in the same process (compilation is paid once per process and shape), the first fit
  with its compilation, and both sides' pseudo-log-likelihood (``score_samples``).
* ``784-dim-batch100``: batch 100 on 784-dimensional synthetic 28x28 binary images (ten random
  stroke prototypes with 5% of pixels flipped), 256 hidden units: fit time and
  pseudo-log-likelihood.
* ``digits-pipeline``: scikit-learn's "RBM features for digit classification" example (RBM
  with 100 hidden units, learning rate 0.06, 10 epochs, then logistic regression with
  C=6000) with either RBM: test accuracy.

Timings are the minimum over repeats, ours and scikit-learn's interleaved. Usage:
``python benchmarks/bench_sklearn.py [--quick] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import jax
import numpy as np
import sklearn
from scipy.ndimage import convolve
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM
from sklearn.pipeline import Pipeline

from numpyro_rbm.sklearn import BernoulliRBM

BASELINE = f"scikit-learn {sklearn.__version__} BernoulliRBM"


def row(case, metric, ours, theirs, target=None, met=None, note="", ratio=None):
    return {
        "case": case,
        "metric": metric,
        "ours": float(ours),
        "baseline": BASELINE,
        "baseline_value": None if theirs is None else float(theirs),
        "ratio": None if ratio is None else float(ratio),
        "target": target,
        "met": met,
        "note": note,
    }


def timed_fit(make, X):
    t0 = time.perf_counter()
    est = make().fit(X)
    return est, time.perf_counter() - t0


def fit_time_rows(case, X, kwargs, repeats, note):
    """First fit (with compilation), best later fit, and both sides' pseudo-likelihoods.

    Repeat ``r`` fits both estimators with ``random_state=r``: the timings are the minimum over
    repeats, the pseudo-log-likelihoods their mean, compared within three standard errors of
    the difference (seed to seed spread) plus 1 nat.
    """
    ours_first_est, ours_first = timed_fit(lambda: BernoulliRBM(**kwargs), X)
    ours_best, theirs_best = np.inf, np.inf
    pl_ours, pl_theirs = [], []
    for seed in range(repeats):
        kw = dict(kwargs, random_state=seed)
        ours_est, t = timed_fit(lambda: BernoulliRBM(**kw), X)  # noqa: B023
        ours_best = min(ours_best, t)
        theirs_est, t = timed_fit(lambda: SkBernoulliRBM(**kw), X)  # noqa: B023
        theirs_best = min(theirs_best, t)
        # score_samples of both with the same flipped bits (random_state=0 for both).
        ours_est.random_state = theirs_est.random_state = 0
        pl_ours.append(float(ours_est.score_samples(X).mean()))
        pl_theirs.append(float(theirs_est.score_samples(X).mean()))
    speedup = theirs_best / ours_best
    diff = np.mean(pl_ours) - np.mean(pl_theirs)
    se = np.sqrt((np.var(pl_ours, ddof=1) + np.var(pl_theirs, ddof=1)) / repeats)
    print(
        f"{case:<24} fit {ours_best:7.3f}s (first {ours_first:6.2f}s) vs {theirs_best:7.3f}s "
        f"= {speedup:5.2f}x; pseudo-LL {np.mean(pl_ours):8.2f} vs {np.mean(pl_theirs):8.2f} "
        f"(se of difference {se:.2f})"
    )
    digits = case.startswith("digits")
    return [
        row(
            case,
            "fit seconds (second fit; ratio = speed-up)",
            ours_best,
            theirs_best,
            ">= 3x" if digits else None,
            bool(speedup >= 3) if digits else None,
            f"{note}; min of {repeats}",
            ratio=speedup,
        ),
        row(
            case,
            "first-fit seconds incl. compilation",
            ours_first,
            theirs_best,
            None,
            None,
            f"compilation ~{ours_first - ours_best:.2f}s, paid once per process and data shape",
            ratio=theirs_best / ours_first,
        ),
        row(
            case,
            "pseudo-log-likelihood (score_samples mean; ratio = difference)",
            np.mean(pl_ours),
            np.mean(pl_theirs),
            "equal within 3 se + 1 nat",
            bool(abs(diff) <= 3 * se + 1.0),
            f"mean over random_state 0..{repeats - 1}; se of the difference {se:.2f}",
            ratio=diff,
        ),
    ]


def synthetic_28x28(n, seed=0):
    """Ten random stroke prototypes (blurred random walks, thresholded), 5% pixels flipped."""
    rng = np.random.default_rng(seed)
    protos = np.zeros((10, 28, 28))
    for p in protos:
        pos = rng.integers(6, 22, 2)
        for _ in range(60):
            pos = np.clip(pos + rng.integers(-1, 2, 2), 2, 25)
            p[pos[0], pos[1]] = 1
    protos = convolve(protos, np.ones((1, 3, 3)), mode="constant") > 0
    x = protos[rng.integers(0, 10, n)].reshape(n, 784)
    flips = rng.random(x.shape) < 0.05
    return (x ^ flips).astype(np.float64)


def nudge_dataset(X, Y):
    """scikit-learn's example: the 8x8 images moved by 1px left, right, down and up."""
    directions = [
        [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0], [0, 1, 0]],
    ]

    def shift(x, w):
        return convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()

    X = np.concatenate([X] + [np.apply_along_axis(shift, 1, X, w) for w in directions])
    Y = np.concatenate([Y for _ in range(5)], axis=0)
    return X, Y


def pipeline_rows(quick):
    X, y = load_digits(return_X_y=True)
    X = X.astype(np.float64)
    if not quick:
        X, y = nudge_dataset(X, y)
    X = (X - X.min(0)) / (X.max(0) + 1e-4)  # the example's minmax_scale
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    kwargs = dict(n_components=100, learning_rate=0.06, n_iter=10, random_state=0)
    acc, times = {}, {}
    for name, cls in (("ours", BernoulliRBM), ("theirs", SkBernoulliRBM)):
        model = Pipeline(
            [("rbm", cls(**kwargs)), ("logistic", LogisticRegression(C=6000, max_iter=1000))]
        )
        t0 = time.perf_counter()
        model.fit(X_train, y_train)
        times[name] = time.perf_counter() - t0
        acc[name] = float(model.score(X_test, y_test))
    data = "digits" if quick else "nudged digits (x5)"
    print(f"pipeline accuracy on {data}: ours {acc['ours']:.4f}, scikit-learn {acc['theirs']:.4f}")
    return [
        row(
            "digits-pipeline",
            "test accuracy (RBM + logistic regression)",
            acc["ours"],
            acc["theirs"],
            "equal within 2 points",
            bool(abs(acc["ours"] - acc["theirs"]) <= 0.02),
            f"{data}, {len(X_train)} train / {len(X_test)} test; pipeline fit "
            f"{times['ours']:.1f}s (ours, incl. compilation) vs {times['theirs']:.1f}s",
            ratio=acc["ours"] / acc["theirs"],
        )
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 2 minutes)")
    parser.add_argument("--out", default=None, help="write the JSON rows here")
    args = parser.parse_args()
    repeats = 3 if args.quick else 5

    X, _ = load_digits(return_X_y=True)
    X = X / 16.0  # float64 in [0, 1]
    defaults = dict(n_components=256, learning_rate=0.1, batch_size=10, n_iter=10, random_state=0)
    rows = fit_time_rows("digits-defaults", X, defaults, repeats, "1797x64 float64")
    rows += fit_time_rows(
        "digits-defaults-float32", X.astype(np.float32), defaults, repeats, "1797x64 float32"
    )
    n_784 = 2000 if args.quick else 10000
    X784 = synthetic_28x28(n_784)
    big = dict(defaults, batch_size=100, n_iter=3 if args.quick else 10)
    rows += fit_time_rows(
        "784-dim-batch100", X784, big, repeats, f"{n_784}x784 float64, {big['n_iter']} epochs"
    )
    rows += pipeline_rows(args.quick)
    result = {
        "benchmark": "sklearn",
        "device": f"{jax.devices()[0].platform} ({platform.processor() or platform.machine()})",
        "rows": rows,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
