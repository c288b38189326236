#!/usr/bin/env python3
"""Read throughput of this rank's rows of X: MPI-IO collective, MPI-IO independent, plain
read-only opens, and np.fromfile on the same bytes, for 1 and 2 ranks. Prints JSON.

    .venv-mpio/bin/python scripts/bench_io.py                    # 1 and 2 ranks, 2,000,000 x 32 float64 (512 MB)
    .venv-mpio/bin/python scripts/bench_io.py --ranks 1,2,4 --rows 4000000 --file /scratch/x.h5

Run it with a Python whose h5py has MPI (scripts/install-parallel-hdf5.sh builds .venv-mpio); it
launches itself under that MPI's mpirun (``--mpirun``, default /usr/bin/mpirun for .venv-mpio,
else the venv's own) once per rank count. The file (contiguous X, written by ``mpidml
generate``) is read once before timing, so the page cache is warm: the numbers measure the
software path (HDF5, MPI-IO, copies), not the disk. On a parallel file system pass ``--file`` on
it and drop ``--warm`` to measure the storage.

Each rank reads rows ``shard_bounds(N, P, rank)`` of X into a preallocated array, in reads of
``--chunk-rows`` rows, exactly as ``read_shard`` does; ``np.fromfile`` reads the same byte range
(X's offset in the file + the rank's rows) in one call. Every method is timed ``--repeat`` times,
interleaved; per rank the best time is reported; the aggregate throughput is all ranks' bytes
over the slowest rank's time in the best repetition. ``ratio_to_fromfile`` divides a method's
throughput by np.fromfile's in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = ("mpio_collective", "mpio_independent", "posix_readonly", "np_fromfile")


def _worker(args) -> None:
    import h5py
    from mpi4py import MPI

    from mpidml.data import hdf5 as H
    from mpidml.data.partition import shard_bounds

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    with h5py.File(args.worker, "r") as f:
        X = f["X"]
        n, d = X.shape
        dtype = X.dtype
        offset = X.id.get_offset()
        if offset is None:
            sys.exit("bench_io: X must be contiguous (np.fromfile needs its byte offset)")
    lo, hi = shard_bounds(n, size, rank)
    out = np.empty((hi - lo, d), dtype=dtype)
    step = H._chunk_rows(args.chunk_rows, d)
    n_iter = -(-shard_bounds(n, size, 0)[1] // step)
    row_bytes = d * dtype.itemsize

    def mpio(collective):
        with h5py.File(args.worker, "r", driver="mpio", comm=comm) as f:
            assert f.driver == "mpio"
            dxpl = H._collective_dxpl() if collective else None
            H._read_block(f["X"], out, lo, step, n_iter if collective else -(-(hi - lo) // step), dxpl)
        return out

    def posix():
        with h5py.File(args.worker, "r") as f:
            H._read_block(f["X"], out, lo, step, -(-(hi - lo) // step), None)
        return out

    def fromfile():
        # One call, into a new array (h5py reads into the preallocated one).
        return np.fromfile(args.worker, dtype=dtype, count=(hi - lo) * d, offset=offset + lo * row_bytes)

    funcs = {"mpio_collective": lambda: mpio(True), "mpio_independent": lambda: mpio(False),
             "posix_readonly": posix, "np_fromfile": fromfile}
    times = {m: [] for m in METHODS}
    check = None
    for _ in range(args.repeat):
        for m in METHODS:
            out.fill(0)
            comm.Barrier()
            t0 = time.perf_counter()
            got = funcs[m]()
            t = time.perf_counter() - t0
            times[m].append(t)
            s = float(got.sum(dtype=np.float64))
            if check is None:
                check = s
            elif s != check:
                raise SystemExit(f"bench_io: {m} read different data on rank {rank}")
    local = np.array([[min(times[m]) for m in METHODS] + [hi - lo]], dtype=np.float64)
    allt = np.array([times[m] for m in METHODS], dtype=np.float64)  # (methods, repeat)
    gathered = np.empty((size, len(METHODS) + 1)) if rank == 0 else None
    comm.Gather(local, gathered, root=0)
    slowest = np.empty_like(allt)
    comm.Reduce(allt, slowest, op=MPI.MAX, root=0)
    if rank != 0:
        return
    per = {}
    total_bytes = n * row_bytes
    ff_agg = total_bytes / slowest[METHODS.index("np_fromfile")].min() / 1e6
    ff_rank = gathered[:, METHODS.index("np_fromfile")]
    for j, m in enumerate(METHODS):
        agg = total_bytes / slowest[j].min() / 1e6
        per[m] = {
            "aggregate_MBps": round(agg, 1),
            "ratio_to_fromfile": round(agg / ff_agg, 3),
            "per_rank": [{"rank": r, "rows": int(gathered[r, -1]), "MB": round(gathered[r, -1] * row_bytes / 1e6, 2),
                          "seconds": round(float(gathered[r, j]), 5),
                          "MBps": round(gathered[r, -1] * row_bytes / gathered[r, j] / 1e6, 1),
                          "ratio_to_fromfile": round(float(ff_rank[r] / gathered[r, j]), 3)}
                         for r in range(size)],
        }
    print(json.dumps({"ranks": size, "methods": per}))


def _warm(path: str) -> None:
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


def _default_mpirun() -> str:
    here = os.path.join(os.path.dirname(sys.executable), "mpirun")
    if os.path.exists(here):
        return here
    return "/usr/bin/mpirun"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--ranks", default="1,2", help="comma-separated rank counts (default 1,2)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--chunk-rows", type=int, default=65536, help="rows per read call (read_shard's default)")
    ap.add_argument("--file", default=None, help="HDF5 file to read (created if missing); default: a temporary file")
    ap.add_argument("--no-warm", dest="warm", action="store_false", help="do not read the file once before timing")
    ap.add_argument("--mpirun", default=None, help="launcher matching this Python's MPI")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        _worker(args)
        return 0

    import h5py

    from mpidml.data import generate, h5py_has_mpi

    if not h5py_has_mpi():
        sys.exit("bench_io: this h5py has no MPI support; run it with .venv-mpio/bin/python "
                 "(scripts/install-parallel-hdf5.sh)")
    tmpdir = None
    path = args.file
    if path is None:
        tmpdir = tempfile.mkdtemp(prefix="mpidml-bench-io-")
        path = os.path.join(tmpdir, "bench.h5")
    try:
        if not os.path.exists(path):
            generate("linear", path, rows=args.rows, features=args.features, dtype=args.dtype, seed=0,
                     layout="contiguous")
        with h5py.File(path, "r") as f:
            n, d = f["X"].shape
            dt = f["X"].dtype
        if args.warm:
            _warm(path)
        mpirun = args.mpirun or _default_mpirun()
        env = dict(os.environ)
        if os.geteuid() == 0:
            env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
        results = []
        for k in (int(x) for x in args.ranks.split(",")):
            cmd = [mpirun, "-n", str(k), "--oversubscribe", sys.executable, os.path.abspath(__file__),
                   "--worker", path, "--repeat", str(args.repeat), "--chunk-rows", str(args.chunk_rows)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            if proc.returncode != 0:
                sys.stderr.write(proc.stdout + proc.stderr)
                sys.exit(f"bench_io: {' '.join(cmd)} exited {proc.returncode}")
            results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps({
            "file": path, "rows": int(n), "features": int(d), "dtype": str(dt),
            "x_bytes": int(n * d * dt.itemsize), "page_cache": "warm" if args.warm else "as found",
            "repeat": args.repeat, "chunk_rows": args.chunk_rows, "mpirun": mpirun,
            "versions": {"h5py": h5py.__version__, "hdf5": h5py.version.hdf5_version,
                         "numpy": np.__version__, "python": platform.python_version()},
            "cpus": os.cpu_count(), "results": results}, indent=2))
    finally:
        if tmpdir is not None:
            import shutil

            shutil.rmtree(tmpdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
