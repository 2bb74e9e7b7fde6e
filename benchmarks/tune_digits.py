"""Choosing fit's defaults on a validation split of the training digits, never the test split.

    python benchmarks/tune_digits.py '[{"name": "defaults"}, {"name": "lr 0.01", "lr": 0.01}]'

The training split of ``datasets.digits()`` (1438 images) is cut into its first 80% (1150
rows, trained on) and its last 20% (288 rows, the validation set). Each setting trains 16
hidden units with PCD and centering for seeds 0-4 at once (the five runs ``jax.vmap``-ed
through :func:`numpyro_rbm.learning.run_epochs`, initialised as ``fit`` does) and prints the
exact validation log-likelihood (mean, sd, range over the seeds) and the exact training
log-likelihood, enumerating the 2^16 hidden states. A setting's keys (all optional): ``lr``,
``epochs``, ``batch``, ``k``, ``chains``, ``wd``, ``l1``, ``centering``, ``seeds``; the
defaults are fit's. ``docs/training.md`` ("Quality on digits") has the sweep that chose the
defaults.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from numpyro_rbm import datasets
from numpyro_rbm.core import free_energy, init_params
from numpyro_rbm.learning import build_trainer, pcd, run_epochs
from numpyro_rbm.learning.optim import CosineAdam, Penalized
from numpyro_rbm.partition import log_partition
from numpyro_rbm.training import DEFAULT_EPOCHS, base_rate_bias


def split():
    """The first 80% of the training digits and the last 20% (validation)."""
    train = datasets.digits().train
    n_fit = int(0.8 * len(train))
    return train[:n_fit], train[n_fit:]


@jax.jit
def exact_ll(params, x):
    return jnp.mean(-free_energy(params, x)) - log_partition(params, chunk_bits=12)


def run(train, heldout, name="", seeds=range(5), epochs=DEFAULT_EPOCHS, batch=10, lr=0.03,
        k=1, chains=100, wd=0.0, l1=1e-3, centering=True):  # fmt: skip
    """One setting, its seeds vmapped; returns the row of figures."""
    train = jnp.asarray(train, jnp.float32)
    optimizer = CosineAdam(lr, epochs * (len(train) // batch))
    if wd or l1:
        optimizer = Penalized(optimizer, wd, l1)
    trainer = build_trainer(pcd(k, chains), optimizer, centering=centering)
    states = []
    for seed in seeds:  # fit's initialisation: the same keys, base rates, N(0, 0.01^2)
        key_init, key_chains, key_run = jax.random.split(jax.random.key(seed), 5)[:3]
        params = init_params(
            key_init, train.shape[1], 16, weight_scale=0.01,
            visible_bias=base_rate_bias(np.asarray(train)),
        )  # fmt: skip
        states.append(trainer.init(key_chains, params, train, batch, key_run))
    states = jax.tree.map(lambda *x: jnp.stack(x), *states)
    t0, c0 = time.perf_counter(), time.process_time()
    out = jax.vmap(lambda s: run_epochs(trainer, s, train, epochs, batch_size=batch))(states)
    jax.block_until_ready(out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    val, fit_ll = [], []
    for i in range(len(list(seeds))):
        params = trainer.standard_params(jax.tree.map(lambda x, i=i: x[i], out[0]))
        val.append(float(exact_ll(params, jnp.asarray(heldout))))
        fit_ll.append(float(exact_ll(params, train)))
    return dict(
        name=name, val=float(np.mean(val)), sd=float(np.std(val, ddof=1)), lo=min(val),
        hi=max(val), train=float(np.mean(fit_ll)), wall_s=wall, cpu_s=cpu,
    )  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("settings", help="a JSON list of settings (see the module docstring)")
    args = parser.parse_args()
    train, heldout = split()
    for setting in json.loads(args.settings):
        row = run(train, heldout, **setting)
        print(
            f"{row['name']:<28} val {row['val']:.3f} sd {row['sd']:.3f} "
            f"[{row['lo']:.3f}, {row['hi']:.3f}] train {row['train']:.3f} "
            f"({row['wall_s']:.0f} s, {row['cpu_s']:.0f} CPU s incl. compilation)"
        )


if __name__ == "__main__":
    main()
