"""A short tour: build an RBM, compute its exact log Z, sample it inside a NumPyro model.

Run: ``python examples/quickstart.py`` (about half a minute on 2 CPU cores, mostly compiling).
"""

import jax
import jax.numpy as jnp
import numpyro
from numpyro.infer.util import log_density

import numpyro_rbm as nrbm


def main():
    key_params, key_sample, key_model = jax.random.split(jax.random.key(0), 3)
    params = nrbm.init_params(key_params, n_visible=64, n_hidden=16, weight_scale=0.5)

    log_z = nrbm.log_partition(params)
    print(f"64 x 16 Bernoulli RBM: exact log Z = {float(log_z):.4f} (2^16 hidden states)")

    rbm = nrbm.RBM(params)
    v = rbm.sample(key_sample, (1000,))
    log_p = rbm.log_prob(v)
    print(
        f"1000 exact samples: mean log p(v) = {float(log_p.mean()):.3f} nats, "
        f"mean activation {float(v.mean()):.3f}"
    )

    def model():
        v = numpyro.sample("v", rbm)
        numpyro.deterministic("active_units", jnp.sum(v))

    trace = numpyro.handlers.trace(numpyro.handlers.seed(model, key_model)).get_trace()
    joint, _ = log_density(model, (), {}, {"v": trace["v"]["value"]})
    print(
        f"inside a NumPyro model: {int(trace['active_units']['value'])} active units, "
        f"log density {float(joint):.3f}"
    )


if __name__ == "__main__":
    main()
