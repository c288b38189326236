"""Run outputs written by rank 0: metrics.jsonl, summary.json, and the progress display.

Only the root writes files or prints progress; other ranks get a
:class:`Reporter` whose methods do nothing (unless ``--verbose``, which lets
every rank print its log lines prefixed with its rank).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time


def _clean(value):
    """JSON-safe: NaN/Inf become None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def print_json(obj, **kwargs) -> None:
    """Print ``obj`` as strict JSON on stdout: NaN/Inf (an undefined metric, e.g. the recall of a
    class absent from the data) become null, as in summary.json."""
    print(json.dumps(_clean(obj), allow_nan=False, **kwargs))


def stderr_is_terminal() -> bool:
    """Is the user's stderr a terminal?

    Under mpirun a rank's stderr is a pipe to the launcher even when the user
    watches a terminal, so also look at the launcher's stderr: walk up to three
    parent processes (Linux /proc) for a stderr that is a tty. Batch jobs (sbatch,
    output to a file) get plain log lines.
    """
    if sys.stderr.isatty():
        return True
    pid = os.getppid()
    for _ in range(3):
        try:
            target = os.readlink(f"/proc/{pid}/fd/2")
            if target.startswith(("/dev/pts/", "/dev/tty")):
                return True
            with open(f"/proc/{pid}/stat") as fh:
                pid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid <= 1:
            return False
    return False


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as fh:
        json.dump(_clean(obj), fh, indent=2, sort_keys=False)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Reporter:
    """Progress bar or periodic log lines on stderr, plus metrics.jsonl.

    Parameters
    ----------
    run_dir : str or None
        Where metrics.jsonl goes (None: no file, e.g. on non-root ranks).
    total : int
        Expected number of steps (for the bar); 0 if unknown.
    unit : str
        "step" (SGD, GD) or "iter" (L-BFGS).
    mode : str
        "auto" (bar when stderr is a terminal, log lines otherwise), "bar", "log", "none".
    prefix : str
        Printed before log lines (the rank under --verbose).
    """

    def __init__(self, run_dir, total=0, unit="step", mode="auto", prefix="", enabled=True):
        self.enabled = enabled
        self.total = total
        self.unit = unit
        self.prefix = prefix
        if mode == "auto":
            mode = "bar" if stderr_is_terminal() else "log"
        self.mode = mode if enabled else "none"
        self.file = open(os.path.join(run_dir, "metrics.jsonl"), "a") if (run_dir and enabled) else None
        self.t0 = time.perf_counter()
        self._last_len = 0

    def log(self, record: dict, at: float | None = None) -> None:
        """One metrics line (step, epoch, loss, ...); also shown on the terminal. ``at``: when
        the logged event happened (time.perf_counter() seconds; default: now), for records
        written after the fact (the compiled step loop's logged steps, written when its run
        returns): their "time" is their step's, not the moment they were written."""
        if not self.enabled:
            return
        now = time.perf_counter() if at is None else at
        record = {"time": round(now - self.t0, 6), **record}
        if self.file is not None:
            self.file.write(json.dumps(_clean(record)) + "\n")
            self.file.flush()
        if self.mode == "bar":
            self._bar(record)
        elif self.mode == "log":
            sys.stderr.write(self.prefix + _format(record, self.unit) + "\n")
            sys.stderr.flush()

    def message(self, text: str) -> None:
        if not self.enabled or self.mode == "none":
            return
        if self.mode == "bar" and self._last_len:
            sys.stderr.write("\n")
            self._last_len = 0
        sys.stderr.write(self.prefix + text + "\n")
        sys.stderr.flush()

    def _bar(self, record):
        done = record.get(self.unit, 0)
        width = 28
        frac = min(1.0, done / self.total) if self.total else 0.0
        fill = int(frac * width)
        bar = "#" * fill + "-" * (width - fill)
        text = f"\r[{bar}] {done}/{self.total or '?'} {_format(record, self.unit, short=True)}"
        sys.stderr.write(text.ljust(self._last_len))
        sys.stderr.flush()
        self._last_len = len(text)

    def close(self):
        if self.mode == "bar" and self._last_len:
            sys.stderr.write("\n")
            sys.stderr.flush()
        if self.file is not None:
            self.file.close()
            self.file = None


def _format(record, unit, short=False) -> str:
    parts = [] if short else [f"{unit} {record.get(unit, '?')}"]
    if "epoch" in record and not short:
        parts.append(f"epoch {record['epoch']:.2f}")
    for key, fmt in (("loss", ".6g"), ("grad_max", ".3g"), ("lr", ".3g")):
        if record.get(key) is not None:
            parts.append(f"{key} {record[key]:{fmt}}")
    if record.get("samples_per_s"):
        parts.append(f"{record['samples_per_s']:.3g} samples/s")
    parts.append(f"{record['time']:.2f}s")
    return "  ".join(parts)
