#!/usr/bin/env python3
"""Start-up cost of `mpirun -n RANKS mpidml train`: launch to first step, cold vs warm Numba cache (JSON).

    .venv/bin/python scripts/bench_startup.py                 # 2 ranks, 200k x 64 logistic, 5 repeats
    .venv/bin/python scripts/bench_startup.py --quick
    .venv/bin/python scripts/bench_startup.py --model softmax  # 10 classes: the kernel with the most code

For each repeat, in the same run: a COLD start (an empty NUMBA_CACHE_DIR, so every kernel is
compiled) and a WARM start (the same directory again, so every kernel is loaded from the cache).
mpidml keys its cache by the source of kernels/*.py under $XDG_CACHE_HOME/mpidml/numba/ (see
mpidml/jitcache.py), not kernels/__pycache__; pointing NUMBA_CACHE_DIR at a fresh directory is
the same as clearing that cache, without disturbing other runs on the machine. Timed from the
moment mpirun is launched (wall clock, this process) to ``time.fit_start_unix`` in
summary.json, split into: launch -> run_train (mpirun, interpreter, imports, MPI_Init),
data read (io), JIT compile or cache load (``jit_compile``: warm_up_kernels, the loss kernel
on rank 0 while rank 1 compiles the rest, then each loads the other's), and the rest of the
set-up; plus the whole command's wall time.

Checks reported beside the times:

* ``cache_race``: one cold run with NUMBA_DEBUG_CACHE=1; counts the cache files each rank
  SAVED (= compiled) and LOADED. Race-free means no cache file is saved by two ranks.
* ``threads``: the threads of each rank during a training run (from /proc; names included),
  and ``mpidml info`` (threadpoolctl: BLAS / OpenMP pools) without and with ``--threads 2``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MPIDML = [sys.executable, "-m", "mpidml"]


def train_cmd(args, data, out, extra=()):
    return benchlib.mpirun(args.ranks) + MPIDML + [
        "train", data, "--model", args.model, *optimizer_args(args),
        "--out", out, "--overwrite", "--progress", "none", *extra]


def optimizer_args(args):
    """L-BFGS for --iters iterations, or (--optimizer sgd) one epoch of SGD with a large batch,
    which also compiles the step loop (mpidml.parallel.steploop) for linear/logistic."""
    if args.optimizer == "sgd":
        return ["--optimizer", "sgd", "--epochs", "1", "--batch-size", str(max(1, args.rows // 4))]
    return ["--optimizer", "lbfgs", "--max-iter", str(args.iters), "--tol", "0"]


def one_start(args, data, work, cache_dir, tag):
    out = os.path.join(work, f"run_{tag}")
    env = benchlib.mpi_env(threads=None, extra={"NUMBA_CACHE_DIR": cache_dir})
    t_launch, wall, _ = benchlib.timed_run(train_cmd(args, data, out), env, args.timeout)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    t = s["time"]
    first_step = t["fit_start_unix"] - t_launch
    to_run = t["run_start_unix"] - t_launch
    return {"launch_to_first_step": first_step, "launch_to_run_train": to_run,
            "io": t["io"], "jit_compile": t["jit_compile"],
            "rest_of_setup": first_step - to_run - t["io"] - t["jit_compile"],
            "whole_command": wall}


def cache_race(args, data, work):
    """One cold run with NUMBA_DEBUG_CACHE=1: which rank saved (compiled) / loaded each kernel."""
    cache = tempfile.mkdtemp(prefix="numba-race-", dir=work)
    env = benchlib.mpi_env(threads=None, extra={"NUMBA_CACHE_DIR": cache, "NUMBA_DEBUG_CACHE": "1"})
    cmd = train_cmd(args, data, os.path.join(work, "run_race"))
    cmd = cmd[:4] + ["--tag-output", "-x", "NUMBA_CACHE_DIR", "-x", "NUMBA_DEBUG_CACHE"] + cmd[4:]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    per_rank: dict[int, dict[str, list[str]]] = {}
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.match(r"\[\d+,(\d+)\]<std...>:\s*\[cache\] data (saved to|loaded from) '([^']+)'", line)
        if m:
            r = per_rank.setdefault(int(m.group(1)), {"saved": [], "loaded": []})
            r["saved" if m.group(2).startswith("saved") else "loaded"].append(os.path.basename(m.group(3)))
    shutil.rmtree(cache, ignore_errors=True)
    savers: dict[str, list[int]] = {}
    for r, d in per_rank.items():
        for f in set(d["saved"]):
            savers.setdefault(f, []).append(r)
    twice = sorted(f for f, ranks in savers.items() if len(ranks) > 1)
    return {"per_rank": {str(r): {"saved": len(d["saved"]), "loaded": len(d["loaded"])}
                         for r, d in sorted(per_rank.items())},
            "files_compiled_by_more_than_one_rank": twice,
            "race_free": bool(per_rank) and not twice}


def thread_probe(args, data, work):
    """Threads of every rank while it trains (sampled from /proc), and `mpidml info` pools."""
    out = os.path.join(work, "run_threads")
    cmd = train_cmd(args, data, out)
    long_run = "--max-iter" if "--max-iter" in cmd else "--epochs"  # long enough to be sampled
    cmd[cmd.index(long_run) + 1] = "100000"
    cmd += ["--timeout", "120"]  # the watchdog is a thread too: show it
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=benchlib.mpi_env(threads=None))
    seen: dict[int, list[str]] = {}
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(seen) < args.ranks:
            time.sleep(0.5)
            for pid in _children(proc.pid):
                try:
                    cmdline = open(f"/proc/{pid}/cmdline").read()
                    if "mpidml" not in cmdline or "train" not in cmdline:
                        continue
                    env = open(f"/proc/{pid}/environ").read().split("\0")
                    rank = next((int(e.split("=", 1)[1]) for e in env if e.startswith("OMPI_COMM_WORLD_RANK=")), None)
                    if rank is None:
                        continue
                    if os.path.exists(os.path.join(out, "metrics.jsonl")):  # training has started
                        names = sorted(open(f"/proc/{pid}/task/{t}/comm").read().strip()
                                       for t in os.listdir(f"/proc/{pid}/task"))
                        seen[rank] = names
                except (OSError, ValueError):
                    continue
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    info = {}
    for label, extra in (("default", []), ("threads_2", ["--threads", "2"])):
        env = benchlib.mpi_env(threads=None)
        for v in benchlib.THREAD_VARS:
            env.pop(v, None)
        d = json.loads(subprocess.run(MPIDML + ["info"] + extra, capture_output=True, text=True, env=env,
                                      check=True, timeout=120).stdout)
        info[label] = {"numba": d["threads"]["numba"], "pools_threadpoolctl": d.get("blas")}
    return {"per_rank_threads_while_training": {str(r): {"count": len(n), "names": n} for r, n in sorted(seen.items())},
            "note": "one compute thread per rank; the others are the MPI library's progress/event threads "
                    "and mpidml's --timeout watchdog (enabled here on purpose)",
            "mpidml_info": info}


def _children(pid):
    """All descendants of pid (Linux /proc)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = open(f"/proc/{p}/task/{p}/children").read().split()
        except OSError:
            continue
        for k in kids:
            out.append(int(k))
            todo.append(int(k))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--model", default="logistic", choices=("logistic", "softmax"))
    ap.add_argument("--classes", type=int, default=10, help="softmax classes")
    ap.add_argument("--iters", type=int, default=2, help="L-BFGS iterations per run (start-up is the point)")
    ap.add_argument("--optimizer", default="lbfgs", choices=("lbfgs", "sgd"),
                    help="sgd: one epoch of 4 steps, with the compiled step loop")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if args.quick:
        args.rows, args.repeats = min(args.rows, 20_000), min(args.repeats, 2)
    work = args.workdir or tempfile.mkdtemp(prefix="mpidml-startup-")
    os.makedirs(work, exist_ok=True)
    extra = ["--classes", str(args.classes)] if args.model == "softmax" else []
    data = os.path.join(work, f"{args.model}_{args.rows}x{args.features}{'k%d' % args.classes if extra else ''}.h5")
    if not os.path.exists(data):
        subprocess.run(MPIDML + ["generate", args.model, "--rows", str(args.rows), "--features", str(args.features),
                                 *extra, "-o", data], check=True, stdout=subprocess.DEVNULL, env=benchlib.mpi_env())
    cold, warm = [], []
    for r in range(args.repeats):
        cache = tempfile.mkdtemp(prefix="numba-cold-", dir=work)
        cold.append(one_start(args, data, work, cache, f"cold{r}"))
        warm.append(one_start(args, data, work, cache, f"warm{r}"))
        shutil.rmtree(cache, ignore_errors=True)
    keys = list(cold[0])
    result = {
        "benchmark": "bench_startup",
        "command": " ".join([os.path.relpath(sys.executable), "scripts/bench_startup.py"] + sys.argv[1:]),
        "ranks": args.ranks, "rows": args.rows, "features": args.features, "repeats": args.repeats,
        "model": args.model, "optimizer": args.optimizer, "classes": args.classes if args.model == "softmax" else None,
        "unit": "seconds (min, median over repeats)",
        "cold_cache": {k: benchlib.stats([c[k] for c in cold]) for k in keys},
        "warm_cache": {k: benchlib.stats([w[k] for w in warm]) for k in keys},
        "cache_race": cache_race(args, data, work),
        "threads": thread_probe(args, data, work),
        "machine": benchlib.machine(),
        "workdir": work,
    }
    c, w = result["cold_cache"]["launch_to_first_step"], result["warm_cache"]["launch_to_first_step"]
    result["cold_minus_warm_launch_to_first_step"] = {"min": c["min"] - w["min"], "median": c["median"] - w["median"]}
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
        result["workdir"] = None
    benchlib.print_json(result, args.json)


if __name__ == "__main__":
    main()
