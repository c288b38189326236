"""Strong/weak scaling results: combine the run directories of a sweep into one JSON and a plot.

A sweep (``slurm/scaling.sbatch``) leaves one run directory per point::

    OUT/strong/n1/summary.json  OUT/strong/n2/summary.json ...   same data, more tasks
    OUT/weak/n1/summary.json    OUT/weak/n2/summary.json   ...   rows grow with the tasks

``python -m mpidml.scaling OUT`` (or ``mpidml scaling OUT``) reads them and writes
``OUT/scaling.json`` and ``OUT/scaling.png``. No MPI is initialised.

Definitions (``T(n)`` = time per epoch on ``n`` tasks, ``n0`` = the smallest task count of
the mode in the sweep, normally 1):

* time per epoch = training time (``time.fit``) / passes over the data, where passes are the
  epochs for sgd/adam and the full-batch evaluations (loss + gradient over all rows) for
  lbfgs/gd. So runs that took different numbers of iterations still compare.
* strong scaling: speed-up ``S(n) = n0 * T(n0) / T(n)``, efficiency ``E(n) = S(n) / n``
  (ideal: S = n, E = 1).
* weak scaling: efficiency ``E(n) = T(n0) / T(n)`` (ideal 1: the time stays flat while the
  work grows with n), scaled speed-up ``S(n) = n * E(n)``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys

from .errors import DataError, MpidmlError

__all__ = ["collect", "write_plot", "main"]

MODES = ("strong", "weak")
_POINT = re.compile(r"^n(\d+)$")


def _point(mode: str, tasks: int, run_dir: str, s: dict) -> dict:
    passes = s.get("epochs") or s.get("evaluations") or s.get("steps") or 1
    t = s.get("time", {})
    fit = float(t.get("fit", t.get("wall", 0.0)))
    per_rank_wall = s.get("time_per_rank", {}).get("wall") or [t.get("wall", 0.0)]
    launcher = s.get("launcher", {})
    return {
        "mode": mode,
        "tasks": tasks,
        "ranks": s.get("ranks"),
        "hosts": launcher.get("n_hosts", len(set(s.get("hostnames") or []))),
        "rows": s.get("n_rows"),
        "features": s.get("n_features"),
        "passes": passes,
        "time_per_epoch": fit / passes,
        "fit": fit,
        "wall": float(t.get("wall", 0.0)),
        "wall_max_rank": float(max(per_rank_wall)),
        "io": float(t.get("io", 0.0)),
        "compute": float(t.get("compute", 0.0)),
        "comm": float(t.get("comm", 0.0)),
        "other": float(t.get("other", 0.0)),
        "objective": s.get("objective"),
        "io_driver": s.get("io", {}).get("driver"),
        "job_id": launcher.get("slurm", {}).get("job_id"),
        "run_dir": os.path.abspath(run_dir),
    }


def _add_ratios(points: list[dict]) -> None:
    by_mode: dict[str, list[dict]] = {}
    for p in points:
        by_mode.setdefault(p["mode"], []).append(p)
    for mode, pts in by_mode.items():
        pts.sort(key=lambda p: p["tasks"])
        base = pts[0]
        n0, t0 = base["tasks"], base["time_per_epoch"]
        for p in pts:
            n, t = p["tasks"], p["time_per_epoch"]
            if t <= 0:
                p["speedup"] = p["efficiency"] = None
                continue
            if mode == "strong":
                p["speedup"] = n0 * t0 / t
                p["efficiency"] = p["speedup"] / n
            else:
                p["efficiency"] = t0 / t
                p["speedup"] = n * p["efficiency"]


def collect(out_dir: str) -> dict:
    """Read ``out_dir/{strong,weak}/n*/summary.json``; return the combined result."""
    points = []
    missing = []
    for mode in MODES:
        mdir = os.path.join(out_dir, mode)
        if not os.path.isdir(mdir):
            continue
        for name in sorted(os.listdir(mdir)):
            m = _POINT.match(name)
            if not m:
                continue
            run_dir = os.path.join(mdir, name)
            path = os.path.join(run_dir, "summary.json")
            if not os.path.isfile(path):
                missing.append(run_dir)
                continue
            with open(path) as fh:
                points.append(_point(mode, int(m.group(1)), run_dir, json.load(fh)))
    if not points:
        raise DataError(f"no {'/'.join(MODES)}/n*/summary.json under {out_dir} (the output directory of "
                        "slurm/scaling.sbatch or bench_scaling.py)")
    _add_ratios(points)
    points.sort(key=lambda p: (MODES.index(p["mode"]), p["tasks"]))
    meta_path = os.path.join(out_dir, "sweep.json")
    sweep = {}
    if os.path.isfile(meta_path):
        with open(meta_path) as fh:
            sweep = json.load(fh)
    return {"out_dir": os.path.abspath(out_dir), "sweep": sweep,
            "definitions": {
                "time_per_epoch": "time.fit / passes (epochs for sgd/adam, full-batch evaluations for lbfgs/gd)",
                "strong": "speedup = n0*T(n0)/T(n), efficiency = speedup/n",
                "weak": "efficiency = T(n0)/T(n), speedup = n*efficiency"},
            "points": points, "incomplete_runs": missing}


def write_plot(result: dict, path: str) -> bool:
    """Three panels vs tasks: time per epoch, speed-up, efficiency. False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        sys.stderr.write("mpidml scaling: matplotlib is not installed (pip install 'mpidml[plot]'); "
                         "wrote the JSON only\n")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    all_tasks = sorted({p["tasks"] for p in result["points"]})
    for mode, marker in zip(MODES, "os"):
        pts = [p for p in result["points"] if p["mode"] == mode]
        if not pts:
            continue
        x = [p["tasks"] for p in pts]
        axes[0].plot(x, [p["time_per_epoch"] for p in pts], marker=marker, label=mode)
        axes[1].plot(x, [p["speedup"] for p in pts], marker=marker, label=mode)
        axes[2].plot(x, [p["efficiency"] for p in pts], marker=marker, label=mode)
    axes[1].plot(all_tasks, all_tasks, "k--", lw=0.8, label="ideal")
    axes[2].axhline(1.0, color="k", ls="--", lw=0.8, label="ideal")
    titles = ("time per epoch [s]", "speed-up", "parallel efficiency")
    for ax, title in zip(axes, titles):
        ax.set_xscale("log", base=2)
        ax.set_xticks(all_tasks)
        ax.set_xticklabels([str(t) for t in all_tasks])
        ax.set_xlabel("tasks (MPI ranks)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    axes[2].set_ylim(0, max(1.1, max((p["efficiency"] or 0) for p in result["points"]) * 1.1))
    sweep = result.get("sweep") or {}
    fig.suptitle(f"mpidml scaling{' - job ' + str(sweep['job_id']) if sweep.get('job_id') else ''}"
                 f"{' - ' + sweep['data'] if sweep.get('data') else ''}", fontsize=10)
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return True


def _table(result: dict) -> str:
    head = f"{'mode':6} {'tasks':>5} {'hosts':>5} {'rows':>10} {'s/epoch':>10} {'speed-up':>8} {'effic.':>6}"
    lines = [head]
    for p in result["points"]:
        su = "-" if p["speedup"] is None else f"{p['speedup']:.2f}"
        ef = "-" if p["efficiency"] is None else f"{p['efficiency']:.2f}"
        lines.append(f"{p['mode']:6} {p['tasks']:5d} {p['hosts']:5d} {p['rows'] or 0:10d} "
                     f"{p['time_per_epoch']:10.4g} {su:>8} {ef:>6}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mpidml scaling", description="Combine a scaling sweep "
                                 "(OUT/strong/n*/, OUT/weak/n*/) into OUT/scaling.json and OUT/scaling.png.")
    ap.add_argument("out", help="the sweep's output directory")
    ap.add_argument("--json", default=None, help="where to write the JSON (default OUT/scaling.json)")
    ap.add_argument("--plot", default=None, help="where to write the PNG (default OUT/scaling.png)")
    ap.add_argument("--no-plot", action="store_true", help="write the JSON only")
    args = ap.parse_args(argv)
    try:
        result = collect(args.out)
    except MpidmlError as e:
        sys.stderr.write(f"mpidml: error: {e}\n")
        return e.exit_code
    json_path = args.json or os.path.join(args.out, "scaling.json")
    plot_path = args.plot or os.path.join(args.out, "scaling.png")
    if not args.no_plot and write_plot(result, plot_path):
        result["plot"] = os.path.abspath(plot_path)
    tmp = json_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, json_path)
    print(_table(result))
    print(f"wrote {json_path}" + (f" and {plot_path}" if result.get("plot") else ""))
    return 1 if result["incomplete_runs"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
