"""The accelerator rows: the library on a GPU (or TPU) against references in the same run.

    python benchmarks/bench_gpu.py [--quick] [--out FILE] [--any-device]

On a machine whose JAX has no GPU or TPU, every row says "not measured" (and why) and the
script exits at once; ``--any-device`` measures on whatever JAX has (with ``--quick`` a CPU
smoke test of this script). The rows and targets are those of the issue about accelerators,
first measured on an H200 by ``shared/gpu/bench_gpu.py``:

* Gibbs 784x500 at 10,000 and 100,000 chains: chain-sweeps per second of the library's sweep
  against a matmul-only scan of the same shapes (the roofline); target ratio >= 0.9. The
  same at ``jax.default_matmul_precision("highest")`` (full float32, what evaluation runs at:
  ``docs/performance.md``, "Precision"), against the roofline at that precision.
* ``fit``'s fixed cost per call (a 1-epoch call minus one epoch), 784x500, batch 100; target
  under 50 ms; and its examples per second.
* exact log Z 784x24 and 64x28 with the default chunking; target <= 0.05 s.
* AIS 784x500, 100 runs, the default schedule: seconds after compilation.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from _common import row, write_results

CASES = [
    ("Gibbs 784x500, 10,000 chains", "chain-sweeps/s"),
    ("Gibbs 784x500, 100,000 chains", "chain-sweeps/s"),
    ("Gibbs 784x500, 100,000 chains, precision highest", "chain-sweeps/s"),
    ("fit 784x500, batch 100: fixed cost per call", "s"),
    ("fit 784x500, batch 100: epoch throughput", "examples/s"),
    ("exact log Z 784x24, default chunks", "s"),
    ("exact log Z 64x28, default chunks", "s"),
    ("AIS 784x500, 100 runs, default schedule", "s"),
]


def best_of(fn, n=3):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make(nv, nh, seed=0):
    import jax.numpy as jnp

    from numpyro_rbm import RBMParams

    r = np.random.default_rng(seed)
    w, b, c = 0.05 * r.normal(size=(nv, nh)), 0.1 * r.normal(size=nv), 0.1 * r.normal(size=nh)
    return RBMParams(*(jnp.asarray(x, jnp.float32) for x in (w, b, c)))


def gibbs_row(case, metric, params, chains, sweeps):
    import jax

    from numpyro_rbm.kernels import gibbs

    v0 = (jax.random.uniform(jax.random.key(1), (chains, 784)) < 0.5).astype("float32")
    key = jax.random.key(0)
    ours = jax.jit(lambda v: gibbs(key, params, v, sweeps)[0])

    @jax.jit
    def roof(v):
        def body(v, _):
            h = v @ params.weights + params.hidden_bias
            return h @ params.weights.T + params.visible_bias, None

        return jax.lax.scan(body, v, None, length=sweeps)[0]

    ours(v0).block_until_ready(), roof(v0).block_until_ready()  # compile
    t_ours = best_of(lambda: ours(v0).block_until_ready())
    t_roof = best_of(lambda: roof(v0).block_until_ready())
    rate = chains * sweeps
    note = f"{chains} chains x {sweeps} sweeps"
    return row(case, metric, rate / t_ours, "matmul-only scan", rate / t_roof,
               ">= 0.9 of the roofline", 0.9, note)  # fmt: skip


def gibbs_rows(quick):
    import jax

    params, sweeps = make(784, 500), 5 if quick else 50
    sizes = (64, 128) if quick else (10_000, 100_000)
    rows = [gibbs_row(*CASES[i], params, sizes[i], sweeps) for i in range(2)]
    with jax.default_matmul_precision("highest"):  # both sides traced at full float32
        rows.append(gibbs_row(*CASES[2], params, sizes[1], sweeps))
    return rows


def at_most(r, limit):
    """``r`` with ``met`` = its value is at most ``limit`` (a target on seconds, not a ratio)."""
    return dict(r, met=None if r["ours"] is None else bool(r["ours"] <= limit))


def fit_rows(quick):
    import jax

    import numpyro_rbm as nrbm

    n = 2_000 if quick else 60_000
    r = np.random.default_rng(0)
    prototypes = r.random((20, 784)) < 0.3
    x = (prototypes[r.integers(0, 20, n)] ^ (r.random((n, 784)) < 0.05)).astype(np.float32)
    kw = dict(method="pcd", epochs=1, batch_size=100, num_chains=100, eval_every=None,
              log_likelihood=None, progress=False, seed=0)  # fmt: skip

    def call(epochs):
        return lambda: jax.block_until_ready(nrbm.fit(x, 500, **dict(kw, epochs=epochs)).params)

    call(1)(), call(6)()  # compile
    t1, t6 = best_of(call(1), n=2), best_of(call(6), n=2)
    epoch = (t6 - t1) / 5
    return [
        at_most(
            row(*CASES[3], t1 - epoch, target="< 0.05 s", note="1 epoch call - 1 epoch"), 0.05
        ),
        row(*CASES[4], n / epoch, note=f"{n} examples"),
    ]


def logz_row(case, metric, nv, nh):
    import jax

    import numpyro_rbm as nrbm

    params = make(nv, nh)

    def call():
        return jax.block_until_ready(nrbm.log_partition(params, max_units=None))

    call()
    seconds = best_of(call, n=2)
    return at_most(row(case, metric, seconds, target="<= 0.05 s", note=f"{nv}x{nh}"), 0.05)


def logz_rows(quick):
    sizes = [(784, 12), (64, 12)] if quick else [(784, 24), (64, 28)]
    return [logz_row(*CASES[5 + i], *sizes[i]) for i in range(2)]


def ais_rows(quick):
    import jax

    import numpyro_rbm as nrbm

    params = make(784, 500).replace(weights=2 * make(784, 500).weights)
    betas = np.linspace(0, 1, 200) if quick else None
    runs = 16 if quick else 100

    def call():
        return jax.block_until_ready(
            nrbm.ais(params, jax.random.key(0), num_runs=runs, betas=betas).log_z
        )

    call()
    return [row(*CASES[7], best_of(call, n=1), note=f"{runs} runs")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes")
    parser.add_argument("--out", default=None, help="JSON path (default results/gpu.json)")
    parser.add_argument("--any-device", action="store_true", help="measure on a CPU too")
    args = parser.parse_args(argv)
    import jax

    platform = jax.default_backend()
    if platform == "cpu" and not args.any_device:
        note = "not measured: no GPU or TPU on this machine (JAX backend: cpu)"
        rows = [row(case, metric, None, note=note) for case, metric in CASES]
    else:
        rows = []
        for measure in (gibbs_rows, fit_rows, logz_rows, ais_rows):
            rows += measure(args.quick)
    write_results("gpu", rows, args.out, {"platform": platform})


if __name__ == "__main__":
    main()
