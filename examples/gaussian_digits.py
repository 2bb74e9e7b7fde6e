"""Gaussian visible units: a Gaussian-Bernoulli RBM on real-valued 8x8 digits.

The bundled digits with intensities kept real (``digits(binarize=False)``) are standardised
(the map is recorded and saved with the model), a Gaussian-Bernoulli RBM with learnt
per-pixel variances is trained with PCD, and its *exact* held-out log-likelihood (16 hidden
units: the hidden layer is enumerated and the Gaussian integral over the pixels is analytic)
is compared with that of independent Gaussians per pixel. AIS is checked against the exact
log Z. Finally the model denoises a held-out digit by a few Gibbs sweeps' posterior means.

Run: ``python examples/gaussian_digits.py [--quick]`` (about a minute on 2 CPU cores).
"""

import argparse
import os
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import numpyro_rbm as nrbm
from numpyro_rbm import datasets, io


def main(quick=False):
    data = datasets.digits(binarize=False)
    train, std = datasets.standardize(data.train)
    test = std.apply(data.test)
    fit = nrbm.fit(
        train, 16, visible_units="gaussian", epochs=10 if quick else 50, batch_size=20,
        learning_rate=0.005, eval_every=None, progress=False, seed=0,
    )  # fmt: skip
    params = fit.params
    rbm = nrbm.RBM(params)
    ll = float(jnp.mean(rbm.log_prob(test)))
    # Baseline: independent Gaussians with the training means and variances.
    var = np.maximum(train.var(0), 1e-6)
    ll_ind = float(
        np.mean(
            np.sum(-0.5 * (test - train.mean(0)) ** 2 / var - 0.5 * np.log(2 * np.pi * var), 1)
        )
    )
    print(f"held-out log-likelihood per digit (exact, standardised units): RBM {ll:.2f}, "
          f"independent Gaussians {ll_ind:.2f} nats")  # fmt: skip
    est = nrbm.ais(params, jax.random.key(1), data=train, num_runs=100, betas=2000)
    print(f"log Z: exact {float(rbm.log_z):.3f}, AIS {float(est.log_z):.3f} +- "
          f"{float(est.stderr):.3f}")  # fmt: skip
    sigma = np.exp(-0.5 * np.asarray(params.visible_unit_params["log_precision"]))
    print(f"learnt pixel standard deviations: median {np.median(sigma):.3f}, "
          f"range {sigma.min():.3f} .. {sigma.max():.3f}")  # fmt: skip

    # Denoise: noisy digit -> mean of p(v | h = E[h | v]) averaged over a few sweeps.
    rng = np.random.default_rng(0)
    clean = test[0]
    noisy = clean + rng.normal(0, 0.8, clean.shape).astype(np.float32)
    h = nrbm.core.hidden_mean(params, jnp.asarray(noisy))
    recon = np.asarray(nrbm.core.visible_mean(params, h))
    print(f"denoising: squared error noisy {np.mean((noisy - clean) ** 2):.3f}, "
          f"reconstructed {np.mean((recon - clean) ** 2):.3f}")  # fmt: skip

    with tempfile.TemporaryDirectory() as folder:  # the standardisation travels with it
        path = os.path.join(folder, "gaussian_rbm.npz")
        io.save_params(path, params, std.to_metadata())
        loaded, meta = io.load_params(path)
        back = datasets.Standardization.from_metadata(meta)
        assert np.allclose(back.invert(train[:1]), data.train[:1], atol=1e-5)
    return {"ll": ll, "ll_independent": ll_ind}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer epochs")
    main(parser.parse_args().quick)
