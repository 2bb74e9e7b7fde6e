"""Exact log Z by enumeration: time and peak memory, 64 visible x 20..28 hidden units.

    python benchmarks/bench_partition.py [--quick] [--out benchmarks/results/partition.json]

Each case runs in its own subprocess so that its peak memory can be read: the peak resident
set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) of that process, which includes the
Python interpreter, JAX and XLA's runtime and the compiled program (tracemalloc would miss
XLA's allocations). The growth of the peak during the call shows whether memory stays flat as
the number of enumerated states grows 256-fold.

Contenders, in the same run:

* ours: ``numpyro_rbm.log_partition`` (one ``exp`` per element and one ``log`` per state via
  :math:`\\sum_i \\mathrm{softplus}(\\phi_i) = \\sum_i \\max(\\phi_i, 0) + \\log \\prod_i
  (1 + e^{-|\\phi_i|})`, cache-sized chunks of :math:`2^{12}` states);
* baseline: a plain chunked log-sum-exp (the previous implementation): chunks of
  :math:`2^{16}` states, ``softplus`` per element, ``logsumexp`` per chunk.

The RBM is random (weights N(0, 0.3^2), biases N(0, 1)), float32; both must agree on log Z.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import print_rows, row, write_results


def make_params(n_h, n_v=64, seed=0):
    import jax.numpy as jnp
    import numpy as np

    from numpyro_rbm import RBMParams

    rng = np.random.default_rng(seed)
    return RBMParams(
        jnp.asarray(0.3 * rng.normal(size=(n_v, n_h)), jnp.float32),
        jnp.asarray(rng.normal(size=n_v), jnp.float32),
        jnp.asarray(rng.normal(size=n_h), jnp.float32),
    )


def baseline_compiled(params, chunk_bits=16):
    """Plain chunked log-sum-exp over the hidden states, softplus per element (the previous
    implementation); returns a compiled ``f(w_t, b, c)`` and its arguments."""
    import jax
    import jax.numpy as jnp
    from jax.scipy.special import logsumexp

    n = params.n_hidden
    k = min(chunk_bits, n)
    bits = lambda i, nb: ((i[..., None] >> jnp.arange(nb)) & 1).astype(jnp.float32)  # noqa: E731

    def run(w_t, b, c):
        low = bits(jnp.arange(2**k), k)
        low_field = low @ w_t[:k]
        low_own = low @ c[:k]

        def chunk(j):
            high = bits(j, n - k)
            field = b + high @ w_t[k:] + low_field
            return logsumexp(low_own + high @ c[k:] + jnp.sum(jax.nn.softplus(field), -1))

        return logsumexp(jax.lax.map(chunk, jnp.arange(2 ** (n - k))))

    args = (params.weights.T, params.visible_bias, params.hidden_bias)
    return jax.jit(run).lower(*args).compile(), args


def ours_compiled(params):
    """``numpyro_rbm.log_partition``'s compiled program for ``params`` and its arguments."""
    from numpyro_rbm import partition

    k = partition._chunk_bits(
        params.n_hidden, params.n_visible, None, partition._platform(params.weights)
    )
    return partition._log_partition_compiled.lower(params, k).compile(), (params,)


def worker(impl: str, n_h: int):
    """Runs one case in this process and prints its JSON result."""
    import jax

    params = make_params(n_h)
    compiled, args = (ours_compiled if impl == "ours" else baseline_compiled)(params)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after compilation
    start, cpu_start = time.perf_counter(), time.process_time()
    log_z = float(jax.block_until_ready(compiled(*args)))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            dict(
                seconds=seconds,
                cpu_seconds=cpu_seconds,
                log_z=log_z,
                peak_rss_mb=rss_after / 1024,
                peak_growth_mb=(rss_after - rss_before) / 1024,
            )
        )
    )


def run_case(impl: str, n_h: int) -> dict:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(n_h)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{impl} 64x{n_h} failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="64x20, 64x24 and 64x28 (no baseline at 28)"
    )
    parser.add_argument("--out", default=None, help="JSON path (default results/partition.json)")
    parser.add_argument("--worker", nargs=2, metavar=("IMPL", "N_HIDDEN"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.worker[0], int(args.worker[1]))
        return
    sizes = [20, 24, 28] if args.quick else [20, 22, 24, 26, 28]
    rows = []
    # The baseline needs about 3 minutes at 64x28: skipped there in --quick.
    skipped = dict(seconds=float("nan"), cpu_seconds=float("nan"), log_z=float("nan"))
    skipped.update(peak_rss_mb=None, peak_growth_mb=float("nan"))
    for n_h in sizes:
        ours = run_case("ours", n_h)
        base = skipped if (args.quick and n_h == 28) else run_case("baseline", n_h)
        case = f"64x{n_h} (2^{n_h} states)"
        agree = abs(ours["log_z"] - base["log_z"]) <= 1e-5 * abs(base["log_z"]) + 1e-4
        base_rate = None if base is skipped else 2**n_h / base["seconds"]
        target = "< 10 s" if n_h == 28 else None
        rows.append(
            row(
                case,
                "states/s",
                2**n_h / ours["seconds"],
                "plain chunked log-sum-exp",
                base_rate,
                note=(
                    f"ours {ours['seconds']:.2f} s ({ours['cpu_seconds']:.2f} s CPU), baseline "
                    f"{base['seconds']:.2f} s ({base['cpu_seconds']:.2f} s CPU); log Z "
                    f"{ours['log_z']:.4f} vs {base['log_z']:.4f}"
                    + ("" if agree or base is skipped else " (DISAGREE)")
                    + (" (baseline skipped in --quick)" if base is skipped else "")
                ),
            )
        )
        rows.append(
            {
                **row(
                    case,
                    "seconds",
                    ours["seconds"],
                    "plain chunked log-sum-exp",
                    None if base is skipped else base["seconds"],
                    target,
                ),
                "met": (ours["seconds"] < 10.0) if n_h == 28 else None,
                "note": "wall time of one call after compilation (lower is better); process "
                "CPU time in the states/s note",
            }
        )
        rows.append(
            row(
                case,
                "peak RSS MB (process)",
                ours["peak_rss_mb"],
                "plain chunked log-sum-exp",
                base["peak_rss_mb"],
                note=(
                    f"peak growth during the call (after compilation): ours "
                    f"{ours['peak_growth_mb']:.1f} MB, baseline {base['peak_growth_mb']:.1f} MB "
                    "(ru_maxrss of a fresh subprocess per case)"
                ),
            )
        )
        print(f"64x{n_h}: ours {ours}, baseline {base}", flush=True)
    print_rows(rows)
    path = write_results("partition", rows, args.out)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
