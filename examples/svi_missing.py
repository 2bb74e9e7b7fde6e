"""Incomplete data in SVI: an RBM learnt by ``numpyro.infer.SVI`` from digits with 30% of
their pixels missing, against ``nrbm.fit`` on the same incomplete digits.

    python examples/svi_missing.py [--quick] [--seed S] [--data-seed D]

The model observes the RBM site at the minibatch *as completed by its persistent
imputations*: ``missing = nrbm.incomplete(digits_with_nans)`` keeps one imputation per digit in
a ``numpyro.mutable`` site, and inside the subsampled plate ``missing.complete(rbm, idx)``
advances the rows ``idx`` by one clamped Gibbs sweep given their observed pixels and returns
them completed. With ``log_z=nrbm.sml(pcd(1, 100))`` the ELBO's gradient is then ``fit``'s
gradient on incomplete data (the completed rows' positive phase, the persistent chains'
negative phase): SVI runs the stochastic-approximation EM of ``fit(digits_with_nans)``. The
settings are ``examples/svi_is_pcd.py``'s (centered coordinates with fixed offsets, Adam on a
cosine decay, minibatches of 10) and the pixels removed are ``examples/missing_digits.py``'s.

What it shows: the exact held-out log-likelihood (16 hidden units enumerate; complete test
digits) of the SVI-trained RBM reaches that of ``fit`` on the same incomplete digits, at the
same settings and length.

Run: ``python examples/svi_missing.py`` (100 epochs: a few minutes on 2 CPU cores);
``--quick``: 5 epochs.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from _common import Report, exit_status
from missing_digits import MISSING, remove_pixels
from numpyro.infer import SVI, Trace_ELBO
from svi_is_pcd import BATCH, N_HIDDEN, centered_init, empty_guide

import numpyro_rbm as nrbm

EPOCHS, QUICK_EPOCHS = 100, 5
# nats: SVI's held-out LL at least fit's minus this (docs/models.md, tests/audit_examples.md)
MAX_SHORTFALL = {True: 1.0, False: 0.6}


def incomplete_model(missing, offsets, init, sml):
    """The NumPyro model: the RBM's parameters (centered coordinates) and one observed,
    subsampled RBM site at the minibatch completed by its persistent imputations."""
    w = numpyro.param("w", init.weights)
    b = numpyro.param("b", init.visible_bias)
    c = numpyro.param("c", init.hidden_bias)
    rbm = nrbm.RBM(nrbm.learning.to_standard(nrbm.RBMParams(w, b, c), *offsets), log_z=sml)
    with numpyro.plate("digits", missing.num_examples, subsample_size=BATCH) as idx:
        numpyro.sample("v", rbm, obs=missing.complete(rbm, idx))


def train_svi(incomplete, epochs, seed):
    """SVI with fit's optimiser and length on the incomplete digits; returns the standard
    parameters and the imputations at the end."""
    missing = nrbm.incomplete(incomplete, seed=seed)  # fit's start of the imputations
    filled = jnp.asarray(missing.data.values, jnp.float32)
    steps = epochs * (missing.num_examples // BATCH)
    key_init, key_run = jax.random.split(jax.random.key(seed))
    init, offsets = centered_init(key_init, filled)
    sml = nrbm.sml(nrbm.learning.pcd(1, 100), value="tracked", init_data=filled)
    optimizer = optax.adam(optax.cosine_decay_schedule(0.01, steps, alpha=0.01))
    svi = SVI(incomplete_model, empty_guide, optimizer, Trace_ELBO())
    result = svi.run(key_run, steps, missing, offsets, init, sml, progress_bar=False)
    p = result.params
    params = nrbm.learning.to_standard(nrbm.RBMParams(p["w"], p["b"], p["c"]), *offsets)
    return params, result.state.mutable_state[missing.name]["imputations"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EPOCHS} epochs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-seed", type=int, default=0, help="which pixels are removed")
    args = parser.parse_args(argv)
    report = Report()
    data = nrbm.datasets.digits()
    epochs = QUICK_EPOCHS if args.quick else EPOCHS
    incomplete = remove_pixels(data.train, MISSING, args.data_seed)
    removed = np.isnan(incomplete)
    print(f"{removed.sum()} of {removed.size} training pixels removed ({removed.mean():.1%})")

    report.say(f"SVI: {epochs} epochs on the incomplete digits, seed {args.seed}")
    params, imputations = train_svi(incomplete, epochs, args.seed)
    ll_svi = float(nrbm.log_likelihood(params, data.test).mean)
    kept = np.array_equal(np.asarray(imputations)[~removed], incomplete[~removed])
    report.say(f"fit: the same incomplete digits and settings, seed {args.seed}")
    result = nrbm.fit(
        incomplete, N_HIDDEN, epochs=epochs, seed=args.seed, eval_every=None, progress=False,
        learning_rate=0.01, l1_decay=0.0,  # SVI's step size, and no penalty: the same objective
    )  # fmt: skip
    ll_fit = float(nrbm.log_likelihood(result.params, data.test).mean)
    gap = ll_svi - ll_fit
    max_shortfall = MAX_SHORTFALL[args.quick]
    report.check(
        gap >= -max_shortfall,
        f"SVI's held-out LL on incomplete digits reaches fit's within {max_shortfall} nats",
        f"SVI {ll_svi:.3f}, fit {ll_fit:.3f}, SVI - fit {gap:+.3f}",
    )
    report.check(kept, "the imputations keep every observed pixel", f"{(~removed).sum()} pixels")
    return report.finish({"ll_svi": ll_svi, "ll_fit": ll_fit, "gap": gap})


if __name__ == "__main__":
    exit_status(main())
