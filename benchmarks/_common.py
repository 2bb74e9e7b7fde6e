"""Shared helpers of the benchmark scripts: result rows, machine description, timing.

Every ``benchmarks/bench_*.py`` writes ``{"benchmark", "device", "rows": [ROW, ...]}`` with
``ROW = {"case", "metric", "ours", "baseline", "baseline_value", "ratio", "target", "met",
"note"}``; ``benchmarks/run_all.py`` collects them into ``docs/benchmarks.md``.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_string() -> str:
    """The JAX device the benchmark ran on, e.g. ``cpu (AMD EPYC, 2 cores)``."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu ({cpu_model()}, {os.cpu_count()} cores)"
    return f"{dev.platform} ({getattr(dev, 'device_kind', dev.platform)})"


def row(case, metric, ours, baseline="", baseline_value=None, target=None, minimum=None, note=""):
    """One result row; ``ratio = ours / baseline_value``; ``met`` is ``ratio >= minimum`` when a
    minimum ratio is the target (``target`` is its human-readable form)."""
    ratio = None
    if baseline_value is not None and ours is not None and baseline_value > 0:
        ratio = float(ours) / float(baseline_value)
    met = None if minimum is None or ratio is None else bool(ratio >= minimum)
    return {
        "case": case,
        "metric": metric,
        "ours": None if ours is None else float(ours),
        "baseline": baseline,
        "baseline_value": None if baseline_value is None else float(baseline_value),
        "ratio": ratio,
        "target": target,
        "met": met,
        "note": note,
    }


def write_results(name: str, rows: list, out: str | None, extra: dict | None = None) -> Path:
    """Writes the results file (``extra``: further keys kept alongside the rows)."""
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "device": device_string(), "rows": rows, **(extra or {})}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def fmt(x) -> str:
    """A table cell: blank for None, 4 significant digits for floats."""
    if x is None:
        return ""
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def print_rows(rows: list) -> None:
    print("| case | metric | ours | baseline | baseline value | ratio | target | met |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['metric']} | {fmt(r['ours'])} | {r['baseline']} | "
            f"{fmt(r['baseline_value'])} | {fmt(r['ratio'])} | {r['target'] or ''} | "
            f"{fmt(r['met'])} |"
        )


# A pause before each timed call: OpenBLAS's worker threads keep spinning for a while after a
# NumPy or scikit-learn call returns, and would slow whichever contender runs next.
SETTLE_S = 0.3


def interleaved_best(fns: dict, repeats: int) -> dict:
    """Best wall time in seconds of each zero-argument callable, the callables taking turns
    (``repeats`` rounds) so that a load change on the machine hits all of them alike."""
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best
