"""Potts visible units: learn a synthetic protein-like family and recover its statistics.

A known "true" Potts RBM (12 sites over the 21-symbol amino-acid alphabet, 4 hidden units,
sparse strong couplings so that some sites co-vary) generates 5000 exact sequences. They are
written as a FASTA alignment, read back with ``numpyro_rbm.datasets.read_fasta`` (integers
0..20), and a Potts RBM is fitted with PCD. The fitted model's single-site frequencies
:math:`f_i(a)` and connected pairwise correlations :math:`f_{ij}(a,b) - f_i(a) f_j(b)`, computed
from 20,000 exact draws of the fitted model (its 4 hidden units enumerate), are compared with the
data's; the exact log-likelihoods of the true and fitted models on held-out sequences are
printed. The parameters are reported in the zero-sum gauge.

What it checks: the fitted model's held-out log-likelihood is within MAX_LL_GAP nats of the
true model's, and its single-site frequencies correlate with the data's at least
MIN_SITE_CORRELATION (figures measured over seeds: next to the thresholds below). The
connected pair correlations are printed, not checked: most pairs are uncoupled, their
connected correlations are sampling noise, so their correlation coefficient (0.63 in the
full run) says little.

Run: ``python examples/potts_protein_family.py [--quick]`` (about a minute on 2 CPU cores).
"""

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from _common import Report, exit_status

import numpyro_rbm as nrbm
from numpyro_rbm.datasets import AMINO_ACIDS, read_fasta
from numpyro_rbm.partition import sample_exact
from numpyro_rbm.potts import pair_frequencies, site_frequencies, zero_sum_gauge
from numpyro_rbm.units import Potts

# Quick version (10 epochs, 5000 draws), seeds 0-4 natively and under SSE4_2: fitted minus
# true held-out log-likelihood -0.175 to -0.088 (mean -0.132, sd 0.034), site correlation
# 0.9987 to 0.9990 (sd 0.00012); each threshold is over 6 sd away.
MAX_LL_GAP = 0.35  # nats per sequence, fitted below true
MIN_SITE_CORRELATION = 0.998


def true_model(n_sites=12, q=21, n_hidden=4, seed=0):
    """Sparse couplings: each hidden unit ties 3 sites to one or two preferred residues."""
    rng = np.random.default_rng(seed)
    w = np.zeros((n_sites, q, n_hidden))
    for j in range(n_hidden):
        for i in rng.choice(n_sites, 3, replace=False):
            w[i, rng.choice(q, 2, replace=False), j] = rng.normal(0, 1.5, 2) + [2.0, -1.0]
    b = rng.normal(0, 1.0, (n_sites, q))
    b[:, AMINO_ACIDS.index("-")] -= 2.0  # gaps are rare
    c = -0.5 * np.abs(w).sum((0, 1)) / 3
    return nrbm.RBMParams(
        jnp.asarray(w.reshape(n_sites * q, n_hidden), jnp.float32),
        jnp.asarray(b.reshape(-1), jnp.float32),
        jnp.asarray(c, jnp.float32),
        visible_units=Potts(q),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sequences and epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and training")
    args = parser.parse_args(argv)
    quick, report = args.quick, Report()
    n_train, n_test = (2000, 500) if quick else (5000, 1000)
    true = true_model()
    unit = true.visible_units
    report.say(f"{n_train + n_test} exact sequences from the true model ...")
    onehot, _ = sample_exact(jax.random.key(1 + args.seed), true, (n_train + n_test,))
    sequences = np.asarray(unit.from_one_hot(onehot))

    # Round trip through a FASTA file: what a user with a real alignment would start from.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "family.fasta")
        with open(path, "w") as f:
            for k, row in enumerate(sequences):
                f.write(f">synthetic_{k}\n{''.join(AMINO_ACIDS[a] for a in row)}\n")
        alignment = read_fasta(path)
    data = alignment.sequences
    assert np.array_equal(data, sequences)
    train, test = data[:n_train], data[n_train:]
    print(f"alignment: {data.shape[0]} sequences x {data.shape[1]} sites, q = {unit.q}")
    print("first sequences:", alignment.decode(train[:3]))

    epochs = 10 if quick else 60
    report.say(f"training a Potts RBM with 4 hidden units, {epochs} epochs ...")
    # l1_decay=0: no penalty, the setting its figures were measured with
    fit = nrbm.fit(
        train, 4, visible_units=Potts(unit.q), epochs=epochs, batch_size=50,
        learning_rate=0.01, l1_decay=0.0, test_data=test, eval_every=None, seed=args.seed,
    )  # fmt: skip
    params = zero_sum_gauge(fit.params)  # identifiable parameters, same distribution
    ll_true = float(jnp.mean(nrbm.RBM(true).log_prob(test)))
    ll_fit = float(jnp.mean(nrbm.RBM(params).log_prob(test)))
    print(f"held-out log-likelihood (exact): true model {ll_true:.3f}, fitted {ll_fit:.3f} nats")

    n_draws = 5000 if quick else 20000
    report.say(f"{n_draws} exact draws from the fitted model; site and pair frequencies ...")
    draws = np.asarray(nrbm.RBM(params).sample(jax.random.key(2 + args.seed), (n_draws,)))
    f1_data, f1_fit = site_frequencies(train, unit.q), site_frequencies(draws, unit.q)
    f2_data, f2_fit = pair_frequencies(train, unit.q), pair_frequencies(draws, unit.q)
    off = ~np.eye(data.shape[1], dtype=bool)
    conn_data = (f2_data - np.einsum("ia,jb->ijab", f1_data, f1_data))[off].ravel()
    conn_fit = (f2_fit - np.einsum("ia,jb->ijab", f1_fit, f1_fit))[off].ravel()
    site_corr = float(np.corrcoef(f1_fit.ravel(), f1_data.ravel())[0, 1])
    print(
        f"single-site frequencies: max |difference| {np.abs(f1_fit - f1_data).max():.3f}, "
        f"correlation {site_corr:.4f}"
    )
    pair_corr = float(np.corrcoef(conn_fit, conn_data)[0, 1])
    print(
        f"connected pair correlations: max |difference| {np.abs(conn_fit - conn_data).max():.3f}"
        f", correlation {pair_corr:.3f}"
    )
    report.check(
        ll_fit >= ll_true - MAX_LL_GAP,
        f"the fitted model's held-out log-likelihood is within {MAX_LL_GAP} nats of the truth",
        f"{ll_fit:.3f} vs {ll_true:.3f}",
    )
    report.check(
        site_corr >= MIN_SITE_CORRELATION,
        "the fitted model reproduces the data's single-site frequencies",
        f"correlation {site_corr:.4f} >= {MIN_SITE_CORRELATION}",
    )
    return report.finish({"ll_true": ll_true, "ll_fit": ll_fit, "pair_correlation": pair_corr,
                           "site_correlation": site_corr})  # fmt: skip


if __name__ == "__main__":
    exit_status(main())
