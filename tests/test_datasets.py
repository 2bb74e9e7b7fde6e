"""Datasets: shapes, value sets, reproducible splits, bars-and-stripes, checked file loaders."""

import itertools

import numpy as np
import pytest

from numpyro_rbm import datasets

# --- digits -------------------------------------------------------------------------------


def test_digits_shapes_values_and_split():
    d = datasets.digits()
    assert d.image_shape == (8, 8) and d.name == "digits"
    assert d.train.shape == (1438, 64) and d.test.shape == (359, 64)  # 1797 * 0.2 = 359.4
    for x in (d.train, d.test):
        assert x.dtype == np.float32
        assert set(np.unique(x)) == {0.0, 1.0}
    # The split partitions the 1797 images: train + test is a permutation of the raw rows
    # (compared as multisets by sorting the rows lexicographically).
    load_digits = pytest.importorskip("sklearn.datasets").load_digits

    raw = (load_digits().data >= 8).astype(np.float32)
    both = np.concatenate([d.train, d.test])
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
    assert np.array_equal(key(both), key(raw))


def test_digits_split_is_reproducible_and_seeded():
    a, b = datasets.digits(seed=3), datasets.digits(seed=3)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test)
    c = datasets.digits(seed=4)
    assert not np.array_equal(a.test, c.test)


def test_digits_threshold_fraction_and_gray():
    lo, hi = datasets.digits(threshold=1), datasets.digits(threshold=15)
    assert lo.train.mean() > hi.train.mean()  # a lower threshold turns more pixels on
    assert datasets.digits(test_fraction=0.5).test.shape == (898, 64)  # round(898.5) = 898
    gray = datasets.digits(binarize=False)
    assert gray.train.min() == 0.0 and gray.train.max() == 1.0
    assert len(np.unique(gray.train)) == 17  # 0/16 .. 16/16


def test_digit_labels_follow_the_images_split():
    # Each image keeps its own class: scikit-learn's copy of the same file, rows and labels
    # permuted together, against digits() and digit_labels() with the same seed and fraction.
    load_digits = pytest.importorskip("sklearn.datasets").load_digits
    raw = load_digits()
    for seed, fraction in ((0, 0.2), (5, 0.5)):
        d = datasets.digits(seed=seed, test_fraction=fraction)
        y_train, y_test = datasets.digit_labels(test_fraction=fraction, seed=seed)
        assert y_train.dtype == np.int32 and set(np.unique(y_test)) == set(range(10))
        x = np.concatenate([d.train, d.test])
        y = np.concatenate([y_train, y_test])
        order = np.random.default_rng(seed).permutation(len(raw.target))
        n_test = len(d.test)
        order = np.concatenate([order[n_test:], order[:n_test]])
        assert np.array_equal(y, raw.target[order])
        assert np.array_equal(x, (raw.data[order] >= 8).astype(np.float32))
    with pytest.raises(ValueError, match="test_fraction"):
        datasets.digit_labels(test_fraction=1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(test_fraction=0.0), "test_fraction"),
        (dict(test_fraction=1.0), "test_fraction"),
        (dict(test_fraction=1e-6), "at least one image"),
        (dict(threshold=0), "threshold"),
        (dict(threshold=17), "threshold"),
    ],
)
def test_digits_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        datasets.digits(**kwargs)


# --- bars and stripes ---------------------------------------------------------------------


def _brute_bars_and_stripes(n):
    """Every n x n binary image, kept when all its rows or all its columns are constant."""
    keep = []
    for bits in itertools.product((0.0, 1.0), repeat=n * n):
        img = np.array(bits).reshape(n, n)
        rows_const = (img == img[:, :1]).all()
        cols_const = (img == img[:1, :]).all()
        if rows_const or cols_const:
            keep.append(img.ravel())
    return np.array(keep)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_bars_and_stripes_matches_brute_force(n):
    x = datasets.bars_and_stripes(n)
    assert x.shape == (2 ** (n + 1) - 2, n * n) and x.dtype == np.float32
    assert len(np.unique(x, axis=0)) == len(x)  # all distinct
    brute = _brute_bars_and_stripes(n)
    as_set = lambda a: {tuple(r) for r in a}  # noqa: E731
    assert as_set(x) == as_set(brute)


def test_bars_and_stripes_are_row_major_images():
    x = datasets.bars_and_stripes(3).reshape(-1, 3, 3)
    # First pattern after the empty one: only the top row on (stripes come first).
    assert np.array_equal(x[1], [[1, 1, 1], [0, 0, 0], [0, 0, 0]])
    assert len(datasets.bars_and_stripes(5)) == 62


@pytest.mark.parametrize("n", [0, -1, 2.0, True, "3", 17])
def test_bars_and_stripes_bad_n(n):
    with pytest.raises(ValueError, match="bars_and_stripes"):
        datasets.bars_and_stripes(n)


# --- loaders: good files ------------------------------------------------------------------

GOOD = np.array([[0, 1, 1], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=np.float64)


def test_load_npy_npz_csv_round_trip(tmp_path):
    np.save(tmp_path / "a.npy", GOOD.astype(np.int8))
    np.save(tmp_path / "b.npy", GOOD.astype(bool))
    np.savez(tmp_path / "one.npz", data=GOOD)
    np.savez(tmp_path / "two.npz", x=GOOD, y=2 * GOOD - 1)
    (tmp_path / "c.csv").write_text("# comment\na,b,c\n0,1,1\n1,0,0\n\n1, 1, 1\n0.0,0,0e0\n")
    for x in (
        datasets.load(tmp_path / "a.npy"),
        datasets.load(str(tmp_path / "b.npy")),
        datasets.load(tmp_path / "one.npz"),
        datasets.load(tmp_path / "two.npz", key="x"),
        datasets.load(tmp_path / "c.csv"),
    ):
        assert x.dtype == np.float32
        np.testing.assert_array_equal(x, GOOD)
    spins = datasets.load(tmp_path / "two.npz", units="spin", key="y")
    np.testing.assert_array_equal(spins, 2 * GOOD - 1)


def test_load_single_column_csv(tmp_path):
    (tmp_path / "col.csv").write_text("1\n0\n1\n")
    assert datasets.load(tmp_path / "col.csv").shape == (3, 1)


# --- loaders: bad files -------------------------------------------------------------------


def _error(path, **kwargs):
    with pytest.raises(ValueError) as info:
        datasets.load(path, **kwargs)
    message = str(info.value)
    assert str(path) in message  # every message names the file
    return message


def test_load_non_binary_value_names_row_and_column(tmp_path):
    x = GOOD.copy()
    x[2, 1] = 0.5
    x[3, 0] = 2
    np.save(tmp_path / "bad.npy", x)
    msg = _error(tmp_path / "bad.npy")
    assert "row 2, column 1 (value 0.5)" in msg
    assert "row 3, column 0 (value 2)" in msg
    assert "row 0" not in msg and "row 1" not in msg and "2 bad rows" in msg


def test_load_wrong_unit_type_suggests_the_right_one(tmp_path):
    np.save(tmp_path / "spins.npy", 2 * GOOD - 1)
    msg = _error(tmp_path / "spins.npy")
    assert "row 0, column 0 (value -1)" in msg and "units='spin'" in msg
    np.save(tmp_path / "bits.npy", GOOD)
    assert "units='bernoulli'" in _error(tmp_path / "bits.npy", units="spin")


def test_load_nan_and_inf(tmp_path):
    x = GOOD.copy()
    x[1, 2] = np.nan
    x[3, 1] = np.inf
    np.savez(tmp_path / "nan.npz", x=x)
    msg = _error(tmp_path / "nan.npz")
    assert "non-finite" in msg and "row 1, column 2 (value nan)" in msg
    assert "row 3, column 1 (value inf)" in msg
    (tmp_path / "nan.csv").write_text("0,1\nnan,1\n")
    assert "row 1, column 0 (value nan)" in _error(tmp_path / "nan.csv")


def test_load_reports_first_rows_only(tmp_path):
    x = np.full((20, 8), 3.0)
    np.save(tmp_path / "many.npy", x)
    msg = _error(tmp_path / "many.npy")
    assert "row 4, columns 0 (value 3), 1 (value 3)" in msg and "and 3 more" in msg
    assert "row 5" not in msg and "and 15 more rows" in msg and "20 bad rows" in msg


@pytest.mark.parametrize("shape", [(6,), (2, 2, 2), ()])
def test_load_wrong_ndim(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape))
    msg = _error(tmp_path / "x.npy")
    assert f"got shape {shape}" in msg and "2-D" in msg


def test_load_ragged_csv_names_the_line(tmp_path):
    (tmp_path / "r.csv").write_text("h1,h2,h3\n0,1,1\n1,0,0\n1,1\n0,0,0\n")
    msg = _error(tmp_path / "r.csv")
    assert "ragged" in msg and "line 4 (data row 2) has 2 values" in msg
    assert "line 2 (data row 0) has 3" in msg


def test_load_csv_non_number(tmp_path):
    (tmp_path / "t.csv").write_text("0,1\n1,yes\n")
    assert "line 2 (data row 1), column 1: 'yes' is not a number" in _error(tmp_path / "t.csv")


def test_load_other_bad_files(tmp_path):
    np.savez(tmp_path / "two.npz", x=GOOD, y=GOOD)
    assert "holds 2 arrays ['x', 'y']" in _error(tmp_path / "two.npz")
    assert "has no array 'z'" in _error(tmp_path / "two.npz", key="z")
    np.save(tmp_path / "obj.npy", np.array([[0, "a"]], dtype=object), allow_pickle=True)
    assert "numeric" in _error(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    assert "not a valid .npy" in _error(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    assert "not a valid .npz" in _error(tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([[0, "a"]], dtype=object))
    assert "refuses to unpickle" in _error(tmp_path / "obj.npz")
    (tmp_path / "x.txt").write_text("0,1\n")
    assert "unsupported file type '.txt'" in _error(tmp_path / "x.txt")
    (tmp_path / "empty.csv").write_text("a,b\n")
    assert "no data rows" in _error(tmp_path / "empty.csv")
    np.save(tmp_path / "e.npy", np.zeros((0, 3)))
    assert "empty" in _error(tmp_path / "e.npy")
    np.save(tmp_path / "s.npy", np.array([["0", "1"]]))
    assert "expected numbers" in _error(tmp_path / "s.npy")
    assert "key='x' applies to .npz" in _error(tmp_path / "e.npy", key="x")


def test_load_missing_file_and_bad_units(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy: no such file"):
        datasets.load(tmp_path / "nope.npy")
    np.save(tmp_path / "a.npy", GOOD)
    with pytest.raises(ValueError, match="unknown unit type"):
        datasets.load(tmp_path / "a.npy", units="gauss")
