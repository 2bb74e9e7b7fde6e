"""numpyro_rbm.io: round trips, atomic writes, and refusal of anything that needs pickle."""

import os
import pickle

import jax
import numpy as np
import pytest

from numpyro_rbm import RBMParams, init_params, io


@pytest.mark.parametrize("units", [("bernoulli", "spin"), ("spin", "bernoulli")])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_params_round_trip(tmp_path, units, dtype):
    with jax.enable_x64(dtype == "float64"):
        params = init_params(
            jax.random.key(0),
            5,
            3,
            weight_scale=0.7,
            visible_units=units[0],
            hidden_units=units[1],
            dtype=dtype,
        )
        params = params.replace(hidden_bias=params.hidden_bias + 0.123456789012345)
        path = tmp_path / "sub" / "params.npz"
        io.save_params(path, params, {"note": "hi", "epochs": 3})
        loaded, meta = io.load_params(path)
        assert meta == {"note": "hi", "epochs": 3}
        assert loaded.visible_units.name == units[0]
        assert loaded.hidden_units.name == units[1]
        for name in ("weights", "visible_bias", "hidden_bias"):
            a, b = getattr(params, name), getattr(loaded, name)
            assert b.dtype == np.dtype(dtype)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Only the final file is left: the temporary file was moved over it.
    assert os.listdir(tmp_path / "sub") == ["params.npz"]


class _Exploit:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_payloads_are_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    # A raw pickle file.
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps(_Exploit(marker)))
    with pytest.raises(ValueError, match="pickle"):
        io.load_params(raw)
    # An .npz whose arrays include a pickled object array.
    obj = np.empty((1,), dtype=object)
    obj[0] = _Exploit(marker)
    sneaky = tmp_path / "sneaky.npz"
    np.savez(
        sneaky,
        weights=obj,
        visible_bias=np.zeros(2),
        hidden_bias=np.zeros(1),
        __metadata__=np.asarray('{"format_version": 1, "kind": "rbm_params"}'),
    )
    with pytest.raises(ValueError, match="pickle"):
        io.load_params(sneaky)
    with pytest.raises(ValueError, match="pickle"):
        io.load_checkpoint(sneaky)
    assert not marker.exists()


def test_bad_files_get_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        io.load_params(tmp_path / "missing.npz")
    plain = tmp_path / "plain.npz"
    np.savez(plain, weights=np.zeros((2, 1)))
    with pytest.raises(ValueError, match="not written by numpyro_rbm.io"):
        io.load_params(plain)
    ckpt = tmp_path / "ckpt.npz"
    io.save_checkpoint(ckpt, {"a": np.arange(3)}, {"epoch": 2})
    with pytest.raises(ValueError, match="not RBM parameters"):
        io.load_params(ckpt)
    arrays, meta = io.load_checkpoint(ckpt)
    np.testing.assert_array_equal(arrays["a"], np.arange(3))
    assert meta == {"epoch": 2}
    with pytest.raises(TypeError, match="RBMParams"):
        io.save_params(tmp_path / "x.npz", {"weights": 1})
    with pytest.raises(TypeError, match="JSON"):
        io.save_params(tmp_path / "x.npz", init_params(jax.random.key(0), 2, 2), {"f": object()})
    with pytest.raises(TypeError, match="dtype object"):
        io.save_checkpoint(tmp_path / "x.npz", {"o": np.array([None], dtype=object)}, {})


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "params.npz"
    good = RBMParams(np.ones((2, 1), np.float32), np.zeros(2, np.float32), np.zeros(1, np.float32))
    io.save_params(path, good)

    def crash_midway(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(io.np, "savez", crash_midway)
    with pytest.raises(OSError, match="disk full"):
        io.save_params(path, good.replace(weights=good.weights * 5))
    monkeypatch.undo()
    loaded, _ = io.load_params(path)
    np.testing.assert_array_equal(np.asarray(loaded.weights), np.ones((2, 1)))
    assert sorted(os.listdir(tmp_path)) == ["params.npz"]


# --- each kind of bad file gets its own diagnosis -------------------------------------------


def _saved(tmp_path):
    path = tmp_path / "good.npz"
    io.save_params(path, init_params(jax.random.key(0), 16, 4, weight_scale=0.5), {"a": 1})
    return path, path.read_bytes()


def _corrupted(tmp_path):
    """A saved model with one byte of the weights flipped: the archive's CRC catches it."""
    path, raw = _saved(tmp_path)
    data = bytearray(raw)
    data[raw.index(b"weights.npy") + 200] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def _npz(tmp_path, **arrays):
    path = tmp_path / "other.npz"
    np.savez(path, **arrays)
    return path


_META = np.asarray('{"format_version": 1, "kind": "rbm_params"}')
_NOT_ARCHIVE = "is not a numpyro-rbm file: it is"

BAD_FILES = {
    "text": (lambda t: _write(t, "model.npz", "weights: 1 2 3\n"), f"{_NOT_ARCHIVE} a text file"),
    "empty": (lambda t: _write(t, "model.npz", b""), f"{_NOT_ARCHIVE} an empty file"),
    "npy": (
        lambda t: _write(t, "model.npz", b"\x93NUMPY\x01\x00" + b" " * 100),
        f"{_NOT_ARCHIVE} a single NumPy array",
    ),
    "pickle": (
        lambda t: _write(t, "model.npz", pickle.dumps({"weights": 1})),
        f"{_NOT_ARCHIVE} a Python pickle, which is refused",
    ),
    "truncated": (
        lambda t: _write(t, "model.npz", _saved(t)[1][:700]),
        r"is a damaged .npz archive \(truncated",
    ),
    "corrupted": (_corrupted, "damaged .npz archive .*weights.*CRC"),
    "object array": (
        lambda t: _npz(t, weights=np.array([{"x": 1}], dtype=object), __metadata__=_META),
        "array 'weights' holds Python objects, which only pickle can store",
    ),
    "no metadata": (
        lambda t: _npz(t, weights=np.zeros((2, 1))),
        r"archive of the arrays \['weights'\] but has no '__metadata__' entry",
    ),
    "bad metadata": (
        lambda t: _npz(t, __metadata__=np.asarray("{not json")),
        "'__metadata__' entry is not valid JSON",
    ),
    "missing arrays": (lambda t: _npz(t, __metadata__=_META), "lacks the arrays"),
    "folder": (lambda t: t, "is a folder"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_each_bad_file_says_what_is_wrong(tmp_path, case):
    make, message = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message) as err:
        io.load_params(path)
    text = str(err.value)
    # The pickle sentence only where pickle is the problem; NumPy's own advice never.
    assert ("pickle" in text) == (case in ("pickle", "object array")), text
    assert "allow_pickle" not in text and "Details" not in text, text
    assert len(text) - len(str(path)) < 200, text
