"""End to end through the command line: generate -> mpirun train -> evaluate, with timeouts.

Each mpirun runs as a subprocess with a hard timeout, so a hang fails the test
instead of stalling the suite.
"""

import json
import os
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest

from helpers import mpirun_exe, objective_numpy

MPIDML = [sys.executable, "-m", "mpidml"]
TIMEOUT = 180


def run(args, ranks=None, check=True, timeout=TIMEOUT, cwd=None, env=None):
    """Run a command (under mpirun with `ranks`) with a hard timeout; extra `env` entries added."""
    cmd = list(args)
    if ranks:
        cmd = [mpirun_exe(), "-n", str(ranks), "--oversubscribe"] + cmd
    env = dict(os.environ, **(env or {}))
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_btl", "^ofi")
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def logistic_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "5003", "--features", "8", "--seed", "3", "-o", str(path)])
    return path


@pytest.fixture(scope="module")
def softmax_h5(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "sm.h5"
    run(MPIDML + ["generate", "softmax", "--rows", "3001", "--features", "6", "--classes", "4", "-o", str(path)])
    return path


def test_train_on_two_ranks_writes_a_complete_run(logistic_h5, tmp_path):
    out = tmp_path / "run"
    proc = run(MPIDML + ["train", str(logistic_h5), "--model", "logistic", "--optimizer", "lbfgs", "--l2", "1e-3",
                         "--tol", "1e-10", "--out", str(out)], ranks=2)
    printed = json.loads(proc.stdout.strip().splitlines()[-1])
    for name in ("config.toml", "metrics.jsonl", "summary.json", "model.h5"):
        assert (out / name).is_file(), name
    s = json.loads((out / "summary.json").read_text())
    assert s["ranks"] == 2 and s["shard_rows"] == [2502, 2501] and len(s["hostnames"]) == 2
    assert s["io"]["driver"] in ("independent", "mpio-collective")
    assert set(s["time"]) >= {"wall", "io", "compute", "comm", "other"}
    assert s["versions"]["numpy"] == np.__version__
    assert s["converged"] is True and printed["objective"] == s["objective"]
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["iter"] == 0 and lines[-1]["loss"] <= lines[0]["loss"]

    # The model file follows scikit-learn's convention and its objective checks out in NumPy.
    with h5py.File(out / "model.h5") as f:
        coef, intercept = f["coef"][...], f["intercept"][...]
        assert f.attrs["model"] == "logistic"
    with h5py.File(logistic_h5) as f:
        X, y = f["X"][...], f["y"][...]
    assert coef.shape == (1, 8) and intercept.shape == (1,)
    f_np = objective_numpy("logistic", X, y, coef, intercept, 1e-3)
    assert abs(f_np - s["objective"]) <= 1e-12 * abs(f_np)
    acc = np.mean(((X @ coef.T)[:, 0] + intercept[0] > 0) == (y == 1))
    assert abs(acc - s["accuracy"]) < 1e-12

    # evaluate on 1 and 3 ranks gives the same objective and accuracy.
    for ranks in (None, 3):
        ev = json.loads(run(MPIDML + ["evaluate", str(out / "model.h5"), str(logistic_h5)], ranks=ranks).stdout)
        assert abs(ev["objective"] - s["objective"]) <= 1e-12 * abs(s["objective"])
        assert ev["accuracy"] == pytest.approx(s["accuracy"], abs=1e-15)
        assert sum(ev["class_counts"]) == 5003


def test_step_loop_option_end_to_end(logistic_h5, tmp_path):
    """SGD on 2 ranks: the compiled step loop by default, the Python loop with --step-loop python,
    the same model.h5 bits either way; summary.json says which ran and why; metrics are logged."""
    coefs, summaries = [], []
    for loop in ("auto", "python"):
        out = tmp_path / loop
        run(MPIDML + ["train", str(logistic_h5), "--optimizer", "sgd", "--momentum", "0.9", "--batch-size", "256",
                      "--epochs", "2", "--step-loop", loop, "--out", str(out)], ranks=2)
        summaries.append(json.loads((out / "summary.json").read_text()))
        with h5py.File(out / "model.h5") as f:
            coefs.append((f["coef"][...], f["intercept"][...]))
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert lines[-1]["step"] == summaries[-1]["steps"] == 40 and "accuracy" in lines[-1]
    assert summaries[0]["step_loop"] == {"loop": "compiled", "python_because": None}
    assert summaries[1]["step_loop"] == {"loop": "python", "python_because": "--step-loop python"}
    assert np.array_equal(coefs[0][0], coefs[1][0]) and np.array_equal(coefs[0][1], coefs[1][1])
    assert summaries[0]["objective"] == summaries[1]["objective"]
    assert summaries[0]["config_hash"] == summaries[1]["config_hash"]  # a run-only option
    # both loops summed each step through the node's shared memory (2 ranks on one node)
    assert summaries[0]["comm"]["reduction"] == summaries[1]["comm"]["reduction"] == "shared memory"
    out = tmp_path / "mpi"
    run(MPIDML + ["train", str(logistic_h5), "--optimizer", "sgd", "--momentum", "0.9", "--batch-size", "256",
                  "--epochs", "2", "--reduction", "mpi", "--out", str(out)], ranks=2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["comm"]["reduction"] == "mpi" and summary["comm"]["mpi_because"] == "--reduction mpi"
    assert summary["config_hash"] == summaries[0]["config_hash"]  # run-only: checkpoints resume either way
    with h5py.File(out / "model.h5") as f:  # the same sums in another order: the same model to rounding
        np.testing.assert_allclose(f["coef"][...], coefs[0][0], rtol=1e-9, atol=1e-12)
    proc = run(MPIDML + ["train", str(logistic_h5), "--optimizer", "sgd", "--step-loop", "fast",
                         "--out", str(tmp_path / "bad")], ranks=2, check=False)
    assert proc.returncode == 2 and "step_loop" in proc.stderr


def test_config_file_and_cli_override(logistic_h5, tmp_path):
    cfg = tmp_path / "run.toml"
    cfg.write_text('model = "logistic"\nl2 = 0.01\n\n[optim]\noptimizer = "sgd"\nlr = 0.3\nbatch_size = 500\nepochs = 2\n')
    out = tmp_path / "run"
    run(MPIDML + ["train", str(logistic_h5), "--config", str(cfg), "--epochs", "3", "--out", str(out)], ranks=2)
    import tomllib

    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["optimizer"] == "sgd" and resolved["lr"] == 0.3 and resolved["epochs"] == 3
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 3 * 11 and s["epochs"] == 3
    # The resolved config reproduces the run exactly.
    out2 = tmp_path / "again"
    run(MPIDML + ["train", "--config", str(out / "config.toml"), "--out", str(out2)], ranks=2)
    s2 = json.loads((out2 / "summary.json").read_text())
    assert s2["objective"] == s["objective"]


def test_softmax_on_three_ranks_equals_one_rank(softmax_h5, tmp_path):
    results = []
    for ranks in (1, 3):
        out = tmp_path / f"r{ranks}"
        run(MPIDML + ["train", str(softmax_h5), "--model", "softmax", "--optimizer", "sgd", "--momentum", "0.9",
                      "--batch-size", "256", "--epochs", "2", "--lr", "0.1", "--out", str(out)], ranks=ranks)
        with h5py.File(out / "model.h5") as f:
            results.append(f["coef"][...])
            assert f["coef"].shape == (4, 6)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("args,expect", [
    (["--model", "lasso"], "unknown model 'lasso'"),
    (["--optimizer", "sgdd"], "did you mean 'sgd'"),
    (["--lr", "-1", "--optimizer", "sgd"], "--lr must be > 0"),
    (["--batch-size", "100000", "--optimizer", "sgd"], "larger than the dataset"),
    (["--ftol=-1e-9"], "--ftol must be in [0, 1)"),
    # An argparse error: every rank exits 2, and rank 0's line still reaches the user.
    (["--ftol", "-1e-9"], "argument --ftol: expected one argument"),
])
def test_bad_options_fail_with_one_line_on_every_rank(logistic_h5, tmp_path, args, expect):
    proc = run(MPIDML + ["train", str(logistic_h5), "--out", str(tmp_path / "r")] + args, ranks=2, check=False)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mpidml: error:")]
    assert len(errors) == 1 and expect in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_file_and_labels_errors(logistic_h5, softmax_h5, tmp_path):
    proc = run(MPIDML + ["train", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "a")], ranks=2, check=False)
    assert proc.returncode == 2 and "nope.h5" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(MPIDML + ["train", str(softmax_h5), "--model", "logistic", "--out", str(tmp_path / "b")], ranks=2,
               check=False)
    assert proc.returncode == 2 and "not valid for logistic" in proc.stderr


def test_out_dir_not_empty_needs_overwrite(logistic_h5, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "something").write_text("x")
    proc = run(MPIDML + ["train", str(logistic_h5), "--out", str(out)], ranks=2, check=False)
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    run(MPIDML + ["train", str(logistic_h5), "--out", str(out), "--overwrite", "--max-iter", "5"], ranks=2)
    assert (out / "summary.json").is_file()


def test_info_reports_versions_mpi_and_threads():
    info = json.loads(run(MPIDML + ["info", "--threads", "2"]).stdout)
    assert info["versions"]["mpi4py"] and "h5py_mpi" in info
    assert info["threads"]["NUMBA_NUM_THREADS"] == "2" and info["threads"]["numba"] == 2
    hp = info["huge_pages"]
    try:  # the kernel's own setting, as the file shows it
        text = open("/sys/kernel/mm/transparent_hugepage/enabled").read()
        assert hp["transparent_hugepage"] == text[text.index("[") + 1:text.index("]")]
    except OSError:
        assert hp["transparent_hugepage"] is None
    assert hp["numpy_madvise_hugepage"] in (True, False, None)


def test_info_reports_the_kernels_cpu_dependent_variants():
    """`mpidml info` names the CPU the kernels compile for and the variants picked for it
    (kernels.cpu_choices); NUMBA_CPU_NAME, which changes the compiled code, changes them too."""
    import platform

    from llvmlite import binding

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    host = json.loads(run(MPIDML + ["info"]).stdout)["kernels"]
    assert host["cpu"] == (os.environ.get("NUMBA_CPU_NAME") or binding.get_host_cpu_name())
    want = {"znver3": ("l1", "uint32"), "znver4": ("l2" if x86 else "l1", "uint32"),
            "sapphirerapids": ("l2", "uint64") if x86 else ("l1", "uint32")}
    for name, (prefetch, rounds) in want.items():
        k = json.loads(run(MPIDML + ["info"], env={"NUMBA_CPU_NAME": name}).stdout)["kernels"]
        assert (k["cpu"], k["stream_prefetch"], k["plan_rounds"]) == (name, prefetch, rounds), k
        assert k["avx512_registers"] == host["avx512_registers"]  # from the features, not the name


def test_linear_on_two_ranks_recovers_true_coefficients(tmp_path):
    data = tmp_path / "lin.h5"
    run(MPIDML + ["generate", "linear", "--rows", "20000", "--features", "5", "--noise", "0.01", "-o", str(data)])
    run(MPIDML + ["train", str(data), "--model", "linear", "--l2", "0", "--out", str(tmp_path / "r")], ranks=2)
    with h5py.File(tmp_path / "r" / "model.h5") as f, h5py.File(data) as g:
        np.testing.assert_allclose(f["coef"][...], g["true_coef"][...], atol=1e-3)
    s = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert s["r2"] > 0.99
    assert set(s["huge_pages"]) == {"transparent_hugepage", "numpy_madvise_hugepage", "large_arrays_get_huge_pages"}
    assert s["kernels"] == json.loads(run(MPIDML + ["info"]).stdout)["kernels"]  # the same CPU, the same variants


def test_progress_bar_on_a_terminal_and_log_lines_otherwise(logistic_h5, tmp_path):
    """rank 0 draws a bar when the user's stderr is a terminal (here a pty from `script`)."""
    import shlex

    args = MPIDML + ["train", str(logistic_h5), "--optimizer", "sgd", "--batch-size", "500", "--epochs", "2"]
    inner = " ".join(shlex.quote(a) for a in [mpirun_exe(), "-n", "2", "--oversubscribe"] + args
                     + ["--out", str(tmp_path / "tty")])
    typescript = tmp_path / "typescript"
    run(["script", "-qec", inner, str(typescript)])
    screen = typescript.read_bytes().decode(errors="replace")  # keep the \r of the redrawn bar
    assert "[####" in screen and "\r[" in screen and "22/22" in screen
    piped = run(args + ["--out", str(tmp_path / "pipe")], ranks=2)
    assert "[####" not in piped.stderr and "step 22  epoch 2.00" in piped.stderr
    assert "[rank 1]" not in piped.stderr  # other ranks are quiet without --verbose


def test_ftol_stops_lbfgs_on_a_small_relative_reduction(logistic_h5, tmp_path):
    """--ftol is SciPy's rule: stop once (f_old - f) / max(|f_old|, |f|, 1) <= ftol."""
    runs = {}
    for name, extra in (("gtol", []), ("ftol", ["--ftol", "1e-6"])):
        out = tmp_path / name
        run(MPIDML + ["train", str(logistic_h5), "--optimizer", "lbfgs", "--tol", "1e-12", "--l2", "1e-3",
                      "--out", str(out)] + extra, ranks=2)
        runs[name] = (json.loads((out / "summary.json").read_text()),
                      [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()])
    (s_g, _), (s_f, trace) = runs["gtol"], runs["ftol"]
    assert "relative reduction" in s_f["message"] and s_f["steps"] < s_g["steps"]
    losses = [r["loss"] for r in trace if "loss" in r]
    # It stopped at the first iteration whose relative reduction was <= 1e-6, not before.
    red = [(a - b) / max(abs(a), abs(b), 1.0) for a, b in zip(losses, losses[1:])]
    assert red[-1] <= 1e-6 and all(r > 1e-6 for r in red[:-1]), red
    # ... which here is already close to the optimum the gradient rule reaches.
    assert 0 <= (s_f["objective"] - s_g["objective"]) / s_g["objective"] < 1e-5


@pytest.mark.parametrize("model,optimizer", [("logistic", "lbfgs"), ("softmax", "lbfgs"), ("logistic", "sgd"),
                                             ("logistic", "adam"), ("mlp", "adam"), ("csr-logistic", "sgd")])
def test_cold_cache_each_kernel_compiled_by_one_rank(tmp_path, model, optimizer):
    """With an empty Numba cache, each kernel is compiled and saved by one rank only: rank 0 the
    loss/gradient kernel, rank 1 the rest at the same time; then each loads the other's.

    softmax with 10 classes compiles the kernel's vector path; every rank calling a compiled
    function before the warm-up (softmax.work_size once was one) shows up as a file rank 1 saved.
    sgd / adam: the mini-batch loop's kernels (batch plan, gradient finish, the optimizers' steps).
    mlp: its forward pass serves both the loss kernel and the predictions (so its evaluation
    compiles with the loss kernel); csr-logistic: the CSR kernels. Whether the groups share a
    function is timing-dependent here; test_warmup_groups checks it deterministically.
    """
    data = tmp_path / f"{model}.h5"
    model_args = ["--model", model]
    if model == "csr-logistic":
        from mpidml.data import write_csr
        from sparse_helpers import sparse_problem

        A, y = sparse_problem("logistic", n=2003, d=300, density=0.03, seed=4)
        write_csr(data, A.indptr, A.indices, A.data, y, A.shape[1])
        model_args = ["--model", "logistic"]
    else:
        extra = ["--classes", "10"] if model == "softmax" else ["--classes", "3"] if model == "mlp" else []
        run(MPIDML + ["generate", "softmax" if model == "mlp" else model, "--rows", "2003", "--features", "16",
                      *extra, "-o", str(data)])
        if model == "mlp":
            model_args += ["--hidden", "8"]
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    opt_args = ["--max-iter", "2"] if optimizer == "lbfgs" else ["--epochs", "2", "--batch-size", "256", "--lr", "0.01"]
    proc = run([mpirun_exe(), "-n", "2", "--oversubscribe", "--tag-output", "-x", "NUMBA_CACHE_DIR", "-x",
                "NUMBA_DEBUG_CACHE"] + MPIDML + ["train", str(data), *model_args, "--optimizer", optimizer,
                                                 *opt_args, "--out", str(tmp_path / "run"), "--progress", "none"],
               env={"NUMBA_CACHE_DIR": str(cache), "NUMBA_DEBUG_CACHE": "1"}, timeout=300)
    saved = _saved_by_rank(proc)
    assert saved.get(0) and saved.get(1), f"a rank saved nothing (no split, or the cache was not cold): {saved}"
    _assert_no_file_saved_twice(saved)


def _saved_by_rank(proc) -> dict:
    """{rank: [cache file names it saved]} from a --tag-output run with NUMBA_DEBUG_CACHE=1."""
    saved = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"\[\d+,(\d+)\]<std...>:\s*\[cache\] data saved to '([^']+)'", line)
        if m:
            saved.setdefault(int(m.group(1)), []).append(os.path.basename(m.group(2)))
    return saved


def _assert_no_file_saved_twice(saved):
    both = sorted({f for r, files in saved.items() for f in files
                   if any(f in other for q, other in saved.items() if q != r)})
    assert not both, f"compiled by more than one rank (a race to save): {both}"
    assert all(len(set(files)) == len(files) for files in saved.values()), saved


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_cold_cache_evaluate_and_predict_compile_each_kernel_on_one_rank(tmp_path, model):
    """`mpidml evaluate` and `mpidml predict` on a cold cache: no kernel compiled by two ranks."""
    data = tmp_path / f"{model}.h5"
    extra = ["--classes", "10"] if model == "softmax" else []
    run(MPIDML + ["generate", model, "--rows", "2003", "--features", "16", *extra, "-o", str(data)])
    out = tmp_path / "run"
    run(MPIDML + ["train", str(data), "--model", model, "--max-iter", "2", "--out", str(out), "--progress", "none"])
    tagged = [mpirun_exe(), "-n", "2", "--oversubscribe", "--tag-output", "-x", "NUMBA_CACHE_DIR", "-x",
              "NUMBA_DEBUG_CACHE"]
    for name, args in (("evaluate", [str(out / "model.h5"), str(data)]),
                       ("predict", [str(out / "model.h5"), str(data), "-o", str(tmp_path / "pred.h5")])):
        cache = tmp_path / f"cache-{name}"
        cache.mkdir()
        proc = run(tagged + MPIDML + [name, *args], env={"NUMBA_CACHE_DIR": str(cache), "NUMBA_DEBUG_CACHE": "1"},
                   timeout=300)
        saved = _saved_by_rank(proc)
        assert saved.get(0), f"{name}: rank 0 saved nothing (the cache was not cold?): {saved}"
        _assert_no_file_saved_twice(saved)
