r"""Unit types: what one layer of an RBM is made of.

An RBM layer with unit type :math:`u` contributes to the energy through its biases and a
*base log-measure* :math:`\log \mu_u(x)` (zero for discrete units). Given the other layer,
the units of a layer are independent with the exponential-family conditional

.. math::

    p(x_i \mid \phi_i) = \mu_u(x_i)\, \exp\!\big(x_i \phi_i - A_u(\phi_i)\big),
    \qquad A_u(\phi) = \log \sum_x \mu_u(x)\, e^{x \phi},

where the *field* :math:`\phi` is the unit's bias plus its input from the other layer. A unit
type therefore supplies the conditional log-partition :math:`A_u`, its derivative (the
conditional mean), a sampler and a support check; energies, free energies, conditionals,
Gibbs sweeps and exact log Z all follow from these (see :mod:`numpyro_rbm.core`). It also owns
everything else that depends on what its units are (:class:`UnitType`): data checks, the
independent model matching data marginals, random initial states, a site value's support and
its map to the layer. :func:`register_unit_type` makes a user's own type loadable from files.

All methods act on a whole layer: ``field`` and ``x`` have shape ``(..., n_units)``;
``log_partition`` and ``base_log_measure`` sum over the last axis.
"""

from .base import (
    BoundUnits,
    ParametricUnitType,
    UnitType,
    as_unit_type,
    base_rate_bias,
    check_data,
    check_incomplete_data,
    device_layer,
    register_unit_type,
    registered_unit_types,
)
from .binary import Bernoulli, Spin, _binary_from_words, _sample_binary, spin, spin_vector  # noqa: F401 (tests, benchmarks)
from .categorical import Potts
from .continuous import DReLU, Gaussian, ReLU, gaussian_from_cho, gaussian_to_cho

__all__ = [
    "UnitType",
    "ParametricUnitType",
    "BoundUnits",
    "Bernoulli",
    "Spin",
    "Gaussian",
    "ReLU",
    "DReLU",
    "Potts",
    "as_unit_type",
    "register_unit_type",
    "registered_unit_types",
    "base_rate_bias",
    "check_data",
    "check_incomplete_data",
    "device_layer",
    "gaussian_to_cho",
    "gaussian_from_cho",
    "spin",
    "spin_vector",
]
