"""The UnitType contract beyond the conditional distribution: derivatives of the
log-partition, the registry and specs, data checks, random states and site values."""

import dataclasses
import re
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import numpyro_rbm as nrbm
from numpyro_rbm import units


@pytest.mark.parametrize("name", ["bernoulli", "spin"])
def test_log_partition_derivatives_are_the_conditional_moments(x64, name):
    r"""A'(phi) is the conditional mean (the custom JVP that jax.grad of a free energy uses) and
    A''(phi) its variance, for fields from -40 to 40, against the closed forms."""
    unit = units.as_unit_type(name)
    field = jnp.linspace(-40.0, 40.0, 81)
    grad = jax.vmap(jax.grad(lambda x: unit.log_partition(x[None])))(field)
    hess = jax.vmap(jax.grad(jax.grad(lambda x: unit.log_partition(x[None]))))(field)
    f = np.asarray(field)
    if name == "bernoulli":
        mean = 1 / (1 + np.exp(-f))
        var = mean * (1 - mean)
        value = np.logaddexp(0, f)
    else:
        mean = np.tanh(f)
        var = 1 - mean**2
        value = np.logaddexp(f, -f)
    np.testing.assert_allclose(grad, mean, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(hess, var, rtol=1e-9, atol=1e-13)  # 1 - tanh^2 cancels
    np.testing.assert_allclose(jax.vmap(lambda x: unit.log_partition(x[None]))(field), value)


@pytest.mark.parametrize("spec", ["bernoulli", "spin", "gaussian", "relu", "drelu", "potts(5)"])
def test_every_unit_type_round_trips_through_its_spec(spec):
    unit = units.as_unit_type(spec)
    assert units.as_unit_type(unit.spec) == unit
    assert type(unit) in units.registered_unit_types().values()


@pytest.mark.parametrize("spec", ["bernoulli", "spin", "potts(3)", "gaussian", "relu", "drelu"])
def test_tail_curvature_is_the_base_measure_far_from_zero(x64, spec):
    r"""What the normalisability check reads (docs/units.md, "When is Z finite"): ``None`` for
    a bounded support, else :math:`\kappa_\pm = \lim -2\log\mu(x)/x^2` at
    :math:`x \to \pm\infty` for random unit parameters (``inf`` where the half-line is
    outside the support)."""
    unit = units.as_unit_type(spec)
    if not unit.param_names:
        assert unit.tail_curvature() is None
        return
    rng = np.random.default_rng(1)
    unit_params = {name: jnp.asarray(rng.uniform(-1, 1, 4)) for name in unit.param_names}
    tails = unit.bind(unit_params).tail_curvature()
    for x, kappa in ((1e6, tails[0]), (-1e6, tails[1])):
        for j in range(4):
            one = {name: p[j : j + 1] for name, p in unit_params.items()}

            def log_mu(at, one=one):
                return float(unit.base_log_measure(jnp.array([at]), one))

            expected = np.broadcast_to(kappa, (4,))[j]
            if np.isinf(expected):
                assert log_mu(x) == -np.inf and log_mu(-x) > -np.inf
            else:
                assert -2 * (log_mu(x) - log_mu(0.0)) / x**2 == pytest.approx(expected, rel=1e-5)


def test_a_bounded_layer_needs_no_declaration_from_the_other(x64):
    """A unit type that does not declare tail_curvature (the binomial example of
    docs/architecture.md) paired with a bounded layer is normalisable: its own conditional is
    finite; paired with an unbounded layer the verdict is undecided."""

    @dataclasses.dataclass(frozen=True)
    class Undeclared(units.Gaussian):
        name: ClassVar[str] = "undeclared_test"

        def tail_curvature(self, unit_params=None):
            return units.UnitType.tail_curvature(self)

    w = jnp.full((2, 2), 5.0)
    with_bounded = nrbm.core.RBMParams(w, jnp.zeros(2), jnp.zeros(2), "bernoulli", Undeclared())
    assert nrbm.check_normalisable(with_bounded).normalisable is True
    with pytest.raises(NotImplementedError, match="undeclared_test units do not declare"):
        Undeclared().tail_curvature()
    both = nrbm.core.RBMParams(w, jnp.zeros(2), jnp.zeros(2), "gaussian", Undeclared())
    assert nrbm.check_normalisable(both).normalisable is None


def test_registering_checks_the_class():
    with pytest.raises(TypeError, match="UnitType subclass"):
        units.register_unit_type(int)

    @dataclasses.dataclass(frozen=True)
    class Nameless(units.Bernoulli):
        name: ClassVar[str] = "Not A Name"

    with pytest.raises(ValueError, match="lower-case identifier"):
        units.register_unit_type(Nameless)

    @dataclasses.dataclass(frozen=True)
    class Impostor(units.Bernoulli):
        name: ClassVar[str] = "spin"

    with pytest.raises(ValueError, match="already registered"):
        units.register_unit_type(Impostor)
    with pytest.raises(ValueError, match="unknown unit type"):
        units.as_unit_type("potts(__import__('os'))")  # arguments are literals, never code


@pytest.mark.statistical
@pytest.mark.parametrize("spec", ["bernoulli", "spin", "potts(3)"])
def test_random_layers_are_uniform_states_in_the_support(spec):
    unit = units.as_unit_type(spec)
    field = jnp.zeros((4000, 6))
    layer = unit.random_layer(jax.random.key(0), field)
    assert bool(jnp.all(unit.in_support(layer)))
    value = unit.from_layer(layer)
    assert bool(jnp.all(unit.site_support()(value)))
    np.testing.assert_array_equal(unit.to_layer(value, jnp.float32), layer)
    # uniform: each unit takes each of its values about equally often; 6 binomial standard
    # errors, a false failure of 2e-9 per cell (at most 18 cells)
    levels = np.unique(np.asarray(value))
    freq = np.mean(np.asarray(value)[..., None] == levels, axis=0)
    q = len(levels)
    assert np.all(np.abs(freq - 1 / q) < 6 * np.sqrt((1 / q) * (1 - 1 / q) / 4000))


def test_check_data_names_the_first_bad_entry_for_every_unit_type():
    bad = np.zeros((5, 3))
    bad[2, 1] = 0.5
    with pytest.raises(ValueError, match=r"row 2, column 1 is 0.5 \(1 bad entries\)"):
        units.check_data(bad, "bernoulli")
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2, column 1: is not finite"):
        units.check_data(bad, "gaussian")
    bad[2, 1] = 3
    with pytest.raises(ValueError, match=r"row 2, column 1: is not a state in 0 \.\. 2"):
        units.check_data(bad, "potts(3)")
    with pytest.raises(ValueError, match="cannot be the visible layer"):
        units.check_data(np.zeros((5, 3)), "relu")
    with pytest.raises(ValueError, match="has 3 columns but the model has 4"):
        units.check_data(np.zeros((5, 3)), "bernoulli", n_visible=4)
    layer = units.check_data(np.array([[0, 2], [1, 1]]), "potts(3)")
    np.testing.assert_array_equal(layer, [[1, 0, 0, 0, 0, 1], [0, 1, 0, 0, 1, 0]])


@pytest.mark.parametrize("spec", ["bernoulli", "spin", "gaussian", "potts(3)"])
def test_the_device_check_agrees_with_the_host_check(spec):
    """device_layer (fit's check: on the device, issue 17) accepts exactly what check_data
    accepts, encodes it the same, and raises check_data's own message, for data of every
    dtype fit takes (float, int, bool; NumPy or JAX)."""
    rng = np.random.default_rng(5)
    unit = units.as_unit_type(spec)
    good = {
        "bernoulli": rng.integers(0, 2, (40, 6)),
        "spin": 2 * rng.integers(0, 2, (40, 6)) - 1,
        "gaussian": rng.integers(-3, 4, (40, 6)),
        "potts(3)": rng.integers(0, 3, (40, 6)),
    }[spec]
    host = units.check_data(good, unit)
    kinds = [good.astype(np.float64), good.astype(np.float32), good, jnp.asarray(good)]
    if spec == "bernoulli":
        kinds.append(good.astype(bool))
    for data in kinds:
        layer, observed = units.device_layer(data, unit, "data", host.shape[1], jnp.float32)
        assert observed is None and layer.dtype == jnp.float32
        np.testing.assert_array_equal(layer, host)
    for value in (0.5, np.inf, 7.0, -1.0, 2.0):
        bad = good.astype(np.float64)
        bad[17, 4] = value
        try:
            units.check_data(bad, unit)
        except ValueError as err:
            with pytest.raises(ValueError, match=f"^{re.escape(str(err))}$"):
                units.device_layer(bad, unit)
        else:
            assert units.device_layer(bad, unit)[0].shape == host.shape
    bad = good.astype(np.float64)
    bad[3, 2] = np.nan  # missing: refused with the caller's explanation, or imputed
    with pytest.raises(ValueError, match=r"^data row 3, column 2 is missing \(NaN\): why$"):
        units.device_layer(bad, unit, missing="why")
    layer, observed = units.device_layer(bad, unit, missing=True)
    assert observed is not None and not observed[3].all() and observed[:3].all()
    with pytest.raises(ValueError, match="columns but the model has 5 visible units"):
        units.device_layer(good, unit, n_visible=5)


def test_one_base_rate_bias_for_every_caller():
    """The package, the AIS module, the training module and the units share one function."""
    import importlib

    ais = importlib.import_module("numpyro_rbm.ais")  # the package's `ais` is the function
    training = importlib.import_module("numpyro_rbm.training")
    assert ais.base_rate_bias is training.base_rate_bias is units.base_rate_bias
    assert nrbm.learning.negative.base_rate_bias is units.base_rate_bias


@pytest.mark.parametrize("spec", ["bernoulli", "spin", "gaussian", "potts(3)"])
def test_site_methods_split_the_layer_methods_by_site(x64, spec):
    """The per-site log-partition and base measure sum to the layer's; a per-site mask widens
    to the site's units; a site conditional with no coupling is the unit's own conditional
    (log_ratio(y) = phi . (y - x): the layer's log_prob at that field, site by site)."""
    unit = units.as_unit_type(spec)
    n_sites = 4
    n_units = n_sites * getattr(unit, "q", 1)
    rng = np.random.default_rng(0)
    field = jnp.asarray(rng.normal(size=(2, n_units)))
    up = unit.init_unit_params(n_units, jnp.float64)
    if up is not None:
        up = {k: jnp.asarray(0.3 * rng.normal(size=n_units)) for k in up}
    layer = unit.bind(up)
    x = layer.sample(jax.random.key(0), field)
    np.testing.assert_allclose(
        jnp.sum(layer.site_log_partition(field), -1), layer.log_partition(field), rtol=1e-12
    )
    np.testing.assert_allclose(
        jnp.sum(layer.site_base_log_measure(x), -1), layer.base_log_measure(x), rtol=1e-12
    )
    mask = layer.layer_mask(jnp.array([True, False, True, False]))
    assert mask.shape == (n_units,) and int(jnp.sum(mask)) == n_units // 2

    def log_ratio(y):  # the field's own term: the rest of the model is an independent field
        shape = x.shape[:-1] + (n_sites, 1, n_units // n_sites)
        return jnp.sum(field.reshape(shape) * (y - x.reshape(shape)), axis=-1)

    own = (
        x * field + layer.site_base_log_measure(x).repeat(n_units // n_sites, -1)
        / (n_units // n_sites) - layer.site_log_partition(field).repeat(n_units // n_sites, -1)
        / (n_units // n_sites)
    )  # fmt: skip
    per_site = own.reshape(2, n_sites, -1).sum(-1)
    np.testing.assert_allclose(layer.site_log_conditional(x, log_ratio), per_site, atol=1e-9)
