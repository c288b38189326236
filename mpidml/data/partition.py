"""Balanced contiguous row partitions (which rows each rank owns).

Every rank computes the same partition from (n_rows, n_parts) alone, so no
communication is needed to agree on it.
"""

from __future__ import annotations

import operator

import numpy as np

__all__ = ["shard_bounds", "all_shard_bounds"]


def _as_int(value, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def shard_bounds(n_rows: int, n_parts: int, part: int) -> tuple[int, int]:
    """Balanced contiguous partition: rows ``[lo, hi)`` of part ``part``.

    Part sizes differ by at most one: the first ``n_rows % n_parts`` parts get
    one extra row. Parts may be empty when ``n_rows < n_parts``.

    Raises ValueError if ``n_rows < 0``, ``n_parts < 1`` or ``part`` is not in
    ``[0, n_parts)``.
    """
    n_rows = _as_int(n_rows, "n_rows")
    n_parts = _as_int(n_parts, "n_parts")
    part = _as_int(part, "part")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    if not 0 <= part < n_parts:
        raise ValueError(f"part must be in [0, {n_parts}), got {part}")
    base, extra = divmod(n_rows, n_parts)
    lo = part * base + min(part, extra)
    hi = lo + base + (1 if part < extra else 0)
    return lo, hi


def all_shard_bounds(n_rows: int, n_parts: int) -> np.ndarray:
    """Offsets of all parts: ``(n_parts + 1,)`` int64, part ``p`` is ``[off[p], off[p+1])``.

    Same partition as :func:`shard_bounds` (suitable as Gatherv displacements).
    """
    n_rows = _as_int(n_rows, "n_rows")
    n_parts = _as_int(n_parts, "n_parts")
    if n_rows < 0:
        raise ValueError(f"n_rows must be >= 0, got {n_rows}")
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    base, extra = divmod(n_rows, n_parts)
    sizes = np.full(n_parts, base, dtype=np.int64)
    sizes[:extra] += 1
    offsets = np.zeros(n_parts + 1, dtype=np.int64)
    np.cumsum(sizes, out=offsets[1:])
    return offsets
