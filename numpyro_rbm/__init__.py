"""numpyro-rbm: Restricted Boltzmann Machines for NumPyro, JAX and ArviZ."""

from . import core, partition, units
from . import datasets
from .ais import (
    AISResult,
    LogLikelihood,
    ais,
    log_likelihood,
    reverse_ais,
    summarize_log_weights,
)
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
from . import diagnostics
from .clamp import ClampedRBM, clamp_params, clamped_log_partition
from .infer import RBMGibbs
from .distribution import RBM
from . import io
from .training import (
    FitResult,
    TrainingDiverged,
    TrainState,
    cd_negative,
    fit,
    free_energy_loss,
    loss_gradient,
    pcd_negative,
    pt_negative,
)

__version__ = "0.1.0"
