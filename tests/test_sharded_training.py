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
    import os
    import pathlib
    import re
    import shutil
    import sys
    import tempfile

    # XLA writes each compiled training loop (jit_run) as optimised: fit's own programs are
    # read below, so no loop is compiled a second time just to look at it.
    dump = tempfile.mkdtemp()
    os.environ["XLA_FLAGS"] += (
        f" --xla_dump_to={dump} --xla_dump_hlo_as_text --xla_dump_hlo_module_re=jit_run"
    )
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import PartitionSpec as P

    jax.config.update("jax_enable_x64", True)
    from numpyro_rbm import datasets, training

    assert len(jax.devices()) == 4, jax.devices()
    x = np.tile(datasets.bars_and_stripes(3), (8, 1))  # 112 rows
    report = {}
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
    # The compiled loops really split the work: XLA reduces the gradient across devices in
    # each four-device loop (num_partitions=4), and a single-device loop has nothing to reduce.
    report["loops"] = []
    for path in sorted(pathlib.Path(dump).glob("*jit_run.cpu_after_optimizations.txt")):
        text = path.read_text()
        parts = re.search(r"num_partitions=(\\d+)", text)
        report["loops"].append([int(parts.group(1)) if parts else 1, text.count("all-reduce")])
    shutil.rmtree(dump)
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


def test_gradients_are_reduced_across_devices(report):  # fit's own loops, PCD and PT
    loops = report["loops"]  # [num_partitions, all-reduce count] of each compiled loop
    assert sum(n == 1 for n, _ in loops) >= 2 and sum(n == 4 for n, _ in loops) >= 2, loops
    assert all((n == 4) == (reduces > 0) for n, reduces in loops), loops


def test_uneven_split_is_refused_with_a_clear_message(report):
    assert "batch_size=6 cannot be split evenly across 4 devices" in report["error"]


@pytest.mark.slow
def test_sharded_cd_equals_the_single_device_fit():
    _check_method(_run("cd"), "cd")
