r"""Figures for a trained RBM: learning curves, weight filters, samples and chain diagnostics.

Every function returns a :class:`matplotlib.figure.Figure` drawn with pyplot's current backend
(the ``numpyro-rbm`` command selects the non-interactive Agg backend, so it never needs a
display); :func:`save` writes it and closes it. Images are tiled into one mosaic (one
``imshow``, fast for hundreds of tiles). The weight filter of hidden
unit :math:`j` is the column :math:`W_{:, j}` reshaped to the image: the visible pattern that
most increases :math:`p(h_j = 1 \mid v)` (Hinton, *A Practical Guide to Training Restricted
Boltzmann Machines*, UTML TR 2010-003, sec. 15). Chain diagnostics use ArviZ's trace and rank
plots (Vehtari et al., *Rank-normalization, folding, and localization: an improved*
:math:`\widehat{R}` *for assessing convergence of MCMC*, Bayesian Analysis 2021).
"""

from __future__ import annotations

import math
import os
import warnings

import matplotlib.pyplot as plt
import numpy as np

__all__ = [
    "tile_images",
    "plot_images",
    "plot_filters",
    "plot_learning_curves",
    "plot_chain_trace",
    "plot_chain_rank",
    "plot_marginals",
    "plot_correlations",
    "plot_site_frequencies",
    "plot_pair_correlations",
    "plot_site_logo",
    "save",
]

# Metric name -> (axis label, panel title); unknown metrics get their own name.
_METRIC_LABELS = {
    "log_likelihood": ("mean log p(v) [nats]", "Exact log-likelihood (higher is better)"),
    "reconstruction_error": ("mean squared error", "Reconstruction error v -> h -> v"),
    "pseudo_log_likelihood": ("mean log PL(v) [nats]", "Pseudo-log-likelihood"),
    "chain_rhat": (
        "R-hat of F(v) and mean v, 50 sweeps",
        "Persistent chains: R-hat (they mix below the dashed line)",
    ),
}


def tile_images(images, image_shape, ncols: int | None = None, pad: int = 1) -> np.ndarray:
    """Arranges flattened images into one mosaic, separated by ``pad`` pixels of ``NaN``.

    Args:
        images: array ``(n, height * width)``, row-major flattened images.
        image_shape: ``(height, width)``.
        ncols: tiles per row (default: a near-square grid).
        pad: gap between tiles in pixels (``NaN``, drawn as the figure background).

    Returns:
        A float array ``(rows * (height + pad) - pad, ncols * (width + pad) - pad)``.
    """
    images = np.asarray(images, dtype=np.float64)
    h, w = image_shape
    if images.ndim != 2 or images.shape[1] != h * w:
        raise ValueError(
            f"expected images of shape (n, {h * w}) for image_shape {tuple(image_shape)}, "
            f"got {images.shape}"
        )
    n = len(images)
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    mosaic = np.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad), np.nan)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = r * (h + pad), c * (w + pad)
        mosaic[top : top + h, left : left + w] = img.reshape(h, w)
    return mosaic


def _show_mosaic(ax, images, image_shape, ncols, cmap, vmin, vmax):
    mosaic = tile_images(images, image_shape, ncols)
    cmap = plt.get_cmap(cmap).with_extremes(bad="0.85")  # gaps between tiles: light grey
    im = ax.imshow(mosaic, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def plot_images(panels, image_shape=None, ncols: int | None = None, suptitle=None):
    """Side-by-side panels of binary (or spin) states: image tiles, or a units matrix.

    Args:
        panels: a list of ``(title, states)`` with ``states`` of shape ``(n, n_visible)``.
        image_shape: ``(height, width)`` to draw each row as an image tile; ``None`` draws
            each panel as a matrix (one row per state, one column per unit).
        ncols: tiles per row in each panel.
        suptitle: the figure title.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6), squeeze=False)
    for ax, (title, states) in zip(axes[0], panels, strict=True):
        states = np.asarray(states, dtype=np.float64)
        lo, hi = float(min(states.min(), 0.0)), float(max(states.max(), 1.0))
        if image_shape is not None:
            _show_mosaic(ax, states, image_shape, ncols, "gray_r", lo, hi)
        else:
            ax.imshow(states, cmap="gray_r", vmin=lo, vmax=hi, aspect="auto", interpolation="none")
            ax.set_xlabel("visible unit")
            ax.set_ylabel("example")
        ax.set_title(title)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def plot_filters(weights, image_shape=None, ncols: int | None = None):
    """The weights of each hidden unit, as image tiles (or a matrix when not images).

    Colours are symmetric around zero (red: positive, blue: negative), on one scale shared by
    all filters, so the tiles can be compared with each other.

    Args:
        weights: ``W`` of shape ``(n_visible, n_hidden)``.
        image_shape: ``(height, width)`` of a visible image, or ``None``.
    """
    w = np.asarray(weights, dtype=np.float64)
    limit = float(np.abs(w).max()) or 1.0
    n_hidden = w.shape[1]
    if image_shape is not None:
        fig, ax = plt.subplots(figsize=(6, 5.4))
        im = _show_mosaic(ax, w.T, image_shape, ncols, "RdBu_r", -limit, limit)
        ax.set_title(
            f"Weight filters of the {n_hidden} hidden units\n"
            f"(column W[:, j] as a {image_shape[0]}x{image_shape[1]} image)"
        )
    else:
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(w, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xlabel("hidden unit j")
        ax.set_ylabel("visible unit i")
        ax.set_title("Weights W[i, j]")
    fig.colorbar(im, ax=ax, label="weight", shrink=0.8)
    fig.tight_layout()
    return fig


def plot_learning_curves(history, optimum: float | None = None):
    """One panel per metric against the epoch; train and test curves share a panel.

    Args:
        history: a dict of metric name -> values per evaluation, with an ``"epoch"`` entry;
            names ``train_X``/``test_X`` are drawn together in panel ``X``.
        optimum: a known best log-likelihood, drawn as a dashed line (e.g. bars-and-stripes).
    """
    epochs = np.asarray(history.get("epoch", []), dtype=np.float64)
    panels: dict[str, list[tuple[str, str]]] = {}
    for name, values in history.items():
        if name == "epoch" or np.ndim(values) != 1 or len(values) != len(epochs):
            continue
        base, split = name, ""
        for prefix in ("train_", "test_"):
            if name.startswith(prefix):
                base, split = name[len(prefix) :], prefix[:-1]
        panels.setdefault(base, []).append((split, name))
    if not panels:
        raise ValueError(f"history has no per-epoch metrics to plot: keys {sorted(history)}")
    # Known metrics first, in the order of _METRIC_LABELS; others after, as they come.
    order = list(_METRIC_LABELS)
    names = sorted(panels, key=lambda b: order.index(b) if b in order else len(order))
    ncols = 2 if len(names) == 4 else min(len(names), 3)
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.ravel()[len(names) :]:
        ax.set_visible(False)
    for ax, base in zip(axes.ravel(), names, strict=False):
        curves = panels[base]
        for split, name in curves:
            values = np.asarray(history[name], dtype=np.float64)
            marker = "o" if len(epochs) <= 40 else None  # dots hide a long curve
            ax.plot(epochs, values, marker=marker, markersize=3, label=split or name)
        ylabel, title = _METRIC_LABELS.get(base, (base.replace("_", " "), base))
        if base == "log_likelihood" and optimum is not None:
            ax.axhline(optimum, color="k", linestyle="--", linewidth=1, label="optimum")
        if base == "chain_rhat":
            from .diagnostics import RHAT_THRESHOLD

            ax.axhline(RHAT_THRESHOLD, color="k", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if len(curves) > 1 or (base == "log_likelihood" and optimum is not None):
            ax.legend()
    fig.tight_layout()
    return fig


def _inference_data(draws, name):
    import arviz as az

    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim != 2:
        raise ValueError(f"expected draws of shape (chains, draws), got {draws.shape}")
    return az.from_dict(posterior={name: draws})


def plot_chain_trace(draws, name: str = "free_energy", title: str | None = None):
    """ArviZ trace plot (per-chain density and trace) of a scalar chain statistic.

    Args:
        draws: array ``(num_chains, num_draws)``, e.g. the free energy :math:`F(v_t)` of
            each chain after each Gibbs sweep.
        name: the statistic's name, used as the panel title.
        title: the figure title (default: says how many chains are drawn).
    """
    import arviz as az

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = az.plot_trace(_inference_data(draws, name), compact=False, figsize=(10, 3.6))
    axes[0, 0].set_xlabel(f"{name}")
    axes[0, 0].set_ylabel("density")
    axes[0, 1].set_xlabel("Gibbs sweep (after warm-up)")
    axes[0, 1].set_ylabel(f"{name}")
    fig = axes.ravel()[0].figure
    fig.suptitle(title or f"Trace of {name} for {np.shape(draws)[0]} chains (one colour each)")
    fig.tight_layout()
    return fig


def plot_chain_rank(draws, name: str = "free_energy", title: str | None = None):
    """ArviZ rank plot: per-chain histograms of the ranks of a scalar statistic, pooled over
    chains. Chains that sample the same distribution give flat histograms (Vehtari et al.
    2021). Arguments as for :func:`plot_chain_trace`."""
    import arviz as az

    fig, ax = plt.subplots(figsize=(7, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        az.plot_rank(_inference_data(draws, name), ax=ax)
    ax.set_title(title or f"Rank plot of {name} (flat bars = chains agree)")
    ax.set_xlabel("rank (all chains pooled)", fontsize=11)
    ax.set_ylabel("chain", fontsize=11)
    fig.tight_layout()
    return fig


# --- real-valued data (Gaussian visible units) ---------------------------------------------

_MAX_PANELS = 16  # features drawn by plot_marginals (more are unreadable)


def plot_marginals(data, samples, model_label: str = "model samples", names=None):
    """Per-feature histograms of the data and of model samples, on shared bins.

    Args:
        data: ``(n, n_features)`` in the data's units.
        samples: ``(m, n_features)`` model samples in the same units.
        model_label: what the samples are (e.g. "exact samples from the model").
        names: feature names (default ``x0, x1, ...``); the first 16 features are drawn.
    """
    data, samples = np.asarray(data, np.float64), np.asarray(samples, np.float64)
    n = min(data.shape[1], _MAX_PANELS)
    names = [f"x{j}" for j in range(n)] if names is None else list(names)
    ncols = min(n, 4)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.5 * nrows), squeeze=False)
    for j, ax in enumerate(axes.flat):
        if j >= n:
            ax.axis("off")
            continue
        both = np.concatenate([data[:, j], samples[:, j]])
        bins = np.linspace(both.min(), both.max(), 31) if np.ptp(both) > 0 else 10
        ax.hist(data[:, j], bins=bins, density=True, alpha=0.5, color="tab:blue", label="data")
        ax.hist(
            samples[:, j], bins=bins, density=True, histtype="step", lw=1.6, color="tab:red",
            label=model_label,
        )  # fmt: skip
        ax.set_title(names[j], fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    shown = f" (first {n} of {data.shape[1]})" if n < data.shape[1] else ""
    fig.suptitle(f"Per-feature marginals{shown}: data vs {model_label}")
    fig.tight_layout()
    return fig


def _correlation(x):
    x = np.asarray(x, np.float64)
    std = x.std(0)
    z = (x - x.mean(0)) / np.where(std > 0, std, 1.0)
    return z.T @ z / len(z)


def plot_correlations(data, samples, model_label: str = "model samples"):
    """Pearson correlation matrices of the data and of model samples, and their off-diagonal
    entries against each other (points on the diagonal: the model reproduces them)."""
    c_data, c_model = _correlation(data), _correlation(samples)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2), layout="constrained")
    for ax, c, title in ((axes[0], c_data, "data"), (axes[1], c_model, model_label)):
        im = ax.imshow(c, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="none")
        ax.set_title(f"Correlations: {title}", fontsize=10)
        ax.set_xlabel("feature")
        ax.set_ylabel("feature")
    fig.colorbar(im, ax=axes[:2], shrink=0.8, label="Pearson r")
    upper = np.triu_indices_from(c_data, k=1)
    _scatter_identity(axes[2], c_data[upper], c_model[upper], "data", model_label)
    axes[2].set_title("Off-diagonal correlations", fontsize=10)
    return fig


def _scatter_identity(ax, x, y, xlabel, ylabel):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    size = float(np.clip(3000 / max(len(x), 1), 4, 30))  # few points: larger dots
    ax.scatter(x, y, s=size, alpha=0.6, color="tab:purple", linewidths=0)
    lo = float(min(x.min(), y.min(), 0.0)) if len(x) else 0.0
    hi = float(max(x.max(), y.max(), 0.0)) if len(x) else 1.0
    pad = 0.05 * (hi - lo or 1.0)
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=0.8)
    if len(x) > 1 and np.std(x) > 0 and np.std(y) > 0:
        r = np.corrcoef(x, y)[0, 1]
        ax.text(0.04, 0.94, f"r = {r:.3f} over {len(x)} entries", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


# --- alignments (Potts visible units) -------------------------------------------------------


def plot_site_frequencies(f_data, f_model, model_label: str = "model samples"):
    """Every single-site frequency :math:`f_i(a)` of the model against the data's, ``(L, q)``
    each."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    _scatter_identity(ax, np.ravel(f_data), np.ravel(f_model), "data f_i(a)", model_label)
    ax.set_title("Site frequencies f_i(a): model vs data")
    fig.tight_layout()
    return fig


def plot_pair_correlations(c_data, c_model, model_label: str = "model samples"):
    r"""Connected pair correlations :math:`C_{ij}(a, b) = f_{ij}(a, b) - f_i(a) f_j(b)`
    (:math:`i < j`) of the model against the data's, as flat arrays of the same entries."""
    fig, ax = plt.subplots(figsize=(5.2, 5))
    _scatter_identity(ax, c_data, c_model, "data C_ij(a,b)", model_label)
    ax.set_title("Pair correlations C_ij(a,b), i < j: model vs data")
    fig.tight_layout()
    return fig


_MAX_SITES = 60  # sites drawn by plot_site_logo


def plot_site_logo(f_data, f_model, alphabet: str, model_label: str = "model samples"):
    r"""A sequence-logo-like plot of the data and of the model, one above the other: at each
    site :math:`i` the symbols are stacked, largest on top, each with height
    :math:`f_i(a) \, I_i` where :math:`I_i = \log_2 q - H_i` bits is the site's information
    content (Schneider & Stephens, *Sequence logos*, Nucleic Acids Research 1990); symbols
    tall enough to read are written on their bar.

    Args:
        f_data, f_model: site frequencies ``(L, q)``.
        alphabet: the ``q`` symbols.
    """
    q = len(alphabet)
    cmap = plt.get_cmap("tab20")
    colours = [cmap(a % 20) for a in range(q)]
    length = min(np.shape(f_data)[0], _MAX_SITES)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.32 * length + 1.5), 5.6), sharex=True)
    for ax, f, title in ((axes[0], f_data, "data"), (axes[1], f_model, model_label)):
        f = np.asarray(f, np.float64)[:length]
        with np.errstate(divide="ignore", invalid="ignore"):
            entropy = -np.sum(np.where(f > 0, f * np.log2(f), 0.0), axis=1)
        heights = f * (np.log2(q) - entropy)[:, None]
        for i in range(length):
            bottom = 0.0
            for a in np.argsort(heights[i]):
                h = heights[i, a]
                if h <= 0:
                    continue
                ax.bar(i, h, bottom=bottom, width=0.9, color=colours[a], linewidth=0)
                if h > 0.08 * np.log2(q):
                    ax.text(i, bottom + h / 2, alphabet[a], ha="center", va="center", fontsize=8)
                bottom += h
        ax.set_ylim(0, np.log2(q))
        ax.set_ylabel("bits")
        ax.set_title(f"Site logo: {title}", fontsize=10)
    axes[1].set_xlabel("site" + (f" (first {length})" if length < np.shape(f_data)[0] else ""))
    fig.tight_layout()
    return fig


def save(fig, path) -> str:
    """Writes ``fig`` to ``path`` (format from the extension) and closes it."""
    path = os.fspath(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
