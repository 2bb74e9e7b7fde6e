"""Block-Gibbs chain-sweeps per second against the matmul roofline, NumPy and DiscreteHMCGibbs.

    python benchmarks/bench_gibbs.py [--quick] [--out benchmarks/results/gibbs.json]

For 784x500 and 64x64 Bernoulli RBMs with 100 and 1000 chains (float32), one run measures:

* ours: ``numpyro_rbm.core.gibbs_sweep`` inside ``jit`` + ``lax.scan`` (what training and the
  kernel run), and ``numpyro_rbm.infer.block_gibbs`` (the kernel's sweep loop);
* the roofline: the same scan with only the two matmuls of a sweep (``v @ W``, ``h @ W.T``,
  biases added, no sampling), also reported as the machine's matmul GFLOP/s;
* plain NumPy: a vectorised float32 sweep with ``np.random.default_rng``;
* sampler variants (what was tried, docs/performance.md): comparing a float32 uniform with
  :math:`\\sigma(\\phi)` (the previous sampler), the exact 32-bit threshold on JAX's threefry
  bits (the library's sampler), the same threshold on Philox-4x32 words and on XLA's
  RngBitGenerator (``rbg``) words, and ``lax.scan(unroll=2)``;
* the same sweeps with the 1000 chains sharded over two host CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=2``, in a subprocess, since the device
  count is fixed when JAX starts): XLA:CPU runs one sweep's small kernels on one core, so at
  64x64 one device leaves the second core idle; the same library code on chains placed with
  a ``NamedSharding`` runs half the chains on each core, and its draws are bitwise equal to
  the single-device run (the worker checks this);
* NumPyro's ``DiscreteHMCGibbs`` on a 64x16 RBM (one chain, compiled scan, as in
  ``bench_kernel.py``) against ``block_gibbs`` with 4096 chains: chain-draws per second.

All timings are the best of several rounds in which the contenders take turns, compilation
excluded; ratios are against the baseline of the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from _common import interleaved_best, print_rows, row, write_results

from numpyro_rbm import units
from numpyro_rbm._threefry import threefry_bits32
from numpyro_rbm.core import RBMParams, gibbs_sweep
from numpyro_rbm.infer import block_gibbs


def make_arrays(n_v, n_h, seed=0):
    """Weights N(0, 0.05^2), biases N(0, 0.1^2), float32 NumPy arrays."""
    rng = np.random.default_rng(seed)
    w = (0.05 * rng.normal(size=(n_v, n_h))).astype(np.float32)
    b = (0.1 * rng.normal(size=n_v)).astype(np.float32)
    c = (0.1 * rng.normal(size=n_h)).astype(np.float32)
    return w, b, c


def make_params(n_v, n_h, seed=0):
    return RBMParams(*(jnp.asarray(a) for a in make_arrays(n_v, n_h, seed)))


def _uniform_compare(key, field):
    u = jax.random.uniform(key, field.shape, field.dtype)
    return (u < jax.nn.sigmoid(field)).astype(field.dtype)


# Philox-4x32-10 (Salmon et al., SC 2011): four 32-bit words per 10-round block, against
# threefry-2x32's one word (JAX XORs its two outputs) per 20-round block.
_PHILOX_M, _PHILOX_W = (0xD2511F53, 0xCD9E8D57), (0x9E3779B9, 0xBB67AE85)


def _philox_words(key, shape):
    size = math.prod(shape)
    k0, k1 = jax.random.bits(key, (2,), jnp.uint32)
    blocks = -(-size // 4)
    x0 = jax.lax.iota(jnp.uint32, blocks)
    x1 = x2 = x3 = jnp.zeros((blocks,), jnp.uint32)
    m0, m1 = jnp.uint32(_PHILOX_M[0]), jnp.uint32(_PHILOX_M[1])
    for round_ in range(10):
        if round_:
            k0, k1 = k0 + jnp.uint32(_PHILOX_W[0]), k1 + jnp.uint32(_PHILOX_W[1])
        hi0, lo0 = jax.lax.mulhi(x0, m0), x0 * m0
        hi1, lo1 = jax.lax.mulhi(x2, m1), x2 * m1
        x0, x1, x2, x3 = hi1 ^ x1 ^ k0, lo1, hi0 ^ x3 ^ k1, lo0
    # Materialise the words: fused into the consumer, each would recompute the whole chain.
    words = jax.lax.optimization_barrier((x0, x1, x2, x3))
    return jnp.concatenate(words)[:size].reshape(shape)


def _rbg_words(key, shape):
    # An rbg key derived from the incoming threefry key (4 words), XLA's RngBitGenerator.
    rbg_key = jax.random.wrap_key_data(jax.random.bits(key, (4,), jnp.uint32), impl="rbg")
    return jax.random.bits(rbg_key, shape, jnp.uint32)


VARIANTS = {
    "uniform < sigmoid (previous)": _uniform_compare,
    "jax.random.bits (rolled threefry), 32-bit threshold": lambda key, f: units._binary_from_words(
        jax.random.bits(key, f.shape, jnp.uint32), f, 0.0, 1.0
    ),
    "fused threefry (same words), 32-bit threshold (ours)": lambda key, f: (
        units._binary_from_words(threefry_bits32(key, f.shape), f, 0.0, 1.0)
    ),
    "Philox-4x32 words, 32-bit threshold": lambda key, f: units._binary_from_words(
        _philox_words(key, f.shape), f, 0.0, 1.0
    ),
    "rbg (RngBitGenerator) words, 32-bit threshold": lambda key, f: units._binary_from_words(
        _rbg_words(key, f.shape), f, 0.0, 1.0
    ),
}


def scan_runner(params, v0, sweeps, step, unroll=1):
    """A compiled ``sweeps``-step scan of ``step(key, params, v) -> v``; returns a thunk."""

    @jax.jit
    def run(key, params, v):
        def body(v, k):
            return step(k, params, v), None

        return jax.lax.scan(body, v, jax.random.split(key, sweeps), unroll=unroll)[0]

    jax.block_until_ready(run(jax.random.key(0), params, v0))
    counter = iter(range(1, 10**9))
    return lambda: jax.block_until_ready(run(jax.random.key(next(counter)), params, v0))


def block_gibbs_runner(params, v0, sweeps):
    run = jax.jit(lambda k, p, v: block_gibbs(k, p, v, sweeps)[0])
    jax.block_until_ready(run(jax.random.key(0), params, v0))
    return lambda: jax.block_until_ready(run(jax.random.key(1), params, v0))


def matmul_step(key, p, v):
    h = v @ p.weights + p.hidden_bias
    return h @ p.weights.T + p.visible_bias


def variant_step(sample):
    def step(key, p, v):
        key_h, key_v = jax.random.split(key)
        h = sample(key_h, v @ p.weights + p.hidden_bias)
        return sample(key_v, h @ p.weights.T + p.visible_bias)

    return step


def numpy_gibbs(n_v, n_h, chains, sweeps, repeats):
    """Best chain-sweeps/s of a plain vectorised float32 NumPy Gibbs sweep."""
    w, b, c = make_arrays(n_v, n_h)
    rng = np.random.default_rng(0)
    v0 = (rng.random((chains, n_v)) < 0.5).astype(np.float32)
    one = np.float32(1.0)

    def run():
        v = v0
        with np.errstate(over="ignore"):
            for _ in range(sweeps):
                p_h = one / (one + np.exp(-(v @ w + c)))
                h = (rng.random(p_h.shape, dtype=np.float32) < p_h).astype(np.float32)
                p_v = one / (one + np.exp(-(h @ w.T + b)))
                v = (rng.random(p_v.shape, dtype=np.float32) < p_v).astype(np.float32)
        return v

    run()
    return chains * sweeps / interleaved_best({"numpy": run}, repeats)["numpy"]


def _worker(flag: str, args, env: dict) -> str:
    """Runs this script with ``flag`` and ``args`` in a fresh interpreter under ``env``;
    returns the last line it printed."""
    out = subprocess.run(
        [sys.executable, __file__, flag, *(str(a) for a in args)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=True,
        env=env,
    )
    return out.stdout.strip().splitlines()[-1]


def numpy_rate(n_v, n_h, chains, sweeps, repeats):
    """Best of ``numpy_gibbs`` with OpenBLAS's default threads and with one thread, each in a
    subprocess that never starts XLA (whose idle worker threads would compete with BLAS's).
    One thread is often much faster for these small matrices on a loaded 2-core machine
    (measured 20x at 64x64 with 1000 chains), so the baseline takes the faster of the two.

    Returns ``(chain-sweeps/s, "default threads" | "1 thread")``.
    """
    rates = {}
    for label, threads in (("default threads", None), ("1 thread", "1")):
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env.pop(var, None)
            if threads:
                env[var] = threads
        rates[label] = float(_worker("--numpy-worker", (n_v, n_h, chains, sweeps, repeats), env))
    best = max(rates, key=rates.get)
    return rates[best], best


def gibbs_cases(quick: bool, repeats: int):
    rows = []
    cases = [(784, 500, 100, 20), (784, 500, 1000, 10), (64, 64, 100, 400), (64, 64, 1000, 200)]
    if not quick:
        cases = [(n_v, n_h, c, s * 5) for n_v, n_h, c, s in cases]
    for n_v, n_h, chains, sweeps in cases:
        params = make_params(n_v, n_h)
        v0 = jnp.asarray(np.random.default_rng(1).random((chains, n_v)) < 0.5, jnp.float32)
        fns = {
            "matmul": scan_runner(params, v0, sweeps, matmul_step),
            "gibbs_sweep": scan_runner(
                params, v0, sweeps, lambda k, p, v: gibbs_sweep(k, p, v)[0]
            ),
        }
        fns["block_gibbs"] = block_gibbs_runner(params, v0, sweeps)
        detailed = chains == 1000
        if detailed:
            for name, sample in VARIANTS.items():
                fns[name] = scan_runner(params, v0, sweeps, variant_step(sample))
            fns["gibbs_sweep, scan unroll 2"] = scan_runner(
                params, v0, sweeps, lambda k, p, v: gibbs_sweep(k, p, v)[0], unroll=2
            )
        best = interleaved_best(fns, repeats)
        rate = {name: chains * sweeps / t for name, t in best.items()}
        rate["numpy"], numpy_threads = numpy_rate(n_v, n_h, chains, sweeps, repeats)
        case = f"{n_v}x{n_h}, {chains} chains"
        flops = 2 * 2 * chains * n_v * n_h * sweeps
        rows.append(
            row(case, "matmul GFLOP/s (roofline)", flops / best["matmul"] / 1e9, note="same run")
        )
        big = (n_v, chains) == (784, 1000)
        small = (n_v, chains) == (64, 1000)
        rows.append(
            row(
                case,
                "chain-sweeps/s, gibbs_sweep",
                rate["gibbs_sweep"],
                "matmul-only loop",
                rate["matmul"],
                ">= 0.9 of matmul-only" if big else None,
                0.9 if big else None,
                "jit + lax.scan of numpyro_rbm.core.gibbs_sweep",
            )
        )
        rows.append(
            row(
                case,
                "chain-sweeps/s, gibbs_sweep",
                rate["gibbs_sweep"],
                "plain NumPy",
                rate["numpy"],
                ">= 3x NumPy" if small else None,
                3.0 if small else None,
                "vectorised float32 NumPy sweep, np.random.default_rng, in a process that "
                f"never starts XLA; best of OpenBLAS default threads and 1 thread: "
                f"{numpy_threads}",
            )
        )
        rows.append(
            row(
                case,
                "chain-sweeps/s, block_gibbs",
                rate["block_gibbs"],
                "matmul-only loop",
                rate["matmul"],
                note="numpyro_rbm.infer.block_gibbs (the RBMGibbs kernel's loop)",
            )
        )
        if detailed:
            sharded = sharded_rates(n_v, n_h, chains, sweeps, repeats)
            how = (
                f"the same library code with the chains sharded over {SHARDED_DEVICES} forced "
                "host CPU devices (NamedSharding), draws bitwise equal to one device"
            )
            for name in ("gibbs_sweep", "block_gibbs"):
                metric = f"chain-sweeps/s, {name}, chains sharded over {SHARDED_DEVICES} devices"
                rows.append(
                    row(
                        case,
                        metric,
                        sharded[name],
                        "plain NumPy",
                        rate["numpy"],
                        ">= 3x NumPy" if small and name == "gibbs_sweep" else None,
                        3.0 if small and name == "gibbs_sweep" else None,
                        how,
                    )
                )
                rows.append(
                    row(
                        case,
                        metric,
                        sharded[name],
                        f"matmul-only loop, sharded over {SHARDED_DEVICES} devices",
                        sharded["matmul"],
                        ">= 0.9 of matmul-only" if big and name == "gibbs_sweep" else None,
                        0.9 if big and name == "gibbs_sweep" else None,
                        how,
                    )
                )
            for name in list(VARIANTS) + ["gibbs_sweep, scan unroll 2"]:
                rows.append(
                    row(
                        case,
                        f"chain-sweeps/s, variant: {name}",
                        rate[name],
                        "matmul-only loop",
                        rate["matmul"],
                        note="sampler variant (docs/performance.md)",
                    )
                )
        print(f"{case}: " + ", ".join(f"{k} {v:,.0f}/s" for k, v in rate.items()), flush=True)
    return rows


SHARDED_DEVICES = 2


def sharded_worker(n_v, n_h, chains, sweeps, repeats):
    """Runs in a process started with ``SHARDED_DEVICES`` forced host devices: the matmul-only
    loop, ``gibbs_sweep`` and ``block_gibbs`` with the chains sharded over the devices. Checks
    that the sharded draws equal the single-device draws bit for bit. Returns chain-sweeps/s."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    devices = jax.devices()
    assert len(devices) == SHARDED_DEVICES, devices
    mesh = Mesh(np.array(devices), ("chains",))
    params = make_params(n_v, n_h)
    v0 = jnp.asarray(np.random.default_rng(1).random((chains, n_v)) < 0.5, jnp.float32)
    v_sharded = jax.device_put(v0, NamedSharding(mesh, PartitionSpec("chains")))
    sweep = jax.jit(lambda k, p, v: block_gibbs(k, p, v, sweeps)[0])
    single, sharded = (
        sweep(jax.random.key(3), params, v0),
        sweep(jax.random.key(3), params, v_sharded),
    )
    shard_rows = [s.data.shape[0] for s in sharded.addressable_shards]
    assert shard_rows == [chains // SHARDED_DEVICES] * SHARDED_DEVICES, shard_rows  # split
    assert bool(jnp.all(single == sharded)), "sharded draws differ from the single-device run"
    fns = {
        "matmul": scan_runner(params, v_sharded, sweeps, matmul_step),
        "gibbs_sweep": scan_runner(
            params, v_sharded, sweeps, lambda k, p, v: gibbs_sweep(k, p, v)[0]
        ),
        "block_gibbs": block_gibbs_runner(params, v_sharded, sweeps),
    }
    best = interleaved_best(fns, repeats)
    return {name: chains * sweeps / t for name, t in best.items()}


def sharded_rates(n_v, n_h, chains, sweeps, repeats):
    """``sharded_worker`` in a subprocess with ``SHARDED_DEVICES`` forced host devices."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = (
        env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={SHARDED_DEVICES}"
    )
    return json.loads(_worker("--sharded-worker", (n_v, n_h, chains, sweeps, repeats), env))


def discrete_hmc_gibbs_case(quick: bool, repeats: int):
    """DiscreteHMCGibbs (one chain) against block_gibbs (4096 chains) on a 64x16 RBM."""
    from bench_kernel import plain_model, timed_run
    from numpyro.infer import NUTS, DiscreteHMCGibbs

    params = make_params(64, 16)
    params = params.replace(weights=params.weights * 6.0)  # weight scale 0.3, as bench_kernel
    samples = 200 if quick else 1000
    dhmcg = timed_run(DiscreteHMCGibbs(NUTS(plain_model)), params, 50, samples, 1, 0)
    dhmcg_rate = samples / dhmcg["seconds"]
    chains, sweeps = 4096, 50 if quick else 250
    v0 = jnp.asarray(np.random.default_rng(1).random((chains, 64)) < 0.5, jnp.float32)
    best = interleaved_best({"bg": block_gibbs_runner(params, v0, sweeps)}, repeats)
    ours = chains * sweeps / best["bg"]
    return [
        row(
            "64x16",
            "chain-draws/s",
            ours,
            "NumPyro DiscreteHMCGibbs",
            dhmcg_rate,
            ">= 1000x DiscreteHMCGibbs",
            1000.0,
            f"ours: block_gibbs, {chains} chains x {sweeps} sweeps; DiscreteHMCGibbs: one chain, "
            f"{samples} draws (one pass over the 64 units each), compiled scan",
        )
    ]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sweeps and rounds")
    parser.add_argument("--out", default=None, help="JSON path (default results/gibbs.json)")
    parser.add_argument("--numpy-worker", nargs=5, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--sharded-worker", nargs=5, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.numpy_worker:
        print(numpy_gibbs(*args.numpy_worker))
        return
    if args.sharded_worker:
        print(json.dumps(sharded_worker(*args.sharded_worker)))
        return
    repeats = 3 if args.quick else 5
    start = time.perf_counter()
    rows = gibbs_cases(args.quick, repeats) + discrete_hmc_gibbs_case(args.quick, repeats)
    print_rows(rows)
    path = write_results("gibbs", rows, args.out)
    print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
