r"""Saving and loading RBM parameters and training checkpoints, without pickle.

Every file is a NumPy ``.npz`` archive of plain numeric arrays plus one string array holding
JSON metadata (format version, unit types, user metadata). Files are read with
``numpy.load(..., allow_pickle=False)``, so loading never executes code: an archive holding an
object array (which NumPy can only store by pickling) is refused with a :class:`ValueError`.
Every refusal says what is wrong with the file: not an archive at all (and what it looks
like: text, a single ``.npy`` array, a pickle, empty), a damaged archive (truncated or
corrupted), an array that needs pickle, or an archive without this module's metadata.

Writes are atomic: the archive is written to a temporary file in the destination folder,
flushed to disk, and moved over the destination with :func:`os.replace`, so a crash or a full
disk leaves either the old file or the new one, never a truncated one.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
import zlib

import jax.numpy as jnp
import numpy as np

from .core import RBMParams

__all__ = [
    "FORMAT_VERSION",
    "save_params",
    "load_params",
    "save_checkpoint",
    "load_checkpoint",
]

#: Version written into every file's metadata; bump when the layout changes.
FORMAT_VERSION = 1

_META_KEY = "__metadata__"
_PARAM_KEYS = ("weights", "visible_bias", "hidden_bias")


def _atomic_savez(path, arrays: dict, metadata: dict) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {name!r} has dtype object, which cannot be saved safely")
    payload = {name: np.asarray(value) for name, value in arrays.items()}
    payload[_META_KEY] = np.asarray(json.dumps(metadata))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _what_it_is(head: bytes) -> str:
    """What a file that is not a zip archive looks like, from its first bytes."""
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a single NumPy array (.npy), not an .npz archive"
    if head[:1] == b"\x80":
        return "a Python pickle, which is refused because loading one can execute code"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a zip archive (it starts with the bytes {head[:8]!r})"
    if all(c.isprintable() or c.isspace() for c in text):
        return "a text file"
    return f"not a zip archive (it starts with the bytes {head[:8]!r})"


def _needs_pickle(archive, name) -> bool:
    """Whether the array ``name`` of an open .npz is an object array (stored by pickling)."""
    try:
        with archive.zip.open(name + ".npy") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            _, _, dtype = read(f)
        return np.dtype(dtype).hasobject
    except Exception:  # an unreadable header: not an object array we can recognise
        return False


def _read_arrays(path) -> dict:
    """The arrays of the .npz archive ``path``, never unpickling anything; a ValueError that
    says what is wrong with the file otherwise."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head.startswith(b"PK"):
        raise ValueError(
            f"{path} is not a numpyro-rbm file: it is {_what_it_is(head)}. numpyro_rbm.io "
            "writes .npz archives (numpyro-rbm train writes RUN/model.npz)"
        )
    damaged = f"{path} is a damaged .npz archive (truncated, or changed after it was written)"
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        raise ValueError(f"{damaged}: {err}") from err
    arrays = {}
    with archive:
        for name in archive.files:
            try:
                arrays[name] = archive[name]
            except ValueError as err:
                if _needs_pickle(archive, name):
                    raise ValueError(
                        f"{path}: array {name!r} holds Python objects, which only pickle can "
                        "store; it is refused because loading a pickle can execute code. It "
                        "was not written by numpyro_rbm.io"
                    ) from err
                raise ValueError(f"{damaged}: array {name!r}: {err}") from err
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as err:
                raise ValueError(f"{damaged}: array {name!r}: {err}") from err
    return arrays


def _safe_load(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a folder; pass a file written by numpyro_rbm.io")
    arrays = _read_arrays(path)
    if _META_KEY not in arrays:
        raise ValueError(
            f"{path} is an .npz archive of the arrays {sorted(arrays)} but has no "
            f"{_META_KEY!r} entry: it was not written by numpyro_rbm.io"
        )
    try:
        metadata = json.loads(str(arrays.pop(_META_KEY)))
    except ValueError as err:
        raise ValueError(f"{path}: its {_META_KEY!r} entry is not valid JSON ({err})") from err
    version = metadata.get("format_version") if isinstance(metadata, dict) else None
    if version != FORMAT_VERSION:
        raise ValueError(
            f"{path} has format version {version!r}; this numpyro-rbm reads version "
            f"{FORMAT_VERSION}"
        )
    return arrays, metadata


def save_params(path, params: RBMParams, metadata: dict | None = None) -> None:
    """Saves parameters (and JSON-serialisable ``metadata``) to an ``.npz`` file, atomically.

    Args:
        path: destination file; parent folders are created.
        params: the RBM. Arrays are stored in their own dtype (float32 or float64).
        metadata: optional dictionary of JSON-serialisable values, returned by
            :func:`load_params`.
    """
    if not isinstance(params, RBMParams):
        raise TypeError(f"save_params needs an RBMParams, got {type(params).__name__}")
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "rbm_params",
        "visible_units": params.visible_units.spec,
        "hidden_units": params.hidden_units.spec,
        "metadata": {} if metadata is None else metadata,
    }
    try:
        json.dumps(meta)
    except TypeError as err:
        raise TypeError(f"metadata must be JSON-serialisable: {err}") from err
    arrays = {name: np.asarray(getattr(params, name)) for name in _PARAM_KEYS}
    # Unit parameters (Gaussian precisions, ReLU curvatures) as "<layer>_unit_params.<name>".
    for layer in ("visible", "hidden"):
        for key, value in (getattr(params, f"{layer}_unit_params") or {}).items():
            arrays[f"{layer}_unit_params.{key}"] = np.asarray(value)
    _atomic_savez(path, arrays, meta)


def load_params(path) -> tuple[RBMParams, dict]:
    """Loads parameters written by :func:`save_params`; never executes code.

    Returns:
        ``(params, metadata)``; the arrays keep the dtype they were saved in (float64 arrays
        become float64 JAX arrays only when ``jax_enable_x64`` is on).

    Raises:
        ValueError: if the file is not an archive written by :func:`save_params`, needs
            pickle, or has inconsistent shapes.
    """
    arrays, meta = _safe_load(path)
    if meta.get("kind") != "rbm_params":
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, not RBM parameters")
    missing = [k for k in _PARAM_KEYS if k not in arrays]
    if missing:
        raise ValueError(f"{path} lacks the arrays {missing}")
    w, b, c = (arrays[k] for k in _PARAM_KEYS)
    if w.ndim < 2 or b.shape[-1:] != w.shape[-2:-1] or c.shape[-1:] != w.shape[-1:]:
        raise ValueError(
            f"{path} has inconsistent shapes: weights {w.shape}, visible_bias {b.shape}, "
            f"hidden_bias {c.shape}"
        )
    unit_params = {}
    for layer in ("visible", "hidden"):
        prefix = f"{layer}_unit_params."
        found = {
            k[len(prefix) :]: jnp.asarray(v) for k, v in arrays.items() if k.startswith(prefix)
        }
        unit_params[layer] = found or None
    params = RBMParams(
        jnp.asarray(w),
        jnp.asarray(b),
        jnp.asarray(c),
        visible_units=meta["visible_units"],
        hidden_units=meta["hidden_units"],
        visible_unit_params=unit_params["visible"],
        hidden_unit_params=unit_params["hidden"],
    )
    params.visible_units.check_unit_params(params.visible_unit_params, w.shape[-2])
    params.hidden_units.check_unit_params(params.hidden_unit_params, w.shape[-1])
    return params, meta["metadata"]


def save_checkpoint(path, arrays: dict, metadata: dict) -> None:
    """Saves a training checkpoint: named numeric arrays plus JSON metadata, atomically.

    Args:
        path: destination file.
        arrays: ``{name: array}`` of numeric arrays (parameters, optimiser state leaves,
            persistent chains, PRNG key data).
        metadata: JSON-serialisable dictionary (epoch, history, settings).
    """
    meta = {"format_version": FORMAT_VERSION, "kind": "checkpoint", "metadata": metadata}
    _atomic_savez(path, arrays, meta)


def load_checkpoint(path) -> tuple[dict, dict]:
    """Loads a checkpoint written by :func:`save_checkpoint`; never executes code.

    Returns:
        ``(arrays, metadata)`` with NumPy arrays.
    """
    arrays, meta = _safe_load(path)
    if meta.get("kind") != "checkpoint":
        raise ValueError(f"{path} holds a {meta.get('kind')!r}, not a training checkpoint")
    return arrays, meta["metadata"]
