"""Matrix factorization through the parameter server (async SGD): end to end with mpirun.

Servers hold the item rows, workers own their users; the result depends on message
timing, so the checks are on quality (held-out RMSE near the noise level, from model.h5
in NumPy) and on the message accounting, not on exact numbers.
"""

import json

import numpy as np
import pytest

from test_cli import MPIDML, run
from test_mf_cli import NOISE, numpy_predict, ratings, read  # noqa: F401  (ratings is a fixture)

PS = ["--model", "mf", "--rank", "3", "--strategy", "ps", "--ps-mode", "async", "--optimizer", "sgd", "--lr", "2",
      "--batch-size", "128", "--epochs", "10", "--l2", "1e-5", "--seed", "1", "--progress", "none"]


@pytest.mark.parametrize("ranks,servers", [(3, 1), (4, 2)])
def test_ps_sgd_reaches_the_noise_level(ratings, tmp_path, ranks, servers):  # noqa: F811
    train, test = ratings
    out = tmp_path / "run"
    run(MPIDML + ["train", str(train), *PS, "--servers", str(servers), "--holdout", str(test), "--out", str(out)],
        ranks=ranks)
    s = json.loads((out / "summary.json").read_text())
    tu, ti, tr = read(test)
    held = np.sqrt(np.mean((tr - numpy_predict(out / "model.h5", tu, ti)) ** 2))
    assert s["holdout_rmse"] == pytest.approx(held, rel=1e-10)
    assert held < 1.2 * NOISE, held
    u, i, r = read(train)
    assert s["rmse"] == pytest.approx(np.sqrt(np.mean((r - numpy_predict(out / "model.h5", u, i)) ** 2)), rel=1e-10)
    ps = s["ps"]
    workers = ranks - servers
    # Every rating was moved to the worker owning its user; servers hold none.
    assert s["shard_rows"][:servers] == [0] * servers and sum(s["shard_rows"]) == 20000
    # Each worker makes ceil(n_w / b) batches per epoch, b = 128 // workers.
    b = 128 // workers
    assert ps["batches"] == sum(-(-n // b) for n in s["shard_rows"][servers:]) * 10
    assert ps["pulls"] == ps["pushes"] and ps["batches"] <= ps["pulls"] <= servers * ps["batches"]


@pytest.mark.parametrize("extra,ranks,message", [
    (["--strategy", "ps", "--ps-mode", "async", "--optimizer", "als"], 3, "--strategy ps trains with --optimizer sgd"),
    (["--strategy", "ps", "--optimizer", "sgd"], 3, "runs --ps-mode async only"),
    (["--strategy", "ps", "--ps-mode", "async", "--optimizer", "sgd"], 1, "--strategy ps needs at least 2 ranks"),
    (["--strategy", "ps", "--ps-mode", "async", "--optimizer", "sgd", "--servers", "3"], 3,
     "--servers 3 must be >= 1 and leave at least one worker"),
])
def test_ps_options_are_one_clear_error(ratings, tmp_path, extra, ranks, message):  # noqa: F811
    train, _ = ratings
    proc = run(MPIDML + ["train", str(train), "--model", "mf", "--rank", "2", *extra, "--out", str(tmp_path / "r")],
               ranks=ranks, check=False)
    assert proc.returncode == 2 and proc.stderr.count(message) == 1, proc.stderr


def test_diverging_sgd_is_exit_code_3_with_one_line(ratings, tmp_path):  # noqa: F811
    train, _ = ratings
    options = list(PS)
    options[options.index("--lr") + 1] = "1e4"
    options[options.index("--epochs") + 1] = "1"
    proc = run(MPIDML + ["train", str(train), *options, "--out", str(tmp_path / "r")], ranks=3, check=False)
    assert proc.returncode == 3 and proc.stderr.count("mf training diverged") == 1, proc.stderr
    assert "RuntimeWarning" not in proc.stderr


def test_bench_mf_prints_json():
    import os
    import sys

    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts", "bench_mf.py")
    proc = run([sys.executable, script, "--users", "50", "--items", "30", "--ratings", "600", "--rank", "2",
                "--iterations", "2", "--numpy-users", "10", "--batch-size", "16"], ranks=2)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ranks"] == 2 and out["ratings"] == 600
    assert out["als"]["reduce_scatter_bytes"] == (50 + 30) * (3 * 4 // 2 + 3) * 8
    assert out["ps"]["pulls"] == out["ps"]["batches"] == -(-600 // 16)
