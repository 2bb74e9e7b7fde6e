"""Quality and speed of numpyro_rbm.fit against scikit-learn's BernoulliRBM and exact ML.

    python benchmarks/bench_training.py [--quick] [--sections speed bas quality]
                                        [--out benchmarks/results/training.json]

Sections (each prints its rows; all rows go to the JSON written with ``--out``):

* ``speed``: training examples per second, compile time excluded (reported in its own rows),
  against ``BernoulliRBM`` on the same data at batch sizes 10 and 100, on the binarised digits
  (64 x 16) and on 784 x 500 random binary data. scikit-learn runs PCD-1 with ``batch_size``
  persistent chains and plain SGD at learning rate 0.1, in float64 by default and in float32
  when given float32 input; ours runs PCD-1 with ``num_chains = batch_size`` in float32, once
  with the library defaults (Adam and centering) and once like scikit-learn (plain SGD at 0.1,
  no centering). Each side is timed several times, the runs taking turns, and the best time
  counts (the machine is shared, and the best time is the one least disturbed).
* ``fixed``: ``fit``'s fixed cost per warm call (issue 17), as process CPU time outside the
  compiled epochs (robust on a shared machine, where wall time is not), split into its parts
  (data check and transfer, base-rate bias, the rest of the initial state), each also as the
  main thread's CPU time (the host-side work; on the CPU backend the device work runs on
  XLA's threads), with the count of
  traces and compilations in the warm calls (0 expected): ``fit(x, n_hidden, epochs=1,
  eval_every=None)`` on the digits (64 x 16, batch 10) and on 784 x 500 (batch 100) with
  2,000 rows (``--quick``) or 60,000 (the accelerator benchmark's size). On a GPU,
  ``bench_gpu.py`` measures the same cost as wall time (a 1-epoch call minus one epoch).
* ``bas``: ``fit(patterns, 16, method="pt", seed=s)`` with nothing else set, and the same
  with ``l1_decay=0`` (the penalty off: memorisation), on the 30 bars-and-stripes 4x4
  patterns (not tiled); exact log-likelihood per pattern against the optimum -ln 30 (target
  >= -3.45 on every seed). The defaults' L1 penalty trades this memorisation for held-out
  likelihood, so the defaults' rows read "NOT met" with that cause; the ``l1_decay=0`` rows
  carry the target.
* ``quality``: exact average test log-likelihood on the digits split with 16 and 20 hidden
  units for CD-1, PCD-1 (no centering), PCD-1 with centering and parallel tempering at the
  earlier defaults (``epochs=100``, ``learning_rate=0.01``, ``l1_decay=0``), and ``fit``'s
  defaults as they are (PCD-1, centering, 300 epochs, Adam 0.03, ``l1_decay=1e-3``);
  ``BernoulliRBM`` trained for the 100 epochs' number of parameter updates; and the exact
  maximum-likelihood ceiling (full-batch Adam on the exact gradient) at 16 hidden units.

``--quick`` (about 2-3 minutes on 2 cores): speed with fewer repetitions and rows, one
bars-and-stripes seed, no quality section.

Rows: ``{"case", "metric", "ours", "baseline", "baseline_value", "ratio", "target", "met",
"note"}``; the file is ``{"benchmark": "training", "device": ..., "rows": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from _common import SETTLE_S  # the pause before each timed call (OpenBLAS threads spin)
from sklearn.neural_network import BernoulliRBM

import numpyro_rbm as nrbm
from numpyro_rbm import datasets
from numpyro_rbm.core import RBMParams, free_energy
from numpyro_rbm.partition import log_partition
from numpyro_rbm.training import DEFAULT_EPOCHS, MIN_UPDATES, base_rate_bias, fit

RESULTS = Path(__file__).resolve().parent / "results"


# --- result rows ------------------------------------------------------------------------------


def device_string() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        model = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        return f"cpu ({model}, {os.cpu_count()} cores)"
    return f"{dev.platform} ({getattr(dev, 'device_kind', dev.platform)})"


def row(case, metric, ours, baseline="", baseline_value=None, target=None, minimum=None, note=""):
    """One result row; ``ratio = ours / baseline_value``; ``met`` is ``ratio >= minimum``."""
    ratio = None
    if baseline_value is not None and baseline_value > 0:
        ratio = float(ours) / float(baseline_value)
    met = None if minimum is None or ratio is None else bool(ratio >= minimum)
    return dict(
        case=case,
        metric=metric,
        ours=float(ours),
        baseline=baseline,
        baseline_value=None if baseline_value is None else float(baseline_value),
        ratio=ratio,
        target=target,
        met=met,
        note=note,
    )


def print_rows(rows):
    print(f"\n{'case':<52} {'metric':<22} {'ours':>11} {'baseline':>11} {'ratio':>6}  target")
    for r in rows:
        base = "" if r["baseline_value"] is None else f"{r['baseline_value']:.5g}"
        ratio = "" if r["ratio"] is None else f"{r['ratio']:.2f}"
        met = "" if r["met"] is None else ("met" if r["met"] else "NOT met")
        print(
            f"{r['case']:<52} {r['metric']:<22} {r['ours']:>11.5g} {base:>11} {ratio:>6}  "
            f"{r['target'] or ''} {met}"
        )


# --- helpers ----------------------------------------------------------------------------------


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


# --- speed ------------------------------------------------------------------------------------

SPEED_TARGETS = {
    # (data, batch): {baseline dtype: (target text, minimum ratio)}; issue 7 item 3 sets the
    # 5x / 3x / 2x targets, issue 4 asks to beat scikit-learn (>= 1x) everywhere else.
    ("digits 64x16", 10): {"float64": (">= 5x", 5.0), "float32": (">= 1x", 1.0)},
    ("digits 64x16", 100): {"float64": (">= 1x", 1.0), "float32": (">= 1x", 1.0)},
    ("random 784x500", 10): {"float64": (">= 1x", 1.0), "float32": (">= 1x", 1.0)},
    ("random 784x500", 100): {"float64": (">= 3x", 3.0), "float32": (">= 2x", 2.0)},
}

OUR_CONFIGS = {
    "defaults (Adam + centering)": dict(),
    "like scikit-learn (SGD 0.1, no centering)": dict(optimizer=optax.sgd(0.1), centering=False),
}


def speed(quick: bool):
    rng = np.random.default_rng(0)
    cases = {
        # 20 / 100 epochs: a real run's length, so per-call set-up counts as in real use.
        "digits 64x16": (datasets.digits().train.astype(np.float32), 16, 20 if quick else 100),
        "random 784x500": (
            (rng.random((1000 if quick else 2000, 784)) < 0.3).astype(np.float32),
            500,
            1 if quick else 2,
        ),
    }
    repeats = 3 if quick else 5
    rows = []
    for data_name, (x, n_hidden, epochs) in cases.items():
        for batch in (10, 100):
            n_examples = epochs * (len(x) // batch) * batch
            runs = {}
            for name, kwargs in OUR_CONFIGS.items():

                def ours(kwargs=kwargs, x=x, n_hidden=n_hidden, batch=batch, epochs=epochs):
                    t0 = time.perf_counter()
                    res = fit(
                        x,
                        n_hidden,
                        batch_size=batch,
                        num_chains=batch,
                        epochs=epochs,
                        eval_every=None,
                        progress=False,
                        **kwargs,
                    )
                    # The whole call (data checks, initialisation, training) less the
                    # compilation, which the first call of these settings pays once.
                    seconds = time.perf_counter() - t0 - res.timings["compile_s"]
                    return seconds, res.timings["compile_s"]

                runs[name] = ours
            for dtype in ("float64", "float32"):
                x_typed = x.astype(dtype)  # scikit-learn keeps float32 input in float32

                def theirs(xx=x_typed, n_hidden=n_hidden, batch=batch, epochs=epochs):
                    t0 = time.perf_counter()
                    BernoulliRBM(
                        n_components=n_hidden, batch_size=batch, n_iter=epochs, random_state=0
                    ).fit(xx)
                    return time.perf_counter() - t0, 0.0

                runs[f"sklearn {dtype}"] = theirs
            best = {name: math.inf for name in runs}
            compile_s = {}
            for rep in range(repeats):  # the contenders take turns; the best time counts
                for name, fn in runs.items():
                    time.sleep(SETTLE_S)
                    seconds, compiled = fn()
                    best[name] = min(best[name], seconds)
                    if rep == 0:
                        compile_s[name] = compiled  # the first fit compiles, later ones reuse
            sk = {
                dtype: epochs * len(x) / best[f"sklearn {dtype}"]
                for dtype in ("float64", "float32")
            }
            for name in OUR_CONFIGS:
                ex_s = n_examples / best[name]
                case = f"PCD-1 {data_name} batch {batch}, ours {name}"
                for dtype, (target, minimum) in SPEED_TARGETS[(data_name, batch)].items():
                    rows.append(
                        row(
                            case,
                            "examples/s",
                            ex_s,
                            f"sklearn BernoulliRBM ({dtype})",
                            sk[dtype],
                            target,
                            minimum,
                            note=f"best of {repeats}, {epochs} epoch(s) of {len(x)} rows, "
                            "whole fit call less compile time",
                        )
                    )
                rows.append(
                    row(
                        case,
                        "compile s (once per run)",
                        compile_s[name],
                        note="first fit of these settings and shapes; later fits reuse it",
                    )
                )
            print_rows(rows[-6:])
    return rows


# --- bars-and-stripes -------------------------------------------------------------------------


# The bars-and-stripes rows: fit's defaults as they are, and the same with the L1 penalty off.
# The 30 patterns are the whole distribution, so the target (>= -3.45 per pattern, optimum
# -ln 30) asks for memorisation, which the defaults' penalty (l1_decay=1e-3, chosen for
# held-out likelihood on digits, docs/training.md) trades away: -3.466..-3.471 on seeds 0-2.
BAS_SETTINGS = {
    "PT defaults": dict(),
    "PT, l1_decay=0 (memorisation)": dict(l1_decay=0.0),
}
BAS_CAUSE = {
    "PT defaults": "the L1 penalty (l1_decay=1e-3) costs the memorisation this target asks for; "
    "the l1_decay=0 row has the target",
    "PT, l1_decay=0 (memorisation)": "",
}


def bas(seeds, n_hidden=16):
    patterns = datasets.bars_and_stripes(4)
    rows = []
    for name, kwargs in BAS_SETTINGS.items():
        for seed in seeds:
            t0 = time.perf_counter()
            res = fit(patterns, n_hidden, method="pt", seed=seed, progress=False, **kwargs)
            ll = exact_ll(res.params, patterns)
            epochs = res.history["epoch"][-1]
            met = bool(ll >= -3.45)
            cause = "" if met or not BAS_CAUSE[name] else f"; not met: {BAS_CAUSE[name]}"
            rows.append(
                row(
                    f"bars-and-stripes 4x4, {name}, 16 hidden, seed {seed}",
                    "LL per pattern (nats)",
                    ll,
                    "optimum -ln 30",
                    -math.log(30),
                    target=">= -3.45",
                    note=f"{epochs} epochs = {epochs * 3} updates (fit's default), 30 patterns "
                    f"untiled; {time.perf_counter() - t0:.0f} s incl. compile and monitoring"
                    + cause,
                )
            )
            rows[-1]["met"] = met
            print_rows(rows[-1:])
    return rows


# --- quality on digits ------------------------------------------------------------------------

# The earlier defaults (Adam 0.01, no penalty) for 100 epochs: the rows measured before the
# defaults changed to Adam 0.03, l1_decay 1e-3 and 300 epochs (chosen on a validation split of
# the training digits, docs/training.md); the last row is fit's defaults as they are.
EARLIER = dict(epochs=100, learning_rate=0.01, l1_decay=0.0)
METHODS = {
    "CD-1": dict(method="cd", centering=False, **EARLIER),
    "PCD-1": dict(method="pcd", centering=False, **EARLIER),
    "PCD-1 + centering (earlier defaults)": dict(method="pcd", **EARLIER),
    "PT (10 temperatures, centered)": dict(method="pt", **EARLIER),
    "PCD-1 + centering (default)": dict(),
}


def quality(hidden_sizes=(16, 20), epochs=100, seeds=range(5)):
    """Exact test log-likelihood on digits, each method's mean over ``seeds`` (one seed's
    figure varies by about 0.1 nats between seeds: a single run cannot show a 0.1 gap)."""
    data = datasets.digits()
    n = len(data.train)
    batch = 10  # fit's default
    seeds = list(seeds)
    rows = []
    for n_hidden in hidden_sizes:
        ceiling = None
        if n_hidden == 16:
            t0 = time.perf_counter()
            p, _ = exact_ml(data.train, n_hidden)
            ceiling = exact_ll(p, data.test)
            rows.append(
                row(
                    f"digits {n_hidden} hidden: exact ML (full-batch, exact gradient)",
                    "test LL (nats)",
                    ceiling,
                    note=f"4000 full-batch Adam steps; train LL {exact_ll(p, data.train):.3f}; "
                    f"{time.perf_counter() - t0:.0f} s",
                )
            )
        # scikit-learn: same batch size, same number of updates (it uses ceil(n / batch)).
        updates = epochs * (n // batch)
        n_iter = round(updates / math.ceil(n / batch))
        sk_lls = [
            exact_ll(
                sklearn_params(
                    BernoulliRBM(
                        n_components=n_hidden, batch_size=batch, n_iter=n_iter, random_state=s
                    ).fit(data.train)
                ),
                data.test,
            )
            for s in seeds
        ]
        sk_ll = float(np.mean(sk_lls))
        for name, kwargs in METHODS.items():
            t0 = time.perf_counter()
            test_lls, train_lls = [], []
            for seed in seeds:
                res = fit(
                    data.train, n_hidden, seed=seed, progress=False, eval_every=None, **kwargs
                )
                test_lls.append(exact_ll(res.params, data.test))
                train_lls.append(exact_ll(res.params, data.train))
            test_ll = float(np.mean(test_lls))
            n_epochs = kwargs.get("epochs") or max(
                DEFAULT_EPOCHS, math.ceil(MIN_UPDATES / (n // batch))
            )
            note = (
                f"mean of seeds {seeds[0]}-{seeds[-1]}: sd {np.std(test_lls, ddof=1):.3f}, "
                f"range [{min(test_lls):.3f}, {max(test_lls):.3f}]; {n_epochs * (n // batch)} "
                "updates; "
                f"train LL {np.mean(train_lls):.3f}; {time.perf_counter() - t0:.0f} s"
            )
            r = row(
                f"digits {n_hidden} hidden: {name}",
                "test LL (nats)",
                test_ll,
                "sklearn BernoulliRBM (same updates)",
                sk_ll,
                note=note,
            )
            r["ratio"] = None  # a ratio of log-likelihoods means nothing; the gap is the figure
            if ceiling is not None and name.endswith("(default)"):
                r["target"] = f"within 0.1 of the exact-ML ceiling {ceiling:.3f}"
                r["met"] = bool(test_ll >= ceiling - 0.1)
            rows.append(r)
            print_rows(rows[-1:])
        rows.append(
            row(
                f"digits {n_hidden} hidden: sklearn BernoulliRBM (lr 0.1)",
                "test LL (nats)",
                sk_ll,
                note=f"{n_iter * math.ceil(n / batch)} updates at batch {batch}; mean of seeds "
                f"{seeds[0]}-{seeds[-1]}, sd {np.std(sk_lls, ddof=1):.3f}",
            )
        )
    return rows


def fixed_cost(quick: bool, calls: int = 5):
    """``fit``'s CPU time per warm call outside the compiled epochs (see the module doc)."""
    from numpyro_rbm.learning import fitting

    r = np.random.default_rng(0)
    n = 2_000 if quick else 60_000
    prototypes = r.random((20, 784)) < 0.3
    wide = (prototypes[r.integers(0, 20, n)] ^ (r.random((n, 784)) < 0.05)).astype(np.float32)
    cases = [("digits 64x16, batch 10", datasets.digits().train, 16, 10),
             (f"784x500, {n} rows, batch 100", wide, 500, 100)]  # fmt: skip
    inside, events, run_epochs = [0.0, 0.0], [], fitting.run_epochs
    # The parts of the fixed cost, each as CPU time with its device work waited for.
    parts = {
        "device_layer": "check+transfer",
        "base_rate_bias": "base-rate bias",
        "_initial_state": "rest of the initial state (hidden offset pass, unit parameters)",
    }
    originals, spent = {name: getattr(fitting, name) for name in parts}, {}

    def part(name):
        def timed_part(*args, **kw):
            start, host = time.process_time(), time.thread_time()
            out = jax.block_until_ready(originals[name](*args, **kw))
            total, main = spent.get(name, (0.0, 0.0))
            spent[name] = (total + time.process_time() - start, main + time.thread_time() - host)
            return out

        return timed_part

    def timed(trainer, state, data, n_epochs, **kw):  # the epochs' own CPU time
        start, host = time.process_time(), time.thread_time()
        out = jax.block_until_ready(run_epochs(trainer, state, data, n_epochs, **kw))
        if n_epochs > 0:
            inside[0] += time.process_time() - start
            inside[1] += time.thread_time() - host
        return out

    def listen(event, duration, **_):
        events.append(event)

    rows = []
    fitting.run_epochs = timed
    for name in parts:
        setattr(fitting, name, part(name))
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        for name, x, n_hidden, batch in cases:
            kw = dict(epochs=1, batch_size=batch, eval_every=None, progress=False)
            fit(x, n_hidden, seed=0, **kw)  # compile
            inside[:], events[:] = [0.0, 0.0], []
            spent.clear()
            start, host = time.process_time(), time.thread_time()
            for seed in range(1, calls + 1):
                jax.block_until_ready(fit(x, n_hidden, seed=seed, **kw).params)
            fixed = (time.process_time() - start - inside[0]) / calls
            main = (time.thread_time() - host - inside[1]) / calls
            # (the initial state includes the base-rate bias: shown apart, then the rest)
            init, bias = spent["_initial_state"], spent.get("base_rate_bias", (0.0, 0.0))
            spent["_initial_state"] = (init[0] - bias[0], init[1] - bias[1])
            split = ", ".join(
                f"{parts[k]} {1e3 * t / calls:.0f} ({1e3 * m / calls:.0f}) ms"
                for k, (t, m) in spent.items()
            )
            note = (
                f"process CPU time outside the epochs; in parentheses the main thread's, the "
                f"host-side work a GPU does not take over: {1e3 * main:.0f} ms in all ({split}); "
                f"{len(events)} traces/compiles in warm calls"
            )
            rows.append(row(f"fit fixed cost per call, {name}", "CPU s per call", fixed,
                            note=note))  # fmt: skip
    finally:
        fitting.run_epochs = run_epochs
        for name, original in originals.items():
            setattr(fitting, name, original)
        jax.monitoring.unregister_event_duration_listener(listen)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 2-3 minute subset")
    parser.add_argument("--sections", nargs="+", default=None, help="speed, fixed, bas, quality")
    parser.add_argument("--hidden", nargs="+", type=int, default=[16, 20])
    parser.add_argument("--seeds", type=int, default=None, help="bars-and-stripes seeds")
    parser.add_argument("--quality-seeds", type=int, default=5, help="digits quality seeds")
    parser.add_argument("--out", default=str(RESULTS / "training.json"), help="JSON path")
    args = parser.parse_args()
    default = ["speed", "fixed", "bas"] + ([] if args.quick else ["quality"])
    sections = args.sections or default
    rows = []
    if "speed" in sections:
        rows += speed(args.quick)
    if "fixed" in sections:
        rows += fixed_cost(args.quick)
    if "bas" in sections:
        rows += bas(range(args.seeds or (1 if args.quick else 10)))
    if "quality" in sections:
        rows += quality(tuple(args.hidden), seeds=range(args.quality_seeds))
    print_rows(rows)
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": "training", "device": device_string(), "rows": rows}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
