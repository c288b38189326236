"""Shared helpers for the Numba kernels (pure: numpy, numba, math only).

Conventions used by every kernel in this package (see the package docstring):
``X`` is (n, D) float32/float64 C-contiguous, ``rows`` int64 row ids of X to use
(in order), ``sw`` float64 per-row weights or size 0 for "all ones", and sums are
accumulated in float64.
"""
import math

from numba import njit

# fastmath flags for the fused drivers: only 'contract' (FMA) and 'reassoc' (lets LLVM
# vectorise the dot-product reductions and the axpy updates). Never 'nnan'/'ninf'/'afn':
# the link functions (exp/log, stable sigmoid, log-sum-exp) live in separate strict
# (fastmath=False) njit functions that take scalars only, so their IEEE semantics are
# kept even after LLVM inlines them.
FASTMATH = {"contract", "reassoc"}  # a set (numba rejects frozenset); never mutate

LINEAR = 0
LOGISTIC = 1


@njit(cache=True, nogil=True, fastmath=False, inline="always")
def next_run(rows, i):
    """Longest run of consecutive ids starting at ``rows[i]``.

    Returns ``(lo, count)`` such that ``rows[i + k] == lo + k`` for ``k < count``.
    Kernels iterate ``range(lo, lo + count)`` instead of ``rows[k]``: the row address
    then no longer depends on a load, which lets the CPU stream X at full speed
    (indexing through ``rows`` costs ~40% of the bandwidth on full batches).
    """
    m = rows.size
    lo = rows[i]
    e = i + 1
    while e < m and rows[e] == lo + (e - i):
        e += 1
    return lo, e - i


@njit(cache=True, nogil=True, fastmath=False)
def link_residual(model, z, y, s, with_loss):
    """Per-row GLM link, strict IEEE arithmetic.

    Parameters: model (LINEAR or LOGISTIC), margin z, target y, weight s (float64).
    Returns ``(r, l)``: r = s * d loss / d z, l = s * loss (0.0 unless with_loss).
    Logistic: loss = log(1 + exp(z)) - y z, computed from e = exp(-|z|) so that no
    exp overflows (|z| > 700 is fine); sigmoid is 1/(1+e) or e/(1+e).
    """
    if model == LINEAR:
        d = z - y
        l = 0.5 * s * d * d if with_loss else 0.0
        return s * d, l
    e = math.exp(-abs(z))
    u = 1.0 + e
    inv = 1.0 / u
    p = inv if z >= 0.0 else e * inv
    l = 0.0
    if with_loss:
        # log1p(e) = log(u) + (e - (u - 1)) / u, exact correction for the rounding of
        # u = 1 + e (u - 1 is exact); ~2x cheaper than math.log1p.
        lp = math.log(u) - ((u - 1.0) - e) * inv
        l = s * ((max(z, 0.0) - y * z) + lp)
    return s * (p - y), l


@njit(cache=True, nogil=True, fastmath=False)
def exp_shifted(z, zmax):
    """exp(z - zmax), strict (used by the softmax kernel)."""
    return math.exp(z - zmax)


@njit(cache=True, nogil=True, fastmath=False)
def softmax_row_loss(ssum, zmax, zy, s):
    """s * (log(sum_k exp(z_k - zmax)) + zmax - z_y), strict."""
    return s * (math.log(ssum) + (zmax - zy))


@njit(cache=True, nogil=True, fastmath=False)
def select_local_rows(batch, lo, hi, out):
    """Local row ids of a global mini-batch.

    batch: int64 (b,) global row ids; lo, hi: this rank's global row range [lo, hi);
    out: int64 (>= b,). Writes ``g - lo`` for every ``g`` in ``batch`` with
    ``lo <= g < hi``, in batch order, into ``out[:count]``; returns count. No allocation.
    """
    c = 0
    for k in range(batch.size):
        g = batch[k]
        if g >= lo and g < hi:
            out[c] = g - lo
            c += 1
    return c
