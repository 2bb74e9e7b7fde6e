r"""Unit types: what one layer of an RBM is made of.

An RBM layer with unit type :math:`u` contributes to the energy through its biases and a
*base log-measure* :math:`\log \mu_u(x)` (zero for discrete units). Given the other layer,
the units of a layer are independent with the exponential-family conditional

.. math::

    p(x_i \mid \phi_i) = \mu_u(x_i)\, \exp\!\big(x_i \phi_i - A_u(\phi_i)\big),
    \qquad A_u(\phi) = \log \sum_x \mu_u(x)\, e^{x \phi},

where the *field* :math:`\phi` is the unit's bias plus its input from the other layer. A unit
type therefore supplies only the conditional log-partition :math:`A_u`, its derivative (the
conditional mean), a sampler and a support check; energies, free energies, conditionals,
Gibbs sweeps and exact log Z all follow from these (see :mod:`numpyro_rbm.core`).

All methods act on a whole layer: ``field`` and ``x`` have shape ``(..., n_units)``;
``log_partition`` and ``base_log_measure`` sum over the last axis.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

__all__ = ["UnitType", "Bernoulli", "Spin", "as_unit_type"]


@dataclasses.dataclass(frozen=True)
class UnitType:
    """Base class of a unit type. Subclasses are frozen dataclasses (hashable, static in jit).

    Attributes:
        name: the short name users may pass instead of an instance (``"bernoulli"``).
        values: the unit's discrete values ``(low, high)`` for two-state units, or ``None``
            for units whose layer cannot be enumerated.
    """

    name: ClassVar[str] = "abstract"
    values: ClassVar[tuple[float, float] | None] = None

    def log_partition(self, field):
        r""":math:`\sum_i A(\phi_i)` over the last axis."""
        raise NotImplementedError

    def mean(self, field):
        r"""The conditional mean :math:`A'(\phi)`, elementwise."""
        raise NotImplementedError

    def sample(self, key, field):
        """Draws ``x ~ p(x | field)`` elementwise, in ``field``'s dtype."""
        raise NotImplementedError

    def base_log_measure(self, x):
        r""":math:`\sum_i \log \mu(x_i)` over the last axis (zero for discrete units)."""
        return jnp.zeros(jnp.shape(x)[:-1], dtype=jnp.result_type(x))

    def in_support(self, x):
        """Elementwise boolean: is ``x`` a value this unit can take."""
        raise NotImplementedError

    @property
    def enumerable(self) -> bool:
        """Whether a layer of these units can be summed over state by state."""
        return self.values is not None

    def states_from_bits(self, bits):
        """Maps a {0, 1} bit array to this unit's two values (for enumeration)."""
        low, high = self.values
        return low + (high - low) * bits


@dataclasses.dataclass(frozen=True)
class Bernoulli(UnitType):
    r"""Binary units :math:`x \in \{0, 1\}`.

    :math:`A(\phi) = \log(1 + e^{\phi}) = \mathrm{softplus}(\phi)`,
    :math:`\mathbb{E}[x \mid \phi] = \sigma(\phi)`.
    """

    name: ClassVar[str] = "bernoulli"
    values: ClassVar[tuple[float, float]] = (0.0, 1.0)

    def log_partition(self, field):
        return jnp.sum(jax.nn.softplus(field), axis=-1)

    def mean(self, field):
        return jax.nn.sigmoid(field)

    def sample(self, key, field):
        return _sample_binary(key, field, 0.0, 1.0)

    def in_support(self, x):
        return (x == 0) | (x == 1)


@dataclasses.dataclass(frozen=True)
class Spin(UnitType):
    r"""Ising spins :math:`x \in \{-1, +1\}`.

    :math:`A(\phi) = \log(e^{\phi} + e^{-\phi}) = |\phi| + \mathrm{softplus}(-2|\phi|)`,
    :math:`\mathbb{E}[x \mid \phi] = \tanh(\phi)`, :math:`p(x = +1 \mid \phi) = \sigma(2\phi)`.
    """

    name: ClassVar[str] = "spin"
    values: ClassVar[tuple[float, float]] = (-1.0, 1.0)

    def log_partition(self, field):
        a = jnp.abs(field)
        return jnp.sum(a + jax.nn.softplus(-2.0 * a), axis=-1)

    def mean(self, field):
        return jnp.tanh(field)

    def sample(self, key, field):
        return _sample_binary(key, 2.0 * field, -1.0, 1.0)

    def in_support(self, x):
        return (x == 1) | (x == -1)


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
    uniform comparison; faster generators were measured and rejected (docs/performance.md).
    Float64 logits use a float64 uniform (error :math:`2^{-52}`).
    """
    dtype = jnp.result_type(logit)
    if jnp.finfo(dtype).bits > 32:
        u = jax.random.uniform(key, jnp.shape(logit), dtype=dtype)
        return jnp.where(u < jax.nn.sigmoid(logit), high, low).astype(dtype)
    words = jax.random.bits(key, jnp.shape(logit), jnp.uint32)
    return _binary_from_words(words, logit, low, high)


def _binary_from_words(words, logit, low, high):
    r"""``high`` where the uint32 ``words`` fall in the event of probability
    :math:`\sigma(\mathrm{logit})`, else ``low`` (see :func:`_sample_binary`)."""
    q = jax.nn.sigmoid(-jnp.abs(logit).astype(jnp.float32))
    tail = words < (q * 4294967296.0).astype(jnp.uint32)
    return jnp.where(tail != (logit > 0), high, low).astype(jnp.result_type(logit))


_BY_NAME = {cls.name: cls for cls in (Bernoulli, Spin)}


def as_unit_type(unit) -> UnitType:
    """Accepts a :class:`UnitType` instance or its name (``"bernoulli"``, ``"spin"``)."""
    if isinstance(unit, UnitType):
        return unit
    if isinstance(unit, str) and unit.lower() in _BY_NAME:
        return _BY_NAME[unit.lower()]()
    raise ValueError(
        f"unknown unit type {unit!r}: pass one of {sorted(_BY_NAME)} or a "
        "numpyro_rbm.units.UnitType instance"
    )
