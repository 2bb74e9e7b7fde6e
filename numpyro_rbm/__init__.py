"""numpyro-rbm: Restricted Boltzmann Machines for NumPyro, JAX and ArviZ."""

from . import core, partition, units
from .core import (
    RBMParams,
    energy,
    free_energy,
    gibbs_sweep,
    hidden_free_energy,
    hidden_log_prob,
    hidden_mean,
    init_params,
    sample_hidden,
    sample_visible,
    visible_log_prob,
    visible_mean,
)
from .partition import EnumerationTooLarge, log_partition, sample_exact
from .units import Bernoulli, Spin, UnitType

__version__ = "0.1.0"
