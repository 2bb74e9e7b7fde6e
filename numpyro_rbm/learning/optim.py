r"""Optimisers and penalties as optax transformations, with hashable specifications.

Penalties are gradient transformations chained in front of the optimiser, so the optimiser
sees the penalised gradient: an L2 penalty :math:`\tfrac{\lambda_2}{2}\|W\|^2` adds
:math:`\lambda_2 W` (:func:`optax.add_decayed_weights`) and an L1 penalty
:math:`\lambda_1\|W\|_1` adds :math:`\lambda_1 \operatorname{sign}(W)` (:func:`add_l1`), both on
the weights only (:func:`weights_mask`).

The compiled training loop is cached on the trainer, so the optimiser must hash equal when
it is the same: :class:`CosineAdam` and :class:`Penalized` are frozen dataclasses that build
their optax transformation on demand (:func:`as_transformation`), where two calls of
``optax.adam(...)`` would give two distinct objects. A user's own
``optax.GradientTransformation`` is used as it is (cached by identity).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from ..core import RBMParams

__all__ = [
    "CosineAdam",
    "Penalized",
    "add_l1",
    "weights_mask",
    "as_transformation",
]


def weights_mask(params: RBMParams) -> RBMParams:
    """An optax mask selecting the weights only (not biases or unit parameters)."""
    return jax.tree.map(lambda _: False, params).replace(weights=True)


def add_l1(l1_decay: float, mask=None) -> optax.GradientTransformation:
    r"""Adds :math:`\lambda_1 \operatorname{sign}(\theta)` to the updates: the (sub)gradient of
    the L1 penalty :math:`\lambda_1 \|\theta\|_1`, on the leaves ``mask`` selects."""

    def update(updates, state, params):
        if params is None:
            raise ValueError("add_l1 needs the parameters: call update(g, state, params)")
        return jax.tree.map(lambda g, p: g + l1_decay * jnp.sign(p), updates, params), state

    transform = optax.GradientTransformation(lambda params: optax.EmptyState(), update)
    return transform if mask is None else optax.masked(transform, mask)


@dataclasses.dataclass(frozen=True)
class CosineAdam:
    """Adam whose step size decays from ``learning_rate`` to 1% of it over ``total_steps``
    updates on a cosine schedule (``fit``'s default), or Adam on a given optax schedule when
    ``learning_rate`` is callable (then ``total_steps`` is unused)."""

    learning_rate: float | Callable
    total_steps: int = 0

    def build(self) -> optax.GradientTransformation:
        if callable(self.learning_rate):
            return optax.adam(self.learning_rate)
        # Decaying the step size lets the stochastic gradient settle; SML's convergence
        # theory (Younes 1989) assumes decreasing steps.
        schedule = optax.cosine_decay_schedule(self.learning_rate, self.total_steps, alpha=0.01)
        return optax.adam(schedule)


@dataclasses.dataclass(frozen=True)
class Penalized:
    """``optimizer`` preceded by L2 (``weight_decay``) and L1 (``l1_decay``) penalties on the
    weights; zero penalties add nothing."""

    optimizer: Any
    weight_decay: float = 0.0
    l1_decay: float = 0.0

    def build(self) -> optax.GradientTransformation:
        parts = []
        if self.weight_decay:
            parts.append(optax.add_decayed_weights(self.weight_decay, weights_mask))
        if self.l1_decay:
            parts.append(add_l1(self.l1_decay, weights_mask))
        inner = as_transformation(self.optimizer)
        return optax.chain(*parts, inner) if parts else inner


def as_transformation(optimizer) -> optax.GradientTransformation:
    """The optax transformation of a spec (anything with ``build()``), or ``optimizer`` itself."""
    build = getattr(optimizer, "build", None)
    return build() if callable(build) else optimizer
