"""Shared plumbing of the benchmark scripts (bench_step, bench_e2e, bench_startup, bench_scaling,
bench_kernels, bench_overlap).

Not a benchmark itself. Keeps in one place: the environment every mpirun gets (root
allowances, no libfabric probing, one thread per rank unless told otherwise), how mpirun is
found, how a script re-launches itself under mpirun, and the min/median summary that every
number in the JSON outputs uses (the machines these run on are noisy: min is the best
estimate of the cost, median of what a user sees).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.dirname(sys.executable)
THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def mpi_env(threads: int | None = 1, extra: dict | None = None) -> dict:
    """The environment of an mpirun child: Open MPI as root, no ofi, ``threads`` per rank."""
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_btl", "^ofi")
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    if threads is not None:
        for v in THREAD_VARS:
            env[v] = str(threads)
    env.update(extra or {})
    return env


def mpirun_exe() -> str:
    cand = os.path.join(BIN, "mpirun")
    return cand if os.path.exists(cand) else "mpirun"


def mpirun(n: int) -> list[str]:
    """``mpirun -n n --oversubscribe`` (oversubscription is harmless when n <= cores)."""
    return [mpirun_exe(), "-n", str(n), "--oversubscribe"]


def under_mpirun() -> bool:
    return any(v in os.environ for v in ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK"))


def run_json(cmd: list[str], env: dict, timeout: float) -> dict:
    """Run ``cmd``; its last stdout line is a JSON document, returned parsed."""
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip().startswith("{")]
    return json.loads(lines[-1])


def timed_run(cmd: list[str], env: dict, timeout: float, cwd: str | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``cmd`` to completion; returns (unix launch time, wall seconds, process)."""
    t_unix = time.time()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return t_unix, wall, proc


def stats(values) -> dict:
    """min / median / count of a list of numbers (None entries dropped)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"min": None, "median": None, "n": 0}
    return {"min": min(vals), "median": statistics.median(vals), "n": len(vals)}


def time_calls(fn, repeats: int) -> dict:
    """stats() of the wall seconds of ``repeats`` calls of fn(), after one untimed call (warm-up, JIT)."""
    return time_round_robin({"fn": fn}, repeats)["fn"]


def time_round_robin(fns: dict, repeats: int) -> dict:
    """{name: stats()} of ``repeats`` calls of each fn, taken in rounds (each fn once per round,
    after one untimed call of each): on a shared, drifting machine the minima being compared come
    from the same minutes, so their ratios are steadier than from one block of calls after another."""
    for fn in fns.values():
        fn()
    ts = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t0)
    return {name: stats(v) for name, v in ts.items()}


def machine() -> dict:
    import platform

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "loadavg_at_start": list(load) if load else None}


def print_json(obj, path: str | None = None) -> None:
    text = json.dumps(obj, indent=2)
    if path:
        with open(path, "w") as fh:
            fh.write(text + "\n")
    print(text)
