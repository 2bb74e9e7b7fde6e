"""When is Z finite (docs/units.md): the normalisability check against numerical integration
of exp(-F) and against the quadratic part of the energy, and where the library enforces it
(RBM, init_params, fit)."""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.linalg import sqrtm

import numpyro_rbm as nrbm
from numpyro_rbm import normalisable
from numpyro_rbm.core import RBMParams, energy, free_energy

_free_energy = jax.jit(free_energy)
_guard = jax.jit(normalisable.unbounded_direction_found)


def model(weights, visible="gaussian", hidden="relu", vis=None, hid=None, bias=0.0):
    """An RBM with the given weights, unit types, unit parameters (dicts of arrays) and all
    biases equal to ``bias``."""
    w = jnp.asarray(weights, jnp.result_type(float))
    n, m = w.shape
    return RBMParams(
        w, jnp.full(n, bias, w.dtype), jnp.full(m, -bias, w.dtype), visible_units=visible,
        hidden_units=hidden, visible_unit_params=vis, hidden_unit_params=hid,
    )  # fmt: skip


def logs(x):
    return jnp.log(jnp.asarray(x, jnp.result_type(float)))


def schur_weights(target):
    """Weights W (2x2) with W^T W = target (Gaussian visible units of precision 1)."""
    return np.real(sqrtm(np.asarray(target, np.float64)))


# The copositive-but-not-PD Gaussian-ReLU model of docs/units.md: Gamma = 2I and
# W^T W = [[1.5, -1], [-1, 1.5]], so S = Gamma - W^T W = [[0.5, 1], [1, 0.5]] (eigenvalue -0.5).
COPOSITIVE_C = [[1.5, -1.0], [-1.0, 1.5]]
GAMMA_2 = {"log_gamma": logs([2.0, 2.0])}


def test_the_1x1_gaussian_relu_model_has_no_normaliser_and_is_refused(x64):
    """The issue's example: lambda = gamma = 1, W = 2. F(10) = -150 (unbounded below); the
    reduced form is 1 - 4 = -3 and the witness is a direction along which E / t^2 -> E_2 < 0."""
    params = model([[2.0]])
    assert float(free_energy(params, jnp.array([10.0]))) == pytest.approx(-150.0, abs=1e-9)
    verdict = nrbm.check_normalisable(params)
    assert verdict.normalisable is False and verdict.method == "copositive (exact)"
    assert verdict.margin == pytest.approx(-3.0)
    v, h = verdict.witness
    for t in (1e3, 1e4):  # E(t v, t h) / t^2 -> E_2(v, h) = (v^2 + h^2)/2 - 2 v h < 0
        e2 = 0.5 * (v @ v + h @ h) - 2 * v @ h
        assert float(energy(params, t * v, t * h)) / t**2 == pytest.approx(e2, abs=1e-3)
        assert e2 < -0.25
    for log_z in ("exact", 0.0, jnp.zeros(())):
        with pytest.raises(nrbm.NotNormalisable, match="strictly copositive.*-3"):
            nrbm.RBM(params, log_z=log_z)
    nrbm.RBM(params, log_z=None)  # the unnormalised -F(v) is not refused
    assert nrbm.check_normalisable(model([[0.5]])).normalisable is True
    assert bool(_guard(params)) and not bool(_guard(model([[0.5]])))  # fit's in-loop search


def test_gaussian_gaussian_needs_a_positive_definite_schur_complement(x64):
    """Gamma - W^T Lambda^-1 W with eigenvalues (1 - 1.2, 1 - 0.2): refused; halving W makes
    it PD: accepted. The margin is its smallest eigenvalue, and the joint quadratic form is
    PD exactly when it is."""
    w = schur_weights([[0.7, 0.5], [0.5, 0.7]])  # W^T W eigenvalues 1.2 and 0.2
    for scale, ok in ((1.0, False), (0.5, True)):
        params = model(scale * w, "gaussian", "gaussian")
        verdict = nrbm.check_normalisable(params)
        joint = np.block([[np.eye(2), -scale * w], [-scale * w.T, np.eye(2)]])
        assert verdict.normalisable is ok and verdict.method == "positive definite"
        schur = np.eye(2) - scale**2 * w.T @ w
        assert verdict.margin == pytest.approx(np.linalg.eigvalsh(schur)[0], abs=1e-12)
        assert bool(np.linalg.eigvalsh(joint)[0] > 0) is ok
        if not ok:
            with pytest.raises(nrbm.NotNormalisable, match="positive definite"):
                nrbm.RBM(params, log_z=0.0)


def test_copositive_but_not_positive_definite_gaussian_relu_is_accepted(x64):
    """S = [[0.5, 1], [1, 0.5]] is indefinite but positive on h >= 0: normalisable, accepted
    without a warning; its margin is min over x >= 0 of x^T S x / x^T x = 0.5. The same
    weights with Gaussian or symmetric dReLU hidden units (all of R^2) are refused, and dReLU
    units are accepted when the negative half-lines are stiff enough (each sign pattern)."""
    w = schur_weights(COPOSITIVE_C)
    params = model(w, "gaussian", "relu", hid=GAMMA_2)
    assert np.linalg.eigvalsh(2 * np.eye(2) - w.T @ w)[0] == pytest.approx(-0.5)
    verdict = nrbm.check_normalisable(params)
    assert verdict.normalisable is True and verdict.margin == pytest.approx(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nrbm.RBM(params, log_z=0.0)
    refused = model(w, "gaussian", "gaussian", hid={"log_precision": logs([2.0, 2.0])})
    assert nrbm.check_normalisable(refused).normalisable is False

    def drelu(gamma_minus):
        hid = {"log_gamma_plus": logs([2.0, 2.0]), "log_gamma_minus": logs(gamma_minus),
               "delta": jnp.zeros(2)}  # fmt: skip
        return nrbm.check_normalisable(model(w, "gaussian", "drelu", hid=hid)).normalisable

    # sign pattern (+, -): 0.5 a^2 + (g - 1.5) b^2 - 2ab > 0 iff (g - 1.5) / 2 > 1
    assert drelu([2.0, 2.0]) is False  # symmetric: the PD test on all of R^2
    assert drelu([100.0, 100.0]) is True
    assert drelu([3.6, 3.6]) is True and drelu([3.4, 3.4]) is False


# Tiny models whose Z is computed by quadrature of exp(-F) over growing boxes. (visible, hidden,
# weights, visible params, hidden params, integration lower bound: -L or 0 for ReLU visible).
TINY = {
    "gaussian-relu W=2": ("gaussian", "relu", [[2.0]], None, None),
    "gaussian-relu W=0.5": ("gaussian", "relu", [[0.5]], None, None),
    "gaussian-relu W=-2": ("gaussian", "relu", [[-2.0]], None, None),
    "gaussian-relu copositive": ("gaussian", "relu", schur_weights(COPOSITIVE_C), None, GAMMA_2),
    "gaussian-relu 2x2 out": (
        "gaussian", "relu", schur_weights([[2.5, 0.2], [0.2, 1.0]]), None, GAMMA_2,
    ),
    "gaussian-gaussian 1x2 PD": ("gaussian", "gaussian", [[0.6, 0.6]], None, None),
    "gaussian-gaussian 1x2 not": ("gaussian", "gaussian", [[0.8, 0.8]], None, None),
    "gaussian-drelu soft minus": (
        "gaussian", "drelu", [[1.0]], None,
        {"log_gamma_plus": logs([5.0]), "log_gamma_minus": logs([0.5]), "delta": jnp.ones(1)},
    ),
    "gaussian-drelu stiff minus": (
        "gaussian", "drelu", [[1.0]], None,
        {"log_gamma_plus": logs([5.0]), "log_gamma_minus": logs([2.0]), "delta": jnp.ones(1)},
    ),
    "relu-drelu W=-2": (
        "relu", "drelu", [[-2.0]], None,
        {"log_gamma_plus": logs([1.0]), "log_gamma_minus": logs([9.0]), "delta": jnp.zeros(1)},
    ),
    "relu-drelu W=+2": (
        "relu", "drelu", [[2.0]], None,
        {"log_gamma_plus": logs([1.0]), "log_gamma_minus": logs([9.0]), "delta": jnp.zeros(1)},
    ),
}  # fmt: skip


@pytest.mark.parametrize("name", list(TINY))
def test_the_verdict_matches_numerical_integration(x64, name):
    """log of the integral of exp(-F) over [-L, L]^n (a 0.02 or 0.2 grid) for L = 16 and 32:
    a finite Z changes by < 1e-6 (the widest of these models has a standard deviation of
    2.6), an infinite one grows by more than 20 (exp(c L^2) growth). Biases 0.3 show they do
    not matter."""
    visible, hidden, weights, vis, hid = TINY[name]
    params = model(weights, visible, hidden, vis, hid, bias=0.3)
    n = params.n_visible
    step = 0.02 if n == 1 else 0.2
    axis = np.arange(-32.0, 32.0 + step / 2, step)
    grid = np.stack(np.meshgrid(*[axis] * n, indexing="ij"), -1).reshape(-1, n)
    log_f = np.asarray(-_free_energy(params, jnp.asarray(grid)))  # -inf outside the support
    inner = np.all(np.abs(grid) <= 16.0, axis=1)
    log_z = [np.logaddexp.reduce(log_f[mask]) for mask in (inner, np.ones_like(inner))]
    growth = log_z[1] - log_z[0]
    verdict = nrbm.check_normalisable(params)
    assert verdict.normalisable in (True, False), verdict
    if verdict.normalisable:
        assert abs(growth) < 1e-6, (name, growth)
    else:
        assert growth > 20, (name, growth)


def test_a_batch_reports_its_first_model_without_normaliser(x64):
    """Batched parameters: each model is checked (the one with W = 2 is named); a bounded
    pair is checked for the whole batch at once."""
    w = jnp.array([0.5, 2.0, -0.5]).reshape(3, 1, 1)
    verdict = nrbm.check_normalisable(model(w[0], "gaussian", "relu").replace(weights=w))
    assert verdict.normalisable is False and verdict.reason.startswith("batch element (1,)")
    bounded = model(w[0], "bernoulli", "relu").replace(weights=w)
    assert nrbm.check_normalisable(bounded).normalisable is True
    with pytest.raises(nrbm.NotNormalisable, match=r"batch element \(1,\)"):
        nrbm.RBM(model(w[0], "gaussian", "relu").replace(weights=w), log_z=jnp.zeros(3))


def test_large_hidden_layers_take_the_sufficient_path(x64):
    """100 ReLU units (2^100 supports, more than an int64 counts) are not enumerated: small
    weights pass the PD condition, large ones give a witness, both without the exact test."""
    w = np.random.default_rng(0).normal(0, 0.05, (3, 100))
    verdict = nrbm.check_normalisable(model(w))
    assert verdict.normalisable is True and verdict.method == "sufficient: positive definite"
    verdict = nrbm.check_normalisable(model(20 * w))
    assert verdict.normalisable is False and verdict.method == "witness"


def _e2(kv, kh, w, v, h):
    """The quadratic part of the energy, straight from its definition (rows are directions)."""
    with np.errstate(invalid="ignore"):  # inf * 0 on a closed half-line, masked out
        own = [np.where(x == 0, 0.0, np.where(x >= 0, k[0], k[1]) * x**2)
               for x, k in ((v, kv), (h, kh))]  # fmt: skip
    return 0.5 * (own[0].sum(-1) + own[1].sum(-1)) - np.einsum("ki,ij,kj->k", v, w, h)


def test_the_exact_check_agrees_with_the_energy_on_random_models(x64, monkeypatch):
    """180 random small models with continuous units on both layers (every pair of Gaussian,
    ReLU, dReLU; 1 to 3 units a layer): a True verdict has E_2 > 0 at 4000 random directions
    of the support, a False one a witness in the support with E_2 < 0; both verdicts occur
    often. The large-model path (sufficient conditions and witness search) and the
    in-training guard (on the 2x2 models: one compilation per unit pair) never contradict
    the exact verdict."""
    rng = np.random.default_rng(0)
    kinds = ["gaussian", "relu", "drelu"]
    counts = {True: 0, False: 0, "large": 0, "guard": 0, "guard_of": 0}
    for trial in range(180):
        vis_kind, hid_kind = kinds[trial % 3], kinds[(trial // 3) % 3]
        n, m = rng.integers(1, 4, size=2)

        def unit_params(kind, size):
            g = rng.uniform(-1, 1, (3, size))
            return {"gaussian": {"log_precision": g[0]}, "relu": {"log_gamma": g[0]},
                    "drelu": {"log_gamma_plus": g[0], "log_gamma_minus": g[1],
                              "delta": g[2]}}[kind]  # fmt: skip

        params = model(rng.normal(0, 0.9, (n, m)), vis_kind, hid_kind,
                       unit_params(vis_kind, n), unit_params(hid_kind, m))  # fmt: skip
        verdict = nrbm.check_normalisable(params)
        kv = np.stack([np.broadcast_to(k, (n,)) for k in params.visible_layer.tail_curvature()])
        kh = np.stack([np.broadcast_to(k, (m,)) for k in params.hidden_layer.tail_curvature()])
        w = np.asarray(params.weights)
        if verdict.normalisable is None:
            continue  # the boundary: not met by random draws
        counts[verdict.normalisable] += 1
        if verdict.normalisable:
            x = rng.normal(size=(4000, n + m))
            x[:, :n] = np.where(np.isfinite(np.where(x[:, :n] >= 0, *kv)), x[:, :n], 0.0)
            x[:, n:] = np.where(np.isfinite(np.where(x[:, n:] >= 0, *kh)), x[:, n:], 0.0)
            x = x[np.any(x != 0, axis=1)]
            assert np.all(_e2(kv, kh, w, x[:, :n], x[:, n:]) > 0), params
        else:
            v, h = verdict.witness
            assert np.all(np.isfinite(np.where(v >= 0, *kv)) | (v == 0))  # in the support
            assert np.all(np.isfinite(np.where(h >= 0, *kh)) | (h == 0))
            assert _e2(kv, kh, w, v[None], h[None])[0] < 0 and verdict.margin < 0
        if (n, m) == (2, 2):
            guard = bool(_guard(params))
            counts["guard"] += guard
            counts["guard_of"] += not verdict.normalisable
            assert not (guard and verdict.normalisable), params  # the guard's True is a proof
        with monkeypatch.context() as patch:
            patch.setattr(normalisable, "EXACT_MAX_SUPPORTS", 0)
            large = nrbm.check_normalisable(params)
        if large.method.startswith(("sufficient", "witness")):
            counts["large"] += 1
            assert large.normalisable is verdict.normalisable, (large, verdict)
    assert min(counts[True], counts[False]) > 40 and counts["large"] > 40, counts
    assert counts["guard"] > 0.5 * counts["guard_of"] > 5, counts


def test_init_params_and_fit_refuse_a_model_without_normaliser():
    """init_params with a weight scale too large for unit curvatures, and fit on unstandardised
    data (lambda = 1 / Var(v) = 1e-4, so W^T Lambda^-1 W ~ 1e4 weight_scale^2 n) stop with the
    condition and the fix."""
    with pytest.raises(nrbm.NotNormalisable, match="init_params.*Lower weight_scale"):
        nrbm.init_params(jax.random.key(0), 3, 2, weight_scale=3.0, visible_units="gaussian",
                         hidden_units="relu")  # fmt: skip
    nrbm.init_params(jax.random.key(0), 3, 2, weight_scale=3.0, visible_units="bernoulli",
                     hidden_units="relu")  # fmt: skip
    data = 100.0 * np.random.default_rng(0).normal(size=(20, 5))
    with pytest.raises(nrbm.NotNormalisable, match="Standardise the data"):
        nrbm.fit(data, 3, visible_units="gaussian", hidden_units="relu", weight_scale=0.1,
                 epochs=1, progress=False)  # fmt: skip


def test_an_undecided_model_is_normalised_with_a_warning(monkeypatch):
    """Beyond the exact test's size, a model that passes no sufficient condition and shows no
    violating direction is undecided: RBM warns (NormalisabilityWarning) and says why."""
    # S = 3I - W^T W = [[1, -.75, -.75], [-.75, 1, 1.2], [-.75, 1.2, 1]]: strictly copositive,
    # indefinite (eigenvalue -0.2 along (0, 1, -1)), and its negative part is not PD either.
    s = np.array([[1, -0.75, -0.75], [-0.75, 1, 1.2], [-0.75, 1.2, 1]])
    assert (
        np.linalg.eigvalsh(s)[0] < -0.1
        and np.linalg.eigvalsh(np.minimum(s, np.diag(np.diag(s))))[0] < -0.05
    )
    w = schur_weights(3 * np.eye(3) - s)
    params = model(w, "gaussian", "relu", hid={"log_gamma": logs([3.0, 3.0, 3.0])})
    assert nrbm.check_normalisable(params).normalisable is True  # the exact test
    monkeypatch.setattr(normalisable, "EXACT_MAX_SUPPORTS", 0)
    verdict = nrbm.check_normalisable(params)
    assert verdict.normalisable is None and "too large for the exact test" in verdict.reason
    with pytest.warns(normalisable.NormalisabilityWarning, match="could not prove"):
        nrbm.RBM(params, log_z=0.0)


class DataOnly(nrbm.learning.NegativePhase):
    """A negative phase with no model samples (v = 0): the loss then only raises the data's
    -F, which drives a Gaussian-Gaussian model out of the normalisable region within a few
    updates, with no chain to diverge and raise an alarm."""

    persistent = False

    def init(self, key, params, data, batch_size):
        return None

    def step(self, key, params, state, batch):
        return jnp.zeros_like(batch), state, {}


def test_fit_stops_before_an_update_that_leaves_the_normalisable_region():
    """Before the guard, fit returned this model with an infinite Z and no error. Now the
    update that would leave the region is not taken: LeftNormalisableRegion names the
    condition and holds the last parameters, which are finite and normalisable."""
    data = np.random.default_rng(0).normal(size=(40, 3))
    data[:, 1:] += data[:, :1]
    phase = dataclasses.dataclass(frozen=True)(DataOnly)()
    with pytest.raises(nrbm.learning.LeftNormalisableRegion, match="positive definite") as err:
        nrbm.fit(data, 2, method=phase, visible_units="gaussian", hidden_units="gaussian",
                 epochs=50, batch_size=10, learning_rate=0.05, eval_every=None,
                 log_likelihood=None, progress=False, weight_scale=0.1)  # fmt: skip
    assert 1 <= err.value.epoch < 50
    assert isinstance(err.value, nrbm.TrainingDiverged)
    last = err.value.params
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(last))
    verdict = nrbm.check_normalisable(last)
    assert verdict.normalisable is True and 0 < verdict.margin < 0.5
