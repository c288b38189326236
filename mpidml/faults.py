"""Test-only fault injection, so the failure paths can be exercised for real.

Set ``MPIDML_FAULT`` to a comma-separated list of ``ACTION@WHERE:RANK[:STEP]``:

* ACTION: ``raise`` (an unexpected RuntimeError), ``kill`` (SIGKILL this
  process, like ``kill -9``), ``stall`` (sleep forever, like a hung rank);
* WHERE: ``load`` (while reading data), ``step`` (after training step/iteration
  STEP completed), ``checkpoint`` (inside the write of the checkpoint of step
  STEP, after part of the file is written);
* RANK: the rank that misbehaves; STEP: optional, default any.

Example: ``MPIDML_FAULT=kill@step:1:7`` kills rank 1 after step 7. Unset (the
normal case) this costs one boolean test per step.
"""

from __future__ import annotations

import os
import signal
import time

_SPEC = os.environ.get("MPIDML_FAULT", "")
active = bool(_SPEC)


def _parse(spec: str):
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        action, _, rest = item.partition("@")
        parts = rest.split(":")
        if action not in ("raise", "kill", "stall") or len(parts) not in (2, 3):
            raise ValueError(f"bad MPIDML_FAULT entry {item!r}: expected ACTION@WHERE:RANK[:STEP]")
        out.append((action, parts[0], int(parts[1]), int(parts[2]) if len(parts) == 3 else None))
    return out


_FAULTS = _parse(_SPEC) if active else []


def point(where: str, rank: int, step: int | None = None) -> None:
    """Trigger the configured fault if (where, rank, step) matches."""
    for action, w, r, s in _FAULTS:
        if w != where or r != rank or (s is not None and s != step):
            continue
        if action == "raise":
            raise RuntimeError(f"injected fault at {where} on rank {rank}" + (f", step {step}" if step is not None else ""))
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "stall":
            while True:
                time.sleep(3600)


def at_step(step: int) -> bool:
    """Whether a ``step`` fault (on any rank) is set for after step ``step``: the training loop
    then runs that step in Python, where :func:`point` is called (the compiled step loop,
    mpidml.parallel.steploop, calls no hook). The same answer on every rank."""
    return any(w == "step" and (s is None or s == step) for _a, w, _r, s in _FAULTS)
