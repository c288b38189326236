"""MPI tests of the data layer; pass for any number of ranks (1, 2, 3, ...).

Run:  mpirun -n 3 python -m pytest --with-mpi -q tests/test_data_mpi.py
Without --with-mpi (plain pytest) these tests are skipped by pytest-mpi.
The shared directory is a fresh temporary directory made by rank 0; on a
multi-node run set MPIDML_TEST_TMPDIR to a directory on a shared file system.
"""

import os
import shutil
import tempfile

import h5py
import numpy as np
import pytest

from mpidml.data import all_shard_bounds, generate, inspect, read_shard, shard_bounds
from mpidml.errors import DataError


def _world():
    from mpi4py import MPI
    return MPI.COMM_WORLD


@pytest.fixture(scope="module")
def shared_dir():
    comm = _world()
    path = None
    if comm.Get_rank() == 0:
        path = tempfile.mkdtemp(prefix="mpidml-data-", dir=os.environ.get("MPIDML_TEST_TMPDIR"))
    path = comm.bcast(path, root=0)
    yield path
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


def _all_true(comm, flag: bool) -> bool:
    from mpi4py import MPI
    buf = np.array([1 if flag else 0], dtype=np.int32)
    out = np.zeros(1, dtype=np.int32)
    comm.Allreduce(buf, out, op=MPI.MIN)
    return bool(out[0])


def _gather_rows(comm, local: np.ndarray, n_total: int):
    """Gatherv this rank's rows to rank 0 (buffer API); returns the whole array on rank 0."""
    from mpi4py.util.dtlib import from_numpy_dtype
    size = comm.Get_size()
    width = int(np.prod(local.shape[1:], dtype=np.int64))
    off = all_shard_bounds(n_total, size)
    counts = (np.diff(off) * width).astype(np.int64)
    displs = (off[:-1] * width).astype(np.int64)
    mpi_type = from_numpy_dtype(local.dtype)
    full = None
    recv = None
    if comm.Get_rank() == 0:
        full = np.empty((n_total,) + local.shape[1:], dtype=local.dtype)
        recv = [full, counts, displs, mpi_type]
    comm.Gatherv([np.ascontiguousarray(local), mpi_type], recv, root=0)
    return full


def _make(comm, path, **kw):
    # generate() writes on rank 0 only when given comm; the others wait.
    meta = generate(path=path, comm=comm, **kw)
    comm.Barrier()
    return meta


@pytest.mark.mpi
@pytest.mark.parametrize("driver", ["independent", "auto"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_read_shard_matches_serial(shared_dir, driver, dtype):
    comm = _world()
    rank, size = comm.Get_rank(), comm.Get_size()
    path = os.path.join(shared_dir, f"lin_{driver}_{dtype}.h5")
    n, d = 1001, 7
    meta = _make(comm, path, kind="linear", rows=n, features=d, seed=42, dtype=dtype)
    assert meta["written"] == (rank == 0)

    shard = read_shard(path, comm, driver=driver, chunk_rows=64)
    lo, hi = shard_bounds(n, size, rank)
    assert (shard.lo, shard.hi, shard.n_local) == (lo, hi, hi - lo)
    assert shard.n_total == n and shard.n_features == d
    assert shard.driver in ("independent", "mpio-collective")
    if driver == "independent":
        assert shard.driver == "independent"
    with h5py.File(path, "r") as f:
        X_full, y_full = f["X"][...], f["y"][...]
    assert shard.X.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(shard.X, X_full[lo:hi])
    np.testing.assert_array_equal(shard.y, y_full[lo:hi])

    X_all = _gather_rows(comm, shard.X, n)
    y_all = _gather_rows(comm, shard.y, n)
    if rank == 0:
        np.testing.assert_array_equal(X_all, X_full)
        np.testing.assert_array_equal(y_all, y_full)
    comm.Barrier()


@pytest.mark.mpi
def test_read_shard_small_chunks_and_labels(shared_dir):
    comm = _world()
    rank, size = comm.Get_rank(), comm.Get_size()
    path = os.path.join(shared_dir, "soft.h5")
    n = 3 * size + 2  # a few rows per rank, uneven
    _make(comm, path, kind="softmax", rows=n, features=3, classes=4, seed=1)
    shard = read_shard(path, comm, y_dtype=np.int64, chunk_rows=1)
    info = inspect(path)  # metadata on every rank at once
    assert info["n_rows"] == n and info["y_dtype"] == np.int64
    with h5py.File(path, "r") as f:
        X_full, y_full = f["X"][...], f["y"][...]
    lo, hi = shard_bounds(n, size, rank)
    np.testing.assert_array_equal(shard.X, X_full[lo:hi])
    assert shard.y.dtype == np.int64
    np.testing.assert_array_equal(shard.y, y_full[lo:hi])
    y_all = _gather_rows(comm, shard.y, n)
    if rank == 0:
        np.testing.assert_array_equal(y_all, y_full)
    comm.Barrier()


@pytest.mark.mpi
def test_too_few_rows_rejected_everywhere(shared_dir):
    comm = _world()
    size = comm.Get_size()
    path = os.path.join(shared_dir, "tiny.h5")
    n = size - 1  # 0 rows for one rank: rejected by inspect (zero rows)
    if comm.Get_rank() == 0:
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as f:
            f.create_dataset("X", data=rng.standard_normal((n, 2)))
            f.create_dataset("y", data=np.zeros(n))
    comm.Barrier()
    with pytest.raises(DataError) as ei:
        read_shard(path, comm, driver="independent")
    msg = str(ei.value)
    if size == 1:
        assert "zero rows" in msg
        with pytest.raises(DataError, match="zero rows"):
            inspect(path)
    else:
        assert f"{n} rows but there are {size} MPI ranks" in msg
        assert inspect(path)["n_rows"] == n
    comm.Barrier()


@pytest.mark.mpi
def test_nonfinite_reported_by_owning_rank_only(shared_dir):
    comm = _world()
    rank, size = comm.Get_rank(), comm.Get_size()
    path = os.path.join(shared_dir, "nan.h5")
    n = 101
    bad_row = n - 3  # owned by the last rank
    if rank == 0:
        rng = np.random.default_rng(3)
        X = rng.standard_normal((n, 4))
        X[bad_row, 1] = np.nan
        with h5py.File(path, "w") as f:
            f.create_dataset("X", data=X)
            f.create_dataset("y", data=rng.standard_normal(n))
    comm.Barrier()
    lo, hi = shard_bounds(n, size, rank)
    owner = lo <= bad_row < hi
    try:
        read_shard(path, comm, driver="independent", chunk_rows=10)
        raised, msg = False, ""
    except DataError as exc:
        raised, msg = True, str(exc)
    assert raised == owner
    if owner:
        assert f"global row {bad_row}, column 1" in msg
    # the caller agrees on errors collectively: here every rank learns someone failed
    assert not _all_true(comm, not raised)
    comm.Barrier()
