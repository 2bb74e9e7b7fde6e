"""MCMC chains across devices: ``chain_method="parallel"`` on four forced host devices.

NumPyro splits the run key into one key per chain for every chain method, then runs the
chains one after another ("sequential"), vmapped on one device ("vectorized") or pmapped one
chain per device ("parallel"). ``RBMGibbs`` draws only from its explicit keys (block-Gibbs
sweeps with counter-based random words, see :mod:`numpyro_rbm.units`), so the three methods
must give *the same draws*, bit for bit: the chains are the same computation placed on
different devices. The check runs in a fresh interpreter because the number of host devices
is fixed when JAX starts (``XLA_FLAGS=--xla_force_host_platform_device_count=4``).

What is compared: the visible draws of every chain and the per-chain acceptance statistic, for
the prior (exact sweeps) and for a posterior with a likelihood on ``v`` (Metropolis-corrected
sweeps, which also evaluate the other sites). The parallel run's final state lives on four
distinct devices, one chain each. Goodness of fit of parallel draws against exact enumeration
is checked in ``tests/test_infer.py::test_parallel_chain_method_in_subprocess``; equality here
carries it over to four devices.
"""

import textwrap

import numpy as np
import pytest
from conftest import ROOT, run_with_host_devices


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("scaleout")
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(ROOT / "tests")!r})
        import jax, numpy as np
        from numpyro.infer import MCMC
        from test_infer import NOISY, STRONG, Y, noisy_model, prior_model
        from numpyro_rbm import RBMGibbs

        assert jax.local_device_count() == 4, jax.devices()
        cases = {{"prior": (prior_model, (STRONG,), "auto"),
                 "posterior": (noisy_model, (NOISY, Y), "metropolis")}}
        devices = {{}}
        for case, (model, args, update) in cases.items():
            for method in ("sequential", "vectorized", "parallel"):
                mcmc = MCMC(RBMGibbs(model, update=update), num_warmup=100, num_samples=400,
                            num_chains=4, chain_method=method, progress_bar=False)
                mcmc.run(jax.random.key(7), *args, extra_fields=("accept_prob",))
                v = mcmc.get_samples(group_by_chain=True)["v"]
                acc = mcmc.get_extra_fields(group_by_chain=True)["accept_prob"]
                np.save({str(out_dir)!r} + f"/{{case}}_{{method}}_v.npy", np.asarray(v))
                np.save({str(out_dir)!r} + f"/{{case}}_{{method}}_acc.npy", np.asarray(acc))
                if method == "parallel":
                    last_v = mcmc.last_state.z["v"]
                    devices[case] = sorted(str(d) for d in last_v.sharding.device_set)
                    shards = [s.data.shape for s in last_v.addressable_shards]
                    devices[case + "_shards"] = [list(s) for s in shards]
        print(json.dumps(devices))
    """)
    devices = run_with_host_devices(script, 4, timeout=600)

    def load(case, method, what):
        return np.load(out_dir / f"{case}_{method}_{what}.npy")

    return devices, load


@pytest.mark.parametrize("case", ["prior", "posterior"])
@pytest.mark.parametrize("method", ["vectorized", "parallel"])
def test_chain_methods_give_identical_draws(runs, case, method):
    _, load = runs
    for what in ("v", "acc"):
        reference = load(case, "sequential", what)
        assert reference.shape[:2] == (4, 400)
        np.testing.assert_array_equal(load(case, method, what), reference, err_msg=what)
    # Not a degenerate run: chains differ from each other and move.
    v = load(case, "sequential", "v")
    assert not np.array_equal(v[0], v[1])
    assert len(np.unique(v.reshape(-1, v.shape[-1]), axis=0)) > 4


@pytest.mark.parametrize("case", ["prior", "posterior"])
def test_parallel_chains_run_one_per_device(runs, case):
    devices, _ = runs
    assert len(set(devices[case])) == 4, devices[case]
    assert devices[case + "_shards"] == [[1, 5]] * 4  # one chain's state per device


def test_block_gibbs_on_chains_sharded_over_host_devices():
    """Chains placed with a ``NamedSharding`` over two host devices run the same library code
    half on each device (each CPU device runs on its own core; docs/performance.md) and give
    the single-device draws bit for bit: the sampler's random words are a function of each
    element's index (JAX's partitionable threefry), so partitioning changes nothing."""
    script = textwrap.dedent("""
        import json
        import jax, jax.numpy as jnp, numpy as np
        from jax.sharding import Mesh, NamedSharding, PartitionSpec
        from numpyro_rbm import RBMParams, gibbs_sweep
        from numpyro_rbm.infer import block_gibbs

        assert jax.local_device_count() == 2, jax.devices()
        rng = np.random.default_rng(0)
        params = RBMParams(jnp.asarray(0.3 * rng.normal(size=(12, 7)), jnp.float32),
                           jnp.asarray(0.1 * rng.normal(size=12), jnp.float32),
                           jnp.asarray(0.1 * rng.normal(size=7), jnp.float32))
        v0 = jnp.asarray(rng.random((64, 12)) < 0.5, jnp.float32)
        mesh = Mesh(np.array(jax.devices()), ("chains",))
        sharded = jax.device_put(v0, NamedSharding(mesh, PartitionSpec("chains")))
        run = jax.jit(lambda k, v: block_gibbs(k, params, v, 50))
        sweep = jax.jit(lambda k, v: gibbs_sweep(k, params, v))
        out = {}
        for name, fn in (("block_gibbs", run), ("gibbs_sweep", sweep)):
            one, two = fn(jax.random.key(5), v0), fn(jax.random.key(5), sharded)
            out[name] = dict(
                equal=all(bool(jnp.array_equal(a, b)) for a, b in zip(one, two)),
                shards=[list(s.data.shape) for s in two[0].addressable_shards],
                moved=int(jnp.sum(one[0] != v0)),
            )
        print(json.dumps(out))
    """)
    result = run_with_host_devices(script, 2, timeout=300)
    for name, r in result.items():
        assert r["equal"], name
        assert r["shards"] == [[32, 12]] * 2, name  # split across the devices, not replicated
        assert r["moved"] > 50, name  # the chains did move
