"""A checkpoint that cannot be written (disk full, quota, permissions, the directory replaced by a
file) ends the job with one line `mpidml: error: cannot write checkpoint PATH: REASON` and exit
code 2 on every rank, quickly (no hang), with no temporary file left and the previous checkpoint
intact and loadable.

The failure is made deterministic by a small launcher (written to tmp_path) that wraps h5py.File
in mpidml.checkpoint before running the command line: from the Nth checkpoint write on it either
raises ENOSPC after creating a partial file (as a full disk does), or replaces the checkpoint
directory with a plain file first so the real write fails (NotADirectoryError from HDF5).
The library-level, collective variant (Checkpointer with a Context) is in test_checkpoint_mpi.py.
"""

import errno
import os
import time

import numpy as np
import pytest

from test_cli import MPIDML, run

import mpidml.checkpoint as ck
from mpidml.checkpoint import Checkpointer, list_checkpoints, load_checkpoint

LAUNCHER = r'''
import errno, os, sys
import mpidml.checkpoint as ck

real_file, count = ck.h5py.File, [0]
MODE, FAIL_FROM = os.environ["CKFAIL_MODE"], int(os.environ["CKFAIL_FROM"])

def File(name, mode="r", *args, **kwargs):
    if mode == "w" and str(name).endswith(".tmp"):
        count[0] += 1
        if count[0] >= FAIL_FROM:
            if MODE == "enospc":
                real_file(name, mode, *args, **kwargs).close()  # a partial file, as on a full disk
                raise OSError(errno.ENOSPC, "Unable to synchronously write data")
            if MODE == "notdir":  # the directory replaced by a plain file while the job runs
                d = os.path.dirname(str(name))
                if os.path.isdir(d):
                    os.rename(d, d + ".moved")
                    open(d, "w").close()
    return real_file(name, mode, *args, **kwargs)

ck.h5py.File = File
from mpidml.cli import main
sys.exit(main())
'''

TIMEOUT = 90


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckfail") / "lr.h5"
    run(MPIDML + ["generate", "logistic", "--rows", "3001", "--features", "5", "--seed", "2", "-o", str(path)])
    return path


def train_failing(tmp_path, data, mode, ranks=3, optimizer=("--optimizer", "sgd", "--batch-size", "100")):
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    out = tmp_path / "r"
    t0 = time.monotonic()
    proc = run([MPIDML[0], str(launcher), "train", str(data), *optimizer, "--epochs", "2",
                "--checkpoint-every", "5", "--progress", "none", "--out", str(out)],
               ranks=ranks, check=False, timeout=TIMEOUT, env={"CKFAIL_MODE": mode, "CKFAIL_FROM": "2"})
    return proc, out, time.monotonic() - t0


def the_error_line(proc, root_only=False):
    """The one error line. root_only: the parameter server's rank 0 saves alone, so its error is
    reported as rank 0's ("[rank 0] ") and the job aborted with code 2; with allreduce every
    rank agrees on it (Checkpointer with ctx) and exits 2 by itself: no prefix."""
    # (an aborted job's line may land inside mpirun's abort banner, after a space: find it anywhere)
    lines = [ln[ln.index("mpidml: error:"):] for ln in proc.stderr.splitlines() if "mpidml: error:" in ln]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert lines[0].startswith("mpidml: error: [rank 0] ") == root_only, lines[0]
    return lines[0].replace("mpidml: error: [rank 0] ", "mpidml: error: ")


@pytest.mark.parametrize("ranks", [1, 3])
def test_disk_full_is_one_line_exit_2_and_keeps_the_previous_checkpoint(ranks, data, tmp_path):
    proc, out, elapsed = train_failing(tmp_path, data, "enospc", ranks=ranks)
    line = the_error_line(proc)
    path = out / "checkpoints" / "ckpt-000000010.h5"
    assert line == f"mpidml: error: cannot write checkpoint {path}: {os.strerror(errno.ENOSPC)}", line
    assert elapsed < TIMEOUT
    # No partial or temporary file behind; the step-5 checkpoint is whole and loadable.
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt-000000005.h5"]
    assert load_checkpoint(str(out / "checkpoints" / "ckpt-000000005.h5"), None)["step"] == 5
    assert not (out / "model.h5").exists()


def test_checkpoint_directory_replaced_by_a_file_is_one_line_exit_2(data, tmp_path):
    proc, out, _ = train_failing(tmp_path, data, "notdir", ranks=3)
    line = the_error_line(proc)
    path = out / "checkpoints" / "ckpt-000000010.h5"
    assert line == f"mpidml: error: cannot write checkpoint {path}: {os.strerror(errno.ENOTDIR)}", line
    assert os.path.isfile(out / "checkpoints")
    assert [n for n in os.listdir(out / "checkpoints.moved")] == ["ckpt-000000005.h5"]


def test_lbfgs_final_checkpoint_failure_is_one_line_exit_2(data, tmp_path):
    # L-BFGS checkpoints per iteration (the second write, at iteration 10, fails).
    proc, out, _ = train_failing(tmp_path, data, "enospc", ranks=2,
                                 optimizer=("--optimizer", "lbfgs", "--max-iter", "12"))
    line = the_error_line(proc)
    assert "cannot write checkpoint" in line and os.strerror(errno.ENOSPC) in line, line
    assert all(not n.endswith(".tmp") for n in os.listdir(out / "checkpoints"))


def test_parameter_server_checkpoint_failure_is_one_line_exit_2(data, tmp_path):
    # Rank 0 serves and saves alone: its error aborts the job (no rank waits in a collective).
    proc, out, elapsed = train_failing(tmp_path, data, "enospc", ranks=3, optimizer=(
        "--strategy", "ps", "--ps-mode", "sync", "--optimizer", "sgd", "--batch-size", "100"))
    line = the_error_line(proc, root_only=True)
    assert line == f"mpidml: error: cannot write checkpoint {out / 'checkpoints' / 'ckpt-000000010.h5'}: " \
                   f"{os.strerror(errno.ENOSPC)}", line
    assert elapsed < TIMEOUT
    assert sorted(os.listdir(out / "checkpoints")) == ["ckpt-000000005.h5"]


# -- the Checkpointer alone (one process) ---------------------------------------------------------

def test_failed_write_raises_root_only_error_and_cleans_up(tmp_path, monkeypatch):
    c = Checkpointer(str(tmp_path), 1, {"n_params": 3}, is_root=True, rank=0)
    first = c.save(1, 0, np.arange(3.0), {"opt": {"lr": 0.1}})
    assert first and c.last_path == first
    real = ck.h5py.File

    def full(name, mode="r", *args, **kwargs):
        real(name, mode, *args, **kwargs).close()
        raise OSError(errno.EDQUOT, "Unable to write")

    monkeypatch.setattr(ck.h5py, "File", full)
    with pytest.raises(ck.RootOnlyError, match=r"^cannot write checkpoint .*ckpt-000000002\.h5: Disk quota exceeded$") as e:
        c.save(2, 0, np.arange(3.0), {"opt": {"lr": 0.1}})
    assert e.value.agreed is False  # rank 0 alone knows: the training loop must not mark it agreed
    assert c.last_path == first
    assert [p for _, p in list_checkpoints(str(tmp_path))] == [first]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["ckpt-000000001.h5"]


def test_unwritable_checkpoint_directory_at_start(tmp_path):
    (tmp_path / "checkpoints").write_text("not a directory")
    with pytest.raises(ck.RootOnlyError, match="cannot write checkpoints to .*checkpoints: File exists"):
        Checkpointer(str(tmp_path), 1, {}, is_root=True, rank=0)
    Checkpointer(str(tmp_path), 1, {}, is_root=False, rank=1)  # only the root touches the directory
