"""The accelerator benchmark's rows on a machine without one: every row present, in the
format run_all.py renders, saying "not measured" rather than a figure; the pure pieces of
the time-to-quality benchmark (its bundled data, its scikit-learn loop, its curve reading)."""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _import_benchmarks():
    """``bench_gpu``, ``bench_quality`` and ``run_all`` from benchmarks/, without leaving
    their ``_common`` on the path or in ``sys.modules`` (the examples have a ``_common`` of
    their own)."""
    saved = sys.modules.pop("_common", None)
    sys.path.insert(0, str(BENCH))
    try:
        import bench_gpu
        import bench_quality
        import run_all
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("_common", None)
        if saved is not None:
            sys.modules["_common"] = saved
    return bench_gpu, bench_quality, run_all


bench_gpu, bench_quality, run_all = _import_benchmarks()


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


def test_the_bundled_mnist_subset_is_bits_split_4000_500_500():
    split = bench_quality.load_mnist5k()
    assert [len(x) for x in (split.train, split.valid, split.test)] == [4000, 500, 500]
    for x in (split.train, split.valid, split.test):
        assert x.shape[1] == 784 and x.dtype == np.float32
        assert set(np.unique(x)) == {0.0, 1.0}
    with np.load(bench_quality.MNIST5K, allow_pickle=False) as z:
        assert sorted(z["source_rows"]) == list(range(5000))  # each image once, in one split
        assert set(np.unique(z["test_labels"])) == set(range(10))


def test_the_sklearn_loop_is_bernoulli_rbm_fit_epoch_by_epoch():
    from sklearn.neural_network import BernoulliRBM

    split = bench_quality.digits_split(n_hidden=4)
    split = split._replace(train=split.train[:60], valid=split.valid[:20], test=split.test[:20])
    curve = bench_quality.sklearn_curve(split, 0.05, seed=3, epochs=3, points=3)
    assert list(curve.epochs) == [1, 2, 3] and np.all(np.diff(curve.seconds) > 0)
    rbm = BernoulliRBM(n_components=4, learning_rate=0.05, n_iter=3, random_state=3)
    rbm.fit(split.train)
    params = bench_quality.sklearn_params(rbm)
    assert curve.test[-1] == pytest.approx(bench_quality.mean_ll(params, split.test), abs=1e-6)
    assert curve.valid[-1] == pytest.approx(bench_quality.mean_ll(params, split.valid), abs=1e-6)


def test_time_to_quality_reads_the_first_point_at_the_level_and_picks_on_validation():
    Curve = bench_quality.Curve
    a = Curve("a", np.array([1.0, 2.0, 4.0]), 5.0, np.array([-3.0, -2.0, -2.5]),
              np.array([-3.0, -1.9, -1.0]), np.array([1, 2, 4]))  # fmt: skip
    b = Curve("b", np.array([1.0, 2.0]), 0.0, np.array([-2.2, -2.1]), np.array([-9.0, -0.5]),
              np.array([1, 2]))  # fmt: skip
    assert bench_quality.time_to_reach(a, -2.0) == 7.0  # 2 s of training + 5 s of set-up
    assert bench_quality.time_to_reach(a, -2.0, with_setup=False) == 2.0
    assert bench_quality.time_to_reach(a, -0.5) is None
    best, at = bench_quality.best_on_validation([a, b])
    assert (best.label, at) == ("a", 1)  # validation decides, not the test figures
    mean = bench_quality.mean_curve([a, a._replace(test=a.test - 1.0, seconds=a.seconds * 3)])
    assert list(mean.test) == pytest.approx([-3.5, -2.4, -1.5])
    assert list(mean.seconds) == pytest.approx([2.0, 4.0, 8.0])
    assert bench_quality.geometric_epochs(100, 5) == [1, 3, 10, 32, 100]
