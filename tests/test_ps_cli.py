"""Parameter server end to end: ``mpirun -n P python -m mpidml train --strategy ps`` as a subprocess.

Covers what the in-process MPI tests (1..3 ranks) cannot: 4 ranks, sharded servers with
the same workers as one server, the straggler hook, clean exits for tiny uneven shards,
and the errors a user sees. Every launch has a hard timeout, so a hang fails the test.
"""

import json
import os
import sys

import h5py
import numpy as np
import pytest

from test_cli import MPIDML, run

TIMEOUT = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """1003 rows: 335/334/334 over 3 workers, 502/501 over 2."""
    path = tmp_path_factory.mktemp("psdata") / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "1003", "--features", "6", "--seed", "11", "-o", str(path)])
    return path


def tiny(tmp_path, rows):
    path = tmp_path / f"tiny{rows}.h5"
    rng = np.random.default_rng(rows)
    with h5py.File(path, "w") as f:
        f["X"] = rng.standard_normal((rows, 3))
        f["y"] = (rng.random(rows) < 0.5).astype(np.float64)
    return path


def train(data, out, ranks, *args, env=None):
    proc = run(MPIDML + ["train", str(data), "--model", "logistic", "--l2", "1e-3", "--seed", "5",
                         "--progress", "none", "--out", str(out), *args], ranks=ranks, timeout=TIMEOUT,
               env=env)
    with h5py.File(out / "model.h5") as f:
        params = np.append(f["coef"][...].ravel(), f["intercept"][...])
    return params, json.loads((out / "summary.json").read_text()), proc


def fail(data, out, ranks, *args, env=None):
    proc = run(MPIDML + ["train", str(data), "--out", str(out), *args], ranks=ranks, check=False,
               timeout=TIMEOUT, env=env)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("mpidml: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return errors[0]


def test_sync_on_four_ranks_equals_allreduce(data, tmp_path):
    """Through the command line: the same model.h5 as --strategy allreduce (SGD with momentum)."""
    common = ["--optimizer", "sgd", "--momentum", "0.9", "--lr", "0.1", "--batch-size", "64", "--epochs", "3"]
    ref, s_ar, _ = train(data, tmp_path / "ar", 4, *common)
    params, s, _ = train(data, tmp_path / "ps", 4, "--strategy", "ps", *common)
    np.testing.assert_allclose(params, ref, rtol=1e-12, atol=1e-12 * np.abs(ref).max())
    assert s["strategy"] == "ps" and s["shard_rows"] == [0, 335, 334, 334]
    assert s["steps"] == s_ar["steps"] == 16 * 3 and s["epochs"] == 3
    ps = s["ps"]
    assert ps["mode"] == "sync" and ps["workers"] == 3 and ps["servers"] == 1
    assert [w["rank"] for w in ps["per_worker"]] == [1, 2, 3]
    assert all(w["steps"] == 48 and w["max_staleness"] == 0 for w in ps["per_worker"])
    assert ps["updates"] == 48 and ps["updates_per_s"] > 0 and 0 <= ps["server_busy_fraction"] <= 1
    assert ps["bytes_received"] == 48 * 3 * 8 * (7 + 5) and ps["bytes_sent"] == 47 * 3 * 8 * 7  # last: STOP


def test_in_process_checks_on_four_ranks():
    """test_ps_mpi.py's checks (sync == allreduce for SGD+momentum and Adam, --servers 2 == 1 bitwise,
    async/ssp convergence, ssp bounds, divergence) on 4 ranks, in one launch."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ps_checks.py")
    proc = run([sys.executable, script], ranks=4, timeout=240)
    assert "all 13 checks passed on 4 ranks" in proc.stdout, proc.stdout + proc.stderr


def test_async_with_a_straggler_finishes(data, tmp_path):
    params, s, _ = train(data, tmp_path / "r", 4, "--strategy", "ps", "--ps-mode", "async",
                         "--optimizer", "sgd", "--lr", "0.2", "--batch-size", "60", "--epochs", "1",
                         env={"MPIDML_PS_DELAY": "3:0.01"})
    ps = s["ps"]
    assert np.all(np.isfinite(params))
    # 3 workers, batches of 60 // 3 = 20 rows: ceil(334 / 20) = 17 steps per pass, 51 updates per epoch
    steps = [w["steps"] for w in ps["per_worker"]]
    assert ps["updates"] == sum(steps) == 51 and s["epochs"] == 1
    delays = [w["delay_seconds"] for w in ps["per_worker"]]
    assert delays[0] == delays[1] == 0 and delays[2] >= 0.01 * ps["per_worker"][2]["gradients_sent"]
    # the fast workers did not wait for the slow one (10 ms per step): the straggler got fewer than
    # its 17 of a fair share (sync would give it exactly 17). Not min(steps[:2]): on an oversubscribed
    # machine one fast worker may be scheduled late and find the budget already used by the other.
    assert steps[2] < ps["updates"] / 3


@pytest.mark.parametrize("ranks,args", [
    (4, ["--ps-mode", "sync"]),
    (4, ["--ps-mode", "ssp", "--staleness", "1", "--servers", "2"]),
])
def test_clean_exit_with_tiny_uneven_shards(tmp_path, ranks, args):
    """7 rows over 3 workers (3, 2, 2) or 2 workers (4, 3): every mode ends, nothing left unmatched."""
    data = tiny(tmp_path, 7)
    params, s, proc = train(data, tmp_path / "r", ranks, "--strategy", "ps", "--optimizer", "sgd",
                            "--batch-size", "3", "--epochs", "3", *args)
    assert np.all(np.isfinite(params)) and "warning" not in proc.stderr.lower()
    W = s["ps"]["workers"]
    assert sum(s["shard_rows"]) == 7 and s["shard_rows"].count(0) == ranks - W
    steps = [w["steps"] for w in s["ps"]["per_worker"]]
    if "sync" in args:
        assert steps == [s["steps"]] * W
    else:
        assert sum(steps) == s["steps"] == s["ps"]["updates"]


def test_one_rank_is_a_clear_error(data, tmp_path):
    line = fail(data, tmp_path / "r", 1, "--strategy", "ps", "--optimizer", "sgd")
    assert "--strategy ps needs at least 2 ranks" in line


def test_more_workers_than_rows_is_a_clear_error(tmp_path):
    line = fail(tiny(tmp_path, 2), tmp_path / "r", 4, "--strategy", "ps", "--optimizer", "sgd", "--batch-size", "1")
    assert "tiny2.h5 has 2 row" in line and "3 data-holding ranks" in line


@pytest.mark.parametrize("args,expect", [
    (["--strategy", "ps"], "sgd and adam"),
    (["--strategy", "ps", "--optimizer", "sgd", "--ps-mode", "asynk"], "did you mean 'async'"),
    (["--strategy", "ps", "--optimizer", "sgd", "--servers", "2"], "--servers 2 must be >= 1 and leave"),
    (["--optimizer", "sgd", "--ps-mode", "async"], "need --strategy ps"),
    (["--strategy", "ps", "--optimizer", "sgd", "--shard", "stratified"], "--shard stratified"),
])
def test_bad_ps_options(data, tmp_path, args, expect):
    assert expect in fail(data, tmp_path / "r", 2, *args)


def test_bad_delay_hook_is_a_clear_error(data, tmp_path):
    line = fail(data, tmp_path / "r", 2, "--strategy", "ps", "--optimizer", "sgd",
                env={"MPIDML_PS_DELAY": "0:1"})
    assert "MPIDML_PS_DELAY" in line and "worker rank" in line


def test_async_loss_lines_come_from_every_worker(data, tmp_path):
    # 2 workers and an even --log-every: the lines must not all come from one worker.
    _, s, _ = train(data, tmp_path / "r", 3, "--strategy", "ps", "--ps-mode", "async", "--optimizer", "sgd",
                    "--lr", "0.1", "--batch-size", "50", "--epochs", "2", "--log-every", "4")
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    workers = [x["worker"] for x in lines if "loss" in x and "worker" in x]
    # 2 x 21 steps of 25 rows per epoch = 84 updates in 2 epochs: a line about every 4 updates
    assert set(workers) == {1, 2}, workers
    assert 15 <= len(workers) <= 25, len(workers)


@pytest.mark.parametrize("W,L,T", [(2, 4, 42), (2, 10, 50), (3, 6, 17), (4, 3, 20), (1, 5, 23)])
def test_async_log_schedule_takes_turns(W, L, T):
    from mpidml.parallel.parameter_server import async_log_now

    logged = [(t, me) for t in range(T) for me in range(W) if async_log_now(t, me, W, T, L)]
    assert {me for _, me in logged} == set(range(W))  # every worker's losses are shown
    assert (T - 1, W - 1) in logged  # the last update always
    lw = max(1, L // W)
    assert abs(len(logged) - T // lw) <= 1  # about one line every L updates (T * W / (lw * W))
