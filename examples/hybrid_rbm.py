"""A hybrid generative-discriminative RBM learnt by ``numpyro.infer.SVI`` on the digits.

    python examples/hybrid_rbm.py [--quick] [--validate] [--seed S] [--figure PATH]

One NumPyro model with two observed sites in a subsampled plate (Larochelle & Bengio 2008,
in the form of issue 15): the binarised image ``v ~ RBM(theta)``, whose log-likelihood is
scaled by the generative weight ``alpha`` (``numpyro.handlers.scale``) and whose log Z is
``nrbm.sml(pcd(1, 100))``; and its class ``y ~ Categorical(logits = U E[h|v] + d)``, a
softmax on the RBM's hidden means. ``SVI`` with ``Trace_ELBO``, an empty guide and Adam
maximises ``alpha * log p(v) + log p(y | v)`` over all of ``W, b, c, U, d``: the RBM's
parameters get the classifier's back-propagated gradient plus ``alpha`` times the PCD
gradient. ``alpha = 0`` zeroes the RBM site's gradient: a purely discriminative network (one
sigmoid hidden layer of 16 units), whose ``b`` is never trained and whose ``W, c`` are fitted
to classify, not to model the images.

Printed for each alpha: test accuracy and exact test log-likelihood per image (16 hidden
units: log Z by enumeration). Against them, the two separate stages: scikit-learn's
``Pipeline`` of ``numpyro_rbm.sklearn.BernoulliRBM`` (16 hidden units, PCD-1, then frozen)
and ``LogisticRegression`` on its hidden means, with the same RBM's exact test
log-likelihood; and the same pipeline with 100 hidden units (accuracy only).

What it shows, and checks (thresholds far from the measured values, ``docs/models.md``): the
hybrid model (alpha = 0.1) classifies (test accuracy at least 0.8; chance is 0.1) and is a
density model: its exact test log-likelihood is at least 2 nats above that of independent
pixels at the training base rates, no more than 2 nats below the two stages' RBM's, and above
the purely discriminative model's (which is printed: tens of nats below). The accuracies of
the hybrid, the discriminative model and the two stages are printed, not checked: on 359 test
images their differences are within a few standard errors (0.012 to 0.016 each).

Hyper-parameters (Adam's step size, alpha = 0.1 for the claims, the logistic regression's
C; 40 epochs fixed) were chosen with ``--validate``, which trains on 80% of the training
images and evaluates on the other 20%, and does not read the test images: see
``docs/models.md``. ``--quick`` (the test's version): 8 epochs instead of 40, alphas 0 and
0.1 only, no two-stage pipelines, and the accuracy claim at 0.5.

Needs scikit-learn (``pip install "numpyro-rbm[sklearn]"``); the full run takes a few minutes
on two CPU cores.
"""

import argparse
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from _common import Report, exit_status
from numpyro.infer import SVI, Trace_ELBO
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

import numpyro_rbm as nrbm
from numpyro_rbm.sklearn import BernoulliRBM

N_HIDDEN = 16
N_CLASSES = 10
BATCH = 20
STEP = 0.01  # Adam's initial step size, cosine decay to 1% (chosen with --validate: 0.01, 0.03)
EPOCHS = {True: 8, False: 40}
ALPHAS = {True: (0.0, 0.1), False: (0.0, 0.01, 0.1, 1.0)}
HYBRID = 0.1  # the alpha whose model the claims are about (chosen with --validate)
C_LOGISTIC = 10.0  # the two stages' logistic regression (chosen with --validate: 1 to 1000)
# Claims (quick: 8 epochs; full: 40): the hybrid's accuracy at least this (chance is 0.1);
# its LL at least this many nats above independent pixels at the training base rates;
# (full only) the hybrid's LL at least the two stages' RBM's minus this many nats.
MIN_ACCURACY = {True: 0.5, False: 0.8}
MIN_LL_GAIN = 2.0
MAX_LL_LOSS = 2.0


def hybrid_model(v, y, alpha, init, sml, n_total):
    """The NumPyro model: RBM parameters ``W, b, c`` and classifier ``U, d`` as
    ``numpyro.param`` sites; per minibatch, ``v ~ RBM`` with its log-likelihood scaled by
    ``alpha`` and ``y ~ Categorical(U E[h|v] + d)``."""
    params = nrbm.RBMParams(*(numpyro.param(k, init[k]) for k in ("w", "b", "c")))
    u, d = numpyro.param("u", init["u"]), numpyro.param("d", init["d"])
    with numpyro.plate("digits", n_total, subsample_size=BATCH) as idx:
        with numpyro.handlers.scale(scale=alpha):
            numpyro.sample("v", nrbm.RBM(params, log_z=sml), obs=v[idx])
        logits = nrbm.hidden_mean(params, v[idx]) @ u + d
        numpyro.sample("y", dist.Categorical(logits=logits), obs=y[idx])


def empty_guide(*args, **kwargs):
    """No latent variables: the ELBO is the minibatch's weighted log-likelihood, scaled."""


def initial_params(key, train):
    """Small random weights, base-rate visible biases, zero hidden biases and classifier."""
    params = nrbm.init_params(
        key, train.shape[1], N_HIDDEN, visible_bias=nrbm.units.base_rate_bias(train)
    )
    return dict(w=params.weights, b=params.visible_bias, c=params.hidden_bias,
                u=jnp.zeros((N_HIDDEN, N_CLASSES)), d=jnp.zeros(N_CLASSES))  # fmt: skip


def train_hybrids(train, labels, alphas, epochs, seed, step=STEP):
    """SVI on ``alpha * log p(v) + log p(y|v)`` for each alpha, from the same initial
    parameters and random stream; returns ``{alpha: (RBMParams, U, d)}``.

    ``alpha`` is an argument of the compiled update (one compilation for all alphas), and
    every alpha starts from the same state (``svi.init`` at alpha = 1: NumPyro refuses a
    concrete zero scale, and the state does not depend on alpha). ``alpha = 0`` scales the
    RBM site by a traced zero: its gradient (both phases) is exactly zero, so the updates are
    those of the purely discriminative network; its chains still run, unused."""
    steps = epochs * (train.shape[0] // BATCH)
    key_init, key_run = jax.random.split(jax.random.key(seed))
    init = initial_params(key_init, train)
    sml = nrbm.sml(nrbm.learning.pcd(1, 100), value="tracked", init_data=train)
    model = partial(hybrid_model, sml=sml, n_total=train.shape[0])
    optimizer = optax.adam(optax.cosine_decay_schedule(step, steps, alpha=0.01))
    svi = SVI(model, empty_guide, optimizer, Trace_ELBO())

    @jax.jit
    def run(state, args):
        return jax.lax.scan(lambda s, _: (svi.update(s, *args)[0], None), state, length=steps)[0]

    start = svi.init(key_run, train, labels, jnp.float32(1), init)
    trained = {}
    for alpha in alphas:
        p = svi.get_params(run(start, (train, labels, jnp.float32(alpha), init)))
        trained[alpha] = nrbm.RBMParams(p["w"], p["b"], p["c"]), p["u"], p["d"]
    return trained


def two_stages(train, labels, n_hidden, epochs, seed):
    """The separate stages: an RBM by PCD-1 (``BernoulliRBM``), then logistic regression on
    its hidden means."""
    rbm = BernoulliRBM(n_components=n_hidden, learning_rate=0.05, n_iter=epochs,
                       batch_size=BATCH, random_state=seed)  # fmt: skip
    logistic = LogisticRegression(C=C_LOGISTIC, max_iter=1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return Pipeline([("rbm", rbm), ("logistic", logistic)]).fit(train, labels)


def base_rate_ll(train, held):
    """LL per row of ``held`` under independent pixels at the training base rates (the
    probabilities of ``base_rate_bias``: smoothed frequencies)."""
    q = 1 / (1 + np.exp(-np.asarray(nrbm.units.base_rate_bias(train), np.float64)))
    return float(np.mean(held @ np.log(q) + (1 - held) @ np.log1p(-q)))


def splits(validate):
    """(train, train labels, held-out, held-out labels, name): the test split, or with
    ``validate`` a fifth of the training images (the test split is not read)."""
    data = nrbm.datasets.digits()
    y_train, y_test = nrbm.datasets.digit_labels()
    if not validate:
        return data.train, y_train, data.test, y_test, "test"
    order = np.random.default_rng(1).permutation(len(y_train))
    n_val = len(order) // 5
    held, kept = order[:n_val], order[n_val:]
    return data.train[kept], y_train[kept], data.train[held], y_train[held], "validation"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 epochs, alphas 0 and 0.1")
    parser.add_argument("--validate", action="store_true", help="evaluate on a validation "
                        "split of the training images instead of the test images")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--step", type=float, default=STEP, help="Adam's step size")
    parser.add_argument("--alphas", help="comma-separated generative weights to train")
    parser.add_argument("--figure", help="write accuracy and log-likelihood vs alpha here")
    args = parser.parse_args(argv)
    report = Report()
    train, y_train, held, y_held, split = splits(args.validate)
    epochs = args.epochs or EPOCHS[args.quick]
    rows = {}
    alphas = ALPHAS[args.quick]
    if args.alphas:
        alphas = tuple(float(a) for a in args.alphas.split(","))
        if not {0.0, HYBRID} <= set(alphas):
            parser.error(f"--alphas must include 0 and {HYBRID:g} (the claims compare them)")
    report.say(f"SVI, alpha in {alphas}: {epochs} epochs, seed {args.seed}")
    trained = train_hybrids(jnp.asarray(train), jnp.asarray(y_train), alphas, epochs,
                            args.seed, args.step)  # fmt: skip
    for alpha, (params, u, d) in trained.items():
        predicted = jnp.argmax(nrbm.hidden_mean(params, held) @ u + d, axis=-1)
        rows[f"alpha = {alpha:g}"] = dict(
            alpha=alpha,
            accuracy=float(jnp.mean(predicted == y_held)),
            ll=float(nrbm.log_likelihood(params, held).mean),
        )
    for n_hidden in () if args.quick else (N_HIDDEN, 100):
        report.say(f"two stages: BernoulliRBM ({n_hidden} hidden), then logistic regression")
        pipeline = two_stages(train, y_train, n_hidden, epochs, args.seed)
        ll = pipeline["rbm"].log_likelihood(held).mean if n_hidden == N_HIDDEN else np.nan
        rows[f"two stages, {n_hidden} hidden"] = dict(
            alpha=np.inf, accuracy=float(pipeline.score(held, y_held)), ll=float(ll)
        )

    print(f"{'':24}{split + ' accuracy':>20}{split + ' LL (exact)':>22}")
    for name, r in rows.items():
        print(f"{name:<24}{r['accuracy']:20.4f}{r['ll']:22.3f}")
    hybrid, discriminative = rows[f"alpha = {HYBRID:g}"], rows["alpha = 0"]
    report.check(
        hybrid["accuracy"] >= MIN_ACCURACY[args.quick],
        f"the hybrid (alpha = {HYBRID:g}) classifies: {split} accuracy at least "
        f"{MIN_ACCURACY[args.quick]} (chance: 0.1)",
        f"{hybrid['accuracy']:.4f}",
    )
    base = base_rate_ll(train, held)
    report.check(
        hybrid["ll"] >= base + MIN_LL_GAIN,
        f"the hybrid is a density model: its {split} LL is at least {MIN_LL_GAIN} nats above "
        "independent pixels at the training base rates",
        f"{hybrid['ll']:.3f} against {base:.3f}",
    )
    gap = hybrid["ll"] - discriminative["ll"]
    report.check(
        gap > 0,
        "the purely discriminative model (alpha = 0) is a worse density model than the hybrid",
        f"{discriminative['ll']:.3f} against {hybrid['ll']:.3f}, gap {gap:.3f}",
    )
    results = {"rows": rows, "ll_gap": gap, "ll_gain": hybrid["ll"] - base}
    if not args.quick:
        stages = rows[f"two stages, {N_HIDDEN} hidden"]
        results["ll_loss"] = loss = stages["ll"] - hybrid["ll"]
        report.check(
            loss <= MAX_LL_LOSS,
            f"the hybrid's {split} LL is within {MAX_LL_LOSS} nats of (or above) the two "
            f"stages' RBM's ({N_HIDDEN} hidden)",
            f"{hybrid['ll']:.3f} against {stages['ll']:.3f}",
        )
    if args.figure:
        plot(rows, split, args.figure)
        report.say(f"figure written to {args.figure}")
    return report.finish(results)


def plot(rows, split, path):
    """Accuracy and exact log-likelihood against alpha, the two stages as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    alphas = [r for r in rows.values() if np.isfinite(r["alpha"])]
    x = [max(r["alpha"], 1e-3) for r in alphas]  # alpha = 0 drawn at 1e-3 on the log axis
    stages = {k: r for k, r in rows.items() if not np.isfinite(r["alpha"])}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "ll", "LL (nats)")):
        ax.plot(x, [r[key] for r in alphas], "o-", label="hybrid (SVI)")
        for (name, r), style in zip(stages.items(), ("--", ":"), strict=False):
            if np.isfinite(r[key]):
                ax.axhline(r[key], ls=style, color="gray", label=name)
        ax.set_xscale("log")
        ax.set_xlabel("generative weight alpha (alpha = 0 drawn at 1e-3)")
        ax.set_ylabel(f"{split} {label}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    exit_status(main())
