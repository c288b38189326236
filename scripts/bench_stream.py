#!/usr/bin/env python3
"""Streaming (--max-memory) vs in-memory training, same data, same run (JSON out).

For full-batch passes (gradient descent: one pass over X per iteration, the
access pattern of L-BFGS) and for mini-batch SGD epochs, runs
`mpirun -n P mpidml train` with and without `--max-memory`, `--repeats` times,
and reports seconds per pass/epoch (min and median) and the streamed/in-memory
ratio. The page cache is warm (the file is read once before timing), so this
measures the cost of chunked reads + read-ahead against memory, not the disk.

    .venv/bin/python scripts/bench_stream.py --rows 1000000 --features 64 --max-memory 64M
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

BIN = os.path.dirname(sys.executable)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--max-memory", default="64M")
    ap.add_argument("--passes", type=int, default=10, help="gradient-descent iterations (full passes) per run")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    env = dict(os.environ)
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env.setdefault("OMPI_MCA_btl", "^ofi")
    env.setdefault("OMPI_MCA_mtl", "^ofi")
    mpirun = os.path.join(BIN, "mpirun") if os.path.exists(os.path.join(BIN, "mpirun")) else "mpirun"
    work = args.workdir or tempfile.mkdtemp(prefix="mpidml-stream-")
    os.makedirs(work, exist_ok=True)
    data = os.path.join(work, f"lr_{args.rows}x{args.features}.h5")
    if not os.path.exists(data):
        subprocess.run([sys.executable, "-m", "mpidml", "generate", "logistic", "--rows", str(args.rows),
                        "--features", str(args.features), "-o", data], check=True, env=env, stdout=subprocess.DEVNULL)
    with open(data, "rb") as fh:  # warm the page cache
        while fh.read(1 << 24):
            pass

    def timed(extra, per):
        times, last = [], None
        for r in range(args.repeats):
            out = os.path.join(work, f"run{r}")
            subprocess.run([mpirun, "-n", str(args.ranks), "--oversubscribe", sys.executable, "-m", "mpidml",
                            "train", data, "--out", out, "--overwrite", "--progress", "none"] + extra,
                           check=True, env=env, stdout=subprocess.DEVNULL)
            last = json.load(open(os.path.join(out, "summary.json")))
            times.append(last["time"]["fit"] / per(last))
        return {"min": min(times), "median": statistics.median(times)}, last

    results = {}
    cases = {
        "full_pass": (["--optimizer", "gd", "--lr", "0.1", "--tol", "0", "--max-iter", str(args.passes)],
                      lambda s: s["evaluations"]),
        "sgd_epoch": (["--optimizer", "sgd", "--batch-size", str(args.batch_size), "--epochs", "1"],
                      lambda s: s["epochs"]),
    }
    for name, (extra, per) in cases.items():
        mem, _ = timed(extra, per)
        streamed, s = timed(extra + ["--max-memory", args.max_memory], per)
        results[name] = {"in_memory_seconds": mem, "streamed_seconds": streamed,
                         "ratio_streamed_over_memory": {k: streamed[k] / mem[k] for k in mem},
                         "streamed_io": s["io"]["streamed"], "driver": s["io"]["driver"]}
    print(json.dumps({"rows": args.rows, "features": args.features, "ranks": args.ranks,
                      "max_memory": args.max_memory, "page_cache": "warm", "results": results}, indent=2))


if __name__ == "__main__":
    main()
