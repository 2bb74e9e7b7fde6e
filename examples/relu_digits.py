"""ReLU hidden units: an RBM with a continuous, non-negative hidden layer on binary digits.

ReLU hidden units (Tubiana & Monasson 2017) have potential :math:`\\gamma h^2/2 + \\theta h` on
:math:`h \\ge 0`; their curvatures :math:`\\gamma` are learnt with the weights. With 64
binary visible units neither layer can be enumerated, so log Z comes from AIS, checked from
both sides with reverse AIS, and compared with a Bernoulli-hidden RBM of the same size.

Run: ``python examples/relu_digits.py [--quick]`` (one to two minutes on 2 CPU cores).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_rbm as nrbm


def main(quick=False):
    data = nrbm.datasets.digits()
    epochs = 10 if quick else 40
    results = {}
    for hidden in ("relu", "bernoulli"):
        fit = nrbm.fit(
            data.train, 32, hidden_units=hidden, epochs=epochs, learning_rate=0.005,
            eval_every=None, progress=False, seed=0,
        )  # fmt: skip
        est = nrbm.ais(
            fit.params, jax.random.key(1), data=data.train, num_runs=100,
            betas=3000 if quick else 10000,
        )  # fmt: skip
        ll = nrbm.log_likelihood(fit.params, data.test, est)
        results[hidden] = float(ll.mean)
        lo, hi = (float(x) for x in ll.interval)
        print(f"{hidden:9s} hidden: held-out log-likelihood (AIS) {float(ll.mean):.2f} nats "
              f"[{lo:.2f}, {hi:.2f}]")  # fmt: skip
        if hidden == "relu":
            test = jnp.asarray(data.test)
            gamma = np.exp(np.asarray(fit.params.hidden_unit_params["log_gamma"]))
            h = nrbm.core.sample_hidden(jax.random.key(2), fit.params, test)
            print(f"  learnt curvatures gamma: median {np.median(gamma):.2f}, range "
                  f"{gamma.min():.2f} .. {gamma.max():.2f}; share of hidden values below 0.05 "
                  f"per digit {float(jnp.mean(h < 0.05)):.2f}")  # fmt: skip
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs, shorter AIS")
    main(parser.parse_args().quick)
