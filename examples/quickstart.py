"""A short tour: build an RBM, compute its exact log Z, sample it inside a NumPyro model.

    python examples/quickstart.py

What it shows, and checks: for a 64 x 16 Bernoulli RBM with random weights,

1. ``nrbm.log_partition`` gives the exact log Z by summing over the 2^16 hidden states;
2. ``nrbm.RBM(params).sample`` draws exact samples: the frequency with which each of the 64
   pixels is on, over 1000 draws, agrees with its exact probability
   :math:`P(v_i = 1) = \\sum_h p(h)\\,\\sigma(b_i + (W h)_i)` (also by enumerating the
   hidden states) within 5.3 binomial standard errors for every pixel (a Bonferroni bound
   over the 64 pixels at a total false-alarm rate of 1e-5, on any machine);
3. inside a NumPyro model the RBM site contributes its exact normalised log-probability:
   NumPyro's ``log_density`` of the model equals ``rbm.log_prob(v)``.

About 10 s on 2 CPU cores, mostly compiling.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from _common import Report, exit_status
from numpyro.infer.util import log_density

import numpyro_rbm as nrbm

NUM_SAMPLES = 1000
Z_LIMIT = 5.3  # two-sided normal tail 1.2e-7 per pixel, 7e-6 over 64 pixels


def exact_visible_means(params, log_z):
    """:math:`P(v_i = 1) = \\sum_h e^{-F_h(h) - \\log Z} \\sigma(b + W h)_i` over all h."""
    hs = nrbm.partition.all_states(params.n_hidden)
    p_h = jnp.exp(-nrbm.hidden_free_energy(params, hs) - log_z)
    return np.asarray(p_h @ nrbm.visible_mean(params, hs), np.float64)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="the same (it is quick)")
    args = parser.parse_args(argv)
    report = Report()
    key_params, key_sample, key_model = jax.random.split(jax.random.key(args.seed), 3)
    params = nrbm.init_params(key_params, n_visible=64, n_hidden=16, weight_scale=0.5)

    report.say("exact log Z of a 64 x 16 Bernoulli RBM (summing over 2^16 hidden states) ...")
    log_z = nrbm.log_partition(params)
    print(f"exact log Z = {float(log_z):.4f}")

    report.say(f"{NUM_SAMPLES} exact samples from nrbm.RBM(params) ...")
    rbm = nrbm.RBM(params)
    v = rbm.sample(key_sample, (NUM_SAMPLES,))
    log_p = rbm.log_prob(v)
    print(f"mean log p(v) = {float(log_p.mean()):.3f} nats, mean activation {float(v.mean()):.3f}")
    p = exact_visible_means(params, log_z)
    z = (np.asarray(v, np.float64).mean(0) - p) / np.sqrt(p * (1 - p) / NUM_SAMPLES)
    report.check(
        np.max(np.abs(z)) <= Z_LIMIT,
        "each pixel's frequency over the samples matches its exact probability",
        f"largest |z| over 64 pixels {np.max(np.abs(z)):.2f} <= {Z_LIMIT}",
    )

    def model():
        v = numpyro.sample("v", rbm)
        numpyro.deterministic("active_units", jnp.sum(v))

    report.say("the RBM as a site of a NumPyro model ...")
    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, key_model)).get_trace()
    value = trace["v"]["value"]
    joint, _ = log_density(model, (), {}, {"v": value})
    direct = float(rbm.log_prob(value))
    print(
        f"inside a NumPyro model: {int(trace['active_units']['value'])} active units, "
        f"log density {float(joint):.4f}"
    )
    report.check(
        abs(float(joint) - direct) <= 1e-4 * max(1.0, abs(direct)),
        "NumPyro's log density of the model is the RBM's exact log-probability",
        f"{float(joint):.4f} vs rbm.log_prob {direct:.4f}",
    )
    return report.finish({"log_z": float(log_z), "max_abs_z": float(np.max(np.abs(z)))})


if __name__ == "__main__":
    exit_status(main())
