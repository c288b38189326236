#!/usr/bin/env python3
"""Strong and weak scaling of `mpidml train` on 1, 2, 4 ranks, Allreduce alpha-beta, projection to 1024 ranks.

    .venv/bin/python scripts/bench_scaling.py                      # ~5 min on 2 cores
    .venv/bin/python scripts/bench_scaling.py --quick              # smoke test
    .venv/bin/python scripts/bench_scaling.py --plot docs/bench_scaling.png --json docs/bench_scaling.json

Measured (JSON + PNG):

* strong scaling: one dataset (``--rows`` x ``--features`` logistic), L-BFGS (``--iters``
  iterations, ``--tol 0``) and SGD (``--epochs``, global batch ``--batch``) on each rank count;
  time per epoch = fit time / passes over the data (L-BFGS: objective evaluations, SGD: epochs),
  speed-up S = T(1)/T(P), efficiency E = S/P;
* weak scaling: ``--weak-rows`` rows PER RANK (the dataset grows with P); SGD keeps the batch
  per rank (global batch = ``--batch`` / 2 * P); efficiency E = T(1)/T(P) of the time per step /
  evaluation;
* point-to-point ping-pong between two ranks, fitted to t(m) = alpha + beta * m (least squares on
  relative error, over 8 B .. 8 MiB), the local reduction cost gamma (s/byte of a NumPy add), and
  Allreduce of the same sizes on 2 and 4 ranks beside the model's prediction for them.

More ranks than cores (4 here on 2 cores) are oversubscribed: ranks time-share cores and MPI's
busy-polling waits steal time from the computing ranks, so those points measure the machine,
not mpidml; the JSON says so (``oversubscribed``).

The model (documented in README, "Scaling model"), for a message of m bytes on P ranks:

    ring (reduce-scatter + allgather):     T = 2(P-1) alpha + 2 (P-1)/P m beta + (P-1)/P m gamma
    tree, recursive doubling:              T = ceil(log2 P) (alpha + m beta + m gamma)
    tree, binomial Reduce + Bcast:         T = 2 ceil(log2 P) (alpha + m beta) + ceil(log2 P) m gamma

A step is compute + communication (no overlap: mpidml's steps are synchronous):

    L-BFGS evaluation:  T(P) = c N / P + T_fixed + T_binomial(P, m)   (mpidml reduces to the root
                                                                       and broadcasts its sums)
    SGD step:           T(P) = (k + pi) B / P + o + T_allreduce(P, m)

c: seconds per row of a full pass (from the 1-rank run), k: per row of a mini-batch (random rows),
pi: seconds per LOCAL row of the epoch's batch plan (each rank evaluates the keyed order for its
own N/P rows: mpidml.parallel.allreduce.EpochPlan), o: the loop's per-step Python overhead
(no-op-kernel run), m:
(n_params + 4) * 8 bytes. Strong: N fixed; weak: N/P fixed (and B/P for SGD). Efficiency
E = T(1) / (P T(P)) (strong) or T(1) / T(P) (weak). Projected to 64, 256, 1024 ranks with the
alpha/beta measured here (shared memory, one node) and with an assumed interconnect
(``--cluster-alpha``, ``--cluster-bandwidth``: 2 us, 12.5 GB/s, typical of InfiniBand HDR);
compute per rank is taken as this machine's. Assumptions: no contention (a rank's links are
its own), one rank per core, perfect load balance, no compute/communication overlap,
latency and bandwidth independent of P and of the ranks' placement.
"""

from __future__ import annotations

import os
import sys

if "--worker" in sys.argv:
    for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MPIDML = [sys.executable, "-m", "mpidml"]
PROJECT_P = (64, 256, 1024)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--rows", type=int, default=1_000_000, help="strong scaling: global rows")
    ap.add_argument("--weak-rows", type=int, default=250_000, help="weak scaling: rows per rank")
    ap.add_argument("--features", type=int, default=64)
    ap.add_argument("--iters", type=int, default=20, help="L-BFGS iterations per run")
    ap.add_argument("--epochs", type=int, default=1, help="SGD epochs per run")
    ap.add_argument("--batch", type=int, default=4096, help="SGD global batch (strong); weak: batch/2 per rank")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cluster-alpha", type=float, default=2e-6, help="assumed interconnect latency [s]")
    ap.add_argument("--cluster-bandwidth", type=float, default=12.5e9, help="assumed interconnect bandwidth [B/s]")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="PNG path (default: none)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.weak_rows, args.iters, args.repeats = 100_000, 25_000, 5, 1
    return args


# -- measurements under mpirun ------------------------------------------------------------

def worker(args) -> int:
    """Ping-pong (ranks 0-1), Allreduce sweep, gamma, and (rank 0) shuffle + loop overhead."""
    from mpidml.jitcache import configure_numba_cache

    configure_numba_cache()
    import numpy as np
    from mpi4py import MPI

    comm = MPI.COMM_WORLD.Dup()
    rank, size = comm.Get_rank(), comm.Get_size()
    sizes = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576]  # float64 elements
    reps = max(3, args.repeats)

    def calls_for(n):
        return max(10, min(2000, int(3e7 // (n * 8 + 2000))))

    out = {"ranks": size, "sizes_bytes": [n * 8 for n in sizes]}
    if size >= 2:
        pp = []
        for n in sizes:
            buf = np.zeros(n)
            best = math.inf
            for _ in range(reps):
                comm.Barrier()
                k = calls_for(n)
                t0 = time.perf_counter()
                for _ in range(k):
                    if rank == 0:
                        comm.Send(buf, dest=1, tag=7)
                        comm.Recv(buf, source=1, tag=7)
                    elif rank == 1:
                        comm.Recv(buf, source=0, tag=7)
                        comm.Send(buf, dest=0, tag=7)
                best = min(best, (time.perf_counter() - t0) / k / 2)  # one way
            pp.append(best)
        out["pingpong_one_way_s"] = pp
    ar = []
    for n in sizes:
        buf = np.ones(n)
        best, med = math.inf, []
        for _ in range(reps):
            comm.Barrier()
            k = calls_for(n)
            t0 = time.perf_counter()
            for _ in range(k):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            t = comm.allreduce((time.perf_counter() - t0) / k, op=MPI.MAX)
            best = min(best, t)
            med.append(t)
        ar.append({"min": best, "median": float(np.median(med))})
    out["allreduce_s"] = ar
    if rank == 0:
        # gamma: the local reduction, s/byte of dst += src over 8 MiB
        a, b = np.ones(1 << 20), np.ones(1 << 20)
        g = math.inf
        for _ in range(20):
            t0 = time.perf_counter()
            np.add(a, b, out=a)
            g = min(g, (time.perf_counter() - t0) / a.nbytes)
        out["gamma_s_per_byte"] = g
        out.update(_loop_costs(args))
    if rank == 0:
        print(json.dumps(out))
    return 0


def _loop_costs(args) -> dict:
    """pi (shuffle, s/row) and o (per-step loop overhead, no-op kernel) on one process."""
    import numpy as np
    from mpi4py import MPI

    from mpidml.comm import Context
    from mpidml.config import TrainConfig
    from mpidml.data import DenseShard
    from mpidml.metrics import Reporter
    from mpidml.models import make_model
    from mpidml.parallel import AllreduceTrainer
    from mpidml.parallel.allreduce import EpochPlan

    N = args.rows
    model = make_model("logistic", args.features, 2)

    class Null:
        n_params, penalized = model.n_params, model.penalized
        is_classifier = False

        def init_params(self):
            return model.init_params()

        def loss_grad(self, *a):
            return 0.0

    shard = DenseShard(X=np.zeros((N, 1)), y=np.zeros(N), sw=np.empty(0), lo=0, hi=N, n_total=N, n_features=1,
                       driver="memory", path="<memory>")
    plan = EpochPlan(shard, N, args.batch, 0, "global")
    plan.build(0)  # compile
    pi = min(_timed(lambda e=e: plan.build(e)) for e in range(1, 6)) / N
    cfg = TrainConfig(data="-", out="-", progress="none", optimizer="sgd", lr=0.1, momentum=0.9,
                      batch_size=args.batch, epochs=2, shuffle="none")
    ctx = Context(MPI.COMM_SELF)
    best = math.inf
    for _ in range(3):
        tr = AllreduceTrainer(ctx, Null(), shard, cfg, Reporter(None, enabled=False), float(N))
        t = _timed(lambda: tr.fit(model.init_params()))
        best = min(best, t / tr.steps)
    return {"shuffle_s_per_row": pi, "loop_overhead_s_per_step": best}


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


# -- the alpha-beta model --------------------------------------------------------------------

def fit_alpha_beta(sizes_bytes, times):
    """Least squares of t = alpha + beta m on relative error (weights 1/t): both ends matter."""
    import numpy as np

    m = np.asarray(sizes_bytes, float)
    t = np.asarray(times, float)
    A = np.stack([np.ones_like(m), m], axis=1) / t[:, None]
    coef, *_ = np.linalg.lstsq(A, np.ones_like(t), rcond=None)
    alpha, beta = float(max(coef[0], 0.0)), float(max(coef[1], 1e-15))
    return alpha, beta


def t_ring(P, m, a, b, g):
    return 0.0 if P == 1 else 2 * (P - 1) * a + 2 * (P - 1) / P * m * b + (P - 1) / P * m * g


def t_recursive_doubling(P, m, a, b, g):
    return math.ceil(math.log2(P)) * (a + m * b + m * g) if P > 1 else 0.0


def t_binomial_reduce_bcast(P, m, a, b, g):
    L = math.ceil(math.log2(P)) if P > 1 else 0
    return 2 * L * (a + m * b) + L * m * g


def project(meas, params, a, b, g) -> dict:
    """Projected time per step / evaluation and efficiency at PROJECT_P (and the measured P)."""
    m = (params + 4) * 8
    c, k, pi, o, fixed = meas["c"], meas["k"], meas["pi"], meas["o"], meas["fixed"]
    N, B, n_weak, b_weak = meas["N"], meas["B"], meas["n_weak"], meas["b_weak"]
    out = {}
    for P in (1,) + PROJECT_P:
        tree = min(t_recursive_doubling(P, m, a, b, g), t_ring(P, m, a, b, g))
        row = {
            "allreduce_ring_s": t_ring(P, m, a, b, g),
            "allreduce_recursive_doubling_s": t_recursive_doubling(P, m, a, b, g),
            "reduce_bcast_binomial_s": t_binomial_reduce_bcast(P, m, a, b, g),
            "lbfgs_eval_strong_s": c * N / P + fixed + t_binomial_reduce_bcast(P, m, a, b, g),
            "lbfgs_eval_weak_s": c * n_weak + fixed + t_binomial_reduce_bcast(P, m, a, b, g),
            "sgd_step_strong_s": (k + pi) * B / P + o + tree,
            "sgd_step_weak_s": (k + pi) * b_weak + o + tree,
        }
        out[P] = row
    base = out[1]
    for P, row in out.items():
        row["lbfgs_strong_efficiency"] = base["lbfgs_eval_strong_s"] / (P * row["lbfgs_eval_strong_s"])
        row["lbfgs_weak_efficiency"] = base["lbfgs_eval_weak_s"] / row["lbfgs_eval_weak_s"]
        row["sgd_strong_efficiency"] = base["sgd_step_strong_s"] / (P * row["sgd_step_strong_s"])
        row["sgd_weak_efficiency"] = base["sgd_step_weak_s"] / row["sgd_step_weak_s"]
    return {str(P): v for P, v in out.items() if P != 1}


# -- the driver ----------------------------------------------------------------------------

def run_train(args, data, out, P, opt, batch):
    cmd = benchlib.mpirun(P) + MPIDML + ["train", data, "--out", out, "--overwrite", "--progress", "none",
                                         "--l2", "1e-4"]
    if opt == "lbfgs":
        cmd += ["--optimizer", "lbfgs", "--max-iter", str(args.iters), "--tol", "0"]
    else:
        cmd += ["--optimizer", "sgd", "--lr", "0.5", "--momentum", "0.9", "--batch-size", str(batch),
                "--epochs", str(args.epochs)]
    benchlib.timed_run(cmd, benchlib.mpi_env(threads=1), args.timeout)
    with open(os.path.join(out, "summary.json")) as fh:
        s = json.load(fh)
    passes = s["evaluations"] if opt == "lbfgs" else s["epochs"]
    per_unit = s["time"]["fit"] / (s["evaluations"] if opt == "lbfgs" else s["steps"])
    return {"time_per_epoch": s["time"]["fit"] / passes, "time_per_unit": per_unit,
            "compute": s["time"]["compute"] / s["time"]["wall"], "comm": s["time"]["comm"] / s["time"]["wall"]}


def generate(path, rows, features):
    if not os.path.exists(path):
        subprocess.run(MPIDML + ["generate", "logistic", "--rows", str(rows), "--features", str(features),
                                 "--seed", "0", "-o", path], check=True, stdout=subprocess.DEVNULL,
                       env=benchlib.mpi_env())


def main() -> int:
    args = parse()
    if args.worker:
        return worker(args)
    S = benchlib.stats
    cpus = os.cpu_count() or 1
    ranks = [int(r) for r in args.ranks.split(",")]
    work = args.workdir or tempfile.mkdtemp(prefix="mpidml-scaling-")
    os.makedirs(work, exist_ok=True)
    strong_data = os.path.join(work, f"strong_{args.rows}x{args.features}.h5")
    generate(strong_data, args.rows, args.features)
    points = []
    for mode in ("strong", "weak"):
        for P in ranks:
            data = strong_data if mode == "strong" else os.path.join(work, f"weak_{args.weak_rows * P}.h5")
            generate(data, args.rows if mode == "strong" else args.weak_rows * P, args.features)
            for opt in ("lbfgs", "sgd"):
                batch = args.batch if mode == "strong" else max(1, args.batch // 2) * P
                reps = [run_train(args, data, os.path.join(work, f"run_{mode}_{opt}_{P}"), P, opt, batch)
                        for _ in range(args.repeats)]
                points.append({"mode": mode, "optimizer": opt, "ranks": P, "oversubscribed": P > cpus,
                               "rows": args.rows if mode == "strong" else args.weak_rows * P,
                               "batch_global": batch if opt == "sgd" else None,
                               "time_per_epoch": S([r["time_per_epoch"] for r in reps]),
                               "time_per_step_or_eval": S([r["time_per_unit"] for r in reps]),
                               "comm_fraction_of_wall_last": reps[-1]["comm"]})
    for mode in ("strong", "weak"):
        for opt in ("lbfgs", "sgd"):
            pts = [p for p in points if p["mode"] == mode and p["optimizer"] == opt]
            base = pts[0]
            for p in pts:
                for stat in ("min", "median"):
                    key = "time_per_epoch" if mode == "strong" else "time_per_step_or_eval"
                    t0, t = base[key][stat] * base["ranks"], p[key][stat]
                    if mode == "strong":
                        p.setdefault("speedup", {})[stat] = t0 / t
                        p.setdefault("efficiency", {})[stat] = t0 / t / p["ranks"]
                    else:
                        p.setdefault("efficiency", {})[stat] = base[key][stat] / t

    comm = {}
    for P in sorted({max(2, r) for r in ranks}):
        comm[str(P)] = benchlib.run_json(benchlib.mpirun(P) + [sys.executable, os.path.abspath(__file__), "--worker"]
                                         + [a for a in sys.argv[1:] if a not in ("--json", "--plot")
                                            and not a.endswith((".json", ".png"))],
                                         benchlib.mpi_env(threads=1), args.timeout)
        comm[str(P)]["oversubscribed"] = P > cpus
    c2 = comm["2"]
    alpha, beta = fit_alpha_beta(c2["sizes_bytes"], c2["pingpong_one_way_s"])
    gamma = c2["gamma_s_per_byte"]
    for P, d in comm.items():
        d["model_allreduce_s"] = [{"ring": t_ring(int(P), m, alpha, beta, gamma),
                                   "recursive_doubling": t_recursive_doubling(int(P), m, alpha, beta, gamma)}
                                  for m in d["sizes_bytes"]]
        d["effective_fit_of_allreduce"] = dict(zip(("alpha_s", "beta_s_per_byte"), fit_alpha_beta(
            d["sizes_bytes"], [x["min"] for x in d["allreduce_s"]])))

    # per-row costs from the 1-rank strong runs (min times)
    def pt(mode, opt, P):
        return next(p for p in points if p["mode"] == mode and p["optimizer"] == opt and p["ranks"] == P)

    n_params = args.features + 1
    s1_lbfgs = pt("strong", "lbfgs", 1)["time_per_step_or_eval"]["min"]
    s1_sgd = pt("strong", "sgd", 1)["time_per_step_or_eval"]["min"]
    pi, o = c2["shuffle_s_per_row"], c2["loop_overhead_s_per_step"]
    meas = {"N": args.rows, "B": args.batch, "n_weak": args.weak_rows, "b_weak": max(1, args.batch // 2),
            "c": s1_lbfgs / args.rows, "fixed": 0.0,
            "k": max(0.0, (s1_sgd - pi * args.batch - o)) / args.batch, "pi": pi, "o": o}
    model = {
        "formulas": {
            "ring": "2(P-1) alpha + 2 (P-1)/P m beta + (P-1)/P m gamma",
            "recursive_doubling": "ceil(log2 P) (alpha + m beta + m gamma)",
            "binomial_reduce_bcast": "2 ceil(log2 P)(alpha + m beta) + ceil(log2 P) m gamma",
            "lbfgs_eval": "c N/P + T_binomial_reduce_bcast(P, m)   (weak: c n_per_rank + ...)",
            "sgd_step": "(k + pi) B/P + o + min(T_ring, T_recursive_doubling)   (weak: (k + pi) b + o + ...)",
            "efficiency": "strong T(1)/(P T(P)); weak T(1)/T(P)",
            "m": "(n_params + 4) * 8 bytes",
        },
        "assumptions": [
            "no compute/communication overlap (mpidml's steps are synchronous)",
            "perfect load balance; one rank per core; compute per rank as measured on this machine",
            "alpha, beta independent of P and placement; no link contention",
            "each rank plans its own N/P rows of each epoch's global order: pi per local row",
            "a tuned MPI picks the faster of ring and recursive doubling for the Allreduce",
        ],
        "measured": {"alpha_s": alpha, "beta_s_per_byte": beta, "bandwidth_B_per_s": 1 / beta,
                     "gamma_s_per_byte": gamma, "from": "ping-pong ranks 0-1, shared memory, this node",
                     **{k: v for k, v in meas.items()}, "n_params": n_params, "message_bytes": (n_params + 4) * 8},
        "projection_measured_alpha_beta": project(meas, n_params, alpha, beta, gamma),
        "projection_cluster_alpha_beta": {
            "alpha_s": args.cluster_alpha, "bandwidth_B_per_s": args.cluster_bandwidth, "assumed": True,
            **project(meas, n_params, args.cluster_alpha, 1 / args.cluster_bandwidth, gamma)},
    }
    # the model's own check: predicted vs measured 2-rank L-BFGS evaluation
    model["check_2_ranks"] = {
        "lbfgs_eval_measured_min_s": pt("strong", "lbfgs", 2)["time_per_step_or_eval"]["min"] if 2 in ranks else None,
        "lbfgs_eval_model_s": meas["c"] * args.rows / 2 + t_binomial_reduce_bcast(2, (n_params + 4) * 8, alpha, beta,
                                                                                   gamma),
        "sgd_step_measured_min_s": pt("strong", "sgd", 2)["time_per_step_or_eval"]["min"] if 2 in ranks else None,
        "sgd_step_model_s": (meas["k"] + pi) * args.batch / 2 + o + min(
            t_ring(2, (n_params + 4) * 8, alpha, beta, gamma),
            t_recursive_doubling(2, (n_params + 4) * 8, alpha, beta, gamma)),
    }
    result = {
        "benchmark": "bench_scaling",
        "command": " ".join([os.path.relpath(sys.executable), "scripts/bench_scaling.py"] + sys.argv[1:]),
        "cpus": cpus, "ranks": ranks,
        "note": f"{cpus} cores: runs with more ranks than cores are oversubscribed (marked) and time-share cores",
        "rows_strong": args.rows, "rows_per_rank_weak": args.weak_rows, "features": args.features,
        "lbfgs_iterations": args.iters, "sgd_epochs": args.epochs, "sgd_batch_strong": args.batch,
        "sgd_batch_per_rank_weak": max(1, args.batch // 2), "repeats": args.repeats,
        "points": points, "communication": comm, "model": model, "machine": benchlib.machine(),
    }
    if args.plot:
        plot(result, args.plot)
        result["plot"] = args.plot
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)
    benchlib.print_json(result, args.json)
    return 0


def plot(res, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 3, figsize=(15, 8.5))
    cpus = res["cpus"]
    for opt, mk, color in (("lbfgs", "o", "C0"), ("sgd", "s", "C1")):
        for mode, col in (("strong", 0), ("weak", 1)):
            pts = [p for p in res["points"] if p["mode"] == mode and p["optimizer"] == opt]
            x = [p["ranks"] for p in pts]
            key = "time_per_epoch" if mode == "strong" else "time_per_step_or_eval"
            ax[0, col].plot(x, [p[key]["min"] for p in pts], mk + "-", color=color, label=f"{opt} (min)")
            ax[0, col].plot(x, [p[key]["median"] for p in pts], mk + ":", color=color, alpha=0.5,
                            label=f"{opt} (median)")
            ax[1, col].plot(x, [p["efficiency"]["min"] for p in pts], mk + "-", color=color, label=f"{opt} (min)")
            ax[1, col].plot(x, [p["efficiency"]["median"] for p in pts], mk + ":", color=color, alpha=0.5,
                            label=f"{opt} (median)")
    for col, (mode, unit) in enumerate((("strong", "time per epoch [s]"), ("weak", "time per step / eval [s]"))):
        ax[0, col].set_title(f"{mode} scaling: {unit}")
        ax[1, col].set_title(f"{mode} scaling: efficiency (from min times)")
        ax[1, col].axhline(1.0, color="k", lw=0.8, ls="--")
        ax[1, col].set_ylim(0, 1.3)
        for r in (0, 1):
            a = ax[r, col]
            a.set_xscale("log", base=2)
            a.set_xticks(res["ranks"])
            a.set_xticklabels([f"{r_}{'*' if r_ > cpus else ''}" for r_ in res["ranks"]])
            a.set_xlabel(f"ranks (* = oversubscribed, {cpus} cores)")
            a.grid(True, alpha=0.3)
            a.legend(fontsize=8)
        ax[0, col].set_yscale("log")
    # communication: ping-pong, allreduce, model
    m = res["model"]["measured"]
    for P, d in res["communication"].items():
        sz = d["sizes_bytes"]
        ax[0, 2].loglog(sz, [x["min"] for x in d["allreduce_s"]], "o-", ms=3,
                        label=f"Allreduce P={P}{'*' if d['oversubscribed'] else ''} measured")
        ax[0, 2].loglog(sz, [min(x["ring"], x["recursive_doubling"]) for x in d["model_allreduce_s"]], "--",
                        label=f"model P={P}")
        if "pingpong_one_way_s" in d:
            ax[0, 2].loglog(sz, d["pingpong_one_way_s"], "k.", label="ping-pong one way")
    ax[0, 2].set_title(f"alpha={m['alpha_s'] * 1e6:.2f} us, 1/beta={m['bandwidth_B_per_s'] / 1e9:.1f} GB/s")
    ax[0, 2].set_xlabel("message [bytes]")
    ax[0, 2].set_ylabel("seconds")
    ax[0, 2].grid(True, alpha=0.3)
    ax[0, 2].legend(fontsize=7)
    a = ax[1, 2]
    Ps = [1] + list(PROJECT_P)
    for label, proj, ls in (("cluster a,b", res["model"]["projection_cluster_alpha_beta"], "-"),
                            ("this node's a,b", res["model"]["projection_measured_alpha_beta"], ":")):
        for (key, name), color in zip((("lbfgs_strong_efficiency", "L-BFGS strong"),
                                       ("lbfgs_weak_efficiency", "L-BFGS weak"),
                                       ("sgd_strong_efficiency", "SGD strong"),
                                       ("sgd_weak_efficiency", "SGD weak")),
                                      ("C0", "C2", "C1", "C4")):
            a.plot(Ps, [1.0] + [proj[str(P)][key] for P in PROJECT_P], ls, color=color, marker=".",
                   label=f"{name} ({label})")
    a.set_xscale("log", base=2)
    a.set_xticks(Ps)
    a.set_xticklabels([str(p) for p in Ps])
    a.set_ylim(0, 1.05)
    a.set_title("alpha-beta model: projected efficiency")
    a.set_xlabel("ranks")
    a.grid(True, alpha=0.3)
    a.legend(fontsize=6)
    fig.suptitle(f"mpidml scaling on {cpus} cores: {res['rows_strong']} x {res['features']} logistic (strong), "
                 f"{res['rows_per_rank_weak']} rows/rank (weak)", fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
