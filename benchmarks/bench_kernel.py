"""Effective samples per second: RBMGibbs versus NumPyro's DiscreteHMCGibbs on one RBM.

    python benchmarks/bench_kernel.py [--quick] [--visible 64] [--hidden 16] [--samples 2000]
                                      [--out benchmarks/results/kernel.json]

The same RBM is sampled two ways:

* ``RBMGibbs``: one block-Gibbs sweep (all hidden, then all visible units) per step, on the
  model ``v ~ numpyro_rbm.RBM(params, log_z=None)``;
* ``DiscreteHMCGibbs(NUTS(...))``: NumPyro's generic discrete Gibbs, which updates one visible
  unit at a time from its exact conditional (one full pass over the units per step), on the
  same distribution written as a plain NumPyro model: ``v ~ Bernoulli(1/2)`` in a plate plus
  ``numpyro.factor("rbm", -F(v))``. DiscreteHMCGibbs needs a continuous site for its NUTS
  part, so the plain model carries an independent ``z ~ Normal(0, 1)``.

Each kernel is driven directly (``init``, then ``sample`` inside a compiled ``lax.scan``, which
is what ``MCMC`` does): ``num_chains`` chains run one after another through warmup (NUTS step
size adaptation for DiscreteHMCGibbs), and only the sampling phase is timed, compilation
excluded. The statistic is the free energy :math:`F(v)` and its
bulk ESS comes from ArviZ. Prints a table and writes JSON rows (``benchmarks/run_all.py``):
ESS per second and draws per second of RBMGibbs with DiscreteHMCGibbs as the baseline.
``--quick`` runs 2 chains x 500 draws.
"""

import argparse
import time

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from _common import print_rows, row, write_results
from numpyro.infer import NUTS, DiscreteHMCGibbs

import numpyro_rbm as nrbm


def rbm_model(params):
    numpyro.sample("v", nrbm.RBM(params, log_z=None))


def plain_model(params):
    n = params.n_visible
    numpyro.sample("z", dist.Normal(0.0, 1.0))
    with numpyro.plate("units", n):  # one discrete site per unit, as DiscreteHMCGibbs needs
        v = numpyro.sample("v", dist.Bernoulli(probs=0.5))
    numpyro.factor("rbm", -nrbm.free_energy(params, v))


def timed_run(kernel, params, num_warmup, num_samples, num_chains, seed):
    """Warm up and compile, then time ``num_samples`` steps of each chain (compiled scan)."""
    args, kwargs = (params,), {}

    def steps(state, n):
        def body(state, _):
            state = kernel.sample(state, args, kwargs)
            return state, state.z["v"]

        return jax.lax.scan(body, state, None, length=n)

    warm = jax.jit(lambda s: steps(s, num_warmup)[0])
    sample = jax.jit(lambda s: steps(s, num_samples))
    draws, seconds, compile_seconds = [], 0.0, 0.0
    for chain in range(num_chains):
        state = kernel.init(jax.random.key(seed + chain), num_warmup, None, args, kwargs)
        state = jax.block_until_ready(warm(state))
        if chain == 0:
            start_compile = time.perf_counter()
            sample = sample.lower(state).compile()
            compile_seconds = time.perf_counter() - start_compile
        start = time.perf_counter()
        _, v = jax.block_until_ready(sample(state))
        seconds += time.perf_counter() - start
        draws.append(v)
    fe = np.asarray(nrbm.free_energy(params, jnp.stack(draws)), np.float64)
    ess = float(az.ess(fe))
    return dict(
        draws_per_second=num_samples * num_chains / seconds,
        seconds=seconds,
        compile_seconds=compile_seconds,
        ess_free_energy=ess,
        ess_per_second=ess / seconds,
        r_hat=float(az.rhat(fe)),
        mean_free_energy=float(fe.mean()),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visible", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=16)
    parser.add_argument("--weight-scale", type=float, default=0.3)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 chains x 500 draws")
    parser.add_argument("--out", "--json", default=None, help="JSON path (results/kernel.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.samples, args.chains = 500, 2

    rng = np.random.default_rng(args.seed)
    params = nrbm.RBMParams(
        jnp.asarray(args.weight_scale * rng.normal(size=(args.visible, args.hidden)), jnp.float32),
        jnp.asarray(0.5 * rng.normal(size=args.visible), jnp.float32),
        jnp.asarray(0.5 * rng.normal(size=args.hidden), jnp.float32),
    )
    common = (params, args.warmup, args.samples, args.chains, args.seed)
    results = {
        "RBMGibbs": timed_run(nrbm.RBMGibbs(rbm_model), *common),
        "DiscreteHMCGibbs": timed_run(DiscreteHMCGibbs(NUTS(plain_model)), *common),
    }
    ratio = results["RBMGibbs"]["ess_per_second"] / results["DiscreteHMCGibbs"]["ess_per_second"]

    print(
        f"RBM {args.visible}x{args.hidden}, weight scale {args.weight_scale}, "
        f"{args.chains} chains x {args.samples} draws, device {jax.devices()[0].platform}"
    )
    print(f"{'kernel':<18}{'seconds':>9}{'ESS(F)':>9}{'ESS/s':>10}{'R-hat':>7}{'mean F':>9}")
    for name, r in results.items():
        print(
            f"{name:<18}{r['seconds']:>9.2f}{r['ess_free_energy']:>9.0f}"
            f"{r['ess_per_second']:>10.0f}{r['r_hat']:>7.3f}{r['mean_free_energy']:>9.2f}"
        )
    print(f"ESS/s ratio RBMGibbs / DiscreteHMCGibbs: {ratio:.1f}")
    ours, base = results["RBMGibbs"], results["DiscreteHMCGibbs"]
    case = f"{args.visible}x{args.hidden}, {args.chains} chains x {args.samples} draws"
    note = (
        f"one chain at a time, compiled scan; R-hat {ours['r_hat']:.3f} vs {base['r_hat']:.3f}, "
        f"mean F {ours['mean_free_energy']:.2f} vs {base['mean_free_energy']:.2f}"
    )
    rows = [
        row(
            case,
            "ESS(F)/s",
            ours["ess_per_second"],
            "NumPyro DiscreteHMCGibbs",
            base["ess_per_second"],
            note=note,
        ),
        row(
            case,
            "draws/s (one chain)",
            ours["draws_per_second"],
            "NumPyro DiscreteHMCGibbs",
            base["draws_per_second"],
            note="RBMGibbs: one block sweep per draw; "
            "DiscreteHMCGibbs: one pass over the visible units plus a NUTS step per draw",
        ),
    ]
    print_rows(rows)
    print(f"wrote {write_results('kernel', rows, args.out)}")


if __name__ == "__main__":
    main()
