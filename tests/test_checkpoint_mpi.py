"""Checkpointer with a Context (mpirun -n 2 or 3): only rank 0 writes, yet a failed write raises
the same agreed ConfigError on every rank (no rank is left waiting), the temporary file is
removed and the previous checkpoint stays loadable."""

import errno
import os
import tempfile

import numpy as np
import pytest
from mpi4py import MPI

import mpidml.checkpoint as ck
from mpidml.checkpoint import Checkpointer, list_checkpoints, load_checkpoint
from mpidml.comm import Context
from mpidml.errors import ConfigError

pytestmark = pytest.mark.mpi


def shared_dir(ctx):
    name = np.zeros(512, dtype=np.uint8)
    if ctx.is_root:
        path = tempfile.mkdtemp(prefix="mpidml-ckpt-").encode()
        name[: len(path)] = np.frombuffer(path, dtype=np.uint8)
    ctx.bcast_array(name)
    return bytes(name).split(b"\0", 1)[0].decode()


def test_failed_write_is_agreed_on_every_rank(monkeypatch):
    ctx = Context(MPI.COMM_WORLD)
    run_dir = shared_dir(ctx)
    c = Checkpointer(run_dir, 5, {"n_params": 4}, ctx.is_root, ctx.rank, ctx=ctx)
    params = np.arange(4.0)
    first = c.save(5, 0, params, {"trainer": {"seed": 1}})
    assert (first is not None) == ctx.is_root
    if ctx.is_root:
        real = ck.h5py.File

        def full(name, mode="r", *args, **kwargs):
            real(name, mode, *args, **kwargs).close()  # a partial file, as on a full disk
            raise OSError(errno.ENOSPC, "Unable to synchronously write data")

        monkeypatch.setattr(ck.h5py, "File", full)
    with pytest.raises(ConfigError) as e:
        c.save(10, 1, params + 1, {"trainer": {"seed": 1}})
    monkeypatch.undo()
    assert getattr(e.value, "agreed", False)
    expect = f"cannot write checkpoint {os.path.join(run_dir, 'checkpoints', 'ckpt-000000010.h5')}: " \
             f"{os.strerror(errno.ENOSPC)}"
    assert str(e.value) == expect
    ctx.barrier()
    assert sorted(os.listdir(os.path.join(run_dir, "checkpoints"))) == ["ckpt-000000005.h5"]
    assert [s for s, _ in list_checkpoints(run_dir)] == [5]
    back = load_checkpoint(os.path.join(run_dir, "checkpoints", "ckpt-000000005.h5"), None)
    np.testing.assert_array_equal(back["params"], params)
    # The job can go on talking: a later collective completes on every rank.
    assert ctx.allreduce_scalar(1.0) == ctx.size
    ctx.barrier()
    if ctx.is_root:
        import shutil

        shutil.rmtree(run_dir)


def test_unusable_directory_at_start_is_agreed_on_every_rank():
    ctx = Context(MPI.COMM_WORLD)
    run_dir = shared_dir(ctx)
    if ctx.is_root:
        with open(os.path.join(run_dir, "checkpoints"), "w") as fh:
            fh.write("a file, not a directory")
    ctx.barrier()
    with pytest.raises(ConfigError, match="cannot write checkpoints to .*checkpoints: File exists") as e:
        Checkpointer(run_dir, 5, {}, ctx.is_root, ctx.rank, ctx=ctx)
    assert getattr(e.value, "agreed", False)
    ctx.barrier()
    if ctx.is_root:
        import shutil

        shutil.rmtree(run_dir)
