"""The accelerator benchmark's rows on a machine without one: every row present, in the
format run_all.py renders, saying "not measured" rather than a figure."""

import json
import sys
from pathlib import Path

import jax
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _import_benchmarks():
    """``bench_gpu`` and ``run_all`` from benchmarks/, without leaving its ``_common`` on the
    path or in ``sys.modules`` (the examples have a ``_common`` of their own)."""
    saved = sys.modules.pop("_common", None)
    sys.path.insert(0, str(BENCH))
    try:
        import bench_gpu
        import run_all
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("_common", None)
        if saved is not None:
            sys.modules["_common"] = saved
    return bench_gpu, run_all


bench_gpu, run_all = _import_benchmarks()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="this machine has an accelerator")
def test_gpu_rows_say_not_measured_without_a_gpu(tmp_path):
    out = tmp_path / "gpu.json"
    bench_gpu.main(["--quick", "--out", str(out)])
    payload = json.loads(out.read_text())
    assert run_all.validate(payload) is None
    assert [(r["case"], r["metric"]) for r in payload["rows"]] == bench_gpu.CASES
    for r in payload["rows"]:
        assert r["ours"] is None and r["met"] is None
        assert r["note"].startswith("not measured: no GPU or TPU on this machine")


def test_a_seconds_target_is_met_at_or_below_its_limit():
    assert bench_gpu.at_most({"ours": 0.05}, 0.05)["met"] is True
    assert bench_gpu.at_most({"ours": 0.06}, 0.05)["met"] is False
    assert bench_gpu.at_most({"ours": None}, 0.05)["met"] is None
