"""numpyro-rbm: Restricted Boltzmann Machines for NumPyro, JAX and ArviZ.

The package imports its modules on first use (PEP 562): ``import numpyro_rbm`` and
``numpyro-rbm --help`` do not load JAX, NumPyro or ArviZ; ``numpyro_rbm.fit`` and the other
names below load their module when first touched.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_SUBMODULES = (
    "core", "datasets", "diagnostics", "io", "kernels", "learning", "normalisable", "partition",
    "potts", "units",
)  # fmt: skip
# Modules that were attributes of the package once it was imported (before it was lazy).
_OTHER_MODULES = ("clamp", "distribution", "infer", "models", "training")

# name -> the module that defines it
_NAMES = {
    **dict.fromkeys(
        ["AISResult", "LogLikelihood", "ais", "log_likelihood", "reverse_ais",
         "summarize_log_weights"], "ais"),
    **dict.fromkeys(["ClampedRBM", "clamp_params", "clamped_log_partition"], "clamp"),
    **dict.fromkeys(
        ["RBMParams", "energy", "free_energy", "gibbs_sweep", "hidden_free_energy",
         "hidden_log_prob", "hidden_mean", "init_params", "sample_hidden", "sample_visible",
         "visible_log_prob", "visible_mean"], "core"),
    "RBM": "distribution",
    "enable_compile_cache": "compile_cache",
    **dict.fromkeys(["Normalisability", "NotNormalisable", "check_normalisable"], "normalisable"),
    "RBMGibbs": "infer",
    **dict.fromkeys(["EnumerationTooLarge", "log_partition", "sample_exact"], "partition"),
    **dict.fromkeys(["SML", "SMLContextError", "SMLLogZ", "sml"], "models"),
    **dict.fromkeys(["Incomplete", "incomplete"], "models"),
    **dict.fromkeys(
        ["ChainsNotMixing", "FitResult", "TrainingDiverged", "TrainState", "cd_negative", "fit",
         "free_energy_loss", "loss_gradient", "pcd_negative", "pt_negative"], "learning"),
    **dict.fromkeys(
        ["Bernoulli", "DReLU", "Gaussian", "Potts", "ReLU", "Spin", "UnitType",
         "gaussian_from_cho", "gaussian_to_cho", "register_unit_type"], "units"),
}  # fmt: skip


def __getattr__(name):
    if name in _SUBMODULES or name in _OTHER_MODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        setattr(sys.modules[__name__], name, value)  # found directly from now on
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """Importing the submodule ``numpyro_rbm.ais`` binds the package attribute ``ais`` to
    the module; the package's ``ais`` is the function, whoever imported the module first."""

    def __setattr__(self, name, value):
        if name == "ais" and isinstance(value, types.ModuleType):
            value = value.ais
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from . import (  # noqa: F401
        core,
        datasets,
        diagnostics,
        io,
        kernels,
        learning,
        partition,
        potts,
        units,
    )
    from .ais import (  # noqa: F401
        AISResult,
        LogLikelihood,
        ais,
        log_likelihood,
        reverse_ais,
        summarize_log_weights,
    )
    from .clamp import ClampedRBM, clamp_params, clamped_log_partition  # noqa: F401
    from .compile_cache import enable_compile_cache  # noqa: F401
    from .core import (  # noqa: F401
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
    from .distribution import RBM  # noqa: F401
    from .infer import RBMGibbs  # noqa: F401
    from .learning import (  # noqa: F401
        ChainsNotMixing,
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
    from .models import SML, Incomplete, SMLContextError, SMLLogZ, incomplete, sml  # noqa: F401
    from .normalisable import Normalisability, NotNormalisable, check_normalisable  # noqa: F401
    from .partition import EnumerationTooLarge, log_partition, sample_exact  # noqa: F401
    from .units import (  # noqa: F401
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

__all__ = [
    # modules
    "core",
    "datasets",
    "diagnostics",
    "io",
    "kernels",
    "learning",
    "normalisable",
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
    "check_normalisable",
    "Normalisability",
    "NotNormalisable",
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
    "sml",
    "SML",
    "SMLLogZ",
    "SMLContextError",
    "incomplete",
    "Incomplete",
    # learning
    "fit",
    "FitResult",
    "TrainState",
    "TrainingDiverged",
    "ChainsNotMixing",
    "cd_negative",
    "pcd_negative",
    "pt_negative",
    "free_energy_loss",
    "loss_gradient",
    # compile once per machine
    "enable_compile_cache",
]
