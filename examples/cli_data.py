r"""Writes the two small example inputs of ``docs/cli.md`` and ``tests/test_cli.py``, drawn
exactly (NumPy only, nothing downloaded) from known RBMs:

* ``data/measurements.csv``: 300 rows of 6 real-valued features from a Gaussian-Bernoulli
  RBM with 3 hidden units, then put in units of very different offsets and scales (so the
  command's standardisation matters). The joint law is
  :math:`p(x, h) \propto \exp(-\tfrac12\|x - b\|^2 + x^\top W h + c^\top h)`, so
  :math:`p(h) \propto \exp(c^\top h + b^\top W h + \tfrac12 \|W h\|^2)` (8 states,
  enumerated) and :math:`x \mid h \sim \mathcal N(b + W h, I)`.
* ``data/alignment.fasta``: 400 aligned sequences of 12 sites over the 20 amino acids and the
  gap, from a Potts-Bernoulli RBM with 3 hidden units:
  :math:`p(h) \propto \exp(c^\top h + \sum_i \log \sum_a e^{b_{ia} + (W h)_{ia}})`
  (enumerated) and :math:`x_i \mid h \sim \text{softmax}(b_{i\cdot} + (W h)_{i\cdot})`.

Run ``python examples/cli_data.py`` to write them again (the same bytes: seeded).
"""

import itertools
import os

import numpy as np

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY-"  # numpyro_rbm.datasets.AMINO_ACIDS
HERE = os.path.dirname(os.path.abspath(__file__))


def _hidden_states(n_hidden):
    return np.array(list(itertools.product([0.0, 1.0], repeat=n_hidden)))


def _draw(rng, log_weights, n):
    p = np.exp(log_weights - log_weights.max())
    return rng.choice(len(p), size=n, p=p / p.sum())


def real_table(n=300, seed=0):
    """``(x, names)``: ``n`` exact draws of the Gaussian-Bernoulli RBM, in data units."""
    rng = np.random.default_rng(seed)
    w = np.array(
        [[1.5, 0.0, 0.0], [1.2, 1.0, 0.0], [0.0, 1.4, 0.0], [0.0, -1.0, 1.3], [0.0, 0.0, 1.6],
         [-1.1, 0.0, 0.9]]
    )  # fmt: skip
    b = np.array([0.0, -1.0, 0.5, 0.0, -0.5, 0.3])
    c = np.array([-1.5, -1.0, -2.0])
    hs = _hidden_states(3)
    wh = hs @ w.T
    h = hs[_draw(rng, hs @ c + wh @ b + 0.5 * np.sum(wh**2, axis=1), n)]
    z = b + h @ w.T + rng.normal(size=(n, len(b)))
    offsets = np.array([0.0, 10.0, -3.0, 100.0, 50.0, 1.0])
    scales = np.array([1.0, 2.5, 0.3, 10.0, 5.0, 0.8])
    names = ["length", "width", "ph", "mass", "temperature", "ratio"]
    return offsets + scales * z, names


def alignment(n=400, length=12, seed=0):
    """``n`` exact draws of the Potts-Bernoulli RBM, as strings over the amino acids."""
    rng = np.random.default_rng(seed)
    q, n_hidden = len(AMINO_ACIDS), 3
    b = np.full((length, q), -2.0)
    for i in range(length):  # each site prefers a few residues
        b[i, rng.choice(q, size=3, replace=False)] = [2.0, 1.0, 0.5]
    w = np.zeros((length, q, n_hidden))
    for j in range(n_hidden):  # each hidden unit favours a motif on 4 sites
        for i in rng.choice(length, size=4, replace=False):
            w[i, rng.integers(q), j] = 6.0
    c = np.full(n_hidden, -3.0)
    hs = _hidden_states(n_hidden)
    fields = b[None] + np.einsum("iaj,sj->sia", w, hs)  # (states, L, q)
    top = fields.max(-1, keepdims=True)
    log_z_sites = (top[..., 0] + np.log(np.exp(fields - top).sum(-1))).sum(-1)
    states = _draw(rng, hs @ c + log_z_sites, n)
    p = np.exp(fields[states] - fields[states].max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    u = rng.random((n, length, 1))
    x = (p.cumsum(-1) < u).sum(-1).clip(max=q - 1)
    return ["".join(AMINO_ACIDS[a] for a in row) for row in x]


def main():
    folder = os.path.join(HERE, "data")
    os.makedirs(folder, exist_ok=True)
    x, names = real_table()
    np.savetxt(
        os.path.join(folder, "measurements.csv"), x, fmt="%.4f", delimiter=",",
        header=",".join(names), comments="",
    )  # fmt: skip
    with open(os.path.join(folder, "alignment.fasta"), "w") as f:
        f.writelines(f">seq_{k}\n{s}\n" for k, s in enumerate(alignment()))
    print(f"wrote {folder}/measurements.csv and {folder}/alignment.fasta")


if __name__ == "__main__":
    main()
