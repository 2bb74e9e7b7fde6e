r"""The learning engine: negative phases and trainers as pure ``init``/``step`` pieces.

* :mod:`~numpyro_rbm.learning.loss`: the one free-energy loss differentiated by
  :func:`jax.grad`, and the centered parametrisation;
* :mod:`~numpyro_rbm.learning.negative`: :class:`NegativePhase` values (:func:`cd`,
  :func:`pcd`, :func:`pt`, :func:`sklearn_pcd`, or one's own);
* :mod:`~numpyro_rbm.learning.optim`: optimiser specifications and penalties as optax
  transformations;
* :mod:`~numpyro_rbm.learning.trainer`: :func:`build_trainer` (``init``/``step`` over a
  :class:`TrainState`) and the compiled epoch loop :func:`run_epochs`;
* :mod:`~numpyro_rbm.learning.monitors`: what ``fit`` measures, as functions of a
  :class:`MonitorContext`;
* :mod:`~numpyro_rbm.learning.missing`: the positive phase for data with missing entries
  (:func:`impute`, clamped Gibbs sweeps of per-example persistent imputations);
* :mod:`~numpyro_rbm.learning.fitting`: :func:`fit`, composing them.
"""

from .fitting import (
    ChainsNotMixing,
    FitConfig,
    FitResult,
    LeftNormalisableRegion,
    TrainingDiverged,
    fit,
)
from .loss import Weighted, free_energy_loss, loss_gradient, move_hidden_offset, to_standard
from .missing import IncompleteData, impute, impute_batch
from .monitors import (
    MonitorContext,
    chain_rhat,
    default_monitors,
    info_monitor,
    log_likelihood_monitor,
    pseudo_log_likelihood,
    pseudo_log_likelihood_monitor,
    reconstruction_error,
    reconstruction_error_monitor,
    site_log_conditionals,
)
from .negative import (
    CD,
    PCD,
    PT,
    FunctionPhase,
    HiddenPCD,
    NegativePhase,
    PTState,
    cd,
    cd_negative,
    negative_phase,
    pcd,
    pcd_negative,
    pt,
    pt_negative,
    sklearn_pcd,
    uniform_sampler,
)
from .optim import CosineAdam, Penalized, add_l1, as_transformation, weights_mask
from .trainer import Trainer, TrainState, build_trainer, run_epochs

__all__ = [
    "fit",
    "FitResult",
    "FitConfig",
    "TrainingDiverged",
    "LeftNormalisableRegion",
    "ChainsNotMixing",
    "TrainState",
    "Trainer",
    "build_trainer",
    "run_epochs",
    "NegativePhase",
    "CD",
    "PCD",
    "PT",
    "PTState",
    "HiddenPCD",
    "FunctionPhase",
    "cd",
    "pcd",
    "pt",
    "sklearn_pcd",
    "negative_phase",
    "uniform_sampler",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
    "Weighted",
    "free_energy_loss",
    "loss_gradient",
    "to_standard",
    "move_hidden_offset",
    "CosineAdam",
    "Penalized",
    "add_l1",
    "weights_mask",
    "as_transformation",
    "MonitorContext",
    "default_monitors",
    "reconstruction_error",
    "pseudo_log_likelihood",
    "reconstruction_error_monitor",
    "pseudo_log_likelihood_monitor",
    "site_log_conditionals",
    "log_likelihood_monitor",
    "chain_rhat",
    "info_monitor",
    "IncompleteData",
    "impute",
    "impute_batch",
]
