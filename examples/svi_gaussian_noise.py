"""A density for real-valued measurements with learnt per-feature noise, by SVI.

    python examples/svi_gaussian_noise.py [--quick] [--seed S] [--figure PATH]

The model a scientist writes for a table of real-valued measurements: a Gaussian-Bernoulli RBM,
``v ~ RBM(params, log_z=nrbm.sml(pcd(1, 100)))``, whose weights, biases *and* per-feature
noise precisions :math:`\\lambda_i = 1/\\sigma_i^2` (the Gaussian unit's ``log_precision``) are
``numpyro.param`` sites learnt jointly by ``numpyro.infer.SVI`` (minibatches of 10 through a
subsampled plate). Given the hidden causes :math:`h`, each measurement is
:math:`v_i \\mid h \\sim \\mathcal N(\\mu_i(h), \\sigma_i^2)` (``docs/units.md``), so
:math:`\\sigma_i` is the noise of feature :math:`i` around the structure the hidden units
explain; :math:`p(v)` is a mixture of :math:`2^{n_h}` Gaussians with shared diagonal
covariance, and with few hidden units its log Z is exact (the hidden states enumerate, the
Gaussian integral is analytic), so every log-likelihood below is exact.

What it shows:

1. **Known noise is recovered.** Data drawn exactly from a known RBM (6 features, 2 hidden
   units, noise standard deviations 0.2 to 1.2; 4000 rows, quick 2000): SVI recovers every
   feature's noise variance within 15% (relative), and its held-out log-likelihood is within
   0.05 nats of the true model's on 2000 held-out rows; ``nrbm.fit`` with the same settings
   is printed next to it (not in the quick run).
2. **Real data (full run only).** scikit-learn's bundled wine measurements (178 wines, 13
   chemical features, standardised; a fixed split of 134 / 44): the SVI-trained RBM (8 hidden
   units) has a higher exact held-out log-likelihood than independent Gaussians per feature by
   more than 2 nats per wine; ``fit`` and a full-covariance Gaussian are printed next to it.

Run: ``python examples/svi_gaussian_noise.py`` (both parts, a minute or two on 2 CPU cores);
``--quick``: part 1 only, with fewer rows and updates, without ``fit``.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import optax
from _common import Report, exit_status
from numpyro.infer import SVI, Trace_ELBO

import numpyro_rbm as nrbm
from numpyro_rbm.units import gaussian_from_cho

BATCH = 10
NOISE_SD = np.array([0.2, 0.4, 0.6, 0.8, 1.0, 1.2])  # the known per-feature noise
MAX_VAR_ERROR = 0.15  # relative error of every recovered noise variance
MAX_LL_SHORTFALL = 0.05  # nats: SVI's held-out LL at least the true model's minus this
MIN_GAIN_OVER_DIAGONAL = 2.0  # nats per wine


def gaussian_rbm_model(data, init, sml, n_total):
    """The NumPyro model: weights, biases and log noise precisions as parameters, and one
    observed, subsampled Gaussian-Bernoulli RBM site whose log Z is ``sml``."""
    w = numpyro.param("w", init.weights)
    b = numpyro.param("b", init.visible_bias)
    c = numpyro.param("c", init.hidden_bias)
    log_precision = numpyro.param("log_precision", init.visible_unit_params["log_precision"])
    params = nrbm.RBMParams(
        w, b, c, visible_units="gaussian", visible_unit_params={"log_precision": log_precision}
    )
    with numpyro.plate("rows", n_total, subsample_size=BATCH) as idx:
        numpyro.sample("v", nrbm.RBM(params, log_z=sml), obs=data[idx])


def empty_guide(*args, **kwargs):
    """No latent variables: the ELBO is the scaled log-likelihood of the minibatch."""


def data_init(key, train, n_hidden):
    """``fit``'s starting point: small random weights, the independent model matching the
    data (precisions 1 / variance, biases precision x mean)."""
    params = nrbm.init_params(key, train.shape[1], n_hidden, visible_units="gaussian")
    unit_params = params.visible_units.unit_params_from_data(train)
    bias = params.visible_units.bias_from_data(train, unit_params=unit_params)
    return params.replace(
        visible_bias=jnp.asarray(bias, jnp.float32), visible_unit_params=unit_params
    )


def train_svi(train, n_hidden, epochs, seed, learning_rate=0.005, phase=None):
    """SVI with Adam on a cosine decay (fit's schedule); returns the learnt RBMParams."""
    steps = epochs * (train.shape[0] // BATCH)
    key_init, key_run = jax.random.split(jax.random.key(seed))
    init = data_init(key_init, train, n_hidden)
    sml = nrbm.sml(phase or nrbm.learning.pcd(1, 100), init_data=train)
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01))
    svi = SVI(gaussian_rbm_model, empty_guide, optimizer, Trace_ELBO())
    data = jnp.asarray(train)
    result = svi.run(key_run, steps, data, init, sml, train.shape[0], progress_bar=False)
    p = result.params
    return nrbm.RBMParams(
        p["w"], p["b"], p["c"], visible_units="gaussian",
        visible_unit_params={"log_precision": p["log_precision"]},
    )  # fmt: skip


def noise_variance(params):
    return np.exp(-np.asarray(params.visible_unit_params["log_precision"], np.float64))


W_CHO = NOISE_SD[:, None] * np.array(
    [[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [0.0, 1.0]]
)  # two hidden causes, each shifting the means by about one noise sd (components overlap)
B_CHO = np.array([-1.0, -1.5, -1.0, 0.5, 0.0, -1.0])


def true_model():
    """The known RBM (hidden biases 0), given in Cho's coordinates (means ``B_CHO + W_CHO h``
    and noise ``NOISE_SD``; the mixture's components overlap, so Gibbs chains mix) and
    converted to the library's."""
    w, b, log_precision = gaussian_from_cho(W_CHO, B_CHO, NOISE_SD**2)
    return nrbm.RBMParams(
        jnp.asarray(w, jnp.float32), jnp.asarray(b, jnp.float32), jnp.zeros(2, jnp.float32),
        visible_units="gaussian",
        visible_unit_params={"log_precision": jnp.asarray(log_precision, jnp.float32)},
    )  # fmt: skip


def draw(rng, n):
    """``n`` exact draws of the known RBM, written out with numpy: :math:`h` from its
    marginal :math:`p(h) \\propto e^{\\sum_i \\mu_i(h)^2 / 2\\sigma_i^2}` over the four hidden
    states, then :math:`v = \\mu(h) + \\sigma\\varepsilon`."""
    states = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], float)
    means = B_CHO + states @ W_CHO.T
    log_p = 0.5 * np.sum(means**2 / NOISE_SD**2, axis=1)
    h = rng.choice(4, size=n, p=np.exp(log_p - np.logaddexp.reduce(log_p)))
    return (means[h] + NOISE_SD * rng.standard_normal((n, len(NOISE_SD)))).astype(np.float32)


def mean_ll(params, rows):
    return float(nrbm.log_likelihood(params, rows).mean)


def known_noise(report, quick, seed):
    """Part 1: recover known noise from exact draws of a known RBM."""
    truth = true_model()
    n_train, epochs = (2000, 10) if quick else (4000, 20)
    rng = np.random.default_rng(1000 + seed)
    train, test = draw(rng, n_train), draw(rng, 2000)
    report.say(f"part 1: {n_train} exact draws of a known RBM; SVI, {epochs} epochs")
    params = train_svi(train, 2, epochs, seed, learning_rate=0.03)
    true_var, svi_var = NOISE_SD**2, noise_variance(params)
    fitted, fit_var = None, np.full_like(true_var, np.nan)
    if not quick:  # fit for comparison (printed, not checked; the quick test skips it)
        report.say("fit: the same settings")
        fitted = nrbm.fit(
            train, 2, visible_units="gaussian", epochs=epochs, seed=seed, learning_rate=0.03,
            l1_decay=0.0, eval_every=None, progress=False,  # SVI's objective: no penalty
        ).params  # fmt: skip
        fit_var = noise_variance(fitted)
    print("feature | true noise var | SVI | fit")
    for i, row in enumerate(zip(true_var, svi_var, fit_var, strict=True)):
        print(f"{i:7d} | " + " | ".join(f"{x:.3f}" for x in row))
    rel = np.abs(svi_var / true_var - 1)
    report.check(
        rel.max() <= MAX_VAR_ERROR,
        f"SVI recovers every feature's noise variance within {MAX_VAR_ERROR:.0%}",
        f"largest relative error {rel.max():.3f} (feature {rel.argmax()}); "
        f"fit's {np.abs(fit_var / true_var - 1).max():.3f}",
    )
    ll = {"true": mean_ll(truth, test), "svi": mean_ll(params, test)}
    ll["fit"] = np.nan if fitted is None else mean_ll(fitted, test)
    report.check(
        ll["svi"] >= ll["true"] - MAX_LL_SHORTFALL,
        f"SVI's held-out LL is within {MAX_LL_SHORTFALL} nats of the true model's",
        f"true {ll['true']:.3f}, SVI {ll['svi']:.3f}, fit {ll['fit']:.3f} nats per row",
    )
    return {"noise_var": {"true": true_var, "svi": svi_var, "fit": fit_var}, "ll_known": ll}


def gaussian_lls(train, test):
    """Held-out LL per row of independent Gaussians and of one full-covariance Gaussian, both
    fitted by maximum likelihood."""
    from scipy.stats import multivariate_normal

    mean = train.mean(0)
    diag = multivariate_normal(mean, np.diag(train.var(0))).logpdf(test).mean()
    full = multivariate_normal(mean, np.cov(train.T, bias=True)).logpdf(test).mean()
    return float(diag), float(full)


def wine(report, seed):
    """Part 2: the bundled wine measurements."""
    from sklearn.datasets import load_wine

    x = load_wine().data
    perm = np.random.default_rng(0).permutation(len(x))
    test, train = x[perm[:44]], x[perm[44:]]
    mu, sd = train.mean(0), train.std(0)
    train, test = ((train - mu) / sd).astype(np.float32), ((test - mu) / sd).astype(np.float32)
    report.say("part 2: wine, 8 hidden units, SVI and fit, 200 epochs")
    params = train_svi(train, 8, 200, seed)
    fitted = nrbm.fit(
        train, 8, visible_units="gaussian", epochs=200, seed=seed, learning_rate=0.005,
        l1_decay=0.0, eval_every=None, progress=False,  # SVI's objective: no penalty
    ).params  # fmt: skip
    diag, full = gaussian_lls(train, test)
    ll = {"svi": mean_ll(params, test), "fit": mean_ll(fitted, test), "diag": diag, "full": full}
    print("model | held-out LL per wine (nats)")
    for name, value in ll.items():
        print(f"{name:5s} | {value:.3f}")
    report.check(
        ll["svi"] >= diag + MIN_GAIN_OVER_DIAGONAL,
        f"SVI's RBM beats independent Gaussians by more than {MIN_GAIN_OVER_DIAGONAL} nats",
        f"SVI {ll['svi']:.3f}, diagonal {diag:.3f}, full covariance {full:.3f}, "
        f"fit {ll['fit']:.3f}",
    )
    return {"ll_wine": ll}


def save_figure(path, noise_var):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    x = np.arange(len(noise_var["true"]))
    for offset, name in zip((-0.25, 0.0, 0.25), ("true", "svi", "fit"), strict=True):
        ax.bar(x + offset, noise_var[name], width=0.25, label=name)
    ax.set_xlabel("feature")
    ax.set_ylabel("noise variance $\\sigma_i^2$")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="part 1 only, shorter, no fit")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", help="write the noise-variance figure here (png)")
    args = parser.parse_args(argv)
    report = Report()
    results = known_noise(report, args.quick, args.seed)
    if not args.quick:
        results.update(wine(report, args.seed))
    if args.figure:
        save_figure(args.figure, results["noise_var"])
    return report.finish(results)


if __name__ == "__main__":
    exit_status(main())
