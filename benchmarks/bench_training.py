"""Quality and speed of numpyro_rbm.fit against scikit-learn's BernoulliRBM and exact ML.

Sections (each prints a table and adds to the JSON written with --out):

* ``quality``: exact average test log-likelihood on the binarised digits split with 16 and 20
  hidden units for CD-1, PCD-1 (no centering), PCD-1 with centering (the default) and parallel
  tempering, all with ``epochs=100`` and otherwise default settings; scikit-learn's
  ``BernoulliRBM`` trained for the same number of parameter updates; and the exact
  maximum-likelihood ceiling (full-batch Adam on the exact gradient) at 16 hidden units.
* ``bas``: parallel tempering (default ladder and sweeps, ``learning_rate=0.05``) on
  bars-and-stripes 4x4 for several seeds.
* ``speed``: training examples per second (compile time excluded, reported separately) against
  ``BernoulliRBM`` at batch sizes 10 and 100, on digits and on 784x500 random binary data.

Usage: ``python benchmarks/bench_training.py [--sections quality bas speed] [--out f.json]``.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.neural_network import BernoulliRBM

import numpyro_rbm as nrbm
from numpyro_rbm import datasets
from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.partition import log_partition
from numpyro_rbm.training import base_rate_bias, fit


def exact_ll(params: RBMParams, data) -> float:
    """Exact average log-likelihood by enumeration."""
    data = jnp.asarray(data, params.weights.dtype)
    return float(jnp.mean(-free_energy(params, data)) - log_partition(params, chunk_bits=12))


def sklearn_params(rbm: BernoulliRBM) -> RBMParams:
    # scikit-learn stores components_ as (n_hidden, n_visible): transpose to (n_v, n_h).
    return RBMParams(
        jnp.asarray(rbm.components_.T, jnp.float32),
        jnp.asarray(rbm.intercept_visible_, jnp.float32),
        jnp.asarray(rbm.intercept_hidden_, jnp.float32),
    )


def exact_ml(train, n_hidden, steps=4000, seed=0):
    """Full-batch Adam on the exact log-likelihood (enumerating the 2^n_hidden states)."""
    train = jnp.asarray(train, jnp.float32)
    params = nrbm.init_params(
        jax.random.key(seed),
        train.shape[1],
        n_hidden,
        weight_scale=0.01,
        visible_bias=base_rate_bias(train),
    )
    schedule = optax.cosine_decay_schedule(0.03, steps, alpha=0.01)
    opt = optax.adam(schedule)

    def loss(p):
        return -(jnp.mean(-free_energy(p, train)) - log_partition(p, chunk_bits=12))

    @jax.jit
    def step(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    state = opt.init(params)
    for _ in range(steps):
        params, state, value = step(params, state)
    return params, -float(value)


METHODS = {
    "CD-1": dict(method="cd", centering=False),
    "PCD-1": dict(method="pcd", centering=False),
    "PCD-1 + centering (default)": dict(method="pcd"),
    "PT (10 temperatures, centered)": dict(method="pt"),
}


def quality(results, hidden_sizes=(16, 20), epochs=100, seed=0):
    data = datasets.digits()
    n = len(data.train)
    rows = []
    for n_hidden in hidden_sizes:
        for name, kwargs in METHODS.items():
            t0 = time.perf_counter()
            res = fit(
                data.train,
                n_hidden,
                epochs=epochs,
                seed=seed,
                progress=False,
                eval_every=None,
                **kwargs,
            )
            batch = 10  # fit's default
            updates = epochs * (n // batch)
            rows.append(
                dict(
                    n_hidden=n_hidden,
                    method=name,
                    updates=updates,
                    train_ll=exact_ll(res.params, data.train),
                    test_ll=exact_ll(res.params, data.test),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(rows[-1], flush=True)
        # scikit-learn: same batch size, same number of updates (it uses ceil(n / batch)).
        t0 = time.perf_counter()
        n_iter = round(updates / math.ceil(n / batch))
        sk = BernoulliRBM(
            n_components=n_hidden, batch_size=batch, n_iter=n_iter, random_state=seed
        ).fit(data.train)
        p = sklearn_params(sk)
        rows.append(
            dict(
                n_hidden=n_hidden,
                method="scikit-learn BernoulliRBM (lr 0.1)",
                updates=n_iter * math.ceil(n / batch),
                train_ll=exact_ll(p, data.train),
                test_ll=exact_ll(p, data.test),
                seconds=time.perf_counter() - t0,
            )
        )
        print(rows[-1], flush=True)
        if n_hidden == 16:
            t0 = time.perf_counter()
            p, _ = exact_ml(data.train, n_hidden)
            rows.append(
                dict(
                    n_hidden=n_hidden,
                    method="exact ML (full-batch, exact gradient)",
                    updates=4000,
                    train_ll=exact_ll(p, data.train),
                    test_ll=exact_ll(p, data.test),
                    seconds=time.perf_counter() - t0,
                )
            )
            print(rows[-1], flush=True)
    print(f"\n{'n_h':>4} {'method':<40} {'updates':>8} {'train LL':>9} {'test LL':>9} {'s':>6}")
    for r in rows:
        print(
            f"{r['n_hidden']:>4} {r['method']:<40} {r['updates']:>8} {r['train_ll']:>9.3f} "
            f"{r['test_ll']:>9.3f} {r['seconds']:>6.0f}"
        )
    results["quality"] = rows


def bas(results, seeds=(0, 1, 2, 3, 4), n_hidden=16, epochs=200, learning_rate=0.05):
    data = datasets.bars_and_stripes(4)
    train = np.tile(data, (10, 1))  # 300 rows: 30 updates per epoch at batch size 10
    rows = []
    for seed in seeds:
        t0 = time.perf_counter()
        res = fit(
            train,
            n_hidden,
            method="pt",
            epochs=epochs,
            seed=seed,
            progress=False,
            eval_every=None,
            learning_rate=learning_rate,
        )
        rows.append(
            dict(seed=seed, ll=exact_ll(res.params, data), seconds=time.perf_counter() - t0)
        )
        print(rows[-1], flush=True)
    print(
        f"\nbars-and-stripes 4x4, PT defaults, n_hidden={n_hidden}, epochs={epochs}, "
        f"learning_rate={learning_rate} (optimum {-math.log(30):.3f})"
    )
    for r in rows:
        print(f"seed {r['seed']}: {r['ll']:.3f} per pattern ({r['seconds']:.0f} s)")
    results["bas"] = dict(n_hidden=n_hidden, epochs=epochs, learning_rate=learning_rate, rows=rows)


def speed(results, epochs=5):
    rng = np.random.default_rng(0)
    sets = {
        "digits 64x16": (datasets.digits().train, 16),
        "random 784x500": ((rng.random((2000, 784)) < 0.3).astype(np.float32), 500),
    }
    rows = []
    for name, (x, n_hidden) in sets.items():
        for batch in (10, 100):
            res = fit(
                x,
                n_hidden,
                batch_size=batch,
                epochs=epochs,
                eval_every=None,
                progress=False,
                num_chains=batch,
            )
            ours = epochs * (len(x) // batch) * batch / res.timings["train_s"]
            t0 = time.perf_counter()
            BernoulliRBM(
                n_components=n_hidden, batch_size=batch, n_iter=epochs, random_state=0
            ).fit(x)
            theirs = epochs * len(x) / (time.perf_counter() - t0)
            rows.append(
                dict(
                    data=name,
                    batch_size=batch,
                    ours=ours,
                    sklearn=theirs,
                    ratio=ours / theirs,
                    compile_s=res.timings["compile_s"],
                )
            )
            print(rows[-1], flush=True)
    print(
        f"\n{'data':<16} {'batch':>5} {'ours ex/s':>10} {'sklearn ex/s':>12} {'ratio':>6} "
        f"{'compile s':>9}"
    )
    for r in rows:
        print(
            f"{r['data']:<16} {r['batch_size']:>5} {r['ours']:>10.0f} {r['sklearn']:>12.0f} "
            f"{r['ratio']:>6.2f} {r['compile_s']:>9.1f}"
        )
    results["speed"] = rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["quality", "bas", "speed"])
    parser.add_argument("--hidden", nargs="+", type=int, default=[16, 20])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    results = {"device": str(jax.devices()[0])}
    if "quality" in args.sections:
        quality(results, tuple(args.hidden))
    if "bas" in args.sections:
        bas(results)
    if "speed" in args.sections:
        speed(results)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
