"""scikit-learn's own tests of ``BernoulliRBM`` run unmodified against ours.

The installed ``sklearn/neural_network/tests/test_rbm.py`` is read and executed with one line
replaced: ``from sklearn.neural_network import BernoulliRBM`` becomes ``from
numpyro_rbm.sklearn import BernoulliRBM``. Its test functions are collected here as they are;
this module only adds marks to them (``statistical`` where the verdict depends on our random
stream, ``xfail`` for what we deliberately do not reproduce, listed in ``DELIBERATE`` with the
reason). Assertions inside them are plain Python asserts (the file is not imported through
pytest's assertion rewriting), so a failure shows the upstream line, not the values.

Skipped, with the reason, when scikit-learn's tests are not installed (a pip-installed
scikit-learn ships them). tests/audit_sklearn.md gives the false-failure probability of each
statistical verdict for our estimator.
"""

import importlib.util
import re
from pathlib import Path

import pytest

pytest.importorskip("sklearn")

IMPORT_LINE = re.compile(r"^from sklearn\.neural_network import BernoulliRBM$", re.MULTILINE)
OUR_IMPORT = "from numpyro_rbm.sklearn import BernoulliRBM"

#: Upstream tests that assert what we deliberately do not reproduce: expected to fail with an
#: AssertionError (any other error fails the run). Not strict: the assertion can hold by chance
#: (of 57 JAX streams, one put both components within 1.5e-4 of the asserted values and 11 had
#: gibbs(X) == X; tests/audit_sklearn.md), and an unexpected pass must not fail the suite.
DELIBERATE = {
    "test_fit_gibbs": (
        "asserts components_ == [[0.02649814], [0.02009084]] to 4 decimals and gibbs(X) == X "
        "after 42 epochs: values of NumPy's random stream for RandomState(42) during fit. Ours "
        "samples with JAX keys drawn from random_state (docs/sklearn.md, 'What differs'); "
        "tests/test_sklearn.py::test_fit_gibbs_properties asserts what those values stood for"
    ),
}

#: Upstream tests whose verdict depends on our Gibbs samples (a fit, or draws from it), hence
#: on the machine's floating-point rounding; .ci/run reruns them under a lower ISA.
STATISTICAL = {
    "test_fit",
    "test_partial_fit",
    "test_sample_hiddens",
    "test_gibbs_smoke",
    "test_score_samples",
    "test_convergence_dtype_consistency",
}


def upstream_path():
    """Path of the installed scikit-learn's test_rbm.py, or None when its tests are absent."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent / "neural_network" / "tests" / "test_rbm.py"
    return path if path.is_file() else None


def load_upstream(path):
    """The namespace of ``path`` executed with its BernoulliRBM import replaced by ours."""
    source = path.read_text(encoding="utf-8")
    patched, n = IMPORT_LINE.subn(OUR_IMPORT, source)
    if n != 1:
        raise RuntimeError(
            f"{path} has {n} lines matching {IMPORT_LINE.pattern!r}, expected exactly one: "
            "scikit-learn changed how its test imports BernoulliRBM; update IMPORT_LINE in "
            "tests/test_sklearn_upstream.py"
        )
    # Executed under this module's name, so that pytest collects the functions as ours; the
    # file name keeps tracebacks pointing at the upstream lines (one line replaced by one).
    namespace = {"__name__": __name__, "__file__": str(path)}
    exec(compile(patched, str(path), "exec"), namespace)
    from numpyro_rbm.sklearn import BernoulliRBM

    assert namespace["BernoulliRBM"] is BernoulliRBM, "the file still imports scikit-learn's"
    return namespace


def _collect():
    path = upstream_path()
    if path is None:
        pytest.skip(
            "scikit-learn's tests are not installed (sklearn/neural_network/tests/test_rbm.py "
            "not found), so its own BernoulliRBM tests cannot run against ours",
            allow_module_level=True,
        )
    namespace = load_upstream(path)
    tests = {name: obj for name, obj in namespace.items() if name.startswith("test_")}
    unknown = (DELIBERATE.keys() | STATISTICAL) - tests.keys()
    assert not unknown, f"marked tests missing from {path}: {sorted(unknown)}"
    for name, reason in DELIBERATE.items():
        tests[name] = pytest.mark.xfail(reason=reason, raises=AssertionError, strict=False)(
            tests[name]
        )
    for name in STATISTICAL:
        tests[name] = pytest.mark.statistical(tests[name])
    return tests


globals().update(_collect())
