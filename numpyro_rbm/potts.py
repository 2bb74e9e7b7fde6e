r"""Potts (categorical) visible layers: the zero-sum gauge and sequence statistics.

A Potts visible layer of :math:`L` sites with :math:`q` states is stored one-hot
(:class:`~numpyro_rbm.units.Potts`): :math:`v_{ia} = \mathbb 1[x_i = a]`, so the energy is
:math:`E(x, h) = -\sum_i b_{i x_i} - c^\top h - \sum_{ij} W_{i x_i j} h_j`.

**Gauge.** Because exactly one state per site is active, adding :math:`u_{ij}` to
:math:`W_{iaj}` for every :math:`a` and subtracting :math:`\sum_i u_{ij}` from :math:`c_j`
leaves every energy unchanged, and adding :math:`s_i` to every :math:`b_{ia}` only shifts
:math:`\log Z`. The parameters are therefore not identifiable until a gauge is fixed. The
*zero-sum* gauge (Ekeberg et al. 2013; Tubiana, Cocco & Monasson 2019),

.. math::

    \sum_a W_{iaj} = 0, \qquad \sum_a b_{ia} = 0,

is reached by :math:`W_{iaj} \leftarrow W_{iaj} - \bar W_{ij}`,
:math:`c_j \leftarrow c_j + \sum_i \bar W_{ij}`, :math:`b_{ia} \leftarrow b_{ia} - \bar b_i`
(bars: means over :math:`a`); :math:`p(x)` is unchanged exactly and the map is idempotent.

References:
    * M. Ekeberg, C. Lövkvist, Y. Lan, M. Weigt and E. Aurell, *Improved contact prediction in
      proteins: using pseudolikelihoods to infer Potts models*, Phys. Rev. E 87, 012707 (2013).
    * J. Tubiana, S. Cocco and R. Monasson, *Learning protein constitutive motifs from
      sequence data*, eLife 8, e39397 (2019).
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .core import RBMParams
from .units import Potts

__all__ = ["zero_sum_gauge", "site_frequencies", "pair_frequencies"]


def _potts(params: RBMParams) -> Potts:
    if not isinstance(params.visible_units, Potts):
        raise ValueError(
            f"zero_sum_gauge needs Potts visible units, got {params.visible_units.spec}"
        )
    return params.visible_units


def zero_sum_gauge(params: RBMParams) -> RBMParams:
    r"""The same distribution :math:`p(x)` with :math:`\sum_a W_{iaj} = 0` and
    :math:`\sum_a b_{ia} = 0` (see the module docstring); :math:`\log Z` changes by
    :math:`-\sum_i \bar b_i`. Batched parameters are gauged per RBM."""
    q = _potts(params).q
    w = params.weights
    blocks = w.reshape(w.shape[:-2] + (w.shape[-2] // q, q, w.shape[-1]))
    w_mean = jnp.mean(blocks, axis=-2, keepdims=True)  # (..., L, 1, n_h)
    b = params.visible_bias
    b_blocks = b.reshape(b.shape[:-1] + (b.shape[-1] // q, q))
    return params.replace(
        weights=(blocks - w_mean).reshape(w.shape),
        visible_bias=(b_blocks - jnp.mean(b_blocks, axis=-1, keepdims=True)).reshape(b.shape),
        hidden_bias=params.hidden_bias + jnp.sum(w_mean[..., 0, :], axis=-2),
    )


def site_frequencies(sequences, q: int, weights=None):
    r"""Single-site frequencies :math:`f_i(a)`, shape ``(L, q)``, of integer sequences
    ``(N, L)`` (optionally weighted per sequence)."""
    x = np.asarray(sequences)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    one_hot = np.eye(q)[x]  # (N, L, q)
    return np.einsum("n,nia->ia", w, one_hot) / w.sum()


def pair_frequencies(sequences, q: int, weights=None):
    r"""Pairwise frequencies :math:`f_{ij}(a, b)`, shape ``(L, L, q, q)``, of integer
    sequences ``(N, L)`` (the diagonal :math:`i = j` holds the single-site frequencies)."""
    x = np.asarray(sequences)
    w = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64)
    one_hot = np.eye(q)[x]
    return np.einsum("n,nia,njb->ijab", w, one_hot, one_hot) / w.sum()
