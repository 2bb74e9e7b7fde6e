"""Incomplete data: an RBM trained on digits with 30% of their pixels missing.

    python examples/missing_digits.py [--quick] [--seed S] [--data-seed D]

What it shows, on the bundled binarised 8x8 digits with 30% of the training pixels removed
at random (NaN; the removal is a function of ``--data-seed``):

1. ``nrbm.fit`` trains from the incomplete digits as they are: each time a digit's minibatch
   is visited its missing pixels advance one clamped Gibbs sweep given the observed ones
   (a persistent chain per digit, a stochastic-approximation EM), and the completed digits
   enter the gradient. Its *exact* held-out log-likelihood on complete test digits (16
   hidden units: the 2^16 hidden states are enumerated) comes within 0.5 nats of the same
   fit on the complete training digits, on average over three training seeds (``--quick``:
   one seed of 20 epochs, within 1.6 nats).
2. It imputes: on the test digits with 30% of their pixels removed, the exact posterior
   marginals ``p(v_i = 1 | v_obs)`` (enumerating the hidden states) predict the removed
   pixels better than the per-pixel marginals of the observed training pixels, in log-loss
   and in error rate (thresholding at 1/2).

Run: ``python examples/missing_digits.py [--quick]`` (the full run trains six models for 100
epochs each, about a minute on 2 idle CPU cores; ``--quick`` two models for 20 epochs).
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
from _common import Report, exit_status

import numpyro_rbm as nrbm
from numpyro_rbm import datasets

MISSING = 0.3  # fraction of pixels removed
EPOCHS, QUICK_EPOCHS = 100, 20
SEEDS = 3  # training seeds of the full run, whose gaps are averaged
# Nats per digit, complete-data minus incomplete-data held-out LL. Full run, one seed each,
# seeds 0-9 (pixels removed with --data-seed = seed): gaps -0.07..0.42, mean 0.23, sd 0.16,
# so the mean of 3 has sd about 0.09 and 0.5 is 3 sd away. Quick (20 epochs) seeds 0-9:
# 0.55..0.94, mean 0.79, sd 0.12; 1.6 is 6.8 sd away (docs/training.md, audit_examples.md).
MAX_GAP, QUICK_MAX_GAP = 0.5, 1.6
# The step size and (no) L1 penalty those gaps were measured with (fit's defaults until they
# became Adam 0.03 with l1_decay=1e-3; docs/training.md).
SETTINGS = dict(learning_rate=0.01, l1_decay=0.0)


def remove_pixels(x, fraction, seed):
    """``x`` as floats with each pixel replaced by NaN with probability ``fraction`` (NumPy's
    PCG64: the same pixels on every machine); an image losing every pixel keeps one."""
    rng = np.random.default_rng(seed)
    out = np.array(x, np.float64)
    gone = rng.random(out.shape) < fraction
    gone[gone.all(1), 0] = False
    out[gone] = np.nan
    return out


def posterior_marginals(params, x, chunk=64):
    r"""Exact :math:`p(v_i = 1 \mid v_{\text{obs}})` for every pixel of the rows of ``x`` (NaN
    = missing), by enumerating the hidden states: the missing pixels sum out of
    :math:`p(v, h)` in closed form, :math:`p(h \mid v_O) \propto \exp(c^\top h + v_O^\top \phi_O
    + \sum_{i \in M} \log(1 + e^{\phi_i}))` with :math:`\phi = b + W h`, and
    :math:`p(v_i = 1 \mid v_O) = \sum_h p(h \mid v_O)\, \sigma(\phi_i)`."""
    hs = nrbm.partition.all_states(params.n_hidden, params.hidden_units)
    missing = np.isnan(x)
    pad = -len(x) % chunk  # whole chunks: one compilation
    v = np.pad(np.where(missing, 0.0, x), ((0, pad), (0, 0))).astype(np.float32)
    m = np.pad(missing, ((0, pad), (0, 0))).astype(np.float32)
    out = [
        _marginals(params, hs, v[i : i + chunk], m[i : i + chunk]) for i in range(0, len(v), chunk)
    ]
    return np.asarray(jnp.concatenate(out), np.float64)[: len(x)]


@jax.jit
def _marginals(params, hs, v, missing):
    phi = params.visible_bias + hs @ params.weights.T  # (2^n_h, n_visible)
    log_w = hs @ params.hidden_bias + v @ phi.T + missing @ jax.nn.softplus(phi).T
    return jax.nn.softmax(log_w, axis=-1) @ params.visible_layer.mean(phi)


def scores(prob, truth):
    """Mean log-loss (nats) and error rate of predicted probabilities ``prob`` of pixels
    ``truth``."""
    prob = np.clip(prob, 1e-12, 1 - 1e-12)
    log_loss = -np.mean(truth * np.log(prob) + (1 - truth) * np.log1p(-prob))
    return float(log_loss), float(np.mean((prob > 0.5) != truth))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs")
    parser.add_argument("--seed", type=int, default=0, help="the first training seed")
    parser.add_argument("--seeds", type=int, default=None, help=f"default {SEEDS}; quick 1")
    parser.add_argument("--data-seed", type=int, default=0, help="which pixels are removed")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--impute-sweeps", type=int, default=1, help="per visit of a digit")
    args = parser.parse_args(argv)
    report = Report()
    data = datasets.digits()
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    incomplete = remove_pixels(data.train, MISSING, args.data_seed)
    n_missing = int(np.isnan(incomplete).sum())
    share = n_missing / incomplete.size
    print(f"{n_missing} of {incomplete.size} training pixels removed ({share:.1%}); "
          f"{len(data.test)} complete test digits")  # fmt: skip

    seeds = range(args.seed, args.seed + (args.seeds or (1 if args.quick else SEEDS)))
    lls = {"complete": [], "incomplete": []}
    for seed in seeds:
        for name, train in (("complete", data.train), ("incomplete", incomplete)):
            report.say(f"training on the {name} digits, seed {seed}: 16 hidden units, "
                       f"{epochs} epochs ...")  # fmt: skip
            fit = nrbm.fit(
                train, 16, epochs=epochs, eval_every=None, seed=seed, progress=False,
                impute_sweeps=args.impute_sweeps, **SETTINGS,
            )  # fmt: skip
            lls[name].append(float(jnp.mean(nrbm.RBM(fit.params).log_prob(data.test))))
            print(f"  exact held-out log-likelihood {lls[name][-1]:.3f} nats per digit "
                  f"(training {fit.timings['train_s']:.1f} s)")  # fmt: skip
    gaps = np.subtract(lls["complete"], lls["incomplete"])
    gap = float(np.mean(gaps))

    report.say(f"imputing {MISSING:.0%} of the pixels of the test digits ...")
    test_gaps = remove_pixels(data.test, MISSING, args.data_seed + 1)
    removed = np.isnan(test_gaps)
    truth = data.test[removed]
    observed = ~np.isnan(incomplete)
    rate = (np.sum(np.where(observed, incomplete, 0), 0) + 1) / (observed.sum(0) + 2)
    baseline = scores(np.broadcast_to(rate, data.test.shape)[removed], truth)
    rbm = scores(posterior_marginals(fit.params, test_gaps)[removed], truth)  # the last fit
    print(f"  removed test pixels: log-loss {rbm[0]:.4f} (RBM) vs {baseline[0]:.4f} (per-pixel "
          f"marginals); error rate {rbm[1]:.4f} vs {baseline[1]:.4f}")  # fmt: skip

    max_gap = QUICK_MAX_GAP if args.quick else MAX_GAP
    report.check(
        gap <= max_gap,
        f"training on 30%-incomplete digits reaches the complete-data held-out log-likelihood "
        f"within {max_gap} nats (mean over {len(gaps)} training seeds)",
        f"{np.mean(lls['incomplete']):.3f} vs {np.mean(lls['complete']):.3f}: gaps "
        + ", ".join(f"{g:.3f}" for g in gaps),
    )
    report.check(
        rbm[0] < baseline[0] and rbm[1] < baseline[1],
        "the RBM's posterior marginals impute removed pixels better than per-pixel marginals",
        f"log-loss {rbm[0]:.4f} vs {baseline[0]:.4f}, error rate {rbm[1]:.4f} vs "
        f"{baseline[1]:.4f}",
    )
    return report.finish({
        "ll": lls,
        "gap": gap,
        "gaps": [float(g) for g in gaps],
        "log_loss": {"rbm": rbm[0], "marginals": baseline[0]},
        "error_rate": {"rbm": rbm[1], "marginals": baseline[1]},
    })  # fmt: skip


if __name__ == "__main__":
    exit_status(main())
