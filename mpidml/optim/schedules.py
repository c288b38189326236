"""Learning-rate schedules: ``make_schedule(name, lr, **kw)`` -> callable ``step -> lr``.

``step`` is the number of optimizer steps already taken (0 for the first step).
All schedules are pure functions of ``step`` (same value on every rank):

``constant``
    ``lr``
``inverse_sqrt``
    ``lr / sqrt(1 + step / decay_steps)``;
    ``decay_steps`` defaults to ``max(1, total_steps // 10)``, or 100 without ``total_steps``.
``step``
    ``lr * gamma ** (step // step_size)``; ``gamma`` defaults to 0.1 and ``step_size``
    to ``max(1, total_steps // 3)``, or 1000 without ``total_steps``.
``cosine``
    cosine annealing from ``lr`` at step 0 to ``lr * min_ratio`` at ``total_steps``
    (and after): ``lr * (min_ratio + (1 - min_ratio) * (1 + cos(pi * min(step, T) / T)) / 2)``;
    needs ``total_steps``; ``min_ratio`` defaults to 0.

Every schedule accepts ``total_steps`` (ignored where unused); other unknown
keywords raise ``ValueError``.
"""

from __future__ import annotations

import math

__all__ = ["SCHEDULES", "Schedule", "make_schedule"]

SCHEDULES = ("constant", "inverse_sqrt", "step", "cosine")


class Schedule:
    """A learning-rate schedule: ``schedule(step) -> float`` (``step`` >= 0).

    Attributes: ``name``, ``lr`` (the base rate) and ``params`` (the resolved keywords).
    """

    def __init__(self, name: str, lr: float, params: dict):
        self.name = name
        self.lr = lr
        self.params = params

    def __call__(self, step: int) -> float:
        if step < 0:
            raise ValueError(f"schedule step must be >= 0, got {step}")
        lr, p = self.lr, self.params
        if self.name == "constant":
            return lr
        if self.name == "inverse_sqrt":
            return lr / math.sqrt(1.0 + step / p["decay_steps"])
        if self.name == "step":
            return lr * p["gamma"] ** (step // p["step_size"])
        # cosine
        total, r = p["total_steps"], p["min_ratio"]
        frac = min(step, total) / total
        return lr * (r + (1.0 - r) * 0.5 * (1.0 + math.cos(math.pi * frac)))

    def values(self, start: int, n: int):
        """float64 (n,): the rates of steps start .. start+n-1, each exactly ``self(step)``
        (a constant schedule without a Python call per step: the trainer asks for an epoch's)."""
        import numpy as np

        if start < 0:
            raise ValueError(f"schedule step must be >= 0, got {start}")
        if self.name == "constant":
            return np.full(n, float(self.lr))
        return np.array([self(start + k) for k in range(n)], dtype=np.float64)

    def __repr__(self) -> str:
        kw = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"make_schedule({self.name!r}, {self.lr!r}{kw})"


def _pos_int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def make_schedule(name: str, lr: float, total_steps: int | None = None, **kw) -> Schedule:
    """Build the schedule ``name`` (one of :data:`SCHEDULES`) with base rate ``lr`` (> 0).

    Keywords by schedule: ``inverse_sqrt``: ``decay_steps``; ``step``: ``step_size``,
    ``gamma`` (in (0, 1]); ``cosine``: ``min_ratio`` (in [0, 1]). ``total_steps`` (the
    planned number of steps) is required by ``cosine`` and sets the other defaults.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr schedule {name!r}; choose from {', '.join(SCHEDULES)}")
    try:
        lr = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a number > 0, got {lr!r}") from None
    if not (lr > 0.0 and math.isfinite(lr)):
        raise ValueError(f"lr must be finite and > 0, got {lr!r}")
    if total_steps is not None:
        total_steps = _pos_int("total_steps", total_steps)
    allowed = {"constant": (), "inverse_sqrt": ("decay_steps",), "step": ("step_size", "gamma"),
               "cosine": ("min_ratio",)}[name]
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise ValueError(f"lr schedule {name!r} takes no option(s) {', '.join(unknown)}"
                         f"{'; allowed: ' + ', '.join(allowed) if allowed else ''}")
    params: dict = {}
    if name == "inverse_sqrt":
        default = max(1, total_steps // 10) if total_steps else 100
        params["decay_steps"] = _pos_int("decay_steps", kw.get("decay_steps", default))
    elif name == "step":
        default = max(1, total_steps // 3) if total_steps else 1000
        params["step_size"] = _pos_int("step_size", kw.get("step_size", default))
        gamma = float(kw.get("gamma", 0.1))
        if not (0.0 < gamma <= 1.0):
            raise ValueError(f"gamma must be in (0, 1], got {gamma!r}")
        params["gamma"] = gamma
    elif name == "cosine":
        if total_steps is None:
            raise ValueError("the cosine lr schedule needs total_steps")
        params["total_steps"] = total_steps
        min_ratio = float(kw.get("min_ratio", 0.0))
        if not (0.0 <= min_ratio <= 1.0):
            raise ValueError(f"min_ratio must be in [0, 1], got {min_ratio!r}")
        params["min_ratio"] = min_ratio
    return Schedule(name, lr, params)
