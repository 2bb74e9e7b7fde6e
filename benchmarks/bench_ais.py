"""Benchmark: AIS and reverse AIS speed and accuracy.

Times forward AIS with the reference schedule (14,501 betas) and 100 runs on a 784x500 and a
64x64 RBM, and checks AIS, reverse AIS and the log-likelihoods they imply against exact
enumeration on a digits-trained 64x24 RBM (2^24 hidden states). Prints markdown tables and
writes ``benchmarks/results/ais.json`` (result rows for ``benchmarks/run_all.py``, plus the
raw figures under ``machine``, ``timings`` and ``digits``).

Run: ``python benchmarks/bench_ais.py`` (``--quick`` for a smoke run with 1,000 betas,
``--out PATH`` for another JSON path).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import row, write_results

import numpyro_rbm as nrbm
from numpyro_rbm.ais import base_rate_bias, default_schedule


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def train_pcd(data, n_hidden, steps, lr, seed=0, batch=100):
    """Persistent CD with one Gibbs sweep per update (self-contained, plain SGD)."""
    params = nrbm.init_params(
        jax.random.key(seed), data.shape[1], n_hidden, visible_bias=base_rate_bias(data)
    )

    @jax.jit
    def run(p, key):
        k_init, k_steps = jax.random.split(key)
        chains = data[jax.random.choice(k_init, data.shape[0], (batch,))]

        def step(carry, k):
            p, chains = carry
            k_batch, k_gibbs = jax.random.split(k)
            idx = jax.random.choice(k_batch, data.shape[0], (batch,))
            chains, _ = nrbm.gibbs_sweep(k_gibbs, p, chains)
            grad = nrbm.loss_gradient(p, data[idx], chains)
            return (jax.tree.map(lambda a, g: a - lr * g, p, grad), chains), None

        (p, _), _ = jax.lax.scan(step, (p, chains), jax.random.split(k_steps, steps))
        return p

    return run(params, jax.random.key(seed + 1))


def time_ais(n_visible, n_hidden, betas, num_runs):
    params = nrbm.init_params(jax.random.key(0), n_visible, n_hidden, weight_scale=0.05)
    params = params.replace(visible_bias=jnp.full((n_visible,), -1.0))
    # A 2-beta schedule compiles the same program with a trivial loop: its time is the
    # compilation (plus one step); the full call is then timed on its own.
    _, compile_s = timed(lambda: nrbm.ais(params, jax.random.key(1), betas=[0.0, 1.0]).log_z)
    result, total_s = timed(lambda: nrbm.ais(params, jax.random.key(1), betas=betas))
    return {
        "model": f"{n_visible}x{n_hidden} random (W ~ N(0, 0.05^2), b = -1)",
        "num_betas": int(len(betas)),
        "num_runs": num_runs,
        "compile_s": round(compile_s, 2),
        "wall_s": round(total_s, 2),
        "log_z": float(result.log_z),
        "stderr": float(result.stderr),
        "ess": float(result.ess),
    }


def digits_accuracy(n_hidden, betas, num_runs):
    from sklearn.datasets import load_digits

    data = np.asarray(load_digits().data >= 8, np.float32)
    perm = np.random.default_rng(0).permutation(len(data))
    train, test = jnp.asarray(data[perm[:1500]]), jnp.asarray(data[perm[1500:]])
    params, train_s = timed(lambda: train_pcd(train, n_hidden, steps=3000, lr=0.1))
    exact, exact_s = timed(lambda: nrbm.log_partition(params))
    fwd, fwd_s = timed(lambda: nrbm.ais(params, jax.random.key(2), data=train, betas=betas))
    rev, rev_s = timed(
        lambda: nrbm.reverse_ais(params, jax.random.key(3), test, betas=betas, base_data=train)
    )
    ll = {
        name: nrbm.log_likelihood(params, test, z)
        for name, z in (("exact", exact), ("ais", fwd), ("reverse", rev))
    }
    return {
        "model": f"64x{n_hidden} PCD-trained on binarised digits (1500 train, 297 test)",
        "num_betas": int(len(betas)),
        "num_runs": num_runs,
        "train_s": round(train_s, 2),
        "exact_s": round(exact_s, 2),
        "ais_s": round(fwd_s, 2),
        "reverse_s": round(rev_s, 2),
        "exact_log_z": float(exact),
        "ais_log_z": float(fwd.log_z),
        "ais_stderr": float(fwd.stderr),
        "ais_interval": [float(x) for x in fwd.log_z_interval],
        "ais_ess": float(fwd.ess),
        "reverse_log_z": float(rev.log_z),
        "reverse_stderr": float(rev.stderr),
        "test_ll_exact": float(ll["exact"].mean),
        "test_ll_ais": float(ll["ais"].mean),
        "test_ll_reverse": float(ll["reverse"].mean),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 betas instead of 14,501")
    parser.add_argument("--n-hidden", type=int, default=24, help="hidden units, digits model")
    parser.add_argument("--out", default=None, help="JSON path (default results/ais.json)")
    args = parser.parse_args()
    betas = default_schedule(1000 if args.quick else 14501)

    machine = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }
    timings = [time_ais(784, 500, betas, 100), time_ais(64, 64, betas, 100)]
    accuracy = digits_accuracy(args.n_hidden, betas, 100)

    print(f"machine: {machine}\n")
    print("| model | betas | runs | compile (s) | AIS wall (s) | log Z +- stderr | ESS |")
    print("|---|---|---|---|---|---|---|")
    for t in timings:
        print(
            f"| {t['model']} | {t['num_betas']} | {t['num_runs']} | {t['compile_s']} | "
            f"{t['wall_s']} | {t['log_z']:.3f} +- {t['stderr']:.3f} | {t['ess']:.1f} |"
        )
    a = accuracy
    print(f"\n{a['model']}, {a['num_betas']} betas, {a['num_runs']} runs\n")
    print("| quantity | exact | AIS (forward) | reverse AIS (RAISE, from test data) |")
    print("|---|---|---|---|")
    lo, hi = a["ais_interval"]
    print(
        f"| log Z | {a['exact_log_z']:.4f} | {a['ais_log_z']:.4f} +- {a['ais_stderr']:.4f} "
        f"[{lo:.4f}, {hi:.4f}] | {a['reverse_log_z']:.4f} +- {a['reverse_stderr']:.4f} |"
    )
    print(
        f"| test log-likelihood | {a['test_ll_exact']:.4f} | {a['test_ll_ais']:.4f} | "
        f"{a['test_ll_reverse']:.4f} |"
    )
    print(
        f"| wall time (s) | {a['exact_s']} | {a['ais_s']} | {a['reverse_s']} |"
        f"\n\n(training: {a['train_s']} s; AIS ESS {a['ais_ess']:.1f})"
    )
    rows = [
        row(
            f"{t['model']}, {t['num_betas']} betas x {t['num_runs']} runs",
            "AIS seconds",
            t["wall_s"],
            note=f"compile {t['compile_s']} s; log Z {t['log_z']:.3f} +- {t['stderr']:.3f}",
        )
        for t in timings
    ]
    digits = f"digits 64x{args.n_hidden}, {a['num_betas']} betas x {a['num_runs']} runs"
    inside = lo <= a["exact_log_z"] <= hi
    rows += [
        row(
            digits,
            "log Z, forward AIS",
            a["ais_log_z"],
            "exact enumeration",
            a["exact_log_z"],
            note=f"+- {a['ais_stderr']:.4f}, interval [{lo:.4f}, {hi:.4f}] "
            + ("contains" if inside else "MISSES")
            + " the exact value",
        ),
        row(
            digits,
            "log Z, reverse AIS",
            a["reverse_log_z"],
            "exact enumeration",
            a["exact_log_z"],
            note=f"+- {a['reverse_stderr']:.4f} (from test data)",
        ),
        row(digits, "test log-likelihood, AIS", a["test_ll_ais"], "exact", a["test_ll_exact"]),
        row(
            digits,
            "seconds, forward AIS",
            a["ais_s"],
            "exact enumeration (seconds)",
            a["exact_s"],
            note=f"reverse AIS {a['reverse_s']} s",
        ),
    ]
    extra = {"machine": machine, "timings": timings, "digits": accuracy}
    print(f"\nwrote {write_results('ais', rows, args.out, extra)}")


if __name__ == "__main__":
    main()
