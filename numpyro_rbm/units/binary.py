r"""Two-state units: Bernoulli :math:`\{0, 1\}` and Ising spins :math:`\{-1, +1\}`, and their
exact 32-bit threshold sampler."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
from numpyro.distributions import constraints

from .._threefry import threefry_bits32
from .base import TwoStateUnits, register_unit_type

__all__ = ["Bernoulli", "Spin", "spin", "spin_vector"]


class _Spin(constraints.ParameterFreeConstraint):
    """Ising spins: each entry is -1 or +1 (the elementwise analogue of ``boolean``)."""

    is_discrete = True
    event_dim = 0

    def __call__(self, x):
        import numpy as np

        xp = jnp if isinstance(x, jax.Array) else np
        return xp.equal(x, -1) | xp.equal(x, 1)

    def feasible_like(self, prototype):
        return jnp.ones_like(prototype)


#: Elementwise constraint to spin values {-1, +1}.
spin = _Spin()
#: The support of a site of spin units: vectors of spins (event_dim 1).
spin_vector = constraints.independent(spin, 1)


# --- log-partitions whose derivative is the conditional mean --------------------------------
# A'(phi) is the conditional mean. Written as a custom JVP, jax.grad of a free energy needs
# only the mean (one sigmoid per unit), not the forward softplus that the derivative of
# logaddexp reads: XLA then drops the forward pass, and a gradient step of the free-energy
# loss costs about half as much on the CPU (benchmarks/bench_training.py).


@jax.custom_jvp
def _softplus_sum(field):
    return jnp.sum(jax.nn.softplus(field), axis=-1)


@_softplus_sum.defjvp
def _softplus_sum_jvp(primals, tangents):
    (field,), (d_field,) = primals, tangents
    return _softplus_sum(field), jnp.sum(jax.nn.sigmoid(field) * d_field, axis=-1)


@jax.custom_jvp
def _log_2cosh_sum(field):
    a = jnp.abs(field)
    return jnp.sum(a + jax.nn.softplus(-2.0 * a), axis=-1)


@_log_2cosh_sum.defjvp
def _log_2cosh_sum_jvp(primals, tangents):
    (field,), (d_field,) = primals, tangents
    return _log_2cosh_sum(field), jnp.sum(jnp.tanh(field) * d_field, axis=-1)


@register_unit_type
@dataclasses.dataclass(frozen=True)
class Bernoulli(TwoStateUnits):
    r"""Binary units :math:`x \in \{0, 1\}`.

    :math:`A(\phi) = \log(1 + e^{\phi}) = \mathrm{softplus}(\phi)`,
    :math:`\mathbb{E}[x \mid \phi] = \sigma(\phi)`.
    """

    name: ClassVar[str] = "bernoulli"
    values: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def log_partition(self, field):
        return _softplus_sum(field)

    def mean(self, field):
        return jax.nn.sigmoid(field)

    def sample(self, key, field):
        return _sample_binary(key, field, 0.0, 1.0)

    def in_support(self, x):
        return (x == 0) | (x == 1)

    @property
    def softplus_form(self):
        # Only when the log-partition is this class's own (a subclass may change it).
        return (0.0, 1.0) if type(self).log_partition is Bernoulli.log_partition else None

    def site_support(self):
        return constraints.independent(constraints.boolean, 1)


@register_unit_type
@dataclasses.dataclass(frozen=True)
class Spin(TwoStateUnits):
    r"""Ising spins :math:`x \in \{-1, +1\}`.

    :math:`A(\phi) = \log(e^{\phi} + e^{-\phi}) = |\phi| + \mathrm{softplus}(-2|\phi|)`,
    :math:`\mathbb{E}[x \mid \phi] = \tanh(\phi)`, :math:`p(x = +1 \mid \phi) = \sigma(2\phi)`.
    """

    name: ClassVar[str] = "spin"
    values: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def log_partition(self, field):
        return _log_2cosh_sum(field)

    def mean(self, field):
        return jnp.tanh(field)

    def sample(self, key, field):
        return _sample_binary(key, 2.0 * field, -1.0, 1.0)

    def in_support(self, x):
        return (x == 1) | (x == -1)

    @property
    def softplus_form(self):
        return (-1.0, 2.0) if type(self).log_partition is Spin.log_partition else None

    def site_support(self):
        return spin_vector


# --- sampling two-state units: exact thresholds on 32-bit random words --------------------


def _sample_binary(key, logit, low, high):
    r"""Draws ``high`` with probability :math:`\sigma(\mathrm{logit})`, else ``low``.

    In float32 (and narrower) the draw compares a uniform 32-bit word :math:`U` with the
    threshold :math:`t = \lfloor 2^{32} q \rfloor` of the *smaller* tail
    :math:`q = \sigma(-|\ell|) \le 1/2`, and flips the outcome when :math:`\ell > 0`. Then
    :math:`P(U < t) = t / 2^{32}` differs from :math:`q` by less than :math:`2^{-32}` at every
    logit, both tails alike (the float32 :math:`q` is exact after scaling by :math:`2^{32}`,
    a power of two), and :math:`\ell = 0` gives exactly 1/2; comparing a float32 uniform with
    :math:`\sigma(\ell)` instead biases each tail by up to :math:`2^{-23}` (its 23-bit grid), e.g.
    draws probability :math:`2^{-23}` at :math:`\ell = -30` where :math:`\sigma = 10^{-13}`.
    It costs one threefry word and a few elementwise operations per draw, the same as the
    uniform comparison; the words are ``jax.random.bits(key, shape)`` bit for bit, computed
    by :func:`~numpyro_rbm._threefry.threefry_bits32`, which XLA:CPU fuses into one kernel;
    other generators were measured and rejected (docs/performance.md).
    Float64 logits use a float64 uniform (error :math:`2^{-52}`).
    """
    dtype = jnp.result_type(logit)
    if jnp.finfo(dtype).bits > 32:
        u = jax.random.uniform(key, jnp.shape(logit), dtype=dtype)
        return jnp.where(u < jax.nn.sigmoid(logit), high, low).astype(dtype)
    words = threefry_bits32(key, jnp.shape(logit))  # = jax.random.bits, fused on the CPU
    return _binary_from_words(words, logit, low, high)


def _binary_from_words(words, logit, low, high):
    r"""``high`` where the uint32 ``words`` fall in the event of probability
    :math:`\sigma(\mathrm{logit})`, else ``low`` (see :func:`_sample_binary`)."""
    q = jax.nn.sigmoid(-jnp.abs(logit).astype(jnp.float32))
    tail = words < (q * 4294967296.0).astype(jnp.uint32)
    return jnp.where(tail != (logit > 0), high, low).astype(jnp.result_type(logit))
