"""RBM features for digit classification, with numpyro-rbm's BernoulliRBM and scikit-learn's.

scikit-learn's example "Restricted Boltzmann Machine features for digit classification" run
twice, once with each RBM in the same ``Pipeline`` (RBM features, then logistic regression):
the 8x8 digits nudged by one pixel in four directions (5x the data), scaled to [0, 1], an RBM
with 100 hidden units (learning rate 0.06, 10 epochs) and ``LogisticRegression(C=6000)``.
Printed side by side: test accuracy, RBM fit time (ours with and without compilation), and the
log-likelihood of the binarised test images under each RBM: estimated by AIS for 100 hidden
units, and exact (enumerating 2^20 hidden states) for a second pair of RBMs with 20.

Run: ``python examples/digits_pipeline.py`` (about 4 minutes on two busy CPU cores; needs
scikit-learn and scipy: ``pip install "numpyro-rbm[sklearn]"``).
"""

import time
import warnings

import jax
import numpy as np
from scipy.ndimage import convolve
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import BernoulliRBM as SkBernoulliRBM
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import minmax_scale

import numpyro_rbm as nrbm
from numpyro_rbm.sklearn import BernoulliRBM


def nudge_dataset(X, Y):
    """The images moved by one pixel left, right, down and up (scikit-learn's example)."""
    directions = [
        [[0, 1, 0], [0, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [1, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 0], [0, 1, 0]],
    ]

    def shift(x, w):
        return convolve(x.reshape((8, 8)), mode="constant", weights=w).ravel()

    X = np.concatenate([X] + [np.apply_along_axis(shift, 1, X, w) for w in directions])
    return X, np.concatenate([Y for _ in range(5)], axis=0)


def log_likelihood(rbm, X_binary, seed=0):
    """Average log-likelihood of binary data under either estimator's fitted RBM: exact when the
    20 or fewer hidden units enumerate, else AIS (with its 95% interval)."""
    with jax.enable_x64(True):  # both estimators hold float64 parameters
        params = nrbm.RBMParams(
            np.asarray(rbm.components_.T), rbm.intercept_visible_, rbm.intercept_hidden_
        )
        if rbm.n_components <= 20:
            return float(nrbm.log_likelihood(params, X_binary).mean), "exact"
        result = nrbm.ais(params, jax.random.key(seed), data=X_binary)
        ll = nrbm.log_likelihood(params, X_binary, result)
        lo, hi = (float(x) for x in ll.interval)
        return float(ll.mean), f"AIS, 95% interval [{lo:.2f}, {hi:.2f}]"


def main():
    X, y = load_digits(return_X_y=True)
    X, y = nudge_dataset(np.asarray(X, "float64"), y)
    X = minmax_scale(X, feature_range=(0, 1))
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    X_test_binary = (X_test > 0.5).astype(np.float64)
    print(f"nudged digits: {X_train.shape[0]} training and {X_test.shape[0]} test images\n")

    rbm_kwargs = dict(n_components=100, learning_rate=0.06, n_iter=10, random_state=0)
    rows = []
    for name, cls in (("numpyro-rbm", BernoulliRBM), ("scikit-learn", SkBernoulliRBM)):
        times = []
        for _ in range(2):  # the first fit of ours includes its compilation
            t0 = time.perf_counter()
            cls(**rbm_kwargs).fit(X_train)
            times.append(time.perf_counter() - t0)
        first, rbm_time = times
        # scikit-learn's example uses max_iter=1000; 200 lbfgs iterations keep this example
        # near a minute (the classifier, not the RBM, dominates the pipeline's fit time).
        logistic = LogisticRegression(C=6000, max_iter=200)
        pipeline = Pipeline([("rbm", cls(**rbm_kwargs)), ("logistic", logistic)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            pipeline.fit(X_train, y_train)
        accuracy = pipeline.score(X_test, y_test)
        ll, how = log_likelihood(pipeline.named_steps["rbm"], X_test_binary)
        small = cls(**dict(rbm_kwargs, n_components=20)).fit(X_train)
        ll_small, _ = log_likelihood(small, X_test_binary)
        rows.append((name, accuracy, first, rbm_time, ll, how, ll_small))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        raw = LogisticRegression(C=100, max_iter=200).fit(X_train, y_train)
    print(f"{'':14}{'accuracy':>9}{'1st fit':>9}{'2nd fit':>9}  test log-likelihood (binarised)")
    for name, accuracy, first, rbm_time, ll, how, ll_small in rows:
        print(
            f"{name:<14}{accuracy:9.4f}{first:8.2f}s{rbm_time:8.2f}s  "
            f"100 hidden: {ll:7.2f} ({how}); 20 hidden: {ll_small:7.2f} (exact)"
        )
    print(f"{'raw pixels':<14}{raw.score(X_test, y_test):9.4f}  (logistic regression alone)")
    print("\nFit times are of the RBM alone (10 epochs); ours compiles during its first fit only.")


if __name__ == "__main__":
    main()
