"""``mpidml report RUN``: a finished run as pictures and one short page.

Reads what training left in RUN (``summary.json``, ``metrics.jsonl``, ``model.h5``,
``config.toml``) and writes, into ``RUN/report/`` (or ``--out DIR``):

``loss.png``
    the logged objective per step (L-BFGS/GD: per iteration), log scale when it spans more
    than a decade, the final objective on all rows as a dashed line; per worker for the
    asynchronous parameter server.
``accuracy.png``
    only when metrics.jsonl carries an ``accuracy`` per logged step.
``time.png``
    wall time per rank split into io / compute / comm / other (where the time went).
``confusion.png``
    classifiers: confusion matrix (rows: true class, columns: predicted) with the counts.
``coefficients.png``
    linear models: the ``--top-k`` largest positive and negative coefficients with feature
    names, one panel per class for softmax (up to ``MAX_CLASS_PANELS`` classes; beyond that one
    panel ranked by the largest |coefficient| over classes).
``staleness.png``
    ``--strategy ps`` in async/ssp mode: histogram of gradient staleness.
``index.md``, ``index.html``
    the numbers (final objective, accuracy, confusion counts, top coefficients, time per rank,
    parameter-server statistics) and the images, linked by relative path.

Feature names come from the attribute ``feature_names`` (array of strings, one per column) of
the training file's X dataset when it has one, otherwise ``x{j}`` (column j, which is also the
hashed-feature id of svmlight data). Runs on one process; no MPI is initialised.
"""

from __future__ import annotations

import html
import json
import math
import os

import numpy as np

from .errors import ConfigError, DataError, MpidmlError

MAX_CLASS_PANELS = 8
IMAGES = ("loss.png", "accuracy.png", "time.png", "confusion.png", "coefficients.png", "staleness.png")
PHASE_COLOURS = {"io": "#4c72b0", "compute": "#55a868", "comm": "#c44e52", "warm-up": "#dd8452", "other": "#b0b0b0"}

__all__ = ["write_report", "load_run", "feature_names", "top_coefficients", "MAX_CLASS_PANELS"]


# -- reading the run --------------------------------------------------------------------

def load_run(run_dir: str) -> dict:
    """summary, metric records, model arrays and config of a finished run; ConfigError otherwise."""
    if not os.path.isdir(run_dir):
        raise ConfigError(f"{run_dir} is not a directory (expected a run directory written by mpidml train)")
    summary_path = os.path.join(run_dir, "summary.json")
    if not os.path.isfile(summary_path):
        raise ConfigError(f"{run_dir} is not a finished mpidml run: no summary.json "
                          "(training still running, failed, or not a run directory)")
    try:
        with open(summary_path) as fh:
            summary = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(f"{summary_path} is not readable JSON: {e}") from None
    if not isinstance(summary, dict) or summary.get("command") != "train":
        raise ConfigError(f"{summary_path} was not written by mpidml train")
    model_path = os.path.join(run_dir, "model.h5")
    if not os.path.isfile(model_path):
        raise ConfigError(f"{run_dir} is not a finished mpidml run: no model.h5")
    return {"dir": run_dir, "summary": summary, "records": read_metrics(os.path.join(run_dir, "metrics.jsonl")),
            "model": read_model_arrays(model_path), "config": _read_config(run_dir)}


def read_metrics(path: str) -> list[dict]:
    """The lines of metrics.jsonl (a line cut short by a crash is skipped)."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path) as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


def read_model_arrays(path: str) -> dict:
    """coef (K, D) and intercept (K,) when the model has them (the MLP has not)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            out = {"name": _text(f.attrs.get("model", ""))}
            if "coef" in f and "intercept" in f:
                out["coef"] = np.asarray(f["coef"][...], dtype=np.float64)
                out["intercept"] = np.asarray(f["intercept"][...], dtype=np.float64)
            return out
    except OSError as e:
        raise DataError(f"{path} is not a readable mpidml model file: {e}") from None


def _read_config(run_dir: str) -> dict:
    from .config import read_toml

    try:
        return read_toml(os.path.join(run_dir, "config.toml"))
    except ConfigError:
        return {}  # only x_name is read from it, and it has a default


def _text(value) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def feature_names(data_path: str | None, x_name: str, n_features: int) -> tuple[list[str], str]:
    """(names, where they came from): X's ``feature_names`` attribute if usable, else x0, x1, ..."""
    fallback = [f"x{j}" for j in range(n_features)]
    if not data_path or not os.path.exists(data_path):
        return fallback, f"column numbers (training data {data_path} not found)"
    import h5py

    try:
        with h5py.File(data_path, "r") as f:
            raw = f[x_name].attrs.get("feature_names") if x_name in f else None
    except OSError:
        return fallback, f"column numbers ({data_path} not readable)"
    if raw is None:
        return fallback, f"column numbers ({x_name} in {data_path} has no feature_names attribute)"
    names = [_text(v) for v in np.atleast_1d(raw).ravel()]
    if len(names) != n_features:
        return fallback, (f"column numbers (feature_names of {data_path} has {len(names)} entries "
                          f"for {n_features} features)")
    return names, f"feature_names attribute of {x_name} in {data_path}"


def top_coefficients(coef: np.ndarray, top_k: int) -> list[dict]:
    """Per row of coef (K, D): the top_k largest positive and most negative coefficients.

    Returns one dict per panel with ``label``, ``positive`` and ``negative``: lists of
    (feature index, value), largest magnitude first; ties keep the lower index first. With more
    than MAX_CLASS_PANELS rows, one panel of the features with the largest max_c |coef[c, j]|,
    each with the class c (``classes``) whose coefficient that is.
    """
    coef = np.atleast_2d(coef)
    K = coef.shape[0]
    if K <= MAX_CLASS_PANELS:
        panels = []
        for c in range(K):
            row = coef[c]
            order = np.argsort(-row, kind="stable")
            pos = [(int(j), float(row[j])) for j in order if row[j] > 0][:top_k]
            order = np.argsort(row, kind="stable")
            neg = [(int(j), float(row[j])) for j in order if row[j] < 0][:top_k]
            panels.append({"label": f"class {c}" if K > 1 else "", "positive": pos, "negative": neg})
        return panels
    best_class = np.argmax(np.abs(coef), axis=0)
    value = coef[best_class, np.arange(coef.shape[1])]
    order = np.argsort(-np.abs(value), kind="stable")
    pos = [(int(j), float(value[j])) for j in order if value[j] > 0][:top_k]
    neg = [(int(j), float(value[j])) for j in order if value[j] < 0][:top_k]
    return [{"label": "largest |coefficient| over classes", "positive": pos, "negative": neg,
             "classes": {int(j): int(best_class[j]) for j, _ in pos + neg}}]


# -- the page: a list of blocks rendered twice (Markdown and HTML) --------------------------

def _num(value) -> str:
    """Numbers as the page shows them: integers plainly, floats with 10 significant digits."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    v = float(value)
    if not math.isfinite(v):
        return str(v)
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.10g}"


def _markdown(blocks) -> str:
    out = []
    for b in blocks:
        kind = b[0]
        if kind == "h1":
            out.append(f"# {b[1]}\n")
        elif kind == "h2":
            out.append(f"## {b[1]}\n")
        elif kind == "p":
            out.append(f"{b[1]}\n")
        elif kind == "img":
            out.append(f"![{b[2]}]({b[1]})\n")
        elif kind == "table":
            header, rows = b[1], b[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _html(blocks, title: str) -> str:
    e = html.escape
    body = []
    for b in blocks:
        kind = b[0]
        if kind in ("h1", "h2", "p"):
            body.append(f"<{kind}>{e(b[1])}</{kind}>")
        elif kind == "img":
            body.append(f'<p><img src="{e(b[1])}" alt="{e(b[2])}"></p>')
        elif kind == "table":
            head = "".join(f"<th>{e(h)}</th>" for h in b[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in r) + "</tr>" for r in b[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;"
             "text-align:right}th{background:#f4f4f4}img{max-width:100%}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{e(title)}</title>"
            f"<style>{style}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n")


# -- plots ----------------------------------------------------------------------------

def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise MpidmlError("mpidml report needs matplotlib, which is not installed "
                          "(pip install 'mpidml[plot]')") from None
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def _x_key(records) -> str:
    return "step" if any("step" in r for r in records) else "iter"


def plot_curve(plt, records, key: str, path: str, final: float | None, ylabel: str, label: str) -> bool:
    """One logged quantity per step (per worker when the records name one). False if none logged."""
    xk = _x_key(records)
    pts = [(r[xk], r[key], r.get("worker")) for r in records
           if r.get(key) is not None and r.get(xk) is not None]
    if not pts:
        return False
    x = np.array([p[0] for p in pts], dtype=np.float64)
    y = np.array([p[1] for p in pts], dtype=np.float64)
    fig, ax = plt.subplots(figsize=(7, 4))
    workers = sorted({p[2] for p in pts if p[2] is not None})
    if workers:  # asynchronous parameter server: each point is one worker's batch
        ax.plot(x, y, color="#999999", lw=0.8, zorder=1)
        for w in workers:
            sel = np.array([p[2] == w for p in pts])
            ax.scatter(x[sel], y[sel], s=12, label=f"worker rank {w}", zorder=2)
    else:
        ax.plot(x, y, marker="." if len(x) < 60 else None, lw=1.5, label=label)
    if final is not None and math.isfinite(final):
        ax.axhline(final, ls="--", color="k", lw=1, label=f"final, all rows: {final:.6g}")
    span = y[np.isfinite(y)]
    if final is not None and math.isfinite(final):
        span = np.append(span, final)
    if span.size and span.min() > 0 and span.max() / span.min() > 10:  # more than a decade: log scale
        ax.set_yscale("log")
    ax.set_xlabel("iteration" if xk == "iter" else "step")
    ax.set_ylabel(ylabel)
    epochs = [(r[xk], r["epoch"]) for r in records if r.get("epoch") is not None and r.get(xk)]
    if epochs:  # epochs are proportional to steps: a second axis on top
        ratio = epochs[-1][1] / epochs[-1][0]
        sec = ax.secondary_xaxis("top", functions=(lambda s: s * ratio, lambda e: e / ratio))
        sec.set_xlabel("epoch")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)
    return True


def time_per_rank(summary: dict) -> dict:
    """{phase: seconds per rank}; the kernel warm-up, when recorded, split out of "other"."""
    per_rank = {k: np.asarray(v, dtype=np.float64) for k, v in (summary.get("time_per_rank") or {}).items()}
    warm = summary.get("warm_up_per_rank")
    if warm is not None and "other" in per_rank and len(warm) == len(per_rank["other"]):
        warm = np.asarray(warm, dtype=np.float64)
        per_rank["warm-up"] = np.minimum(warm, per_rank["other"])
        per_rank["other"] = per_rank["other"] - per_rank["warm-up"]
    return per_rank


def plot_time(plt, summary: dict, path: str) -> tuple[list[str], list[list]]:
    """Stacked bar of io/compute/comm/warm-up/other seconds per rank; returns the table."""
    per_rank = time_per_rank(summary)
    phases = [p for p in PHASE_COLOURS if p in per_rank]
    if not phases:
        return [], []
    n = len(per_rank[phases[0]])
    labels = [_rank_label(summary, r) for r in range(n)]
    fig, ax = plt.subplots(figsize=(max(4.5, 1.0 + 0.7 * n), 4))
    bottom = np.zeros(n)
    for p in phases:
        v = np.array(per_rank[p], dtype=np.float64)
        ax.bar(np.arange(n), v, bottom=bottom, color=PHASE_COLOURS[p], label=p, width=0.7)
        bottom += v
    ax.set_xticks(np.arange(n), labels, rotation=30 if n > 6 else 0, fontsize=8)
    ax.set_ylabel("seconds")
    ax.set_title("where the time went (per rank)")
    ax.legend(fontsize=8, ncol=len(phases), loc="upper center", bbox_to_anchor=(0.5, -0.12))
    _save(fig, path)
    header = ["rank"] + [f"{p} s" for p in phases] + ["wall s"]
    return header, [[labels[r]] + [_num(per_rank[p][r]) for p in phases]
                    + [_num(per_rank["wall"][r]) if "wall" in per_rank else "-"] for r in range(n)]


def _rank_label(summary: dict, r: int) -> str:
    ps = summary.get("ps")
    if ps:
        return f"{r} server" if r < int(ps.get("servers", 1)) else f"{r} worker"
    return str(r)


def plot_confusion(plt, cm: np.ndarray, path: str) -> None:
    K = cm.shape[0]
    size = min(9.0, 2.5 + 0.6 * K)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    im = ax.imshow(cm, cmap="Blues")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    top = cm.max() if cm.size else 0
    if K <= 20:
        for i in range(K):
            for j in range(K):
                ax.text(j, i, _num(cm[i, j]), ha="center", va="center", fontsize=9 if K <= 10 else 7,
                        color="white" if cm[i, j] > top / 2 else "black")
    ax.set_xticks(np.arange(K))
    ax.set_yticks(np.arange(K))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title("confusion matrix (counts)")
    _save(fig, path)


def plot_coefficients(plt, panels, names, path: str) -> None:
    n = len(panels)
    cols = min(n, 4)
    rows = -(-n // cols)
    bars = max(1, max(len(p["positive"]) + len(p["negative"]) for p in panels))
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.8 + rows * (0.5 + 0.22 * bars)), squeeze=False)
    for ax, p in zip(axes.ravel(), panels):
        items = list(reversed(p["negative"])) + list(reversed(p["positive"]))  # largest positive on top
        labels = [_coef_label(names, j, p) for j, _ in items]
        values = [v for _, v in items]
        ax.barh(np.arange(len(items)), values, color=["#c44e52" if v < 0 else "#4c72b0" for v in values])
        ax.set_yticks(np.arange(len(items)), labels, fontsize=8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_title(p["label"] or "coefficients", fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    _save(fig, path)


def _coef_label(names, j: int, panel: dict) -> str:
    cls = panel.get("classes", {})
    return f"{names[j]} (class {cls[j]})" if j in cls else names[j]


def plot_staleness(plt, hist, last_bin: int, path: str) -> None:
    counts = np.asarray(hist, dtype=np.int64)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(np.arange(counts.size), counts, color="#8172b2", width=0.8)
    ax.set_xlabel("staleness (updates applied between a worker's pull and its gradient)")
    ax.set_ylabel("gradients")
    ax.set_title("parameter server: gradient staleness")
    if counts.size > last_bin:
        ax.set_xticks([last_bin], [f">={last_bin}"])
    elif counts.size <= 20:
        ax.set_xticks(np.arange(counts.size))
    ax.grid(True, axis="y", alpha=0.3)
    _save(fig, path)


# -- the report -------------------------------------------------------------------------

def write_report(run_dir: str, out: str | None = None, top_k: int = 10) -> dict:
    """Write the PNGs and index.md / index.html of RUN into ``out`` (default RUN/report)."""
    if top_k < 1:
        raise ConfigError(f"--top-k must be >= 1, got {top_k}")
    plt = _pyplot()  # before anything is written: no half report without matplotlib
    run = load_run(run_dir)
    s, records = run["summary"], run["records"]
    out = out or os.path.join(run_dir, "report")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create report directory {out}: {e.strerror}") from None
    for name in IMAGES:  # a previous report's image that this run does not have must not linger
        if os.path.isfile(os.path.join(out, name)):
            os.remove(os.path.join(out, name))
    written: list[str] = []
    title = f"mpidml run {os.path.basename(os.path.abspath(run_dir))}"
    blocks: list[tuple] = [("h1", title)]

    # Overview
    m = s.get("metrics") or {}
    desc = (f"{s.get('model')} model, {s.get('optimizer')} optimizer, {s.get('strategy')} strategy"
            + (f" ({s['ps']['mode']})" if s.get("ps") else "")
            + f", {s.get('ranks')} rank(s); {s.get('n_rows')} rows x {s.get('n_features')} features "
            f"from {(s.get('io') or {}).get('path')}.")
    blocks.append(("p", desc))
    overview = [["final objective", _num(s.get("objective"))]]
    for key, label in (("accuracy", "accuracy"), ("balanced_accuracy", "balanced accuracy"),
                       ("macro_f1", "macro F1"), ("roc_auc", "ROC AUC"), ("rmse", "RMSE"), ("r2", "R^2")):
        if m.get(key, s.get(key)) is not None:
            overview.append([label, _num(m.get(key, s.get(key)))])
    full_batch = _x_key(records) == "iter"  # L-BFGS/GD log the objective on all rows, SGD/Adam on the batch
    overview += [["iterations" if full_batch else "steps", _num(s.get("steps"))], ["epochs", _num(s.get("epochs"))],
                 ["converged", _num(s.get("converged"))], ["wall seconds", _num((s.get("time") or {}).get("wall"))]]
    blocks.append(("table", ["quantity", "value"], overview))

    # Curves
    blocks.append(("h2", "Training curves"))
    if plot_curve(plt, records, "loss", os.path.join(out, "loss.png"), s.get("objective"), "objective",
                  "objective, all rows" if full_batch else "objective on the step's batch"):
        written.append("loss.png")
        last = records[-1] if records else {}
        blocks.append(("img", "loss.png", "objective per step"))
        blocks.append(("p", f"{len(records)} logged steps; the last logged objective is "
                       f"{_num(last.get('loss'))}; the dashed line is the final objective on all rows."))
    else:
        blocks.append(("p", "metrics.jsonl has no logged objective."))
    if plot_curve(plt, records, "accuracy", os.path.join(out, "accuracy.png"), s.get("accuracy"), "accuracy",
                  "accuracy on the step's batch"):
        written.append("accuracy.png")
        blocks.append(("img", "accuracy.png", "accuracy per step"))
    elif s.get("accuracy") is not None:
        blocks.append(("p", f"No accuracy was logged per step; the final accuracy on all rows is "
                       f"{_num(s['accuracy'])}."))

    # Time
    blocks.append(("h2", "Where the time went"))
    time_header, time_rows = plot_time(plt, s, os.path.join(out, "time.png"))
    if time_rows:
        written.append("time.png")
        blocks.append(("img", "time.png", "time per phase and rank"))
        blocks.append(("table", time_header, time_rows))
        blocks.append(("p", "io: reading data and writing outputs; compute: kernels and optimizer; comm: inside "
                       "MPI calls, including waiting for slower ranks; warm-up: compiling or loading the Numba "
                       "kernels (each compiled by one rank, then loaded by the others); other: the rest (start-up, Python "
                       "overhead, logging)."))

    # Confusion matrix
    if m.get("confusion") is not None:
        cm = np.asarray(m["confusion"], dtype=np.float64)
        plot_confusion(plt, cm, os.path.join(out, "confusion.png"))
        written.append("confusion.png")
        K = cm.shape[0]
        blocks.append(("h2", "Confusion matrix"))
        blocks.append(("img", "confusion.png", "confusion matrix"))
        per_class = [[f"true {i}"] + [_num(v) for v in cm[i]]
                     + [_num(m["precision"][i]), _num(m["recall"][i]), _num(m["f1"][i])] for i in range(K)]
        blocks.append(("table", ["", *[f"pred {j}" for j in range(K)], "precision", "recall", "F1"], per_class))

    # Coefficients
    model = run["model"]
    if "coef" in model:
        names, source = feature_names((s.get("io") or {}).get("path"), run["config"].get("x_name", "X"),
                                      model["coef"].shape[1])
        panels = top_coefficients(model["coef"], top_k)
        plot_coefficients(plt, panels, names, os.path.join(out, "coefficients.png"))
        written.append("coefficients.png")
        blocks.append(("h2", "Top coefficients"))
        blocks.append(("img", "coefficients.png", "top coefficients"))
        blocks.append(("p", f"Top {top_k} positive and negative coefficients of model.h5; "
                       f"feature names from the {source}."))
        rows = []
        for p in panels:
            cls = p.get("classes", {})
            for sign, items in (("+", p["positive"]), ("-", p["negative"])):
                for r, (j, v) in enumerate(items, 1):
                    c = cls.get(j, p["label"].removeprefix("class ") if p["label"].startswith("class ") else "-")
                    rows.append([str(c), f"{sign}{r}", names[j], str(j), _num(v)])
        blocks.append(("table", ["class", "rank", "feature", "column", "coefficient"], rows))
    else:
        blocks.append(("p", f"model.h5 holds a {model.get('name')} model without linear coefficients."))

    # Parameter server
    ps = s.get("ps")
    if ps:
        blocks.append(("h2", "Parameter server"))
        blocks.append(("table", ["quantity", "value"],
                       [[k.replace("_", " "), _num(ps.get(k))] for k in
                        ("mode", "servers", "workers", "updates", "updates_per_s", "server_busy_fraction",
                         "mean_staleness", "max_staleness", "max_clock_spread") if k in ps]))
        hist = ps.get("staleness_histogram")
        if ps.get("mode") != "sync" and hist and sum(hist):
            plot_staleness(plt, hist, int(ps.get("staleness_histogram_last_bin", len(hist))),
                           os.path.join(out, "staleness.png"))
            written.append("staleness.png")
            blocks.append(("img", "staleness.png", "staleness histogram"))
            blocks.append(("table", ["staleness", "gradients"], [[str(i), _num(c)] for i, c in enumerate(hist) if c]))
        workers = ps.get("per_worker") or []
        if workers:
            keys = ("rank", "steps", "mean_staleness", "max_staleness", "compute_seconds", "wait_seconds")
            blocks.append(("table", [k.replace("_", " ") for k in keys],
                           [[_num(w.get(k)) for k in keys] for w in workers]))

    with open(os.path.join(out, "index.md"), "w") as fh:
        fh.write(_markdown(blocks))
    with open(os.path.join(out, "index.html"), "w") as fh:
        fh.write(_html(blocks, title))
    return {"report": os.path.abspath(os.path.join(out, "index.md")), "html": os.path.abspath(
        os.path.join(out, "index.html")), "images": written}


def main(argv=None) -> int:
    """``python -m mpidml.report RUN [--out DIR] [--top-k K]`` (the same as ``mpidml report``)."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="mpidml report")
    p.add_argument("run")
    p.add_argument("--out", default=None)
    p.add_argument("--top-k", type=int, default=10)
    args = p.parse_args(argv)
    try:
        result = write_report(args.run, args.out, args.top_k)
    except MpidmlError as e:
        sys.stderr.write(f"mpidml: error: {e}\n")
        return e.exit_code
    print(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
