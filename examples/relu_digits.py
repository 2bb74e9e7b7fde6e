"""ReLU hidden units: an RBM with a continuous, non-negative hidden layer on binary digits.

    python examples/relu_digits.py [--quick]

ReLU hidden units (Tubiana & Monasson 2017) have potential :math:`\\gamma h^2/2 + \\theta h` on
:math:`h \\ge 0`; their curvatures :math:`\\gamma` are learnt with the weights. With 64
binary visible units and 32 hidden units neither layer can be enumerated, so the held-out
log-likelihood comes from annealed importance sampling, from both sides: forward AIS
(``nrbm.ais``) underestimates log Z on average and so overstates the log-likelihood, reverse
AIS from the held-out digits (``nrbm.reverse_ais``, RAISE) typically understates it (from
data it bounds the annealing model's log-likelihood, not provably the RBM's). The true value
typically lies between the two, and a narrow gap says the schedule was long enough.

What it shows: both RBMs, ReLU and Bernoulli hidden units of the same size trained by
``nrbm.fit`` with the same settings, model held-out digits far better than independent
pixels, each estimate bracketed by its two sides to within a fraction of a nat; and the
learnt curvatures and how sparse the ReLU hidden layer is.

Run: ``python examples/relu_digits.py [--quick]`` (about a minute on 2 CPU cores).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _common import Report, exit_status

import numpyro_rbm as nrbm

MIN_GAIN = 5.0  # nats per digit over independent pixels, at the pessimistic (RAISE) side
MAX_BRACKET = 1.0  # nats between the AIS and RAISE estimates


def independent_pixels_ll(train, test):
    """Held-out log-likelihood of independent Bernoulli pixels with the training marginals
    (smoothed by one pseudo-count each way)."""
    p = (train.sum(0) + 1) / (len(train) + 2)
    return float(np.mean(test @ np.log(p) + (1 - test) @ np.log1p(-p)))


def bracket(params, train, test, key, betas):
    """Held-out log-likelihood from forward AIS (high on average) and RAISE (typically low)."""
    k_fwd, k_rev = jax.random.split(key)
    forward = nrbm.ais(params, k_fwd, data=train, num_runs=100, betas=betas)
    reverse = nrbm.reverse_ais(params, k_rev, test, betas=betas, base_data=train)
    high = nrbm.log_likelihood(params, test, forward)
    low = nrbm.log_likelihood(params, test, reverse)
    return float(high.mean), float(low.mean)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, shorter AIS")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = Report()
    data = nrbm.datasets.digits()
    # quick: the ReLU RBM only, 10 epochs, 300 betas, RAISE from 100 held-out digits
    epochs, betas, test = (10, 300, data.test[:100]) if args.quick else (40, 5000, data.test)
    layers = ("relu",) if args.quick else ("relu", "bernoulli")
    baseline = independent_pixels_ll(data.train, test)
    print(f"independent pixels: held-out log-likelihood {baseline:.2f} nats")
    results = {"independent": baseline}
    for hidden in layers:
        report.say(f"training 32 {hidden} hidden units, {epochs} epochs ...")
        fit = nrbm.fit(
            data.train, 32, hidden_units=hidden, epochs=epochs, learning_rate=0.005,
            l1_decay=0.0, eval_every=None, seed=args.seed,  # no penalty, as measured
        )  # fmt: skip
        report.say(f"AIS and RAISE with {betas} betas ...")
        key = jax.random.key(args.seed + 1)
        high, low = bracket(fit.params, data.train, test, key, betas)
        results[hidden] = (low, high)
        print(f"{hidden:9s} hidden: held-out log-likelihood between {low:.2f} (RAISE) and "
              f"{high:.2f} (AIS) nats")  # fmt: skip
        if hidden == "relu":
            gamma = np.exp(np.asarray(fit.params.hidden_unit_params["log_gamma"]))
            h = nrbm.core.sample_hidden(jax.random.key(2), fit.params, jnp.asarray(test))
            print(f"  learnt curvatures gamma: median {np.median(gamma):.2f}, range "
                  f"{gamma.min():.2f} .. {gamma.max():.2f}; share of hidden values below 0.05 "
                  f"per digit {float(jnp.mean(h < 0.05)):.2f}")  # fmt: skip
    for hidden in layers:
        low, high = results[hidden]
        report.check(
            min(low, high) - baseline >= MIN_GAIN,
            f"the {hidden} RBM beats independent pixels by >= {MIN_GAIN} nats per digit",
            f"{min(low, high):.2f} vs {baseline:.2f}",
        )
        report.check(
            abs(high - low) <= MAX_BRACKET,
            f"AIS and RAISE bracket the {hidden} RBM's log-likelihood within {MAX_BRACKET} nat",
            f"{low:.2f} .. {high:.2f}",
        )
    return report.finish(results)


if __name__ == "__main__":
    exit_status(main())
