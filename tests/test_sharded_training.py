"""Data-parallel training: ``fit(..., devices=...)`` on four forced CPU devices.

XLA fixes the number of host devices when the backend starts, so the checks run in a fresh
Python process with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.

What equal means here: the sharded run draws the same random numbers (JAX's counter-based
generator is partitionable: a sharded draw equals the unsharded one), so the only difference is
the order of the floating-point sums XLA splits across devices (the gradient's mean over the
minibatch and over the chains). In float64 that moves the parameters by about 1e-15 per update;
a sampling decision ``u < p`` would flip only if a uniform fell within that distance of its
threshold (probability ~1e-14 per draw here), so the chains must be bitwise equal and the
parameters equal to 1e-10.
"""

import textwrap

import pytest
from conftest import run_with_host_devices

SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    from numpyro_rbm import datasets, training

    assert len(jax.devices()) == 4, jax.devices()
    x = np.tile(datasets.bars_and_stripes(3), (8, 1))  # 112 rows
    report, states = {}, {}
    for method in sys.argv[1:]:
        kwargs = dict(
            method=method, epochs=3, batch_size=8, num_chains=16, num_temperatures=4, seed=1,
            progress=False, dtype="float64", eval_every=2 if method == "pcd" else None,
        )
        one = training.fit(x, 6, **kwargs)
        four = training.fit(x, 6, devices=jax.devices(), **kwargs)
        diff = max(
            float(jnp.max(jnp.abs(a - b)))
            for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(four.params))
        )
        # PT's state is its replicas (T, M, n), split along M, plus the replicated ladder.
        chains = four.state.chains.replicas if method == "pt" else four.state.chains
        spec = P(None, "data") if method == "pt" else P("data")
        pairs = zip(jax.tree.leaves(one.state.chains), jax.tree.leaves(four.state.chains))
        report[method] = dict(
            param_diff=diff,
            chains_equal=all(bool(np.array_equal(a, b)) for a, b in pairs),
            history_ll=[
                one.history.get("train_log_likelihood"), four.history.get("train_log_likelihood")
            ],
            chain_spec_ok=chains.sharding.spec == spec,
            chain_devices=len(chains.sharding.device_set),
            shard_shapes=sorted({tuple(s.data.shape) for s in chains.addressable_shards}),
            weight_replicated=four.params.weights.sharding.spec == P(),
            weight_devices=len(four.params.weights.sharding.device_set),
            opt_replicated=all(a.sharding.spec == P() for a in jax.tree.leaves(four.opt_state)),
        )
        states[method] = four.state
    if "pcd" in states:
        # The compiled loop really splits the work: XLA reduces the gradient across devices.
        from numpyro_rbm.learning import PCD, CosineAdam, Penalized, build_trainer
        from numpyro_rbm.learning.trainer import _compiled_run

        # fit's default optimiser: Adam 0.03 on the cosine decay, behind the L1 penalty
        trainer = build_trainer(PCD(1, 16), Penalized(CosineAdam(0.03, 3 * 14), l1_decay=1e-3))
        run = _compiled_run(trainer, 8, tuple(jax.devices()))
        hlo = run.lower(states["pcd"], jnp.asarray(x, jnp.float64), np.int32(1))
        report["all_reduce"] = "all-reduce" in hlo.compile().as_text()
    try:
        training.fit(x, 6, batch_size=6, epochs=1, progress=False, devices=jax.devices())
    except ValueError as err:
        report["error"] = str(err)
    print(json.dumps(report))
    """
)


def _run(*methods):
    return run_with_host_devices(SCRIPT, 4, *methods, timeout=900)


@pytest.fixture(scope="module")
def report():
    return _run("pcd", "pt")  # one subprocess: the compilations dominate its cost


def _check_method(report, method):
    r = report[method]
    # Same seed, same result: chains bitwise, parameters to float64 summation order.
    assert r["chains_equal"]
    assert r["param_diff"] < 1e-10, r["param_diff"]
    one, four = r["history_ll"]
    if method == "pcd":  # monitoring runs on the replicated parameters
        assert len(one) == len(four) == 2
        assert max(abs(a - b) for a, b in zip(one, four, strict=True)) < 1e-9
    # Chains split along the chain axis over all four devices, the rest replicated.
    assert r["chain_spec_ok"] and r["chain_devices"] == 4
    expected = {"pcd": [[4, 9]], "cd": [[2, 9]], "pt": [[4, 4, 9]]}[method]
    assert r["shard_shapes"] == expected  # 16 chains (CD: the 8 last negatives) / 4 devices
    assert r["weight_replicated"] and r["weight_devices"] == 4
    assert r["opt_replicated"]


@pytest.mark.parametrize("method", ["pcd", "pt"])
def test_sharded_fit_equals_the_single_device_fit_and_is_sharded(report, method):
    _check_method(report, method)


def test_gradients_are_reduced_across_devices(report):  # checked on the PCD loop
    assert report["all_reduce"]


def test_uneven_split_is_refused_with_a_clear_message(report):
    assert "batch_size=6 cannot be split evenly across 4 devices" in report["error"]


@pytest.mark.slow
def test_sharded_cd_equals_the_single_device_fit():
    _check_method(_run("cd"), "cd")
