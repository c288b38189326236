"""Parallel HDF5 for real: h5py built against MPI (the .venv-mpio venv).

scripts/test.sh builds .venv-mpio with scripts/install-parallel-hdf5.sh (mpi4py and h5py compiled
against Debian's Open MPI and parallel HDF5) and runs this file with it: serially (the tests that
launch `mpirun` themselves, with timeouts) and under /usr/bin/mpirun on 2 and 3 ranks (the tests
marked mpi). In an interpreter whose h5py has no MPI support every test here is skipped.

The checks look at what really happened, not at what mpidml says: the file object's driver is
'mpio', the transfer property list asks for collective transfers, and HDF5's own record of the
last transfer (H5Pget_mpio_actual_io_mode) says the read or write was collective.
"""

import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import pytest

from mpidml.data import convert, generate, h5py_has_mpi, read_shard, shard_bounds
from mpidml.data import hdf5 as hdf5_mod
from mpidml.data import writer as writer_mod

pytestmark = pytest.mark.skipif(
    not h5py_has_mpi(),
    reason="needs h5py built with MPI: scripts/test.sh runs this file with .venv-mpio "
           "(scripts/install-parallel-hdf5.sh)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = os.environ.get("MPIDML_MPIO_MPIRUN", "/usr/bin/mpirun")
MPIDML = [sys.executable, "-m", "mpidml"]
TIMEOUT = 240

# H5D_mpio_actual_io_mode_t
NO_COLLECTIVE, CHUNK_COLLECTIVE, CONTIGUOUS_COLLECTIVE = 0, 2, 4


def _libhdf5():
    """The libhdf5 this h5py is linked against (already loaded: ctypes shares its state)."""
    with open("/proc/self/maps") as fh:
        for line in fh:
            path = line.split()[-1]
            if re.search(r"/libhdf5(_openmpi|_mpich)?\.so", path):
                lib = ctypes.CDLL(path)
                lib.H5Pget_mpio_actual_io_mode.argtypes = [ctypes.c_int64, ctypes.POINTER(ctypes.c_int)]
                lib.H5Pget_mpio_no_collective_cause.argtypes = [
                    ctypes.c_int64, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32)]
                return lib
    pytest.fail("libhdf5 is not mapped into this process")


def actual_io_mode(dxpl) -> tuple[int, int, int]:
    """(actual io mode, local and global no-collective cause) of the last transfer with dxpl."""
    lib = _libhdf5()
    mode, local, glob = ctypes.c_int(-1), ctypes.c_uint32(0), ctypes.c_uint32(0)
    assert lib.H5Pget_mpio_actual_io_mode(dxpl.id, ctypes.byref(mode)) >= 0
    assert lib.H5Pget_mpio_no_collective_cause(dxpl.id, ctypes.byref(local), ctypes.byref(glob)) >= 0
    return mode.value, local.value, glob.value


def spy_on_files(monkeypatch):
    """Record the driver of every h5py.File opened with driver='mpio', as it is opened.

    (Asked at open time: taking a new reference to the file id, as ``dset.file`` does, between
    collective writes hangs the next collective write with HDF5 1.10.)
    """
    opened = []
    real_file = h5py.File

    def spy_file(*args, **kw):
        f = real_file(*args, **kw)
        if kw.get("driver") == "mpio":
            opened.append(f.driver)
        return f

    monkeypatch.setattr(h5py, "File", spy_file)
    return opened


def run(cmd, timeout=TIMEOUT):
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def mpirun(n, args):
    return run([MPIRUN, "-n", str(n), "--oversubscribe"] + list(args))


def last_json(proc):
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_file_data(a, b, names=("X", "y", "true_coef", "true_intercept")):
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for k in names:
            if k not in fa:
                continue
            assert fa[k].dtype == fb[k].dtype, k
            np.testing.assert_array_equal(fa[k][...], fb[k][...], err_msg=k)
        assert dict(fa.attrs) == dict(fb.attrs)


# --------------------------------------------------------------------------- under mpirun


def _world():
    from mpi4py import MPI
    return MPI.COMM_WORLD


@pytest.fixture(scope="module")
def shared_dir():
    if "--with-mpi" not in sys.argv:  # a serial run collects the module too
        path = tempfile.mkdtemp(prefix="mpidml-mpio-")
        yield path
        shutil.rmtree(path, ignore_errors=True)
        return
    comm = _world()
    path = tempfile.mkdtemp(prefix="mpidml-mpio-") if comm.Get_rank() == 0 else None
    path = comm.bcast(path, root=0)
    yield path
    comm.Barrier()
    if comm.Get_rank() == 0:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.mpi
@pytest.mark.parametrize("layout,chunk_size,expect_mode", [
    ("contiguous", None, CONTIGUOUS_COLLECTIVE), ("chunked", 100, CHUNK_COLLECTIVE)])
def test_read_shard_reads_collectively_through_mpio(shared_dir, monkeypatch, layout, chunk_size, expect_mode):
    comm = _world()
    rank, size = comm.Get_rank(), comm.Get_size()
    path = os.path.join(shared_dir, f"read_{layout}.h5")
    n, d = 1001, 5
    meta = generate("linear", path, rows=n, features=d, seed=7, comm=comm, write="collective",
                    layout=layout, chunk_size=chunk_size)
    assert meta["write"] == "collective" and meta["written"]

    reads = []
    real_file, real_read = h5py.File, hdf5_mod._read_rows

    def spy_read(dset, dest, start, count, dxpl):
        real_read(dset, dest, start, count, dxpl)
        reads.append((dset.name, dxpl.get_dxpl_mpio(), count) + actual_io_mode(dxpl))

    opened = spy_on_files(monkeypatch)
    monkeypatch.setattr(hdf5_mod, "_read_rows", spy_read)
    shard = read_shard(path, comm, driver="auto", chunk_rows=200)
    monkeypatch.undo()

    assert shard.driver == "mpio-collective"
    assert opened == ["mpio"]  # the data file, opened with the MPI-IO driver on every rank
    lo, hi = shard_bounds(n, size, rank)
    assert [r[0] for r in reads].count("/X") == -(-shard_bounds(n, size, 0)[1] // 200)
    for name, xfer, count, mode, local_cause, global_cause in reads:
        assert xfer == h5py.h5fd.MPIO_COLLECTIVE, name
        if count:  # HDF5 really did a collective transfer, and nothing broke it
            assert mode == expect_mode, (name, mode, local_cause, global_cause)
            assert local_cause == 0 and global_cause == 0
    with real_file(path, "r") as f:
        np.testing.assert_array_equal(shard.X, f["X"][lo:hi])
        np.testing.assert_array_equal(shard.y, f["y"][lo:hi])
        assert (f["X"].chunks is None) == (layout == "contiguous")
    comm.Barrier()


@pytest.mark.mpi
def test_independent_driver_gives_the_same_rows(shared_dir):
    comm = _world()
    path = os.path.join(shared_dir, "indep.h5")
    generate("softmax", path, rows=503, features=4, classes=3, seed=2, comm=comm, write="collective")
    a = read_shard(path, comm, driver="mpio", y_dtype=np.int64, chunk_rows=64)
    b = read_shard(path, comm, driver="independent", y_dtype=np.int64, chunk_rows=64)
    assert (a.driver, b.driver) == ("mpio-collective", "independent")
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    comm.Barrier()


@pytest.mark.mpi
@pytest.mark.parametrize("layout,chunk_size", [("contiguous", None), ("chunked", 4096)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_collective_generate_equals_serial(shared_dir, monkeypatch, layout, chunk_size, dtype):
    comm = _world()
    rank = comm.Get_rank()
    par = os.path.join(shared_dir, f"gen_par_{layout}_{dtype}.h5")
    ser = os.path.join(shared_dir, f"gen_ser_{layout}_{dtype}.h5")
    # Several stream blocks (and a short last one) so ranks write different blocks.
    kw = dict(rows=2 * 65536 + 321, features=8, seed=11, dtype=dtype, layout=layout,
              chunk_size=chunk_size, chunk_rows=5000)
    writes = []
    real_write = writer_mod.write_rows

    def spy_write(dset, start, arr, dxpl=None):
        real_write(dset, start, arr, dxpl)
        if arr is not None and len(arr):
            writes.append((dxpl.get_dxpl_mpio(),) + actual_io_mode(dxpl))

    gen_mod = sys.modules["mpidml.data.generate"]  # the module (mpidml.data.generate is the function)
    monkeypatch.setattr(gen_mod, "write_rows", spy_write)
    opened = spy_on_files(monkeypatch)
    meta = generate("logistic", par, comm=comm, write="collective", **kw)
    monkeypatch.undo()
    assert meta["written"] and meta["write"] == "collective" and meta["layout"] == layout
    assert opened == ["mpio"] and writes
    for xfer, mode, local_cause, global_cause in writes:
        assert xfer == h5py.h5fd.MPIO_COLLECTIVE
        assert mode in (CHUNK_COLLECTIVE, CONTIGUOUS_COLLECTIVE) and local_cause == global_cause == 0
    if rank == 0:
        generate("logistic", ser, **kw)  # serial reference, no MPI-IO
        same_file_data(par, ser)
        with h5py.File(par, "r") as f:
            assert f["X"].chunks == (None if chunk_size is None else (chunk_size, 8))
        assert not [p for p in os.listdir(shared_dir) if ".tmp" in p]
    comm.Barrier()


@pytest.mark.mpi
@pytest.mark.parametrize("kind", ["npy", "npz", "npz_deflated"])
def test_collective_convert_equals_serial(shared_dir, kind):
    comm = _world()
    rank = comm.Get_rank()
    src = os.path.join(shared_dir, f"in_{kind}" + (".npy" if kind == "npy" else ".npz"))
    ysrc = os.path.join(shared_dir, "in_y.npy") if kind == "npy" else None
    if rank == 0:
        rng = np.random.default_rng(5)
        X = rng.standard_normal((1237, 6))
        y = rng.integers(0, 4, 1237) if kind != "npz_deflated" else rng.standard_normal(1237)
        if kind == "npy":
            np.save(src, X)
            np.save(ysrc, y)
        elif kind == "npz":
            np.savez(src, X=X, y=y)
        else:
            np.savez_compressed(src, X=X, y=y)
    comm.Barrier()
    par = os.path.join(shared_dir, f"conv_par_{kind}.h5")
    info = convert(src, par, y_src=ysrc, comm=comm, write="collective", chunk_rows=100, overwrite=True)
    assert info["write"] == "collective" and info["written"]
    if rank == 0:
        ser = os.path.join(shared_dir, f"conv_ser_{kind}.h5")
        sinfo = convert(src, ser, y_src=ysrc, overwrite=True)
        assert sinfo["y_dtype"] == info["y_dtype"] == ("float64" if kind == "npz_deflated" else "int64")
        same_file_data(par, ser)
    comm.Barrier()


# --------------------------------------------------------------------------- end to end (serial run)


def test_training_end_to_end_reads_with_mpio(tmp_path):
    """mpirun (Debian's) -n 2: collective generate, then train; summary.json says mpio-collective."""
    data = tmp_path / "lr.h5"
    gen = last_json(mpirun(2, MPIDML + ["generate", "logistic", "--rows", "6001", "--features", "7",
                                       "--seed", "4", "-o", str(data)]))
    assert gen["write"] == "collective" and gen["ranks"] == 2
    runs = {}
    for driver in ("auto", "independent"):
        out = tmp_path / f"run_{driver}"
        mpirun(2, MPIDML + ["train", str(data), "--model", "logistic", "--l2", "1e-3", "--driver", driver,
                            "--out", str(out)])
        runs[driver] = json.loads((out / "summary.json").read_text())
    s = runs["auto"]
    assert s["io"]["driver"] == "mpio-collective"
    assert "with MPI" in s["io"]["reason"]
    assert runs["independent"]["io"]["driver"] == "independent"
    assert s["ranks"] == 2 and s["shard_rows"] == [3001, 3000]
    assert s["launcher"]["kind"] == "mpirun" and len(s["launcher"]["hostnames"]) == 2
    assert "Debian" in s["versions"]["mpi_library"] or "Open MPI" in s["versions"]["mpi_library"]
    # Same rows, same arithmetic: the same model whichever way the rows were read.
    assert s["objective"] == runs["independent"]["objective"]
    assert s["converged"] is True


def test_predict_writes_collectively_and_equals_one_rank(tmp_path):
    """mpidml predict on 2 ranks writes PRED.h5 through mpio (collective H5Dwrite), same as 1 rank."""
    data = tmp_path / "sm.h5"
    run(MPIDML + ["generate", "softmax", "--rows", "3001", "--features", "5", "--classes", "3", "--seed", "2",
                  "-o", str(data)])
    out = tmp_path / "run"
    mpirun(2, MPIDML + ["train", str(data), "--model", "softmax", "--l2", "1e-2", "--max-iter", "20",
                        "--out", str(out)])
    one = last_json(run(MPIDML + ["predict", str(out / "model.h5"), str(data), "-o", str(tmp_path / "p1.h5")]))
    two = last_json(mpirun(2, MPIDML + ["predict", str(out / "model.h5"), str(data), "-o", str(tmp_path / "p2.h5")]))
    assert one["write"] == "serial" and two["write"] == "collective" and two["ranks"] == 2
    with h5py.File(tmp_path / "p1.h5", "r") as a, h5py.File(tmp_path / "p2.h5", "r") as b:
        assert sorted(a) == sorted(b) == ["labels", "proba"] and b["proba"].shape == (3001, 3)
        for k in a:
            np.testing.assert_array_equal(a[k][...], b[k][...], err_msg=k)
        assert dict(a.attrs) == dict(b.attrs)
    assert not list(tmp_path.glob("p2.h5.tmp*"))


def test_mf_predict_writes_collectively_and_equals_one_rank(tmp_path):
    """mpidml predict with a matrix-factorization model: the same writer as dense models (mpio on 2 ranks)."""
    data = tmp_path / "r.h5"
    run(MPIDML + ["generate", "mf", "--users", "100", "--items", "60", "--rank", "2", "--ratings", "3001",
                  "--seed", "5", "-o", str(data)])
    out = tmp_path / "run"
    mpirun(2, MPIDML + ["train", str(data), "--model", "mf", "--rank", "2", "--optimizer", "als", "--max-iter", "3",
                        "--out", str(out)])
    one = last_json(run(MPIDML + ["predict", str(out / "model.h5"), str(data), "-o", str(tmp_path / "p1.h5")]))
    two = last_json(mpirun(2, MPIDML + ["predict", str(out / "model.h5"), str(data), "-o", str(tmp_path / "p2.h5")]))
    assert one["write"] == "serial" and two["write"] == "collective" and two["ranks"] == 2
    with h5py.File(tmp_path / "p1.h5", "r") as a, h5py.File(tmp_path / "p2.h5", "r") as b:
        assert sorted(a) == sorted(b) == ["prediction"] and b["prediction"].shape == (3001,)
        np.testing.assert_array_equal(a["prediction"][...], b["prediction"][...])
        assert dict(a.attrs) == dict(b.attrs)
    assert not list(tmp_path.glob("p2.h5.tmp*"))


def test_cli_generate_is_identical_on_1_2_3_ranks(tmp_path):
    args = ["generate", "softmax", "--rows", "70001", "--features", "3", "--classes", "4", "--seed", "9"]
    ref = tmp_path / "n1.h5"
    assert last_json(run(MPIDML + args + ["-o", str(ref)]))["write"] == "root"
    for n, extra in ((2, []), (3, ["--layout", "chunked", "--chunk-size", "10000"])):
        out = tmp_path / f"n{n}.h5"
        meta = last_json(mpirun(n, MPIDML + args + ["-o", str(out)] + extra))
        assert meta["write"] == "collective" and meta["ranks"] == n
        same_file_data(out, ref)
    with h5py.File(tmp_path / "n3.h5", "r") as f:
        assert f["X"].chunks == (10000, 3) and f["y"].chunks == (10000,)
    # --write root on several ranks: rank 0 writes alone, same file.
    meta = last_json(mpirun(2, MPIDML + args + ["-o", str(tmp_path / "root.h5"), "--write", "root"]))
    assert meta["write"] == "root"
    same_file_data(tmp_path / "root.h5", ref)


def test_cli_convert_npy_collectively_and_csv_on_rank_0(tmp_path):
    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((4001, 5)), rng.integers(0, 2, 4001)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    meta = last_json(mpirun(2, MPIDML + ["convert", str(tmp_path / "X.npy"), "--labels", str(tmp_path / "y.npy"),
                                         "-o", str(tmp_path / "p.h5"), "--chunk-rows", "1000"]))
    assert meta["write"] == "collective" and meta["rows"] == 4001
    with h5py.File(tmp_path / "p.h5", "r") as f:
        np.testing.assert_array_equal(f["X"][...], X)
        np.testing.assert_array_equal(f["y"][...], y)
        assert f["X"].chunks is None
    np.savetxt(tmp_path / "d.csv", np.column_stack([y, X])[:50], delimiter=",")
    meta = last_json(mpirun(2, MPIDML + ["convert", str(tmp_path / "d.csv"), "-o", str(tmp_path / "c.h5"),
                                         "--layout", "contiguous"]))
    assert meta["write"] == "root" and meta["layout"] == "contiguous"
    with h5py.File(tmp_path / "c.h5", "r") as f:
        np.testing.assert_allclose(f["X"][...], X[:50])
        assert f["X"].chunks is None


def test_bench_io_prints_json(tmp_path):
    proc = run([sys.executable, os.path.join(ROOT, "scripts", "bench_io.py"), "--rows", "5000", "--features", "4",
                "--repeat", "1", "--ranks", "1,2", "--mpirun", MPIRUN])
    out = json.loads(proc.stdout)
    assert [r["ranks"] for r in out["results"]] == [1, 2]
    for r in out["results"]:
        assert set(r["methods"]) == {"mpio_collective", "mpio_independent", "posix_readonly", "np_fromfile"}
        for m in r["methods"].values():
            assert len(m["per_rank"]) == r["ranks"] and m["aggregate_MBps"] > 0
        assert sum(p["rows"] for p in r["methods"]["np_fromfile"]["per_rank"]) == 5000
