r"""The one free-energy loss whose gradient is the stochastic log-likelihood gradient, and the
centered parametrisation.

The gradient of the average log-likelihood of data :math:`\{v_n\}` is a positive phase minus a
negative phase,

.. math::

    \nabla_\theta \frac1N \sum_n \log p(v_n)
    = -\frac1N \sum_n \nabla_\theta F(v_n) + \mathbb{E}_{v \sim p_\theta}[\nabla_\theta F(v)].

Every estimator replaces the model expectation by an average over *negative samples*
:math:`v'_1, \dots, v'_M` and differentiates the free-energy surrogate

.. math::

    \mathcal{L}(\theta) = \frac1N \sum_n F_\theta(v_n)
        - \frac1M \sum_m F_\theta\big(\operatorname{stop\_gradient}(v'_m)\big)

with :func:`jax.grad`, so :math:`-\nabla\mathcal L` is an unbiased estimate of the gradient
when the :math:`v'_m` are exact model samples, for any unit types and any parametrisation.
The ``stop_gradient`` matters: the samples were drawn with the current parameters, but inside
the differentiated expression they must be constants, or :func:`jax.grad` would add the
derivative of the sampler (a pathwise term that the estimator does not contain).

**Centering** (Montavon & Müller 2012; Melchior, Fischer & Wiskott 2016) trains the
equivalent parametrisation :math:`E(v, h) = -(v - \mu)^\top W (h - \lambda) - b'^\top(v - \mu)
- c'^\top(h - \lambda)` with :math:`\mu` the data mean and :math:`\lambda` a running mean of the
hidden activations, which conditions the gradient much better. The gradient in these
coordinates is again :func:`jax.grad` of the same surrogate, through the map to standard
parameters :math:`b = b' - W\lambda`, :math:`c = c' - W^\top \mu`.

References:
    * G. Montavon and K.-R. Müller, *Deep Boltzmann machines and the centering trick*, in
      *Neural Networks: Tricks of the Trade* (2012).
    * J. Melchior, A. Fischer and L. Wiskott, *How to center deep Boltzmann machines*, JMLR 17
      (2016).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..core import RBMParams, free_energy

__all__ = [
    "Weighted",
    "free_energy_loss",
    "loss_gradient",
    "to_standard",
    "move_hidden_offset",
]


class Weighted(NamedTuple):
    r"""Examples with weights: the loss takes :math:`\sum_n w_n F(v_n)` instead of the mean
    (padding rows get weight 0; the scikit-learn estimator divides its sums by the number of
    data rows in a minibatch)."""

    v: jax.Array
    weights: jax.Array


def _mean_free_energy(params: RBMParams, x):
    if isinstance(x, Weighted):
        return jnp.sum(x.weights * free_energy(params, x.v))
    return jnp.mean(free_energy(params, x))


def to_standard(params: RBMParams, visible_offset, hidden_offset) -> RBMParams:
    r"""Maps centered parameters :math:`(W, b', c')` with offsets :math:`(\mu, \lambda)` to the
    standard parametrisation of the same distribution: :math:`b = b' - W\lambda`,
    :math:`c = c' - W^\top\mu` (the constant :math:`\mu^\top W \lambda - b'^\top\mu -
    c'^\top\lambda` cancels in :math:`p`). Zero offsets give the parameters back unchanged."""
    w = params.weights
    return params.replace(
        visible_bias=params.visible_bias - w @ hidden_offset,
        hidden_bias=params.hidden_bias - visible_offset @ w,
    )


def move_hidden_offset(params: RBMParams, old_offset, new_offset) -> RBMParams:
    r"""Re-expresses centered parameters for a new hidden offset without changing the model:
    :math:`b'_{\text{new}} = b' + W(\lambda_{\text{new}} - \lambda)` keeps
    :math:`b = b' - W\lambda` fixed (:math:`c` does not depend on :math:`\lambda`)."""
    return params.replace(
        visible_bias=params.visible_bias + params.weights @ (new_offset - old_offset)
    )


def free_energy_loss(params: RBMParams, v_data, v_model, offsets=None):
    r"""The surrogate :math:`\frac1N\sum_n F(v_n) - \frac1M\sum_m F(\operatorname{sg}(v'_m))`.

    Its gradient is minus the stochastic log-likelihood gradient (so optimisers minimise it).
    Its *value* is not the negative log-likelihood.

    Args:
        params: the RBM, in centered coordinates when ``offsets`` is given.
        v_data: a minibatch ``(N, n_visible)``, or :class:`Weighted` examples.
        v_model: negative samples ``(M, n_visible)`` (or :class:`Weighted`); gradients do not
            flow through them.
        offsets: optional ``(visible_offset, hidden_offset)`` for centered training.
    """
    if offsets is not None:
        params = to_standard(params, *offsets)
    v_model = jax.lax.stop_gradient(v_model)
    return _mean_free_energy(params, v_data) - _mean_free_energy(params, v_model)


def loss_gradient(params: RBMParams, v_data, v_model, offsets=None) -> RBMParams:
    r""":func:`jax.grad` of :func:`free_energy_loss`: an estimate of
    :math:`-\nabla_\theta \frac1N\sum_n \log p(v_n)` (for Bernoulli units and no centering,
    :math:`-(\langle v\,\sigma(c + W^\top v)^\top\rangle_{\text{data}} -
    \langle v\,\sigma(c + W^\top v)^\top\rangle_{\text{model}})` for :math:`W`)."""
    return jax.grad(free_energy_loss)(params, v_data, v_model, offsets)
