"""Denoise a binary digit with an RBM prior and an unknown flip rate sampled by NUTS.

    python examples/denoise_digit.py [--out runs/denoise] [--seed 0] [--quick]

1. Train an RBM prior on scikit-learn's bundled 8x8 digits (binarised) with a few hundred
   PCD-1 steps written with the core functions.
2. Corrupt a held-out digit by flipping each pixel with probability 0.1.
3. Model: ``eps ~ Beta(1, 4)`` (the unknown flip rate), ``v ~ RBM``, and each observed pixel
   ``y_i`` equals ``v_i`` with probability ``1 - eps``. The likelihood factorises per pixel,
   so the RBM block uses the exact likelihood-aware conditional (``update="factorized"``);
   NUTS samples ``eps``: ``Gibbs([(RBMGibbs(model), ["v"]), (NUTS(model), None)])``.
4. Print the ArviZ summary of ``eps`` and the convergence verdict of the RBM chains, and
   save the posterior-mean image and trace / rank plots to ``--out``.
"""

import argparse
from pathlib import Path

import arviz as az
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
from numpyro.infer import MCMC, NUTS, Gibbs

import numpyro_rbm as nrbm

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def train_prior(data, n_hidden, steps, key, batch_size=100, learning_rate=0.05):
    """PCD-1 (Tieleman 2008) by jax.grad of the free-energy surrogate."""
    n_visible = data.shape[1]
    p = np.clip(data.mean(0), 0.02, 0.98)
    key, k_init, k_chains = jax.random.split(key, 3)
    params = nrbm.init_params(
        k_init, n_visible, n_hidden, weight_scale=0.01, visible_bias=np.log(p / (1 - p))
    )
    chains = jax.random.bernoulli(k_chains, 0.5, (batch_size, n_visible)).astype(jnp.float32)
    opt = optax.sgd(learning_rate, momentum=0.9)
    opt_state = opt.init(params)

    def loss(params, v_data, v_model):
        return jnp.mean(nrbm.free_energy(params, v_data)) - jnp.mean(
            nrbm.free_energy(params, jax.lax.stop_gradient(v_model))
        )

    @jax.jit
    def step(carry, key):
        params, opt_state, chains = carry
        k_batch, k_gibbs = jax.random.split(key)
        batch = data[jax.random.choice(k_batch, data.shape[0], (batch_size,))]
        chains, _ = nrbm.gibbs_sweep(k_gibbs, params, chains)
        grads = jax.grad(loss)(params, batch, chains)
        updates, opt_state = opt.update(grads, opt_state)
        return (optax.apply_updates(params, updates), opt_state, chains), None

    data = jnp.asarray(data)
    keys = jax.random.split(key, steps)
    (params, _, _), _ = jax.lax.scan(step, (params, opt_state, chains), keys)
    return params


def model(params, y):
    eps = numpyro.sample("eps", dist.Beta(1.0, 4.0))
    # log_z=None: log Z is a constant for every site sampled here, so never enumerate it
    v = numpyro.sample("v", nrbm.RBM(params, log_z=None))
    numpyro.sample("y", dist.Bernoulli(probs=jnp.where(v == 1, 1 - eps, eps)).to_event(1), obs=y)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/denoise", help="folder for the figures")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--flip", type=float, default=0.1, help="true flip rate of the noise")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=600)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="tiny run (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.train_steps, args.samples = 50, 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    k_train, k_noise, k_mcmc = jax.random.split(key, 3)

    data = nrbm.datasets.digits(binarize=True)
    params = train_prior(data.train, args.hidden, args.train_steps, k_train)

    clean = jnp.asarray(data.test[args.seed % len(data.test)])
    flips = jax.random.bernoulli(k_noise, args.flip, clean.shape)
    noisy = jnp.where(flips, 1 - clean, clean)

    kernel = Gibbs([(nrbm.RBMGibbs(model, update="factorized"), ["v"]), (NUTS(model), None)])
    mcmc = MCMC(
        kernel,
        num_warmup=args.samples // 2,
        num_samples=args.samples,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(k_mcmc, params, noisy)

    idata = az.from_numpyro(mcmc)
    print(az.summary(idata, var_names=["eps"]))
    diag = nrbm.diagnostics.mcmc_diagnostics(mcmc, params, reference=clean)
    print(diag)

    v = mcmc.get_samples()["v"]
    mean = np.asarray(v.mean(0))
    errors = {
        "noisy": int(jnp.sum(noisy != clean)),
        "posterior mean > 0.5": int(np.sum((mean > 0.5) != np.asarray(clean))),
    }
    print("pixels wrong:", errors)

    fig, axes = plt.subplots(1, 3, figsize=(7, 2.6))
    for ax, img, title in zip(
        axes,
        (clean, noisy, mean),
        ("clean", f"noisy (flip {args.flip})", "posterior mean"),
        strict=True,
    ):
        ax.imshow(np.asarray(img).reshape(data.image_shape), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "posterior_mean.png", dpi=120)

    az.plot_trace(idata, var_names=["eps"])
    plt.gcf().savefig(out / "trace_eps.png", dpi=100)
    stats = diag.to_inference_data()
    az.plot_trace(stats)
    plt.gcf().savefig(out / "trace_chain_statistics.png", dpi=100)
    az.plot_rank(stats)
    plt.gcf().savefig(out / "rank_chain_statistics.png", dpi=100)
    plt.close("all")
    print(f"figures written to {out}/")
    return errors


if __name__ == "__main__":
    main()
