#!/usr/bin/env python3
"""Benchmark the parameter server loop (``--strategy ps``) against raw MPI; prints ONE JSON document.

Run it under MPI itself, with at least 2 ranks (rank 0 is the server, the others workers)::

    mpirun -n 3 python scripts/bench_ps.py                 # + --oversubscribe for more ranks than cores
    mpirun -n 3 python scripts/bench_ps.py --sizes 1e2,1e4 --repeats 5 --seconds 0.3

Sections of the output:

``pingpong``
    Raw mpi4py ``Send``/``Recv`` between ranks 0 and 1 with the PS message sizes: a gradient
    message of ``n + 5`` float64 one way, ``n`` float64 back. ``seconds`` (min and median over
    ``--repeats``) is one round trip; ``bytes_per_s`` counts both directions.
``server``
    The real server loop (:class:`mpidml.parallel.parameter_server.Server` and ``WorkerLink``:
    persistent requests, Waitany, the SGD update of the server's slice) with a dummy constant
    gradient (no data, no model: it measures the loop), for each size, each worker count
    1..P-1 and each mode (async: every gradient is an update; sync: one update per round of
    all workers). ``seconds_per_update`` min/median over the repeats, ``updates_per_s`` and
    ``gradients_per_s`` from the median, ``bytes_per_s`` = server bytes in + out per second,
    ``server_busy_fraction`` = time not spent waiting in Waitany. ``vs_pingpong`` =
    PS seconds per gradient / ping-pong round trip of the same size, measured in the same run:
    with one worker, the server's overhead (update math + Python) over the bare exchange.
``straggler``
    Sync vs async vs ssp with real waiting: every worker "computes" for ``--base-delay`` seconds
    per step (a sleep) and the last worker rank ``--straggler-delay`` more (as with
    ``MPIDML_PS_DELAY``); each mode runs for ``--straggler-seconds`` (the server answers STOP
    at the deadline). Reported: steps per second of the fast workers and of the straggler, and
    gradients per second in total, next to the ideal rates 1/base and 1/(base + straggler).
    A second scenario, ``jitter``, gives every step of every worker a random delay
    (exponential, mean ``--base-delay``): transient stragglers instead of a permanent one.
"""
import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from mpidml.optim import SGD, make_schedule  # noqa: E402
from mpidml.parallel.parameter_server import (HAS_LOSS, LOSS, N_SCALARS, PEN, ROWS, WSUM,  # noqa: E402
                                              Layout, Server, WorkerLink, parse_delays)

WORLD = MPI.COMM_WORLD


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="1e2,1e3,1e4,1e5,1e6,1e7", help="model sizes (parameters), comma separated")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per configuration (min and median)")
    p.add_argument("--seconds", type=float, default=0.2, help="target seconds per repeat (sets the step counts)")
    p.add_argument("--modes", default="async,sync", help="server modes to time (async, sync, ssp)")
    p.add_argument("--straggler-size", type=float, default=1e4, help="model size for the straggler comparison")
    p.add_argument("--base-delay", type=float, default=0.002, help="seconds of 'compute' per worker step")
    p.add_argument("--straggler-delay", type=float, default=0.018, help="extra seconds per step on the last worker")
    p.add_argument("--straggler-seconds", type=float, default=1.5, help="seconds per mode in the straggler runs")
    p.add_argument("--staleness", default="2,16", help="ssp bounds to compare in the straggler runs")
    p.add_argument("--skip-straggler", action="store_true")
    return p.parse_args()


def summary(times):
    return {"min": min(times), "median": statistics.median(times)}


# -- raw ping-pong ---------------------------------------------------------------------

def pingpong(n, iters, repeats):
    """Round trips of (n + 5) doubles 1 -> 0 and n doubles 0 -> 1, timed on rank 1."""
    rank = WORLD.Get_rank()
    up = np.ones(n + N_SCALARS)
    down = np.ones(n)
    times = []
    for rep in range(repeats + 1):  # the first is a warm-up
        WORLD.Barrier()
        if rank == 1:
            t0 = time.perf_counter()
            for _ in range(iters):
                WORLD.Send([up, MPI.DOUBLE], dest=0, tag=1)
                WORLD.Recv([down, MPI.DOUBLE], source=0, tag=2)
            dt = (time.perf_counter() - t0) / iters
            if rep:
                times.append(dt)
        elif rank == 0:
            for _ in range(iters):
                WORLD.Recv([up, MPI.DOUBLE], source=1, tag=1)
                WORLD.Send([down, MPI.DOUBLE], dest=1, tag=2)
    out = np.array(times if rank == 1 else [0.0] * repeats)
    WORLD.Bcast(out, root=1)
    return out.tolist()


# -- the server loop ---------------------------------------------------------------------

def run_ps(sub, n, mode, budget=None, deadline=None, delay_fn=None, staleness=0):
    """One PS run on communicator ``sub`` (rank 0 serves). Returns server stats on sub-rank 0,
    and per-worker [steps, seconds] gathered there."""
    size, rank = sub.Get_size(), sub.Get_rank()
    layout = Layout(n, size, 1)
    params = np.zeros(n)
    row = np.zeros(2)
    srv = None
    sub.Barrier()
    if rank == 0:
        srv = Server(sub, layout, 0, params, SGD(n, 1e-6), make_schedule("constant", 1e-6), mode, staleness,
                     0.0, slice(0, 0), budget=budget, deadline=deadline)
        srv.run()
    else:
        gbuf = np.full(n + N_SCALARS, 1e-3)
        gbuf[n + LOSS], gbuf[n + WSUM], gbuf[n + PEN], gbuf[n + HAS_LOSS], gbuf[n + ROWS] = 0.0, 1.0, 0.0, 0.0, 1.0
        link = WorkerLink(sub, layout, params, gbuf)
        steps, t0 = 0, time.perf_counter()
        while True:
            if delay_fn is not None:
                d = delay_fn()
                if d > 0:
                    time.sleep(d)
            ok = link.exchange()
            if not ok:
                break
            steps += 1
        row[:] = (steps, time.perf_counter() - t0)
        link.finish()
    table = np.empty((size, 2)) if rank == 0 else None
    sub.Gather(row, table, root=0)
    return srv, table


def sub_comm(n_workers):
    rank = WORLD.Get_rank()
    return WORLD.Split(0 if rank <= n_workers else MPI.UNDEFINED, rank)


def bench_server(n, mode, n_workers, iters, repeats):
    """Median/min seconds per update (on world rank 0; None elsewhere)."""
    sub = sub_comm(n_workers)
    res = None
    if sub != MPI.COMM_NULL:
        budget_of = (lambda k: k) if mode == "sync" else (lambda k: k * n_workers)
        run_ps(sub, n, mode, budget=budget_of(max(2, iters // 10)))  # warm-up
        per_update, busy, bytes_s, grads = [], [], [], []
        for _ in range(repeats):
            srv, table = run_ps(sub, n, mode, budget=budget_of(iters))
            if srv is not None:
                per_update.append(srv.t_loop / srv.version)
                busy.append(1.0 - srv.t_wait / srv.t_loop)
                bytes_s.append((srv.bytes_sent + srv.bytes_recv) / srv.t_loop)
                grads.append(int(srv.clock.sum()) / srv.version)  # gradients per update
        if WORLD.Get_rank() == 0:
            med = statistics.median(per_update)
            res = {"n_params": n, "mode": mode, "workers": n_workers, "updates_per_repeat": budget_of(iters),
                   "seconds_per_update": summary(per_update), "updates_per_s": 1.0 / med,
                   "gradients_per_s": grads[0] / med, "bytes_per_s": statistics.median(bytes_s),
                   "server_busy_fraction": statistics.median(busy)}
        sub.Free()
    WORLD.Barrier()
    return res


def bench_straggler(n, mode, staleness, seconds, delay_fn_for):
    """Run until the deadline with the given per-rank delays; rates per worker (world rank 0)."""
    size = WORLD.Get_size()
    deadline = None
    t_start = np.array([time.perf_counter() + 0.05])  # rank 0's clock: only rank 0 uses the deadline
    WORLD.Bcast(t_start, root=0)
    deadline = t_start[0] + seconds
    srv, table = run_ps(WORLD, n, mode, deadline=deadline if WORLD.Get_rank() == 0 else None,
                        delay_fn=delay_fn_for(WORLD.Get_rank()), staleness=staleness)
    if WORLD.Get_rank() != 0:
        return None
    rates = [table[r, 0] / table[r, 1] for r in range(1, size)]
    return {"mode": mode if mode != "ssp" else f"ssp(S={staleness})", "workers": size - 1,
            "worker_steps": [int(table[r, 0]) for r in range(1, size)],
            "worker_steps_per_s": rates,
            "fast_steps_per_s": float(np.mean(rates[:-1])) if size > 2 else None,
            "straggler_steps_per_s": rates[-1],
            "gradients_per_s": float(int(srv.clock.sum()) / srv.t_loop), "updates_per_s": srv.version / srv.t_loop,
            "max_clock_spread": srv.max_spread, "max_staleness": int(srv.stale_max.max()),
            "seconds": srv.t_loop}


def main():
    args = parse_args()
    size, rank = WORLD.Get_size(), WORLD.Get_rank()
    if size < 2:
        sys.stderr.write("bench_ps.py needs at least 2 ranks: mpirun -n 3 python scripts/bench_ps.py\n")
        return 2
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    modes = [m.strip() for m in args.modes.split(",")]
    out = {"benchmark": "parameter server loop vs raw MPI ping-pong", "ranks": size,
           "host": platform.node(), "cpus": os.cpu_count(),
           "mpi": MPI.Get_library_version().strip().split("\n")[0], "numpy": np.__version__,
           "repeats": args.repeats, "pingpong": [], "server": []}
    rtt = {}
    iters_of = {}
    for n in sizes:
        # calibrate: a few round trips, then enough for --seconds per repeat
        probe = pingpong(n, 3, 1)[0]
        iters = int(min(5000, max(5, args.seconds / max(probe, 1e-7))))
        iters_of[n] = iters
        times = pingpong(n, iters, args.repeats)
        rtt[n] = statistics.median(times)
        out["pingpong"].append({"n_params": n, "round_trips_per_repeat": iters,
                                "bytes_per_round_trip": 8 * (2 * n + N_SCALARS), "seconds": summary(times),
                                "round_trips_per_s": 1.0 / rtt[n],
                                "bytes_per_s": 8 * (2 * n + N_SCALARS) / rtt[n]})
    for n in sizes:
        for w in range(1, size):
            for mode in modes:
                res = bench_server(n, mode, w, iters_of[n], args.repeats)
                if rank == 0:
                    per_grad = res["seconds_per_update"]["median"] / (w if mode == "sync" else 1)
                    res["vs_pingpong"] = per_grad / rtt[n]
                    out["server"].append(res)
    if not args.skip_straggler and size > 2:
        n = int(args.straggler_size)
        last = size - 1
        delays = parse_delays(f"{last}:{args.straggler_delay}", size, 1)
        base = args.base_delay

        def persistent(r):
            d = base + delays.get(r, 0.0)
            return (lambda: d) if r > 0 else None

        def jitter(r):
            rng = np.random.default_rng(1000 + r)
            return (lambda: rng.exponential(base)) if r > 0 else None

        runs = [("sync", 0), ("async", 0)] + [("ssp", int(s)) for s in args.staleness.split(",")]
        strag = {"n_params": n, "base_delay": base, "straggler_rank": last, "straggler_delay": args.straggler_delay,
                 "seconds_per_mode": args.straggler_seconds,
                 "ideal_fast_steps_per_s": 1.0 / base, "ideal_straggler_steps_per_s": 1.0 / (base + args.straggler_delay),
                 "persistent": [], "jitter": []}
        for name, fn in (("persistent", persistent), ("jitter", jitter)):
            for mode, s in runs:
                res = bench_straggler(n, mode, s, args.straggler_seconds, fn)
                if rank == 0:
                    strag[name].append(res)
        out["straggler"] = strag
    if rank == 0:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
