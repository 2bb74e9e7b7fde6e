"""numpyro-rbm: Restricted Boltzmann Machines for NumPyro, JAX and ArviZ."""

from . import core, datasets, diagnostics, io, kernels, learning, partition, potts, units
from .ais import (
    AISResult,
    LogLikelihood,
    ais,
    log_likelihood,
    reverse_ais,
    summarize_log_weights,
)
from .clamp import ClampedRBM, clamp_params, clamped_log_partition
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
from .distribution import RBM
from .infer import RBMGibbs
from .learning import (
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
from .partition import EnumerationTooLarge, log_partition, sample_exact
from .units import (
    Bernoulli,
    DReLU,
    Gaussian,
    Potts,
    ReLU,
    Spin,
    UnitType,
    gaussian_from_cho,
    gaussian_to_cho,
    register_unit_type,
)

__version__ = "0.1.0"

__all__ = [
    # modules
    "core",
    "datasets",
    "diagnostics",
    "io",
    "kernels",
    "learning",
    "partition",
    "potts",
    "units",
    # units and core
    "Bernoulli",
    "Spin",
    "Gaussian",
    "Potts",
    "ReLU",
    "DReLU",
    "UnitType",
    "register_unit_type",
    "gaussian_to_cho",
    "gaussian_from_cho",
    "RBMParams",
    "init_params",
    "energy",
    "free_energy",
    "hidden_free_energy",
    "hidden_log_prob",
    "visible_log_prob",
    "hidden_mean",
    "visible_mean",
    "sample_hidden",
    "sample_visible",
    "gibbs_sweep",
    # exact and estimated partition functions
    "EnumerationTooLarge",
    "log_partition",
    "sample_exact",
    "AISResult",
    "LogLikelihood",
    "ais",
    "reverse_ais",
    "log_likelihood",
    "summarize_log_weights",
    # NumPyro adapters
    "RBM",
    "ClampedRBM",
    "clamp_params",
    "clamped_log_partition",
    "RBMGibbs",
    # learning
    "fit",
    "FitResult",
    "TrainState",
    "TrainingDiverged",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
    "free_energy_loss",
    "loss_gradient",
]
