"""The `numpyro-rbm` command end to end, on tiny budgets, in temporary folders."""

import contextlib
import csv
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import matplotlib.image
import numpy as np
import pytest
from conftest import P_MIN, Z_MAX, brute_joint_log_weights
from scipy.special import logsumexp
from scipy.stats import chisquare

from numpyro_rbm import _commands, cli, datasets, diagnostics, learning
from numpyro_rbm import io as rbm_io
from numpyro_rbm._progress import Progress

FIGURES = ("learning_curves.png", "filters.png", "samples.png", "chains_rank.png")


def run_cli(*argv):
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def exact_log_p(params, x):
    """log p(v) for each row of x by brute-force enumeration of all joint states."""
    V, _, table = brute_joint_log_weights(params.weights, params.visible_bias, params.hidden_bias)
    log_pv = logsumexp(table, axis=1) - logsumexp(table)  # marginal of every visible state
    index = {tuple(v): i for i, v in enumerate(V)}
    return np.array([log_pv[index[tuple(row)]] for row in np.asarray(x, np.float64)]), log_pv, V


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A run trained on 2x2 bars-and-stripes (4 visible units), 4 hidden units, 2 epochs,
    interrupted (Ctrl-C) during epoch 2 and finished with --resume."""
    folder = tmp_path_factory.mktemp("cli")
    data = np.tile(datasets.bars_and_stripes(2), (4, 1))  # 24 rows of 4 units
    data_file = folder / "bars.npy"
    np.save(data_file, data)
    run = folder / "run"
    fit = learning.fit

    def interrupted_fit(*args, **kwargs):
        def ctrl_c(epoch, params, metrics):
            if epoch == 2:
                raise KeyboardInterrupt

        return fit(*args, **kwargs, callbacks=(ctrl_c,))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(learning, "fit", interrupted_fit)
        code, quiet_out, err = run_cli(
            "train", "--data", data_file, "--hidden", 4, "--epochs", 2, "--batch-size", 4,
            "--chains", 8, "--diagnostic-sweeps", 60, "--image-shape", "2x2", "--out", run,
            "--quiet",
        )  # fmt: skip
    assert code == 130 and f"numpyro-rbm train --out {run} --resume" in err
    assert not (run / "model.npz").exists()
    # Only --resume: data, sizes, epochs and seed come from the run's config.json.
    code, out, err = run_cli("train", "--out", run, "--resume")
    assert code == 0, err
    return dict(
        folder=folder, run=run, data_file=data_file, data=data, out=out, err=err,
        quiet_out=quiet_out,
    )  # fmt: skip


def test_train_writes_a_complete_run_folder(tiny):
    run = tiny["run"]
    params, meta = rbm_io.load_params(run / "model.npz")
    assert params.weights.shape == (4, 4) and params.weights.dtype == np.float32
    assert meta["image_shape"] == [2, 2] and meta["units"] == "bernoulli"

    history = json.loads((run / "history.json").read_text())
    assert "epoch" in history and "reconstruction_error" in history
    with open(run / "history.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(history)  # same columns, same values
    assert len(rows) - 1 == len(history["epoch"])
    for name, column in zip(rows[0], zip(*rows[1:], strict=True), strict=True):
        np.testing.assert_allclose([float(c) for c in column], history[name])

    for name in FIGURES + ("chains_trace.png",):
        image = matplotlib.image.imread(run / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"
    assert (run / "config.json").exists()


def test_train_reports_the_exact_test_log_likelihood(tiny):
    run, data = tiny["run"], tiny["data"]
    summary = json.loads((run / "summary.json").read_text())
    params, _ = rbm_io.load_params(run / "model.npz")
    # The CLI's held-out rows: a 0.2 split of the 24 rows by the seeded permutation.
    order = np.random.default_rng(0).permutation(len(data))
    test = data[order[: round(0.2 * len(data))]]
    brute, _, _ = exact_log_p(params, test)
    assert summary["n_test"] == len(test) == 5
    assert summary["log_likelihood_method"] == "exact"
    np.testing.assert_allclose(summary["test_log_likelihood"], brute.mean(), atol=1e-4)
    printed = re.search(r"test log-likelihood \(exact\): (-?\d+\.\d+)", tiny["out"])
    assert printed, tiny["out"]
    assert float(printed.group(1)) == pytest.approx(brute.mean(), abs=1e-3)
    # The chain verdict is numpyro_rbm.diagnostics' (one R-hat, one threshold), over the
    # --diagnostic-sweeps run, and its line says so.
    chains = summary["chains"]
    ess = min(chains["ess_bulk"], chains["ess_tail"])
    assert chains["ok"] == (
        chains["rhat"] <= diagnostics.RHAT_THRESHOLD and ess >= diagnostics.MIN_ESS
    )
    assert chains["sweeps"] == 500  # --diagnostic-sweeps is not stored: the default
    line = re.search(
        r"chains: (OK|WARNING).*R-hat (\d\.\d{4}) .*over 500 sweeps of 8 chains", tiny["out"]
    )
    assert line, tiny["out"]
    assert float(line.group(2)) == pytest.approx(chains["rhat"], abs=1e-4)


def _gaussian_statistics(rng, offsets, draws=500):
    """Independent N(offset, 1) draws for each chain, as both chain statistics."""
    x = rng.normal(size=(len(offsets), draws)) + np.asarray(offsets, float)[:, None]
    return {"free_energy": x, "mean_activation": -x}


@pytest.mark.statistical
def test_chain_verdict_tells_mixed_from_stuck_chains():
    # numpy draws (the same on every machine); each bound is at least 8 standard deviations
    # from its statistic's mean over 1000 seeds (tests/audit_cli.md)
    rng = np.random.default_rng(0)
    mixed = _commands.chain_verdict(_gaussian_statistics(rng, [0, 0, 0, 0]))
    assert mixed["ok"] and mixed["rhat"] < 1.01 and mixed["ess_bulk"] > 1000
    assert mixed["verdict"].startswith("OK, the chains mix")
    # Two pairs of chains stuck in modes 3 standard deviations apart: R-hat about 1.65.
    stuck = _commands.chain_verdict(_gaussian_statistics(rng, [0, 0, 3, 3]))
    assert not stuck["ok"] and stuck["rhat"] > diagnostics.RHAT_THRESHOLD
    assert stuck["verdict"].startswith("WARNING") and "--method pt" in stuck["verdict"]
    stuck_pt = _commands.chain_verdict(_gaussian_statistics(rng, [0, 0, 3, 3]), method="pt")
    assert not stuck_pt["ok"] and "--method pt" not in stuck_pt["verdict"]
    # Modes one standard deviation apart: R-hat about 1.13 passes, the ESS (about 20) fails.
    slow = _commands.chain_verdict(_gaussian_statistics(rng, [0, 0, 1, 1]))
    assert slow["rhat"] < diagnostics.RHAT_THRESHOLD and slow["ess_bulk"] < diagnostics.MIN_ESS
    assert not slow["ok"] and slow["verdict"].startswith("WARNING, the chains mix slowly")
    # 8 chains x 30 sweeps cannot make an ESS of 400: the verdict says so, not "slow".
    short = _commands.chain_verdict(_gaussian_statistics(rng, [0] * 8, draws=30))
    assert short["rhat"] < diagnostics.RHAT_THRESHOLD and not short["ok"]
    assert (
        short["verdict"].startswith("WARNING, too few draws")
        and "--diagnostic-sweeps" in short["verdict"]
    )


def test_evaluate_matches_brute_force(tiny):
    params, _ = rbm_io.load_params(tiny["run"] / "model.npz")
    x = tiny["data"][:7]
    np.save(tiny["folder"] / "eval.npy", x)
    code, out, err = run_cli("evaluate", tiny["run"], "--data", tiny["folder"] / "eval.npy")
    assert code == 0, err
    mean = float(re.search(r"\(exact\) of .*: (-?\d+\.\d+) \+-", out).group(1))
    brute, _, _ = exact_log_p(params, x)
    assert mean == pytest.approx(brute.mean(), abs=1e-3)
    # Without --data: the run's own test split, the number train printed.
    code, out, _ = run_cli("evaluate", tiny["run"] / "model.npz")
    summary = json.loads((tiny["run"] / "summary.json").read_text())
    assert code == 0 and f"{summary['test_log_likelihood']:.4f}" in out


def test_resume_continued_the_interrupted_run(tiny):
    history = json.loads((tiny["run"] / "history.json").read_text())
    assert history["epoch"] == [1, 2]  # epoch 1 from the checkpoint, epoch 2 after --resume
    run = tiny["run"]
    # A different model size cannot continue this checkpoint: one line, status 2.
    config = (run / "config.json").read_text()
    _fails(["train", "--out", run, "--resume", "--hidden", 5], "--resume", "--hidden 4 (not 5)")
    assert (run / "config.json").read_text() == config  # the failed attempt changed nothing


def test_train_says_what_it_does_in_a_log(tiny):
    """Not a terminal (as in `numpyro-rbm train > log 2>&1`): no bar redraws, a few plain
    lines, and a line before each long step (compiling, evaluating, diagnosing, plotting)."""
    err, out = tiny["err"], tiny["out"]
    assert "\r" not in err and len(err.splitlines()) <= 5, err
    assert "fit[pcd]: compiling the training loop" in err
    assert "fit[pcd]: resuming at epoch 1 of 2" in err
    assert re.search(r"fit\[pcd\]: epoch 2/2 \(\d+ s\): .*R-hat\(50 sweeps\) \d", err), err
    for step in ("evaluating: ", "diagnosing: 250 + 500 more Gibbs sweeps", "plotting: 5 figures"):
        assert step in out, out
    assert tiny["quiet_out"] == ""  # --quiet: nothing but the final report (here: Ctrl-C)


def test_progress_report_on_a_terminal_and_in_a_log():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    metrics = {"epoch": 1, "test_log_likelihood": -18.5, "chain_rhat": 1.05, "swap_rate": [0.5]}
    log = io.StringIO()
    report = Progress("fit[pcd]", 100, log_every_s=3600, stream=log)
    report.say("compiling")
    report.start()
    for _ in range(100):
        report.metrics(metrics)
        report.update(1)
    report.close()
    lines = log.getvalue().splitlines()
    # the first evaluation, then nothing for an hour, then the end
    assert [line.split(" (")[0] for line in lines] == [
        "fit[pcd]: compiling", "fit[pcd]: epochs 1-100", "fit[pcd]: epoch 1/100",
        "fit[pcd]: epoch 100/100",
    ]  # fmt: skip
    assert (
        lines[-1].endswith("test LL -18.5, R-hat(50 sweeps) 1.05") and "\r" not in log.getvalue()
    )
    tty = Terminal()
    report = Progress("fit[pcd]", 100, stream=tty)
    report.start()
    report.metrics(metrics)
    report.update(100)
    report.close()
    assert "\r" in tty.getvalue() and "100/100" in tty.getvalue()  # tqdm's bar


@pytest.fixture(scope="module")
def skewed_model(tmp_path_factory):
    """A 4 x 3 RBM far from uniform (probabilities 0.007 to 0.2), saved as a model file (no
    training run: the statistical tests that use it are cheap to run again)."""
    import jax

    import numpyro_rbm as nrbm

    params = nrbm.init_params(jax.random.key(0), 4, 3, weight_scale=1.0)
    params = params.replace(visible_bias=0.5 * jax.random.normal(jax.random.key(10), (4,)))
    path = tmp_path_factory.mktemp("skewed") / "skewed.npz"
    rbm_io.save_params(path, params, {"image_shape": [2, 2]})
    return path, params


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["exact", "gibbs"])
def test_sample_draws_from_the_model(skewed_model, tmp_path, method):
    """Chi-square goodness of fit of 4000 samples against the 16 exact probabilities."""
    path, params = skewed_model
    out_file = tmp_path / f"samples_{method}.npy"
    png = ["--png"] if method == "exact" else []  # image tiles only when asked for
    code, out, err = run_cli(
        "sample", path, "-n", 4000, "--out", out_file, "--method", method, "--sweeps", 50,
        "--seed", 1, *png,
    )  # fmt: skip
    assert code == 0, err
    assert "wrote 4000 samples" in out
    assert out_file.with_suffix(".png").exists() == bool(png)
    if png:
        assert matplotlib.image.imread(out_file.with_suffix(".png"))[..., :3].std() > 0.05
    v = np.load(out_file)
    assert v.shape == (4000, 4) and v.dtype == np.float32 and set(np.unique(v)) <= {0.0, 1.0}
    _, log_pv, V = exact_log_p(params, v[:1])
    index = {tuple(s): i for i, s in enumerate(V)}
    counts = np.bincount([index[tuple(r)] for r in v.astype(np.float64)], minlength=len(V))
    expected = len(v) * np.exp(log_pv)
    assert expected.min() > 5  # (27 here) so the chi-square approximation holds
    # 15 degrees of freedom; a correct sampler fails with probability P_MIN (audit_cli.md).
    assert chisquare(counts, expected).pvalue > P_MIN


@pytest.mark.statistical
def test_evaluate_falls_back_to_ais(skewed_model, tmp_path):
    """Forced to AIS (--max-units 2 < 3 hidden units): agrees with the exact value within
    Z_MAX of its reported standard error (z over 300 seeds: mean 0.07, sd 0.99, |z| <= 3.3;
    tests/audit_cli.md)."""
    path, params = skewed_model
    x = datasets.bars_and_stripes(2)  # six states of the 4 visible units
    np.save(tmp_path / "x.npy", x)
    code, out, err = run_cli(
        "evaluate", path, "--data", tmp_path / "x.npy", "--max-units", 2, "--ais-betas", 300,
        "--ais-runs", 1000,
    )  # fmt: skip
    assert code == 0, err
    found = re.search(
        r"\(AIS estimate, 1000 runs, log Z standard error (\d\.\d+);.*: (-?\d+\.\d+)", out
    )
    assert found, out
    se, ais_mean = float(found.group(1)), float(found.group(2))
    brute, _, _ = exact_log_p(params, x)
    # 2e-3: float32, and the rounding of the printed mean (4 decimals) and error (3)
    assert abs(ais_mean - brute.mean()) < Z_MAX * se + 2e-3


# --- bad input: one line on stderr, exit status 2 -----------------------------------------


def _fails(argv, *needles):
    code, out, err = run_cli(*argv)
    assert code == 2, (out, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, err
    # Short, and in the command line's words (not Python's keyword arguments).
    short = err
    for arg in sorted((str(a) for a in argv), key=len, reverse=True):
        short = short.replace(arg, "A")  # paths vary in length from machine to machine
    assert len(short) <= 200, err
    assert not re.search(r"\b[a-z_]+=['\d]", err), err
    return err


def test_bad_input_exit_code_and_message(tiny, tmp_path):
    bad = tiny["data"].copy()
    bad[3, 2] = 0.5
    np.save(tmp_path / "bad.npy", bad)
    binary = ["--visible-units", "bernoulli"]  # else a 0.5 makes the data real-valued
    _fails(["train", "--data", tmp_path / "bad.npy", *binary], "row 3, column 2 (value 0.5)")
    _fails(["train", "--data", tmp_path / "missing.csv"], "missing.csv: no such file")
    (tmp_path / "ragged.csv").write_text("0,1\n1\n")
    _fails(["train", "--data", tmp_path / "ragged.csv"], "ragged", "line 2")
    _fails(["train", "--data", tiny["data_file"], "--image-shape", "3x3"], "9 pixels", "4 col")
    _fails(["train", "--out", tiny["run"]], "already holds a run", "--resume")
    _fails(["train", "--out", tmp_path / "new", "--resume"], "not a run folder")
    _fails(["train", "--data", "bars-and-stripes:x"], "bars-and-stripes:N")
    _fails(["train", "--epochs", 0, "--out", tmp_path / "e"], "--epochs must be at least 1")
    _fails(["train", "--test-data", tiny["data_file"]], "--test-data applies to --data FILE")
    _fails(["evaluate", tmp_path / "nothing"], "no such file")
    _fails(["evaluate", tiny["data_file"]], "is not a numpyro-rbm file")
    _fails(["evaluate", tiny["folder"]], "has no model.npz")
    np.save(tmp_path / "wide.npy", np.zeros((3, 5)))
    _fails(["evaluate", tiny["run"], "--data", tmp_path / "wide.npy"], "5 columns", "4 visible")
    _fails(["sample", tiny["run"], "--out", tmp_path / "no" / "x.npy"], "does not exist")
    # 0/1 data with --units spin: which flag to use, not a list of every bad value.
    _fails(
        ["train", "--data", tiny["data_file"], "--units", "spin"], "pass --visible-units bernoulli"
    )
    np.save(tmp_path / "gray.npy", np.arange(64.0).reshape(8, 8) % 9)  # bad values everywhere
    _fails(
        ["train", "--data", tmp_path / "gray.npy", *binary], "row 0, column 2 (value 2); 8 rows"
    )
    np.savez(tmp_path / "two.npz", a=tiny["data"], b=tiny["data"])
    _fails(["train", "--data", tmp_path / "two.npz"], "choose one with --key NAME")
    _fails(["train", "--data", tiny["data_file"], "--key", "a"], "not an .npz file")
    _fails(["train", "--data", "bars-and-stripes:17"], "N from 1 to 16")
    _fails(["train", "--test-fraction", 0, "--out", tmp_path / "t"], "need a test split")
    _fails(["train", "--data", tiny["data_file"], "--batch-size", 99], "--batch-size 19")
    # a data file whose name starts with "bars" is a file, not the built-in data set
    _fails(["train", "--data", tiny["data_file"], "--test-data", tmp_path / "wide.npy"], "5 col")
    (tmp_path / "model.npz").write_text("not a model\n")
    _fails(["evaluate", tmp_path / "model.npz"], "it is a text file")
    exact = ["sample", tiny["run"], "--out", tmp_path / "s", "--method", "exact"]
    _fails([*exact, "--max-units", 2], "use --method gibbs")


def test_fit_warnings_are_shown_in_command_line_words():
    shown = []
    show = _commands._CommandLineWarnings("pcd", lambda message, *a, **k: shown.append(message))
    warning = learning.ChainsNotMixing("... method='pt', more sweeps k ...", epoch=7, rhat=1.52)
    show(warning, type(warning), "f.py", 1)
    show(UserWarning("other"), UserWarning, "f.py", 1)
    assert shown[0] == (
        "epoch 7: the persistent chains do not mix (R-hat over 50 sweeps 1.52 > 1.3), so the "
        "training gradients may be biased; try --method pt, a larger --k or a smaller "
        "--learning-rate (docs/diagnostics.md)"
    )
    assert str(shown[1]) == "other"


def test_usage_errors_exit_2(capsys):
    assert cli.main(["train", "--method", "sgd"]) == 2
    assert "invalid choice: 'sgd'" in capsys.readouterr().err
    assert cli.main(["train", "--image-shape", "8by8"]) == 2
    assert "HEIGHTxWIDTH" in capsys.readouterr().err
    assert cli.main([]) == 2
    assert cli.main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_help_imports_neither_jax_nor_arviz():
    """`numpyro-rbm --help` only parses: the heavy libraries load once a command runs."""
    script = (
        "import sys; from numpyro_rbm import cli; code = cli.main(['train', '--help']); "
        "print(code, sorted(m for m in ('jax', 'numpyro', 'arviz', 'matplotlib') "
        "if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr


def test_digits_are_the_default_data():
    """`train` without --data trains on the bundled digits, split 1438 / 359 (the console
    script itself is run end to end, in a subprocess, by the alignment_run fixture)."""
    assert cli.build_parser().parse_args(["train"]).data is None
    assert cli.TRAIN_DEFAULTS["data"] == "digits"
    data = _commands.load_data("digits")
    assert (len(data.train), len(data.test), data.image_shape) == (1438, 359, (8, 8))
    assert data.kind == "binary" and set(np.unique(data.train)) == {0.0, 1.0}


def test_python_dash_m_runs_the_same_main(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["numpyro_rbm", "evaluate", str(tmp_path / "nope")])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("numpyro_rbm", run_name="__main__")
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("numpyro-rbm evaluate: error:")


# --- real-valued tables and alignments ------------------------------------------------------

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
TABLE = os.path.join(EXAMPLES, "data", "measurements.csv")  # examples/cli_data.py wrote them
ALIGNMENT = os.path.join(EXAMPLES, "data", "alignment.fasta")
TINY = ("--hidden", 3, "--epochs", 2, "--chains", 8, "--diagnostic-sweeps", 60)


def _train_run(folder, data, *options):
    run = folder / "run"
    code, out, err = run_cli("train", "--data", data, *TINY, "--out", run, *options)
    assert code == 0, err
    return dict(folder=folder, run=run, out=out, err=err)


@pytest.fixture(scope="module")
def table_run(tmp_path_factory):
    """The CLI trained on the generated real-valued table (Gaussian units inferred)."""
    return _train_run(tmp_path_factory.mktemp("table"), TABLE)


@pytest.fixture(scope="module")
def alignment_run(tmp_path_factory):
    """The installed `numpyro-rbm` console script, in a real subprocess, trained on the
    generated alignment (Potts units inferred), keeping its compiled programs in the folder
    the environment names."""
    script = shutil.which("numpyro-rbm", path=os.path.dirname(sys.executable))
    command = [script] if script else [sys.executable, "-m", "numpyro_rbm"]
    folder = tmp_path_factory.mktemp("alignment")
    run, cache = folder / "run", folder / "cache"
    env = dict(os.environ, NUMPYRO_RBM_COMPILE_CACHE="1", NUMPYRO_RBM_CACHE_DIR=str(cache))
    done = subprocess.run(
        command + ["train", "--data", ALIGNMENT, *map(str, TINY), "--out", str(run)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return dict(run=run, out=done.stdout, err=done.stderr, cache=cache)


def _split(n, seed=0, fraction=0.2):
    """The CLI's train / test rows: a seeded permutation."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = round(fraction * n)
    return order[n_test:], order[:n_test]


def _hidden_states(n):
    return np.array([[(k >> j) & 1 for j in range(n)] for k in range(2**n)], np.float64)


def gaussian_log_p(params, z):
    """log p(z) of a Gaussian-Bernoulli RBM as the mixture over its 2^n_h hidden states,
    p(z) = sum_h p(h) N(z; phi/lambda, 1/lambda) with phi = b + W h (NumPy, from the energy
    of numpyro_rbm.units.Gaussian: sum lambda z^2/2 - b z - z W h - c h)."""
    w, b, c = (
        np.asarray(a, np.float64)
        for a in (params.weights, params.visible_bias, params.hidden_bias)
    )
    lam = np.exp(np.asarray(params.visible_unit_params["log_precision"], np.float64))
    hs = _hidden_states(w.shape[1])
    phi = b + hs @ w.T  # (2^n_h, n_v)
    log_ph = hs @ c + np.sum(phi**2 / (2 * lam), axis=1)
    log_ph -= logsumexp(log_ph)
    mu = phi / lam
    log_n = -0.5 * lam * (z[:, None, :] - mu) ** 2 + 0.5 * np.log(lam / (2 * np.pi))
    return logsumexp(log_ph + log_n.sum(-1), axis=1)


def potts_log_p(params, sequences, q):
    """log p(x) of a Potts-Bernoulli RBM by enumerating its hidden states (NumPy)."""
    w, b, c = (
        np.asarray(a, np.float64)
        for a in (params.weights, params.visible_bias, params.hidden_bias)
    )
    n_sites = b.size // q
    hs = _hidden_states(w.shape[1])
    fields = (b + hs @ w.T).reshape(len(hs), n_sites, q)  # (2^n_h, L, q)
    log_z = logsumexp(hs @ c + logsumexp(fields, axis=2).sum(1))
    picked = fields[:, np.arange(n_sites), sequences].sum(-1).T  # (N, 2^n_h): sum_i phi_i,x_i
    return logsumexp(hs @ c + picked, axis=1) - log_z


def _figures_drawn(run, kind):
    for name in _commands.FIGURES[kind]:
        image = matplotlib.image.imread(run / name)
        assert image.ndim == 3 and min(image.shape[:2]) > 100, name
        assert image[..., :3].std() > 0.05, f"{name} looks blank"


def test_real_valued_table_end_to_end(table_run, tmp_path):
    run, out = table_run["run"], table_run["out"]
    assert "visible units: gaussian (inferred:" in out and "holds real values" in out
    params, meta = rbm_io.load_params(run / "model.npz")
    assert params.visible_units.name == "gaussian" and meta["units"] == "gaussian"
    assert params.weights.shape == (6, 3)
    _figures_drawn(run, "real")
    # The standardisation is the training rows' (not the test rows'), recorded exactly.
    raw = datasets.read_table(TABLE)
    train, test = _split(len(raw))
    std = datasets.Standardization.from_metadata(meta)
    np.testing.assert_array_equal(std.mean, raw[train].mean(0))
    np.testing.assert_array_equal(std.scale, raw[train].std(0))
    np.testing.assert_allclose(std.invert(std.apply(raw)), raw, rtol=1e-6, atol=1e-6)
    # Exact test log-likelihood of the standardised values, and in the data's units.
    log_p = gaussian_log_p(params, (raw[test] - std.mean) / std.scale)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["log_likelihood_method"] == "exact"
    np.testing.assert_allclose(summary["test_log_likelihood"], log_p.mean(), atol=1e-4)
    in_units = log_p.mean() - np.log(std.scale).sum()
    np.testing.assert_allclose(summary["test_log_likelihood_data_units"], in_units, atol=1e-4)
    # evaluate applies the recorded standardisation again, to the split and to a file.
    code, out, err = run_cli("evaluate", run)
    assert code == 0, err
    printed = re.search(r"\(exact\) of measurements test split: (-?\d+\.\d+)", out)
    assert printed and float(printed.group(1)) == pytest.approx(log_p.mean(), abs=2e-4), out
    units = re.search(r"data's units the log-density is (-?\d+\.\d+)", out)
    assert units and float(units.group(1)) == pytest.approx(in_units, abs=2e-4), out
    code, out, err = run_cli("evaluate", run, "--data", TABLE)
    assert code == 0, err
    whole = gaussian_log_p(params, (raw - std.mean) / std.scale).mean()
    assert float(re.search(r": (-?\d+\.\d+) \+-", out).group(1)) == pytest.approx(whole, abs=2e-4)
    # sample writes the model's exact samples in the data's units: the inverse map, exactly.
    n = _commands.FIGURE_SAMPLES  # the size the figures compiled for
    code, out, err = run_cli("sample", run, "-n", n, "--out", tmp_path / "s.csv")
    assert code == 0 and "(exact) in the data's units" in out, err
    written = np.loadtxt(tmp_path / "s.csv", delimiter=",")
    z = np.asarray(_commands._exact_samples(_commands.jax.random.key(0), params, n, 20))
    np.testing.assert_array_equal(written, std.invert(z.astype(np.float32)))
    np.testing.assert_array_equal(std.apply(written), z.astype(np.float32))


def test_alignment_end_to_end(alignment_run, tmp_path):
    run, out = alignment_run["run"], alignment_run["out"]
    assert "visible units: potts (inferred:" in out and "is a FASTA alignment" in out
    assert len(list(alignment_run["cache"].iterdir())) > 10  # the compile cache is on
    report = out.splitlines()[-3:]
    n_figures = len(_commands.FIGURES["alignment"])
    assert report[0] == f"run folder: {run} (model, history.csv/json, {n_figures} figures)"
    assert re.match(r"test log-likelihood \(exact\): -\d+\.\d{4} \+- \d\.\d{4}", report[1])
    assert report[2].startswith("chains: ")
    params, meta = rbm_io.load_params(run / "model.npz")
    q = len(datasets.AMINO_ACIDS)
    assert meta["alphabet"] == datasets.AMINO_ACIDS and meta["units"] == f"potts({q})"
    assert params.weights.shape == (12 * q, 3)
    _figures_drawn(run, "alignment")
    sequences = datasets.read_fasta(ALIGNMENT).sequences
    _, test = _split(len(sequences))
    log_p = potts_log_p(params, sequences[test], q)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["log_likelihood_method"] == "exact"
    np.testing.assert_allclose(summary["test_log_likelihood"], log_p.mean(), atol=1e-3)
    code, out, err = run_cli("evaluate", run)
    assert code == 0, err
    printed = re.search(r"\(exact\) of alignment test split: (-?\d+\.\d+)", out)
    assert printed and float(printed.group(1)) == pytest.approx(log_p.mean(), abs=2e-3), out
    # sample writes FASTA in the recorded alphabet; read back, it is the exact samples.
    n = _commands.FIGURE_SAMPLES
    code, out, err = run_cli("sample", run, "-n", n, "--out", tmp_path / "s")
    assert code == 0 and out.startswith(f"wrote {n} samples (exact) to "), err
    back = datasets.read_fasta(tmp_path / "s.fasta")
    v = _commands._exact_samples(_commands.jax.random.key(0), params, n, 20)
    np.testing.assert_array_equal(back.sequences, params.visible_units.from_layer(v))
    assert back.names[:2] == ["sample_0", "sample_1"]


def test_new_data_types_bad_input(table_run, alignment_run, tmp_path):
    table, aln = table_run["run"], alignment_run["run"]
    (tmp_path / "odd.fasta").write_text(">a\nACDE\n>b\nACBE\n")
    _fails(["train", "--data", tmp_path / "odd.fasta"], "row 1 ('b'), column 2", "'B'", "--alph")
    (tmp_path / "ragged.fasta").write_text(">a\nACDE\n>b\nACD\n")
    _fails(["train", "--data", tmp_path / "ragged.fasta"], "row 1 ('b') has length 3")
    (tmp_path / "cell.csv").write_text("x,y\n1.5,2\n0.5,n/a\n")
    _fails(["train", "--data", tmp_path / "cell.csv"], "line 3 (data row 1), column 1", "'n/a'")
    (tmp_path / "nan.csv").write_text("1.5,2\n0.5,nan\n")
    _fails(["train", "--data", tmp_path / "nan.csv"], "row 1, column 1 (value nan)")
    # unit types that do not match the data
    _fails(["train", "--data", TABLE, "--visible-units", "potts"], "reads FASTA alignments")
    _fails(["train", "--data", ALIGNMENT, "--visible-units", "gaussian"], "is a FASTA alignment")
    _fails(["train", "--data", TABLE, "--visible-units", "bernoulli"], "must be 0 or 1")
    _fails(["train", "--visible-units", "gaussian"], "built-in digits data are binary")
    _fails(["evaluate", aln, "--data", TABLE], "reads FASTA alignments")
    _fails(["evaluate", table, "--data", ALIGNMENT], "is a FASTA alignment")
    np.savetxt(tmp_path / "narrow.csv", np.ones((3, 2)), delimiter=",")
    _fails(["evaluate", table, "--data", tmp_path / "narrow.csv"], "2 columns", "6 visible")
    (tmp_path / "short.fasta").write_text(">a\nACDE\n")
    _fails(["evaluate", aln, "--data", tmp_path / "short.fasta"], "4 columns", "12 sites")
    _fails(["sample", aln, "--out", tmp_path / "s.csv"], "as .fasta")
    _fails(["sample", table, "--out", tmp_path / "s.fasta"], "FASTA holds sequences")


def test_visible_units_inferred_from_the_data(tmp_path):
    cases = {"bits.csv": ([[0, 1], [1, 1]], "bernoulli"), "spins.npy": ([[-1, 1]], "spin")}
    cases["real.npy"] = ([[0, 1], [1, 0.5]], "gaussian")
    for name, (x, expected) in cases.items():
        path = tmp_path / name
        np.savetxt(path, x, delimiter=",") if name.endswith(".csv") else np.save(path, x)
        units, why = _commands.infer_units(str(path))
        assert units == expected, (name, why)
    assert "row 1, column 1 is 0.5" in why
    assert _commands.infer_units(ALIGNMENT)[0] == "potts"
    assert _commands.infer_units("digits")[0] == "bernoulli"


def test_train_defaults_are_fits(tmp_path):
    """The options train shares with fit default to fit's signature (the issue: the command
    used batch 32 and learning rate 0.005 against fit's 10 and 0.01)."""
    import inspect

    from numpyro_rbm.learning import fitting

    args = cli.build_parser().parse_args(["train", "--out", str(tmp_path / "run")])
    config = _commands._train_config(args, str(tmp_path / "run"))
    signature = inspect.signature(fitting.fit).parameters
    for option, name in cli.FIT_OPTIONS.items():
        assert config[option] == signature[name].default, option
    assert (config["float64"], signature["dtype"].default) == (False, "float32")
    assert (config["batch_size"], config["learning_rate"]) == (10, 0.03)
    # the parser leaves them unset, so they cannot drift from fit's
    assert all(cli.TRAIN_DEFAULTS[option] is None for option in cli.FIT_OPTIONS)
