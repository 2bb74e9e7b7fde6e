"""The names of the first release's training module, now served by :mod:`numpyro_rbm.learning`
(kept so that existing imports keep working; new code imports from ``numpyro_rbm.learning``)."""

from . import diagnostics  # noqa: F401 (the R-hat threshold lives there; tests patch it)
from .core import free_energy
from .kernels import tempered_params
from .learning import (
    ChainsNotMixing,
    FitResult,
    TrainingDiverged,
    TrainState,
    cd_negative,
    fit,
    free_energy_loss,
    loss_gradient,
    move_hidden_offset,
    pcd_negative,
    pseudo_log_likelihood,
    pt_negative,
    reconstruction_error,
    to_standard,
)
from .learning.fitting import (
    CHECKPOINT_FILE,
    DEFAULT_EPOCHS,
    MAX_EVALUATIONS,
    METHODS,
    MIN_UPDATES,
    PARAMS_FILE,
)
from .units import base_rate_bias

__all__ = [
    "FitResult",
    "ChainsNotMixing",
    "TrainState",
    "TrainingDiverged",
    "fit",
    "free_energy_loss",
    "loss_gradient",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
    "tempered_params",
    "base_rate_bias",
    "to_standard",
    "move_hidden_offset",
    "pseudo_log_likelihood",
    "reconstruction_error",
    "free_energy",
    "CHECKPOINT_FILE",
    "PARAMS_FILE",
    "DEFAULT_EPOCHS",
    "MIN_UPDATES",
    "MAX_EVALUATIONS",
    "METHODS",
]
