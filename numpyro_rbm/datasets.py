r"""Data sets for RBMs: the bundled 8x8 digits, bars-and-stripes, and checked user files.

Every loader returns a 2-D ``float32`` NumPy array with one example per row, holding the values
of the visible units: :math:`\{0, 1\}` for Bernoulli units or :math:`\{-1, +1\}` for spins.
Values outside that set (or ``NaN``, or a ragged CSV line) are refused with a
:class:`ValueError` that names the file, the first offending rows and columns and their
values, so a bad file is found before training rather than after.

References:
    * E. Alpaydin and C. Kaynak, *Optical Recognition of Handwritten Digits*, UCI Machine
      Learning Repository (1998), CC BY 4.0; bundled in ``numpyro_rbm/data`` (the copy
      scikit-learn ships for ``load_digits``).
    * D. J. C. MacKay, *Information Theory, Inference, and Learning Algorithms* (2003),
      ch. 43 (bars and stripes), and G. E. Hinton and T. J. Sejnowski, *Learning and
      relearning in Boltzmann machines*, in *Parallel Distributed Processing* (1986).
"""

from __future__ import annotations

import csv
import gzip
import os
from importlib import resources
from typing import NamedTuple

import numpy as np

from .units import as_unit_type

__all__ = [
    "Dataset",
    "digits",
    "digit_labels",
    "bars_and_stripes",
    "load",
    "Standardization",
    "standardize",
    "load_real",
    "read_table",
    "AMINO_ACIDS",
    "Alignment",
    "encode_sequences",
    "read_fasta",
]

# How many offending rows an error message lists before it says "and N more".
_MAX_REPORTED = 5


class Dataset(NamedTuple):
    """A train/test split of a data set of flattened examples."""

    #: training examples, ``float32`` array ``(n_train, n_features)``.
    train: np.ndarray
    #: held-out examples, ``float32`` array ``(n_test, n_features)``.
    test: np.ndarray
    #: ``(height, width)`` when the rows are flattened images (row-major), else ``None``.
    image_shape: tuple[int, int] | None
    #: a short name for reports and file names.
    name: str


def digits(
    binarize: bool = True, threshold: float = 8, test_fraction: float = 0.2, seed: int = 0
) -> Dataset:
    r"""The bundled 8x8 handwritten digits (1797 images, no download needed).

    Pixel intensities :math:`x \in \{0, \dots, 16\}` become :math:`\mathbb{1}[x \ge
    \text{threshold}]` when ``binarize`` is true, and :math:`x / 16 \in [0, 1]` otherwise. The
    rows are shuffled by a permutation drawn from ``numpy.random.default_rng(seed)`` and the
    first :math:`\lfloor \text{test\_fraction} \cdot 1797 \rceil` go to the test set, so the
    split is the same on every machine for a given seed.

    Args:
        binarize: threshold the images to :math:`\{0, 1\}` (what a Bernoulli RBM models).
        threshold: the intensity (0..16) at or above which a pixel is on.
        test_fraction: the share of images held out, strictly between 0 and 1.
        seed: seed of the train/test permutation.

    Returns:
        A :class:`Dataset` with 64 features per row and ``image_shape == (8, 8)``.
    """
    if binarize and not 0 < threshold <= 16:
        raise ValueError(
            f"threshold must be in (0, 16] (digit pixels range over 0..16), got {threshold!r}"
        )
    pixels, _ = _digits_table()
    x = (pixels >= threshold) if binarize else pixels / 16.0
    train, test = _digits_split(len(x), test_fraction, seed)
    x = x.astype(np.float32)
    name = "digits" if binarize else "digits-gray"
    return Dataset(x[train], x[test], (8, 8), name)


def digit_labels(test_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The classes (0..9) of the images of :func:`digits` with the same ``test_fraction`` and
    ``seed``, in the same order: ``(train_labels, test_labels)``, ``int32`` arrays."""
    _, labels = _digits_table()
    train, test = _digits_split(len(labels), test_fraction, seed)
    return labels[train], labels[test]


def _digits_table() -> tuple[np.ndarray, np.ndarray]:
    """The bundled UCI file (scikit-learn's copy, read as ``load_digits`` does): pixels
    ``(1797, 64)`` in 0..16 (float64) and the classes (int32)."""
    with resources.files(__package__).joinpath("data/digits.csv.gz").open("rb") as raw:
        with gzip.open(raw, mode="rt", encoding="utf-8") as text:
            table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1].astype(np.int32)


def _digits_split(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices ``(train, test)``: a permutation from ``default_rng(seed)``, whose first
    ``round(test_fraction * n)`` rows are the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction!r}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    if not 0 < n_test < n:
        raise ValueError(
            f"test_fraction={test_fraction!r} leaves {n_test} of {n} images for testing; "
            "choose a fraction that keeps at least one image in each set"
        )
    return order[n_test:], order[:n_test]


def bars_and_stripes(n: int) -> np.ndarray:
    r"""All distinct :math:`n \times n` bars-and-stripes images, flattened row-major.

    An image is *stripes* when every row is constant (each of the :math:`2^n` choices of which
    rows are on) and *bars* when every column is constant; the all-off and all-on images are
    both, so there are :math:`2^{n+1} - 2` distinct patterns. The data distribution is uniform
    over them, so the best achievable average log-likelihood is exactly
    :math:`-\log(2^{n+1} - 2)`.

    Args:
        n: the side length, at least 1.

    Returns:
        A ``float32`` array of shape ``(2**(n + 1) - 2, n * n)`` in :math:`\{0, 1\}`: first
        the stripes in binary-counting order of their rows, then the bars other than the two
        constant images.
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"bars_and_stripes needs an integer side length n >= 1, got {n!r}")
    if n > 16:
        raise ValueError(
            f"bars_and_stripes({n}) would have 2^{n + 1} - 2 rows of {n * n} pixels; use n <= 16"
        )
    n = int(n)
    codes = (np.arange(2**n)[:, None] >> np.arange(n)) & 1  # (2^n, n): which lines are on
    stripes = np.repeat(codes[:, :, None], n, axis=2)  # row i constant, equal to codes[:, i]
    bars = np.swapaxes(stripes, 1, 2)[1:-1]  # column j constant; drop all-off and all-on
    images = np.concatenate([stripes, bars])
    return images.reshape(len(images), n * n).astype(np.float32)


# --- user files ---------------------------------------------------------------------------


def load(path, units="bernoulli", *, key: str | None = None) -> np.ndarray:
    r"""Loads a data file and checks that it holds valid visible states.

    Supported formats: ``.npy``; ``.npz`` (its single array, or the array named ``key``);
    ``.csv`` (comma-separated numbers, one example per line; a first line without numbers is
    read as a header, blank lines and lines starting with ``#`` are skipped). NumPy files are
    read with ``allow_pickle=False``, so loading never runs code from the file.

    Args:
        path: the file.
        units: ``"bernoulli"`` (values must be 0 or 1) or ``"spin"`` (values must be -1 or
            +1), or a :class:`~numpyro_rbm.units.UnitType`.
        key: the array to read from a ``.npz`` file holding several.

    Returns:
        A ``float32`` array of shape ``(n_examples, n_visible)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unsupported extension, an unreadable or ragged file, an array that
            is not 2-D or is empty, or values that are not finite or not in the unit's value
            set; the message names the file and the first offending rows and columns.
    """
    unit = as_unit_type(units)
    if not unit.enumerable:
        raise ValueError(
            f"load checks two-state units only; got units={unit.spec!r}: use load_real for "
            "Gaussian units and read_fasta / encode_sequences for Potts units"
        )
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder; pass a .npy, .npz or .csv file")
    ext = os.path.splitext(path)[1].lower()
    if key is not None and ext != ".npz":
        raise ValueError(f"{path}: key={key!r} applies to .npz files only")
    if ext == ".npy":
        x = _read_npy(path)
    elif ext == ".npz":
        x = _read_npz(path, key)
    elif ext == ".csv":
        x = _read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type {ext!r}; use .npy, .npz or .csv")
    return _validate(x, path, unit)


def _read_npy(path):
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would guess "pickle" for any other content
            raise ValueError(f"{path}: not a valid .npy file (no NumPy header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError:  # object arrays need pickle, which we refuse
        raise ValueError(
            f"{path}: cannot read as a numeric array (it holds Python objects, which this "
            "loader refuses to unpickle); save a numeric array instead"
        ) from None
    except OSError as err:
        raise ValueError(f"{path}: not a valid .npy file ({err})") from None


def _read_npz(path, key):
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":  # .npz files are zip archives
            raise ValueError(f"{path}: not a valid .npz file (not a zip archive)")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a valid .npz file ({err})") from None
    with archive:
        names = list(archive.files)
        if key is None:
            if len(names) != 1:
                raise ValueError(
                    f"{path}: holds {len(names)} arrays {names}; choose one with key=NAME "
                    "(--key NAME on the command line)"
                )
            key = names[0]
        elif key not in names:
            raise ValueError(f"{path}: has no array {key!r}; it holds {names}")
        try:
            return archive[key]
        except ValueError:
            raise ValueError(
                f"{path}: cannot read array {key!r} as numbers (it holds Python objects, "
                "which this loader refuses to unpickle); save a numeric array instead"
            ) from None


def _read_csv(path):
    rows, lines = [], []
    with open(path, newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            fields = [s.strip() for s in fields]
            if not fields or all(s == "" for s in fields) or fields[0].startswith("#"):
                continue
            values = [_parse_float(s) for s in fields]
            if not rows and all(v is None for v in values):
                continue  # a header line
            bad = [j for j, v in enumerate(values) if v is None]
            if bad:
                j = bad[0]
                raise ValueError(
                    f"{path}: line {line_no} (data row {len(rows)}), column {j}: "
                    f"{fields[j]!r} is not a number"
                )
            if rows and len(values) != len(rows[0]):
                raise ValueError(
                    f"{path}: ragged CSV: line {line_no} (data row {len(rows)}) has "
                    f"{len(values)} values but line {lines[0]} (data row 0) has {len(rows[0])}"
                )
            rows.append(values)
            lines.append(line_no)
    if not rows:
        raise ValueError(f"{path}: no data rows")
    return np.array(rows, dtype=np.float64)


def _parse_float(s):
    try:
        return float(s)
    except ValueError:
        return None


def _validate(x, path, unit) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == bool:
        x = x.astype(np.float32)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{path}: expected numbers, got an array of dtype {x.dtype}")
    if x.ndim != 2:
        hint = (
            "reshape it to (n_examples, n_visible), e.g. x.reshape(len(x), -1)"
            if x.ndim > 2
            else "save it as a 2-D array (n_examples, n_visible), e.g. x.reshape(1, -1) for "
            "one example"
        )
        raise ValueError(
            f"{path}: expected a 2-D array (one example per row), got shape {x.shape}; {hint}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: empty array of shape {x.shape}")
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(
            f"{path}: non-finite values (NaN or inf) at {_where(~finite, x)}; "
            "remove or impute those entries"
        )
    low, high = unit.values
    ok = (x == low) | (x == high)
    if not ok.all():
        raise ValueError(
            f"{path}: values must be {_fmt(low)} or {_fmt(high)} for {unit.name} units, found "
            f"{_where(~ok, x)}{_units_hint(x, unit)}"
        )
    return x.astype(np.float32)


def _where(bad, x) -> str:
    """'row r, column c (value v); ...' for the first few offending rows."""
    rows = np.flatnonzero(bad.any(axis=1))
    parts = []
    for r in rows[:_MAX_REPORTED]:
        cols = np.flatnonzero(bad[r])
        shown = ", ".join(f"{c} (value {_fmt(x[r, c])})" for c in cols[:_MAX_REPORTED])
        more = f" and {len(cols) - _MAX_REPORTED} more" if len(cols) > _MAX_REPORTED else ""
        parts.append(f"row {r}, column{'s' if len(cols) > 1 else ''} {shown}{more}")
    extra = f"; and {len(rows) - _MAX_REPORTED} more rows" if len(rows) > _MAX_REPORTED else ""
    return "; ".join(parts) + extra + f" (rows and columns count from 0; {len(rows)} bad rows)"


def _units_hint(x, unit) -> str:
    for other in ("spin", "bernoulli"):
        lo, hi = as_unit_type(other).values
        if other != unit.name and np.isin(x, (lo, hi)).all():
            return f"; the file holds {other} values ({_fmt(lo)}/{_fmt(hi)}): use units={other!r}"
    return ""


def _fmt(value) -> str:
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


# --- real-valued matrices (Gaussian visible units) ------------------------------------------


class Standardization(NamedTuple):
    r"""The affine map :math:`z = (x - \text{mean}) / \text{scale}` applied to real-valued data,
    recorded so that a model trained on :math:`z` can be used on (and map back to) :math:`x`.
    Store it with the model: ``io.save_params(path, params, std.to_metadata())`` and read it
    back with ``Standardization.from_metadata(io.load_params(path)[1])``."""

    #: per-column mean of the training data, ``(n_features,)``.
    mean: np.ndarray
    #: per-column scale (standard deviation; 1 for constant columns), ``(n_features,)``.
    scale: np.ndarray

    def apply(self, x) -> np.ndarray:
        """Standardises ``x`` (``float32``)."""
        return ((np.asarray(x, np.float64) - self.mean) / self.scale).astype(np.float32)

    def invert(self, z) -> np.ndarray:
        """Maps standardised values back to the data's units."""
        return np.asarray(z, np.float64) * self.scale + self.mean

    def to_metadata(self) -> dict:
        """A JSON-serialisable record for :func:`numpyro_rbm.io.save_params`'s metadata."""
        return {"standardization": {"mean": self.mean.tolist(), "scale": self.scale.tolist()}}

    @classmethod
    def from_metadata(cls, metadata: dict) -> Standardization:
        """Reads the record written by :meth:`to_metadata`."""
        if "standardization" not in metadata:
            raise ValueError("the metadata holds no 'standardization' record")
        record = metadata["standardization"]
        return cls(np.asarray(record["mean"], np.float64), np.asarray(record["scale"], np.float64))


def standardize(x, *, name: str = "data") -> tuple[np.ndarray, Standardization]:
    """Checks a real-valued matrix (finite values, 2-D) and standardises its columns to mean
    0 and variance 1 (constant columns are only centred).

    Returns:
        ``(z, standardization)``: the ``float32`` standardised data and the recorded map.

    Raises:
        ValueError: for a non-finite entry (naming its row and column) or a bad shape.
    """
    x = _real_matrix(x, name, "Gaussian units need finite real values: ")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    scale = np.where(std > 1e-12 * np.maximum(1.0, np.abs(mean)), std, 1.0)
    record = Standardization(mean, scale)
    return record.apply(x), record


def load_real(path, *, key: str | None = None) -> tuple[np.ndarray, Standardization]:
    """Loads a real-valued matrix (``.npy``, ``.npz`` or ``.csv``, as :func:`load`) for
    Gaussian visible units and standardises it (:func:`standardize`).

    Returns:
        ``(z, standardization)``; keep ``standardization`` with the model (see
        :class:`Standardization`).
    """
    path = os.fspath(path)
    return standardize(_read_matrix(path, key), name=path)


def read_table(path, *, key: str | None = None) -> np.ndarray:
    """Reads a real-valued matrix (``.npy``, ``.npz`` or ``.csv``, as :func:`load`) as it is,
    unstandardised: the input of :func:`standardize` when the standardisation must come from
    some rows only (a training split) and be applied to others.

    Returns:
        A ``float64`` array ``(n_examples, n_features)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for an unsupported or unreadable file, a cell that is not a number (its
            line and column), a ragged CSV, a shape that is not 2-D, or a non-finite value.
    """
    path = os.fspath(path)
    return _real_matrix(_read_matrix(path, key), path)


def _read_matrix(path: str, key):
    """The array stored in ``path`` (``.npy``, ``.npz`` or ``.csv``), unchecked."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    ext = os.path.splitext(path)[1].lower()
    readers = {".npy": _read_npy, ".npz": lambda p: _read_npz(p, key), ".csv": _read_csv}
    if ext not in readers:
        raise ValueError(f"{path}: unsupported file type {ext!r}; use .npy, .npz or .csv")
    return readers[ext](path)


def _real_matrix(x, name: str, why: str = "") -> np.ndarray:
    """``x`` as a ``float64`` matrix of finite numbers, or a ``ValueError`` saying what is
    wrong (``why`` prefixes the advice for a non-finite entry)."""
    x = np.asarray(x)
    if x.dtype == bool or not (
        np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)
    ):
        raise ValueError(f"{name}: expected numbers, got an array of dtype {x.dtype}")
    if x.ndim != 2 or 0 in x.shape:
        raise ValueError(
            f"{name}: expected a non-empty 2-D array (one example per row), got shape {x.shape}"
        )
    x = x.astype(np.float64)
    finite = np.isfinite(x)
    if not finite.all():
        raise ValueError(
            f"{name}: non-finite values (NaN or inf) at {_where(~finite, x)}; {why}remove or "
            "impute those entries"
        )
    return x


# --- aligned sequences (Potts visible units) ------------------------------------------------

#: The 20 amino acids in one-letter code and the alignment gap: q = 21 symbols.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY-"


class Alignment(NamedTuple):
    """Aligned sequences encoded as integers, with the alphabet that decodes them."""

    #: ``int32`` array ``(n_sequences, length)`` of symbol indices into ``alphabet``.
    sequences: np.ndarray
    #: the sequence names (FASTA header lines without ``>``).
    names: list
    #: the symbols, in index order (``len(alphabet)`` is the Potts ``q``).
    alphabet: str

    def decode(self, sequences=None) -> list[str]:
        """Integer sequences back to strings (default: this alignment's own)."""
        seqs = self.sequences if sequences is None else np.asarray(sequences)
        return ["".join(self.alphabet[i] for i in row) for row in seqs]


def encode_sequences(
    sequences, alphabet: str = AMINO_ACIDS, *, names=None, source: str = "sequences"
) -> np.ndarray:
    """Equal-length strings to an ``int32`` array ``(n, length)`` of indices into
    ``alphabet`` (case-insensitive for letters).

    Raises:
        ValueError: naming the row (and sequence name), column and symbol of the first
            out-of-alphabet symbol, or the first sequence whose length differs.
    """
    if len(set(alphabet)) != len(alphabet) or len(alphabet) < 2:
        raise ValueError(f"alphabet must have at least 2 distinct symbols, got {alphabet!r}")
    lookup = {s: i for i, s in enumerate(alphabet)}
    for s, i in list(lookup.items()):
        lookup.setdefault(s.lower(), i)
        lookup.setdefault(s.upper(), i)
    sequences = list(sequences)
    if not sequences:
        raise ValueError(f"{source}: no sequences")
    length = len(sequences[0])
    out = np.empty((len(sequences), length), np.int32)
    for row, seq in enumerate(sequences):
        label = f"row {row}" + (f" ({names[row]!r})" if names is not None else "")
        if len(seq) != length:
            raise ValueError(
                f"{source}: {label} has length {len(seq)} but row 0 has length {length}; "
                "aligned sequences must all have the same length"
            )
        for col, symbol in enumerate(seq):
            if symbol not in lookup:
                raise ValueError(
                    f"{source}: {label}, column {col}: symbol {symbol!r} is not in the "
                    f"alphabet {alphabet!r}; map it to a known symbol (e.g. the gap '-') or "
                    "pass alphabet=..."
                )
            out[row, col] = lookup[symbol]
    return out


def read_fasta(path_or_text, alphabet: str = AMINO_ACIDS) -> Alignment:
    """Reads a FASTA-style alignment (``>name`` lines, each followed by one or more lines of
    its aligned sequence) from a file or from a string that starts with ``>``; ``.`` is read
    as the gap ``-`` when the alphabet has a gap and not a dot. Nothing is downloaded.

    Returns:
        An :class:`Alignment`; ``len(alignment.alphabet)`` is the Potts ``q``.

    Raises:
        ValueError: on text before the first header, an empty sequence, unequal lengths or
            an out-of-alphabet symbol (naming the row, sequence name and column).
    """
    text = os.fspath(path_or_text) if not isinstance(path_or_text, str) else path_or_text
    source = "FASTA text"
    if not text.lstrip().startswith(">"):
        source = text
        if not os.path.exists(text):
            raise FileNotFoundError(f"{text}: no such file (or FASTA text not starting with '>')")
        with open(text) as f:
            text = f.read()
    names, seqs = [], []
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith(";"):
            continue
        if line.startswith(">"):
            names.append(line[1:].strip())
            seqs.append([])
        elif not names:
            raise ValueError(f"{source}: line {line_no} comes before the first '>' header")
        else:
            seqs[-1].append(line)
    strings = ["".join(parts) for parts in seqs]
    if "-" in alphabet and "." not in alphabet:
        strings = [s.replace(".", "-") for s in strings]
    for name, s in zip(names, strings, strict=True):
        if not s:
            raise ValueError(f"{source}: sequence {name!r} is empty")
    encoded = encode_sequences(strings, alphabet, names=names, source=source)
    return Alignment(encoded, names, alphabet)
