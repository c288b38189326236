"""How mpidml fails: every failure ends the whole job quickly, with a message that says what to fix.

Each case launches `mpirun -n 2` as a subprocess with a hard timeout, so a hang
fails the test instead of stalling the suite. Faults are injected through the
test-only MPIDML_FAULT hook (mpidml/faults.py).

Set MPIDML_ERROR_REPORT=path.jsonl to record every bad input tried and the line
it printed (used for the issue's closing note).
"""

import json
import os
import shutil
import time

import h5py
import numpy as np
import pytest

from test_cli import MPIDML, run

FAST = ["--progress", "none"]


def record(case, proc):
    path = os.environ.get("MPIDML_ERROR_REPORT")
    if path:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: error:")]
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": case, "exit": proc.returncode, "printed": lines}) + "\n")


def assert_one_line_error(proc, expect, code=2, case=None):
    record(case or expect, proc)
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: error:")]
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stderr}"
    assert len(errors) == 1, proc.stderr
    assert expect in errors[0], errors[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("fail")
    path = d / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "3001", "--features", "5", "--seed", "2", "-o", str(path)])
    return path


def write_h5(path, **datasets):
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            f.create_dataset(name, data=value)
    return path


# -- expected errors: one line from rank 0, exit code 2 on every rank -------------------------------

def bad_files(tmp):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((20, 3)), (rng.random(20) > 0.5).astype(float)
    nan_x = X.copy()
    nan_x[7, 1] = np.nan
    inf_y = y.copy()
    inf_y[13] = np.inf
    (tmp / "text.h5").write_text("this is not an HDF5 file\n")
    return {
        "missing file": (tmp / "does-not-exist.h5", [], "does not exist"),
        "not HDF5": (tmp / "text.h5", [], "not an HDF5 file"),
        "missing X": (write_h5(tmp / "nox.h5", y=y), [], "'X'"),
        "missing y": (write_h5(tmp / "noy.h5", X=X), [], "'y'"),
        "X not 2-D": (write_h5(tmp / "x1d.h5", X=X[:, 0], y=y), [], "2-D"),
        "y length differs": (write_h5(tmp / "ylen.h5", X=X, y=y[:-1]), [], "19"),
        "non-numeric X": (write_h5(tmp / "str.h5", X=np.array([[b"a", b"b"]] * 20), y=y), [], "has dtype string"),
        "NaN in X": (write_h5(tmp / "nan.h5", X=nan_x, y=y), [], "row 7"),
        "Inf in y": (write_h5(tmp / "inf.h5", X=X, y=inf_y), [], "row 13"),
        "labels not 0/1 for logistic": (write_h5(tmp / "lab.h5", X=X, y=y * 2), [], "label 2 at global row"),
        "labels not integers for softmax": (write_h5(tmp / "labf.h5", X=X, y=y + 0.5), ["--model", "softmax"],
                                            "not"),
        "fewer rows than ranks": (write_h5(tmp / "one.h5", X=X[:1], y=y[:1]), [], "fewer than the 2 ranks"),
        "zero features": (write_h5(tmp / "nofeat.h5", X=np.zeros((20, 0)), y=y), [], "feature"),
    }


BAD_DATA = ["missing file", "not HDF5", "missing X", "missing y", "X not 2-D", "y length differs", "non-numeric X",
            "NaN in X", "Inf in y", "labels not 0/1 for logistic", "labels not integers for softmax",
            "fewer rows than ranks", "zero features"]


@pytest.mark.parametrize("case", BAD_DATA)
def test_bad_data_is_one_clear_line_exit_2(case, tmp_path):
    path, extra, expect = bad_files(tmp_path)[case]
    proc = run(MPIDML + ["train", str(path), "--out", str(tmp_path / "run")] + extra + FAST, ranks=2, check=False,
               timeout=60)
    assert_one_line_error(proc, expect, case=case)


BAD_OPTIONS = [
    ("unknown model", ["--model", "lasso"], "unknown model 'lasso'"),
    ("unknown optimizer", ["--optimizer", "lbgfs"], "did you mean 'lbfgs'"),
    ("unknown strategy", ["--strategy", "ring"], "unknown strategy 'ring'"),
    ("unknown L-BFGS scaling", ["--lbfgs-scaling", "diag"], "unknown lbfgs_scaling 'diag'"),
    ("zero learning rate", ["--lr", "0"], "--lr must be > 0"),
    ("negative learning rate", ["--lr", "-0.1"], "--lr must be > 0"),
    ("negative l2", ["--l2", "-1"], "--l2 must be >= 0"),
    ("zero batch size", ["--batch-size", "0"], "--batch-size must be > 0"),
    ("negative batch size", ["--batch-size", "-5"], "--batch-size must be > 0"),
    ("batch larger than N", ["--optimizer", "sgd", "--batch-size", "5000"], "larger than the dataset (3001 rows)"),
    ("momentum with adam", ["--optimizer", "adam", "--momentum", "0.9"],
     "--momentum applies to --optimizer sgd and gd, not adam (Adam's momentum is --beta1)"),
    ("momentum with lbfgs", ["--momentum", "0.9"], "--momentum applies to --optimizer sgd and gd, not lbfgs"),
]


@pytest.mark.parametrize("case,args,expect", BAD_OPTIONS, ids=[c[0] for c in BAD_OPTIONS])
def test_bad_options_are_one_clear_line_exit_2(case, args, expect, data, tmp_path):
    proc = run(MPIDML + ["train", str(data), "--out", str(tmp_path / "run")] + args + FAST, ranks=2, check=False,
               timeout=60)
    assert_one_line_error(proc, expect, case=case)


def test_toml_syntax_error_names_the_line(data, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('model = "logistic"\nl2 = 1e-4\nlr = = 3\n')
    proc = run(MPIDML + ["train", str(data), "--config", str(cfg), "--out", str(tmp_path / "r")] + FAST, ranks=2,
               check=False, timeout=60)
    assert_one_line_error(proc, "line 3", case="TOML syntax error")


def test_unknown_config_key_suggests_the_closest(data, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('[optim]\nbatchsize = 128\n')
    proc = run(MPIDML + ["train", str(data), "--config", str(cfg), "--out", str(tmp_path / "r")] + FAST, ranks=2,
               check=False, timeout=60)
    assert_one_line_error(proc, "did you mean 'batch_size'", case="unknown config key")


def test_output_directory_problems(data, tmp_path):
    out = tmp_path / "used"
    out.mkdir()
    (out / "old.txt").write_text("x")
    proc = run(MPIDML + ["train", str(data), "--out", str(out)] + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "--overwrite", case="output directory not empty")
    # A path that cannot be created or written, even as root: below a regular file.
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = run(MPIDML + ["train", str(data), "--out", str(blocker / "run")] + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "cannot create run directory", case="output directory not writable")


# -- unexpected exceptions abort the whole job quickly ---------------------------------------------

@pytest.mark.parametrize("fault", ["raise@load:1", "raise@step:1:5", "raise@checkpoint:0:10"])
def test_uncaught_exception_aborts_every_rank(fault, data, tmp_path):
    env = {"MPIDML_FAULT": fault}
    t0 = time.monotonic()
    proc = run(MPIDML + ["train", str(data), "--optimizer", "sgd", "--batch-size", "100", "--epochs", "2",
                         "--checkpoint-every", "5", "--out", str(tmp_path / "r")] + FAST,
               ranks=2, check=False, timeout=30, env=env)
    elapsed = time.monotonic() - t0
    rank = fault.split(":")[1]
    assert proc.returncode != 0
    assert f"[rank {rank}] Traceback" in proc.stderr and f"[rank {rank}] RuntimeError: injected fault" in proc.stderr
    assert elapsed < 30
    if fault.startswith("raise@checkpoint"):
        # The crash inside the write of step 10 left step 5's checkpoint whole and loadable.
        ckpts = sorted(os.listdir(tmp_path / "r" / "checkpoints"))
        assert ckpts[0] == "ckpt-000000005.h5"
        from mpidml.checkpoint import load_checkpoint

        assert load_checkpoint(str(tmp_path / "r" / "checkpoints" / ckpts[0]), None)["step"] == 5


def test_watchdog_aborts_a_stalled_job(data, tmp_path):
    t0 = time.monotonic()
    proc = run(MPIDML + ["train", str(data), "--optimizer", "sgd", "--batch-size", "100", "--epochs", "2",
                         "--timeout", "3", "--out", str(tmp_path / "r")] + FAST,
               ranks=2, check=False, timeout=60, env={"MPIDML_FAULT": "stall@step:1:4"})
    assert proc.returncode != 0
    assert "no training step completed" in proc.stderr and "--timeout 3" in proc.stderr
    assert time.monotonic() - t0 < 30


def test_watchdog_gives_a_cold_compile_its_allowance(data, tmp_path):
    # A --timeout sized for steps must not kill a healthy first run while Numba fills an empty
    # cache (several seconds here); the steps themselves are still watched (test above).
    # (2 s: reading the tiny file must fit in it even on a loaded machine)
    proc = run(MPIDML + ["train", str(data), "--optimizer", "sgd", "--batch-size", "100", "--epochs", "1",
                         "--timeout", "2", "--out", str(tmp_path / "r")] + FAST,
               ranks=2, check=False, timeout=300, env={"NUMBA_CACHE_DIR": str(tmp_path / "cold-cache")})
    assert proc.returncode == 0, proc.stderr
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    # the kernels were compiled in this run (its empty cache now holds them), not loaded:
    # several seconds here, past --timeout (no wall-clock assertion: machines differ)
    assert s["steps"] > 0 and any(n.endswith(".nbi") for _, _, names in os.walk(tmp_path / "cold-cache") for n in names)


FAILED_STARTS = {  # a failure found after the run directory was prepared: (data, extra options, message)
    "NaN in X": ("nan", [], "row 7"),
    "batch larger than N": ("good", ["--optimizer", "sgd", "--batch-size", "5000"], "larger than the dataset"),
}


@pytest.mark.parametrize("case", list(FAILED_STARTS))
@pytest.mark.parametrize("existed", [False, True])
def test_a_run_that_fails_before_its_first_step_leaves_its_out_reusable(case, existed, data, tmp_path):
    which, extra, expect = FAILED_STARTS[case]
    path = data if which == "good" else bad_files(tmp_path)["NaN in X"][0]
    out = tmp_path / "run"
    if existed:
        out.mkdir()
    proc = run(MPIDML + ["train", str(path), "--out", str(out)] + extra + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, expect, case=f"{case}: the run directory is left reusable")
    assert (out.exists() and os.listdir(out) == []) if existed else not out.exists()
    run(MPIDML + ["train", str(data), "--out", str(out)] + FAST, ranks=2, timeout=60)  # the same --out
    assert (out / "model.h5").exists()


def test_resume_finds_the_data_from_another_working_directory(data, tmp_path):
    # A requeued batch job may start elsewhere: config.toml keeps the data file's absolute path.
    shutil.copy(data, tmp_path / "lr.h5")
    args = ["--optimizer", "sgd", "--batch-size", "100", "--epochs", "2", "--checkpoint-every", "10"] + FAST
    proc = run(MPIDML + ["train", "lr.h5", "--out", "part"] + args, ranks=2, check=False, timeout=60,
               cwd=tmp_path, env={"MPIDML_FAULT": "kill@step:1:25"})
    assert proc.returncode != 0 and os.listdir(tmp_path / "part" / "checkpoints")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    run(MPIDML + ["train", "--resume", str(tmp_path / "part")] + FAST, ranks=2, timeout=60, cwd=elsewhere)
    s = json.loads((tmp_path / "part" / "summary.json").read_text())
    assert s["resumed_from"] and s["io"]["path"] == str(tmp_path / "lr.h5")


def test_divergence_stops_with_exit_3_and_names_the_checkpoint(data, tmp_path):
    out = tmp_path / "r"
    proc = run(MPIDML + ["train", str(data), "--model", "linear", "--optimizer", "sgd", "--lr", "1e6",
                         "--batch-size", "100", "--epochs", "3", "--checkpoint-every", "5", "--out", str(out)] + FAST,
               ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "diverged at step", code=3, case="divergence (--lr 1e6)")
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("mpidml: error:")][0]
    assert "loss=" in line and "last good checkpoint: " in line
    ckpt = line.split("last good checkpoint: ")[1].split(" ")[0]
    assert os.path.exists(ckpt) and ckpt.endswith(".h5")


# -- checkpoints and resume --------------------------------------------------------------------------

RESUME_CASES = {  # name: (options, fault, ranks)
    "sgd-momentum": (["--optimizer", "sgd", "--momentum", "0.9", "--batch-size", "100", "--epochs", "3",
                      "--checkpoint-every", "10"], "kill@step:1:45", 2),
    "adam": (["--optimizer", "adam", "--lr", "0.01", "--batch-size", "128", "--epochs", "2",
              "--checkpoint-every", "7"], "kill@step:0:30", 2),
    "lbfgs": (["--optimizer", "lbfgs", "--tol", "1e-12", "--max-iter", "40", "--checkpoint-every", "3"],
              "kill@step:1:8", 2),
    # Parameter server, sync mode: rank 0 serves, ranks 1 and 2 work; a worker dies after round 45.
    "ps-sync-momentum": (["--strategy", "ps", "--ps-mode", "sync", "--optimizer", "sgd", "--momentum", "0.9",
                          "--batch-size", "100", "--epochs", "3", "--checkpoint-every", "10"], "kill@step:2:45", 3),
    # ... and the server itself dies after round 20 (Adam's state is on the server).
    "ps-sync-adam": (["--strategy", "ps", "--ps-mode", "sync", "--optimizer", "adam", "--lr", "0.01",
                      "--batch-size", "128", "--epochs", "2", "--checkpoint-every", "7"], "kill@step:0:20", 3),
}


def coef_of(run_dir):
    with h5py.File(os.path.join(run_dir, "model.h5")) as f:
        return f["coef"][...], f["intercept"][...]


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_killed_run_resumes_to_bitwise_the_same_model(case, data, tmp_path):
    args, kill, ranks = RESUME_CASES[case]
    full, part = tmp_path / "full", tmp_path / "part"
    run(MPIDML + ["train", str(data), "--l2", "1e-3", "--out", str(full)] + args + FAST, ranks=ranks)
    proc = run(MPIDML + ["train", str(data), "--l2", "1e-3", "--out", str(part)] + args + FAST, ranks=ranks,
               check=False, timeout=60, env={"MPIDML_FAULT": kill})
    assert proc.returncode != 0  # a rank was killed with SIGKILL
    assert not (part / "model.h5").exists() and os.listdir(part / "checkpoints")
    run(MPIDML + ["train", "--resume", str(part)] + FAST, ranks=ranks)
    (c1, b1), (c2, b2) = coef_of(full), coef_of(part)
    assert np.array_equal(c1, c2) and np.array_equal(b1, b2)
    s = json.loads((part / "summary.json").read_text())
    assert s["resumed_from"] and s["steps"] == json.loads((full / "summary.json").read_text())["steps"]


def test_ps_checkpoints_are_refused_where_a_resume_could_not_be_exact(data, tmp_path):
    # async/ssp depend on message timing and --servers > 1 splits the state: say so, do not pretend.
    for extra in (["--ps-mode", "async"], ["--ps-mode", "sync", "--servers", "2"]):
        proc = run(MPIDML + ["train", str(data), "--strategy", "ps", "--optimizer", "sgd", "--batch-size", "100",
                             "--checkpoint-every", "5", "--out", str(tmp_path / "r")] + extra + FAST,
                   ranks=3, check=False, timeout=60)
        assert_one_line_error(proc, "--checkpoint-every with --strategy ps needs --ps-mode sync and --servers 1",
                              case=f"ps checkpoints with {' '.join(extra)}")


def test_resume_refuses_other_config_other_data_and_bad_checkpoints(data, tmp_path):
    out = tmp_path / "r"
    run(MPIDML + ["train", str(data), "--optimizer", "sgd", "--batch-size", "500", "--epochs", "2",
                  "--checkpoint-every", "3", "--out", str(out)] + FAST, ranks=2)
    # Another training config.
    proc = run(MPIDML + ["train", "--resume", str(out), "--lr", "0.5"] + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "different training config (lr: 0.1 -> 0.5)", case="resume with another config")
    # Another dataset behind the same name.
    other = tmp_path / "other.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "3001", "--features", "5", "--seed", "99", "-o", str(other)])
    saved = tmp_path / "saved.h5"
    shutil.copy(data, saved)
    try:
        shutil.copy(other, data)
        proc = run(MPIDML + ["train", "--resume", str(out)] + FAST, ranks=2, check=False, timeout=60)
        assert_one_line_error(proc, "different dataset", case="resume with another dataset")
    finally:
        shutil.copy(saved, data)
    # A truncated newest checkpoint.
    newest = sorted((out / "checkpoints").iterdir())[-1]
    newest.write_bytes(newest.read_bytes()[:700])
    proc = run(MPIDML + ["train", "--resume", str(out)] + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "corrupt or truncated", case="resume from a truncated checkpoint")
    # Garbage in place of a checkpoint.
    newest.write_bytes(b"\x89HDF\r\n" + os.urandom(3000))
    proc = run(MPIDML + ["train", "--resume", str(out)] + FAST, ranks=2, check=False, timeout=60)
    assert_one_line_error(proc, "corrupt or truncated", case="resume from a corrupt checkpoint")


def test_lbfgs_that_cannot_leave_its_start_says_why(tmp_path):
    # A feature ~1e200 makes the gradient so large that no step from 0 decreases f: the run
    # ends (exit 0, not converged) with a message that points at the scaling, not at
    # "precision near the optimum", and logs iteration 0 once.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 4))
    X[:, 2] *= 1e200
    path = write_h5(tmp_path / "big.h5", X=X, y=(rng.random(500) < 0.5).astype(float))
    run(MPIDML + ["train", str(path), "--out", str(tmp_path / "r")] + FAST, ranks=2, timeout=60)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert not s["converged"] and s["steps"] == 0
    assert "failed at the starting point" in s["message"] and "try --standardize" in s["message"]
    lines = [json.loads(ln) for ln in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [rec["iter"] for rec in lines] == [0]
