#!/usr/bin/env python3
"""Time per L-BFGS iteration of `mpidml train` on 1 and 2 ranks, same data, same run (JSON out).

Generates the dataset once (default 1e6 x 64 float64 logistic), then runs
`mpirun -n P mpidml train --optimizer lbfgs --max-iter K --tol 0` for each P,
`--repeats` times, and reports the fit time per iteration and per objective
evaluation (min and median over repeats), the time split from summary.json,
and the speed-up of P ranks over 1. Use the same machine state for all points:
the ratio is what carries over, not the absolute time.

    .venv/bin/python scripts/bench_lbfgs.py --rows 1000000 --features 64 --ranks 1,2
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--ranks", default="1,2")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()

    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_btl", "^ofi")
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    mpirun = os.path.join(BIN, "mpirun") if os.path.exists(os.path.join(BIN, "mpirun")) else "mpirun"
    work = args.workdir or tempfile.mkdtemp(prefix="mpidml-bench-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, f"lr_{args.rows}x{args.features}.h5")
    if not os.path.exists(data):
        subprocess.run([sys.executable, "-m", "mpidml", "generate", "logistic", "--rows", str(args.rows),
                        "--features", str(args.features), "--seed", "0", "-o", data], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    results = []
    for p in [int(x) for x in args.ranks.split(",")]:
        per_iter, per_eval, splits = [], [], []
        for r in range(args.repeats):
            out = os.path.join(work, f"run_p{p}_{r}")
            subprocess.run([mpirun, "-n", str(p), "--oversubscribe", sys.executable, "-m", "mpidml", "train", data,
                            "--optimizer", "lbfgs", "--max-iter", str(args.iters), "--tol", "0", "--l2", str(args.l2),
                            "--out", out, "--overwrite", "--progress", "none"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            s = json.load(open(os.path.join(out, "summary.json")))
            per_iter.append(s["time"]["fit"] / s["steps"])
            per_eval.append(s["time"]["fit"] / s["evaluations"])
            splits.append({k: s["time"][k] for k in ("wall", "io", "compute", "comm", "other", "fit")})
        results.append({"ranks": p, "iterations": s["steps"], "evaluations": s["evaluations"],
                        "seconds_per_iteration": {"min": min(per_iter), "median": statistics.median(per_iter)},
                        "seconds_per_evaluation": {"min": min(per_eval), "median": statistics.median(per_eval)},
                        "time_split_last_run": splits[-1]})
    base = results[0]["seconds_per_iteration"]["min"]
    for r in results:
        r["speedup_vs_first"] = base / r["seconds_per_iteration"]["min"]
    print(json.dumps({"rows": args.rows, "features": args.features, "dtype": "float64", "cpus": os.cpu_count(),
                      "data": data, "results": results}, indent=2))


if __name__ == "__main__":
    main()
