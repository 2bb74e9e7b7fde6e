r"""Compile once per machine: JAX's persistent compilation cache, set up for this library.

A new Python process compiles every program it runs (``fit``'s training step, its monitors,
the Gibbs sampler, exact :math:`\log Z`) before the first result, seconds on a CPU. JAX can
keep the compiled executables on disk and load them in later processes instead;
:func:`enable_compile_cache` turns that on for the library's programs. The ``numpyro-rbm``
command calls it by default (``NUMPYRO_RBM_COMPILE_CACHE=0`` turns it off); in a script or
notebook, call it once at the top, before the first computation::

    import numpyro_rbm as nrbm
    nrbm.enable_compile_cache()          # ~/.cache/numpyro-rbm/jax, or $NUMPYRO_RBM_CACHE_DIR

An entry is reused only for the same program, shapes, JAX/XLA version, device and compiler
flags (e.g. ``XLA_FLAGS``), so a stale entry is never loaded; the folder may be deleted at any
time. Loading an entry deserialises an XLA executable, never Python code.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax

#: Environment variable naming the cache folder (default: the user's cache folder).
CACHE_DIR_ENV = "NUMPYRO_RBM_CACHE_DIR"
#: Environment variable that turns the command line's cache off when set to ``0``.
ENABLE_ENV = "NUMPYRO_RBM_COMPILE_CACHE"


def default_cache_dir() -> Path:
    """``$NUMPYRO_RBM_CACHE_DIR``, else ``numpyro-rbm/jax`` in the user's cache folder
    (``$XDG_CACHE_HOME``, ``%LOCALAPPDATA%`` on Windows, else ``~/.cache``)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.environ.get("LOCALAPPDATA")
    return Path(base or Path.home() / ".cache") / "numpyro-rbm" / "jax"


def enable_compile_cache(path: str | os.PathLike | None = None) -> Path:
    """Keeps every compiled program of this process in ``path`` (default
    :func:`default_cache_dir`) and loads it from there in later processes.

    A cache folder the user already gave JAX (``jax_compilation_cache_dir``, e.g. through
    ``JAX_COMPILATION_CACHE_DIR``) is kept when ``path`` is ``None``. Programs are cached
    whatever their compile time (JAX's default skips those under 1 s, which on a CPU are most
    of a training run's many small programs).

    Returns:
        The folder in use.
    """
    current = jax.config.jax_compilation_cache_dir
    folder = Path(path) if path is not None else Path(current or default_cache_dir())
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return folder


def cache_enabled_by_environment() -> bool:
    """Whether the command line should use the cache (``NUMPYRO_RBM_COMPILE_CACHE`` is not
    ``0``, ``false`` or ``no``)."""
    return os.environ.get(ENABLE_ENV, "1").strip().lower() not in {"0", "false", "no"}
