r"""Categorical (Potts) units, stored one-hot."""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints

from .base import UnitType, as_2d_float, column_count, first_bad, register_unit_type

__all__ = ["Potts"]


@register_unit_type
@dataclasses.dataclass(frozen=True)
class Potts(UnitType):
    r"""Categorical (Potts) units: each of ``n_sites`` sites takes one of ``q`` states, stored
    one-hot, so a layer of ``n_sites`` sites has ``n_sites * q`` units (site-major: unit
    ``i * q + a`` is state ``a`` of site ``i``) and the weights have shape
    ``(n_sites * q, n_hidden)``. With field :math:`\phi_{ia} = b_{ia} + (W h)_{ia}`,

    .. math::

        p(x_i = a \mid \phi) = \frac{e^{\phi_{ia}}}{\sum_{a'} e^{\phi_{ia'}}},
        \qquad A(\phi_i) = \log \sum_{a=1}^q e^{\phi_{ia}} .

    Users pass integer sequences (values ``0 .. q-1``); :meth:`one_hot` and
    :meth:`from_one_hot` convert. :func:`numpyro_rbm.potts.zero_sum_gauge` fixes the gauge.

    Args:
        q: number of states per site (e.g. 21 for the amino acids and the gap).
    """

    name: ClassVar[str] = "potts"
    q: int = 21

    def __post_init__(self):
        if isinstance(self.q, bool) or not isinstance(self.q, int) or self.q < 2:
            raise ValueError(f"Potts units need an integer number of states q >= 2, got {self.q}")

    def _blocks(self, x):
        n = jnp.shape(x)[-1]
        if n % self.q:
            raise ValueError(
                f"a Potts layer with q={self.q} needs a multiple of q units (one-hot per site), "
                f"got {n}"
            )
        return jnp.reshape(x, jnp.shape(x)[:-1] + (n // self.q, self.q))

    def log_partition(self, field):
        return jnp.sum(jax.scipy.special.logsumexp(self._blocks(field), axis=-1), axis=-1)

    def mean(self, field):
        return jax.nn.softmax(self._blocks(field), axis=-1).reshape(jnp.shape(field))

    def sample(self, key, field):
        states = jax.random.categorical(key, self._blocks(field), axis=-1)
        return self.one_hot(states, jnp.result_type(field))

    def in_support(self, x):
        blocks = self._blocks(x)
        binary = (blocks == 0) | (blocks == 1)
        one_per_site = jnp.sum(jnp.where(binary, blocks, 0), axis=-1, keepdims=True) == 1
        return (binary & one_per_site).reshape(jnp.shape(x))

    def one_hot(self, states, dtype=jnp.float32):
        """Integer states ``(..., n_sites)`` to the one-hot layer ``(..., n_sites * q)``."""
        states = jnp.asarray(states)
        x = jax.nn.one_hot(states, self.q, dtype=dtype)
        return x.reshape(states.shape[:-1] + (states.shape[-1] * self.q,))

    def from_one_hot(self, x):
        """The one-hot layer ``(..., n_sites * q)`` back to integer states ``(..., n_sites)``."""
        return jnp.argmax(self._blocks(x), axis=-1)

    # --- sites: one categorical variable is a block of q units ------------------------------

    def layer_mask(self, mask):
        return jnp.repeat(jnp.asarray(mask), self.q, axis=-1)

    def site_log_partition(self, field):
        return jax.scipy.special.logsumexp(self._blocks(field), axis=-1)

    def site_base_log_measure(self, x):
        return jnp.zeros(jnp.shape(x)[:-1] + (jnp.shape(x)[-1] // self.q,), jnp.result_type(x))

    def site_log_conditional(self, x, log_ratio):
        r"""Exact: :math:`\log p(x_i \mid x_{-i}) = -\log \sum_{a=1}^q e^{r_i(a) - r_i(x_i)}`,
        the site's q states enumerated (Ekeberg et al. 2013)."""
        blocks = self._blocks(x)
        states = jnp.eye(self.q, dtype=jnp.result_type(x))
        candidates = jnp.broadcast_to(states, blocks.shape[:-1] + (self.q, self.q))
        return -jax.scipy.special.logsumexp(log_ratio(candidates), axis=-1)

    def overlap(self, x, reference):
        r"""The Potts overlap :math:`\frac1L \sum_i (q\,\delta_{x_i r_i} - 1)/(q - 1)`: 1 for
        equal sequences, 0 on average for independent uniform ones."""
        agree = jnp.sum(self._blocks(x) * self._blocks(reference), axis=-1)
        return jnp.mean((self.q * agree - 1.0) / (self.q - 1.0), axis=-1)

    # --- the site holds integer sequences; the core works on the one-hot layer -------------

    def check_size(self, n_units: int) -> None:
        if n_units % self.q:
            raise ValueError(
                f"Potts visible units with q={self.q} need n_visible = n_sites * q (one-hot per "
                f"site), got n_visible={n_units}"
            )

    def site_size(self, n_units: int) -> int:
        return n_units // self.q

    def to_layer(self, value, dtype):
        return self.one_hot(jnp.asarray(value).astype(jnp.int32), dtype)

    def from_layer(self, layer, dtype=None):
        return self.from_one_hot(layer).astype(jnp.int32 if dtype is None else dtype)

    def tail_curvature(self):
        """``None``: one-hot states, a bounded support."""
        return None

    def site_support(self):
        return constraints.independent(constraints.integer_interval(0, self.q - 1), 1)

    site_noun: ClassVar[str] = "an integer sequence"

    def check_site_value(self, value, what: str) -> None:
        x = np.asarray(value)
        if not np.all((x >= 0) & (x < self.q) & (x == np.round(x))):
            raise ValueError(
                f"{what} must hold Potts states, integers in 0 .. {self.q - 1} (the site value "
                "is the integer sequence, not the one-hot layer)"
            )

    def random_layer(self, key, field):
        """Uniform random sequences, one-hot."""
        shape = jnp.shape(field)[:-1] + (jnp.shape(field)[-1] // self.q,)
        return self.one_hot(jax.random.randint(key, shape, 0, self.q), jnp.result_type(field))

    def prepare_data(self, data, name: str = "data"):
        """Integer sequences ``(N, n_sites)`` in ``0 .. q-1`` to the one-hot layer
        ``(N, n_sites * q)`` (float64)."""
        arr = as_2d_float(data, name)
        first_bad(
            ~((arr == np.round(arr)) & (arr >= 0) & (arr < self.q)),
            name,
            f"is not a state in 0 .. {self.q - 1}",
            f"Potts units with q={self.q} need integer sequences (one state per column); "
            "map symbols to integers with numpyro_rbm.datasets.read_fasta or encode_sequences",
        )
        return np.asarray(self.one_hot(arr.astype(np.int32), jnp.float32), np.float64)

    def invalid_data(self, x):
        whole = x == jnp.round(x) if jnp.issubdtype(x.dtype, jnp.floating) else True
        return ~(whole & (x >= 0) & (x < self.q))

    def bias_from_data(self, data, pseudocount: float = 1.0, unit_params=None):
        r""":math:`b_{ia} = \log f_{ia} - \frac1q\sum_{a'} \log f_{ia'}` with the smoothed
        frequencies :math:`f_{ia} = (n_{ia} + \alpha)/(N + q\alpha)` (zero-sum gauge)."""
        counts = column_count(data, 1.0).reshape(-1, self.q)  # the one-hot layer's counts
        log_f = np.log(counts + pseudocount) - np.log(np.shape(data)[0] + self.q * pseudocount)
        return (log_f - log_f.mean(-1, keepdims=True)).reshape(-1)
