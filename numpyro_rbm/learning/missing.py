r"""Training from incomplete data: the positive phase of a stochastic-approximation EM.

With entries missing, the likelihood of an example is that of its observed entries,
:math:`\log p(v_O) = \log \sum_{v_M} p(v_O, v_M)`, and its gradient is

.. math::

    \nabla_\theta \log p(v_O)
    = -\mathbb{E}_{v_M \sim p(v_M \mid v_O)}\big[\nabla_\theta F(v_O, v_M)\big]
      + \mathbb{E}_{v \sim p_\theta}\big[\nabla_\theta F(v)\big],

because :math:`\log p(v_O) = \log \sum_{v_M} e^{-F(v_O, v_M)} - \log Z`. The negative phase is
unchanged; the positive phase averages the free energy's gradient over the missing entries'
conditional. A sample :math:`v_M \sim p(v_M \mid v_O)` in place of the expectation keeps the
gradient unbiased, so :func:`~numpyro_rbm.learning.free_energy_loss` at the *completed*
examples :math:`(v_O, v_M)` is the surrogate, differentiated as for complete data.

The samples come from persistent chains, one per example (the imputations): each time an
example's minibatch is visited its missing entries advance :math:`k` clamped Gibbs sweeps,
:math:`h \sim p(h \mid v)`, :math:`v_M \sim p(v_M \mid h)` with :math:`v_O` held, a kernel that
leaves :math:`p(v_M \mid v_O)` invariant (the sweep of :mod:`numpyro_rbm.clamp`). Like PCD's
chains they track the slowly moving parameters: a stochastic-approximation EM (Younes 1989;
Salakhutdinov, Mnih & Hinton 2007 trained RBMs on users' ratings, most of them missing, this
way).

:func:`impute` is that step as a pure function of explicit state, for
:func:`~numpyro_rbm.fit` (whose :class:`~numpyro_rbm.learning.TrainState` carries the
imputations, checkpointed with the rest) and for any other trainer of the same gradient.

References:
    * R. Salakhutdinov, A. Mnih and G. Hinton, *Restricted Boltzmann machines for
      collaborative filtering*, ICML 2007.
    * L. Younes, *Parametric inference for imperfectly observed Gibbsian fields*, Probability
      Theory and Related Fields 82 (1989).
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ..core import RBMParams
from ..kernels import gibbs

__all__ = ["IncompleteData", "impute", "impute_batch"]


class IncompleteData(NamedTuple):
    """Training examples with missing entries, as the compiled training loop reads them."""

    #: The layer ``(N, n_visible)``; only the observed entries are read.
    values: jax.Array
    #: ``True`` where a unit is observed ``(N, n_visible)``.
    observed: jax.Array


def impute(key, params: RBMParams, v, observed, values, k: int = 1):
    r"""``k`` clamped Gibbs sweeps of the missing entries of ``v``.

    A transition that leaves :math:`p(v_M \mid v_O)` invariant (block Gibbs on
    :math:`(v_M, h)` with :math:`v_O` held), for each row of ``v`` at once.

    Args:
        key: PRNG key.
        params: the RBM (standard coordinates).
        v: the current completed examples ``(..., n_visible)``.
        observed: boolean ``(..., n_visible)``, ``True`` where a unit is observed.
        values: ``(..., n_visible)``, the observed values (other entries are not read).
        k: sweeps (static).

    Returns:
        The next completed examples: ``values`` where observed, the chains' draws elsewhere.
    """
    return gibbs(key, params, v, k, mask=observed, values=values)[0]


def impute_batch(key, params: RBMParams, imputations, data: IncompleteData, index, k: int = 1):
    """The positive phase of one minibatch: the rows ``index`` of the persistent
    ``imputations`` ``(N, n_visible)`` advanced by :func:`impute`.

    Returns:
        ``(batch, imputations)``: the completed minibatch ``(len(index), n_visible)`` and the
        imputations with its rows replaced.
    """
    batch = impute(key, params, imputations[index], data.observed[index], data.values[index], k)
    return batch, imputations.at[index].set(batch)
