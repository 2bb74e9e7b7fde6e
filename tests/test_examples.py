"""Each example's claim, checked by a quick run of the example itself (``--quick``).

Every example checks its own claim at the end of its run (``examples/_common.py``) and
returns the figures with the list of failed claims; these tests run the quick versions in
this process (sharing JAX's start-up and compilation caches) and assert that no claim
failed. The verdicts come from random draws (training, sampling, AIS), so the tests are
statistical: each claim's threshold was set from the spread of its figure over five seeds
natively and five under ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``, for a false-failure
probability below about 1e-4; ``tests/audit_examples.md`` gives the figures, the thresholds,
the breaks each test catches and the durations.
"""

import importlib
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.statistical


@pytest.fixture(scope="module")
def examples():
    """``examples/`` importable (the examples import ``_common`` as a sibling)."""
    sys.path.insert(0, str(ROOT / "examples"))
    yield lambda name: importlib.import_module(name)
    sys.path.remove(str(ROOT / "examples"))


def test_quickstart(examples):
    results = examples("quickstart").main(["--quick"])
    assert results["failed"] == []


def test_gaussian_digits(examples):
    results = examples("gaussian_digits").main(["--quick"])
    assert results["failed"] == []
    assert results["mse"]["RBM posterior mean"] < results["mse"]["independent shrinkage"]


def test_relu_digits(examples):
    results = examples("relu_digits").main(["--quick"])
    assert results["failed"] == []


def test_potts_protein_family(examples):
    results = examples("potts_protein_family").main(["--quick"])
    assert results["failed"] == []


def test_digits_pipeline(examples):
    pytest.importorskip("sklearn")
    results = examples("digits_pipeline").main(["--quick"])
    assert results["failed"] == []


def test_denoise_digit(examples, tmp_path):
    results = examples("denoise_digit").main(["--quick", "--out", str(tmp_path)])
    assert results["failed"] == []  # converged, error ratio, flip rate in the HDI
    assert (tmp_path / "posterior_mean.png").exists()


def test_missing_digits(examples):
    results = examples("missing_digits").main(["--quick"])
    assert results["failed"] == []
    assert results["log_loss"]["rbm"] < results["log_loss"]["marginals"]


def test_impute(examples):
    results = examples("impute").main(["--quick"])
    assert results["failed"] == []  # known entries kept, both fills beat the column baselines
    assert results["error_rbm"] < results["error_mean"]


def test_svi_is_pcd(examples):
    results = examples("svi_is_pcd").main(["--quick"])
    assert results["failed"] == []  # SVI's held-out LL reaches fit's (exact evaluation)


def test_hybrid_rbm(examples):
    results = examples("hybrid_rbm").main(["--quick"])
    assert results["failed"] == []  # the hybrid classifies, and is a density model
    assert set(results["rows"]) == {"alpha = 0", "alpha = 0.1"}


def test_svi_missing(examples):
    results = examples("svi_missing").main(["--quick"])
    assert results["failed"] == []  # SVI on incomplete digits reaches fit's held-out LL


def test_svi_gaussian_noise(examples):
    results = examples("svi_gaussian_noise").main(["--quick"])
    assert results["failed"] == []  # known noise variances recovered, held-out LL near truth
