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
