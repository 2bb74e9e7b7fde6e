"""Loaders for the new unit types: real-valued matrices (standardisation recorded and saved
with the model) and FASTA-style aligned sequences (alphabet recorded), with precise errors."""

import jax
import numpy as np
import pytest

import numpyro_rbm as nrbm
from numpyro_rbm import datasets, io
from numpyro_rbm.units import Potts

FASTA = """>seq1 first
ACDE-
FGH.K
>seq2
acdeg
fghik
; a comment line
>seq3
WYVT-
SRQPN
"""


def test_standardize_records_the_map_and_it_travels_with_the_model(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=(50, 3))
    x[:, 2] = 7.0  # a constant column is only centred
    np.save(tmp_path / "x.npy", x)
    z, std = datasets.load_real(tmp_path / "x.npy")
    assert z.dtype == np.float32
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-6)
    np.testing.assert_allclose(z[:, :2].std(0), 1, rtol=1e-5)
    np.testing.assert_allclose(z[:, 2], 0)
    np.testing.assert_allclose(std.invert(z), x, rtol=1e-6)
    params = nrbm.init_params(jax.random.key(0), 3, 2, visible_units="gaussian")
    io.save_params(tmp_path / "m.npz", params, std.to_metadata())
    _, meta = io.load_params(tmp_path / "m.npz")
    back = datasets.Standardization.from_metadata(meta)
    np.testing.assert_array_equal(back.mean, std.mean)
    np.testing.assert_array_equal(back.scale, std.scale)


def test_non_finite_real_data_names_row_and_column(tmp_path):
    x = np.ones((4, 3))
    x[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"row 2, column 1 \(value nan\)"):
        datasets.standardize(x)
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n3,inf\n")
    with pytest.raises(ValueError, match=r"row 1, column 1"):
        datasets.load_real(path)


def test_read_fasta_encodes_with_the_alphabet_and_decodes_back(tmp_path):
    aln = datasets.read_fasta(FASTA)
    assert aln.names == ["seq1 first", "seq2", "seq3"]
    assert aln.alphabet == datasets.AMINO_ACIDS and len(aln.alphabet) == 21
    assert aln.sequences.shape == (3, 10) and aln.sequences.dtype == np.int32
    assert aln.decode() == ["ACDE-FGH-K", "ACDEGFGHIK", "WYVT-SRQPN"]
    path = tmp_path / "a.fasta"
    path.write_text(FASTA)
    np.testing.assert_array_equal(datasets.read_fasta(path).sequences, aln.sequences)
    # The encoded alignment is what a Potts RBM takes.
    rbm = nrbm.RBM(nrbm.init_params(jax.random.key(0), 10 * 21, 2, visible_units=Potts(21)))
    assert rbm.log_prob(aln.sequences).shape == (3,)


def test_out_of_alphabet_symbols_and_ragged_alignments_are_named(tmp_path):
    bad = FASTA.replace("fghik", "fgXik")
    with pytest.raises(ValueError, match=r"row 1 \('seq2'\), column 7: symbol 'X'"):
        datasets.read_fasta(bad)
    with pytest.raises(ValueError, match=r"row 2 \('seq3'\) has length 9"):
        datasets.read_fasta(FASTA.replace("SRQPN", "SRQP"))
    orphan = tmp_path / "orphan.fa"
    orphan.write_text("ACDE\n>x\nACDE\n")
    with pytest.raises(ValueError, match="line 1 comes before the first '>' header"):
        datasets.read_fasta(orphan)
    with pytest.raises(ValueError, match=r"row 0, column 1: symbol 'B'"):
        datasets.encode_sequences(["AB"], alphabet="AC")
