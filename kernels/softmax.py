"""Multinomial (softmax) regression kernels.

params layout: float64 (K*(D+1),) = coef (K, D) row-major, then the K intercepts;
K = params.size // (D + 1). Labels y: int64 (n,) in 0..K-1.
loss_i = logsumexp(z_i) - z_i[y_i] with logits z_i = W x_i + c.
"""
import numpy as np
from numba import njit

from .simd import align_offset, ld, vload_n, vadd, vbload, vdiv, vexp_nonpos, vfma, vlane, vload, vmax, vmul, vselect_eq, vset8, \
    vsplat, vstore, vstore_t8, vsub
from .glm import linear_scores
from .util import (CACHE_LINE, FASTMATH, PREFETCH_BYTES, exp_nonpos, log_strict, next_run, prefetch_ahead, prefetch_l2,
                   prefetch_scattered)

# Workspace (in units of K float64) that enables the four-rows-at-a-time scalar path.
WORK_ROWS = 4
# Classes per register tile of the vector path (K is padded up to a multiple of it).
CLASS_TILE = 10
# Fewer classes than this take the scalar path: the padding to 10 classes costs more than
# the vectors gain (measured at D=64: K=5 40.1 vs 38.7 ms, K=3 39.7 vs 27.8, K=10 float32
# 31.6 vs 54.7 per 4e5 rows).
VECTOR_MIN_CLASSES = 6


def work_size(n_classes, n_features):
    """float64 workspace that enables the vector path of softmax_loss_grad_ws.

    Holds the coefficients transposed and padded to a multiple of CLASS_TILE classes, a
    padded gradient, the logits of 8 rows and 8 rows of X transposed, plus up to 7
    elements to start on a 64-byte boundary. Enough for the scalar paths too.
    Plain Python (models call it on every rank before the kernels are warmed up, which
    must not compile anything); the kernels use its compiled twin _work_size.
    """
    kq = -(-n_classes // CLASS_TILE) * CLASS_TILE
    dp = n_features + (-n_features) % 8
    return max(2 * kq * dp + 17 * kq + 8 * dp + 7, WORK_ROWS * n_classes)


_work_size = njit(cache=True, nogil=True)(work_size)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _residuals(work, R, K, y, sw, r, unweighted, with_loss):
    """In place for the R rows r..r+R-1: work[t*K:(t+1)*K] logits -> sw (p_k - [k == y]).

    Returns the weighted loss sum of the R rows (0.0 unless with_loss). Stable: each
    row is shifted by its max logit first, so exp never overflows; the exponentials of
    all R*K shifted logits are taken in one loop of util.exp_nonpos (vectorised).
    """
    loss = 0.0
    for t in range(R):
        b = t * K
        zmax = work[b]
        for k in range(1, K):
            zmax = max(zmax, work[b + k])
        for k in range(K):
            work[b + k] = work[b + k] - zmax
        if with_loss:  # s * (log(sum) + zmax - z_y): the shifted z_y, before exp
            loss -= (1.0 if unweighted else sw[r + t]) * work[b + y[r + t]]
    for q in range(R * K):
        work[q] = exp_nonpos(work[q])
    for t in range(R):
        b = t * K
        s = 1.0 if unweighted else sw[r + t]
        ssum = 0.0
        for k in range(K):
            ssum += work[b + k]
        if with_loss:
            loss += s * log_strict(ssum)
        c = s / ssum
        for k in range(K):
            work[b + k] *= c
        work[b + y[r + t]] -= s
    return loss


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_loss_grad_ws(X, y, sw, params, rows, grad, with_loss, work):
    """Same as :func:`softmax_loss_grad` with a caller-provided workspace (no allocation).

    work: float64 scratch, >= 2*K elements. With K >= VECTOR_MIN_CLASSES,
    work.size >= work_size(K, D) and a C-contiguous X, rows are taken 8 at a time in explicit vectors
    (_vector_path, ~1.5x faster than the scalar path at D=64, K=10); otherwise the scalar
    path below. The two give the same sums up to rounding (they add in different orders).
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    # the vector path indexes X's buffer flat: C-contiguous X only (the scalar path takes any)
    if K >= VECTOR_MIN_CLASSES and rows.size >= 8 and work.size >= _work_size(K, D) and X.flags.c_contiguous:
        return _vector_path(X, y, sw, params, rows, grad, with_loss, work)
    return _scalar_path(X, y, sw, params, rows, grad, with_loss, work)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _scalar_path(X, y, sw, params, rows, grad, with_loss, work):
    """softmax_loss_grad_ws one row group at a time in scalar code (any D).

    work: float64 (>= 2*K,) scratch for the logits/residuals of the rows in flight. With
    work.size >= WORK_ROWS*K (4*K) rows are taken four at a time, else in pairs (~2x
    slower at D=64, K=10). Per group of rows (x rows read once, kept in L1): for each
    class k, the group's logits share each load of coef[k]; per row max, exp(z - max)
    (strict), sum, loss = log(sum) + max - z_y; then grad_coef[k] += sum over the group
    of sw (p_k - [k == y]) x in one pass over grad_coef[k], grad_intercept[k] likewise.
    X is software-prefetched PREFETCH_BYTES ahead. Results depend on the path (the
    order of the additions), not otherwise on work.size.
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    KD = K * D
    unweighted = sw.size == 0
    m = rows.size
    quad = work.size >= WORK_ROWS * K
    lead = PREFETCH_BYTES // X.itemsize
    loss = 0.0
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        pr = prefetch_scattered(X, rows, pr, i, cnt)
        hi = lo + cnt
        r = lo
        pf = lo * D + lead
        while quad and r + 4 <= hi:
            pf = prefetch_ahead(X, pf, (r + 4) * D)
            for k in range(K):
                z0 = params[KD + k]
                z1 = z0
                z2 = z0
                z3 = z0
                o = k * D
                for j in range(D):
                    wkj = params[o + j]
                    z0 += wkj * X[r, j]
                    z1 += wkj * X[r + 1, j]
                    z2 += wkj * X[r + 2, j]
                    z3 += wkj * X[r + 3, j]
                work[k] = z0
                work[K + k] = z1
                work[2 * K + k] = z2
                work[3 * K + k] = z3
            loss += _residuals(work, 4, K, y, sw, r, unweighted, with_loss)
            for k in range(K):
                g0 = work[k]
                g1 = work[K + k]
                g2 = work[2 * K + k]
                g3 = work[3 * K + k]
                grad[KD + k] += (g0 + g1) + (g2 + g3)
                o = k * D
                for j in range(D):
                    grad[o + j] += (g0 * X[r, j] + g1 * X[r + 1, j]) + (g2 * X[r + 2, j] + g3 * X[r + 3, j])
            r += 4
        while r + 2 <= hi:
            pf = prefetch_ahead(X, pf, (r + 2) * D)
            for k in range(K):
                z0 = params[KD + k]
                z1 = z0
                o = k * D
                for j in range(D):
                    wkj = params[o + j]
                    z0 += wkj * X[r, j]
                    z1 += wkj * X[r + 1, j]
                work[k] = z0
                work[K + k] = z1
            loss += _residuals(work, 2, K, y, sw, r, unweighted, with_loss)
            for k in range(K):
                g0 = work[k]
                g1 = work[K + k]
                grad[KD + k] += g0 + g1
                o = k * D
                for j in range(D):
                    grad[o + j] += g0 * X[r, j] + g1 * X[r + 1, j]
            r += 2
        while r < hi:
            pf = prefetch_ahead(X, pf, (r + 1) * D)
            for k in range(K):
                z0 = params[KD + k]
                o = k * D
                for j in range(D):
                    z0 += params[o + j] * X[r, j]
                work[k] = z0
            loss += _residuals(work, 1, K, y, sw, r, unweighted, with_loss)
            for k in range(K):
                g0 = work[k]
                grad[KD + k] += g0
                o = k * D
                for j in range(D):
                    grad[o + j] += g0 * X[r, j]
            r += 1
        i += cnt
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _row_id(rows, i, r, t, run):
    """Row of X for lane t of the block: r + t within a run of consecutive rows, else rows[i + t]."""
    return r + t if run else ld(rows, i + t)


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _block8(X, y, sw, rows, i, r, run, K, kq, work, oW, oG, oGB, oZ, oT, oB, with_loss, nb):
    """Loss and gradient terms of 8 rows (ids from _row_id), added to the padded sums in work.

    1. X rows transposed into work[oT:] (8 at a time), so that lane t holds row t;
    2. logits, CLASS_TILE classes per register tile: z_k += x_j * coef[k, j] (coef read
       transposed, one broadcast per class and feature), stored to work[oZ + 8k:];
    3. softmax across the lanes: max, exp (vexp_nonpos), sum, the weighted residual
       s (p_k - [k == y]) and the loss s (log(sum) + max - z_y);
    4. gradient G[k, j:j+8] += sum_t R[k, t] X[row t, j:j+8] in 5-class x 16-feature
       register tiles (features in the lanes); the intercepts' residual sums per lane.
    """
    D = X.shape[1]
    i0 = _row_id(rows, i, r, 0, run)
    i1 = _row_id(rows, i, r, 1, run)
    i2 = _row_id(rows, i, r, 2, run)
    i3 = _row_id(rows, i, r, 3, run)
    i4 = _row_id(rows, i, r, 4, run)
    i5 = _row_id(rows, i, r, 5, run)
    i6 = _row_id(rows, i, r, 6, run)
    i7 = _row_id(rows, i, r, 7, run)
    a0, a1, a2, a3, a4, a5, a6, a7 = i0 * D, i1 * D, i2 * D, i3 * D, i4 * D, i5 * D, i6 * D, i7 * D
    D8 = D - D % 8
    for j in range(0, D8, 8):
        vstore_t8(work, oT + 8 * j, vload(X, a0 + j), vload(X, a1 + j), vload(X, a2 + j), vload(X, a3 + j),
                  vload(X, a4 + j), vload(X, a5 + j), vload(X, a6 + j), vload(X, a7 + j))
    if D8 < D:  # the last features of each row, masked: nothing past a row's end is read
        n = D - D8
        vstore_t8(work, oT + 8 * D8, vload_n(X, a0 + D8, n), vload_n(X, a1 + D8, n), vload_n(X, a2 + D8, n),
                  vload_n(X, a3 + D8, n), vload_n(X, a4 + D8, n), vload_n(X, a5 + D8, n), vload_n(X, a6 + D8, n),
                  vload_n(X, a7 + D8, n))
    step = CACHE_LINE // X.itemsize
    nlines = 8 * D // step if nb >= 0 else 0
    for k in range(0, kq, CLASS_TILE):
        z0 = vbload(work, oB + k)
        z1 = vbload(work, oB + k + 1)
        z2 = vbload(work, oB + k + 2)
        z3 = vbload(work, oB + k + 3)
        z4 = vbload(work, oB + k + 4)
        z5 = vbload(work, oB + k + 5)
        z6 = vbload(work, oB + k + 6)
        z7 = vbload(work, oB + k + 7)
        z8 = vbload(work, oB + k + 8)
        z9 = vbload(work, oB + k + 9)
        for j in range(D):
            if k == 0 and j < nlines:  # one line of the next block per step: see _vector_path
                prefetch_l2(X, nb + j * step)
            x = vload(work, oT + 8 * j)
            q = oW + j * kq + k
            z0 = vfma(x, vbload(work, q), z0)
            z1 = vfma(x, vbload(work, q + 1), z1)
            z2 = vfma(x, vbload(work, q + 2), z2)
            z3 = vfma(x, vbload(work, q + 3), z3)
            z4 = vfma(x, vbload(work, q + 4), z4)
            z5 = vfma(x, vbload(work, q + 5), z5)
            z6 = vfma(x, vbload(work, q + 6), z6)
            z7 = vfma(x, vbload(work, q + 7), z7)
            z8 = vfma(x, vbload(work, q + 8), z8)
            z9 = vfma(x, vbload(work, q + 9), z9)
        oz = oZ + 8 * k
        vstore(work, oz, z0)
        vstore(work, oz + 8, z1)
        vstore(work, oz + 16, z2)
        vstore(work, oz + 24, z3)
        vstore(work, oz + 32, z4)
        vstore(work, oz + 40, z5)
        vstore(work, oz + 48, z6)
        vstore(work, oz + 56, z7)
        vstore(work, oz + 64, z8)
        vstore(work, oz + 72, z9)
    m = vload(work, oZ)
    for k in range(1, K):
        m = vmax(m, vload(work, oZ + 8 * k))
    # labels and weights as lanes, built in registers (no scalar stores into vectors)
    yv = vset8(float(ld(y, i0)), float(ld(y, i1)), float(ld(y, i2)), float(ld(y, i3)),
               float(ld(y, i4)), float(ld(y, i5)), float(ld(y, i6)), float(ld(y, i7)))
    if sw.size == 0:
        s = vsplat(1.0)
    else:
        s = vset8(ld(sw, i0), ld(sw, i1), ld(sw, i2), ld(sw, i3), ld(sw, i4), ld(sw, i5), ld(sw, i6), ld(sw, i7))
    zero = vsplat(0.0)
    zy = zero
    ssum = zero
    for k in range(K):
        zk = vsub(vload(work, oZ + 8 * k), m)
        if with_loss:  # the shifted logit of the label
            zy = vselect_eq(yv, vsplat(float(k)), zk, zy)
        e = vexp_nonpos(zk)
        vstore(work, oZ + 8 * k, e)
        ssum = vadd(ssum, e)
    loss = 0.0
    if with_loss:  # s (log(sum) - (z_y - max))
        for t in range(8):
            loss += vlane(s, t) * (log_strict(vlane(ssum, t)) - vlane(zy, t))
    c = vdiv(s, ssum)
    for k in range(K):
        q = vsub(vmul(vload(work, oZ + 8 * k), c), vselect_eq(yv, vsplat(float(k)), s, zero))
        vstore(work, oZ + 8 * k, q)
        vstore(work, oGB + 8 * k, vadd(vload(work, oGB + 8 * k), q))
    # Padding classes (k >= K) keep their logits as residuals; their rows of G are never read.
    # Gradient tiles: 5 classes x 16 features (10 accumulators), so each load of X feeds 5 FMAs.
    Dp = D8 if D8 == D else D8 + 8  # G's rows are padded to whole vectors
    D16 = D8 - D8 % 16
    for k in range(0, kq, 5):
        z0 = oZ + 8 * k
        for j in range(0, D16, 16):
            p = oG + k * Dp + j
            g00 = vload(work, p)
            g01 = vload(work, p + 8)
            g10 = vload(work, p + Dp)
            g11 = vload(work, p + Dp + 8)
            g20 = vload(work, p + 2 * Dp)
            g21 = vload(work, p + 2 * Dp + 8)
            g30 = vload(work, p + 3 * Dp)
            g31 = vload(work, p + 3 * Dp + 8)
            g40 = vload(work, p + 4 * Dp)
            g41 = vload(work, p + 4 * Dp + 8)
            for t in range(8):
                a = _row_id(rows, i, r, t, run) * D + j
                x0 = vload(X, a)
                x1 = vload(X, a + 8)
                q = z0 + t
                r0 = vbload(work, q)
                g00 = vfma(x0, r0, g00)
                g01 = vfma(x1, r0, g01)
                r1 = vbload(work, q + 8)
                g10 = vfma(x0, r1, g10)
                g11 = vfma(x1, r1, g11)
                r2 = vbload(work, q + 16)
                g20 = vfma(x0, r2, g20)
                g21 = vfma(x1, r2, g21)
                r3 = vbload(work, q + 24)
                g30 = vfma(x0, r3, g30)
                g31 = vfma(x1, r3, g31)
                r4 = vbload(work, q + 32)
                g40 = vfma(x0, r4, g40)
                g41 = vfma(x1, r4, g41)
            vstore(work, p, g00)
            vstore(work, p + 8, g01)
            vstore(work, p + Dp, g10)
            vstore(work, p + Dp + 8, g11)
            vstore(work, p + 2 * Dp, g20)
            vstore(work, p + 2 * Dp + 8, g21)
            vstore(work, p + 3 * Dp, g30)
            vstore(work, p + 3 * Dp + 8, g31)
            vstore(work, p + 4 * Dp, g40)
            vstore(work, p + 4 * Dp + 8, g41)
        for j in range(D16, Dp, 8):  # the last one or two chunks of 8 features (masked past D)
            n = min(8, D - j)
            p = oG + k * Dp + j
            g00 = vload(work, p)
            g10 = vload(work, p + Dp)
            g20 = vload(work, p + 2 * Dp)
            g30 = vload(work, p + 3 * Dp)
            g40 = vload(work, p + 4 * Dp)
            for t in range(8):
                x0 = vload_n(X, _row_id(rows, i, r, t, run) * D + j, n)
                q = z0 + t
                g00 = vfma(x0, vbload(work, q), g00)
                g10 = vfma(x0, vbload(work, q + 8), g10)
                g20 = vfma(x0, vbload(work, q + 16), g20)
                g30 = vfma(x0, vbload(work, q + 24), g30)
                g40 = vfma(x0, vbload(work, q + 32), g40)
            vstore(work, p, g00)
            vstore(work, p + Dp, g10)
            vstore(work, p + 2 * Dp, g20)
            vstore(work, p + 3 * Dp, g30)
            vstore(work, p + 4 * Dp, g40)
    return loss


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _vector_path(X, y, sw, params, rows, grad, with_loss, work):
    """softmax_loss_grad_ws 8 rows at a time in explicit vectors (work >= work_size).

    Blocks are 8 consecutive rows inside a run of ``rows`` (the next block prefetched
    during this one's logits) or else the next 8 entries of ``rows`` (a mini-batch; prefetched
    ROWS_AHEAD rows ahead); the last rows.size % 8 rows go through the scalar path. work holds, from
    its first 64-byte boundary on: coef transposed (D, kq) with zero padding classes (room
    for (Dp, kq)), the padded gradient sums (kq, Dp), per-lane intercept sums (kq, 8),
    logits (kq, 8), X transposed (Dp, 8), intercepts (kq,); Dp is D rounded
    up to a multiple of 8 (the last features are read with masked loads).
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    KD = K * D
    kq = -(-K // CLASS_TILE) * CLASS_TILE
    Dp = D + (-D) % 8  # rows of G and of X transposed padded to whole vectors
    oW = align_offset(work)
    oG = oW + kq * Dp
    oGB = oG + kq * Dp
    oZ = oGB + 8 * kq
    oT = oZ + 8 * kq
    oB = oT + 8 * Dp
    for q in range(oW, oZ):
        work[q] = 0.0
    for k in range(K):
        work[oB + k] = params[KD + k]
        for j in range(D):
            work[oW + j * kq + k] = params[k * D + j]
    for k in range(K, kq):
        work[oB + k] = 0.0
    m = rows.size
    loss = 0.0
    i = 0
    pr = 0
    while i + 8 <= m:
        lo, cnt = next_run(rows, i)
        if cnt >= 8:
            r = lo
            for _ in range(cnt // 8):
                # The next 8 rows of the run are prefetched into L2, one cache line per step of this
                # block's logits loop. The hardware prefetcher stops at every 4 KiB page (every block
                # at D = 64) and, with ~600 cycles of arithmetic per block, memory and compute did not
                # overlap (a pass cost about compute + read time). Spread out, the requests overlap the
                # arithmetic: 1e6 x 64, 72.8 ms vs 78.9 (into L1) and 75.6 (none); a burst of 8 KiB
                # ahead at each block's start was slower (91).
                nb = (r + 8) * D if r + 16 <= lo + cnt else -1
                loss += _block8(X, y, sw, rows, i, r, True, K, kq, work, oW, oG, oGB, oZ, oT, oB, with_loss, nb)
                r += 8
                i += 8
        else:
            pr = prefetch_scattered(X, rows, pr, i, 8)
            loss += _block8(X, y, sw, rows, i, 0, False, K, kq, work, oW, oG, oGB, oZ, oT, oB, with_loss, -1)
            i += 8
    for k in range(K):
        for j in range(D):
            grad[k * D + j] += work[oG + k * Dp + j]
        gb = 0.0
        for t in range(8):
            gb += work[oGB + 8 * k + t]
        grad[KD + k] += gb
    if i < m:  # the last < 8 rows (work is free again: the scalar path may overwrite it)
        loss += _scalar_path(X, y, sw, params, rows[i:], grad, with_loss, work)
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=False)
def softmax_loss_grad(X, y, sw, params, rows, grad, with_loss):
    """Weighted softmax cross-entropy loss sum and gradient sum over ``rows``.

    X: (n, D) float32/float64 C-contiguous; y: int64 (n,) in 0..K-1; sw: float64 (n,)
    or size 0 (all weights 1); params: float64 (K*(D+1),) = [coef (K, D) row-major,
    intercepts (K,)]; rows: int64 (m,); grad: float64 like params, ADDED to:
    grad += sum_i sw_i d loss_i / d params. Returns sum_i sw_i loss_i if with_loss
    (stable log-sum-exp: logits may differ by 1e4 or more), else 0.0.
    Allocates one work_size(K, D) scratch vector per call; softmax_loss_grad_ws avoids it.
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    work = np.empty(_work_size(K, D), dtype=np.float64)
    return softmax_loss_grad_ws(X, y, sw, params, rows, grad, with_loss, work)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_decision(X, params, rows, out):
    """out[k, c] = logit of class c for row rows[k]: coef[c] . x + intercept[c].

    X: (n, D) float32/float64; params (K*(D+1),); rows int64 (m,); out float64 (m, K).
    glm.linear_scores (four rows at a time, X prefetched).
    """
    linear_scores(X, params, rows, out)


@njit(cache=True, nogil=True, inline="always")
def _argmax_row(z, i):
    """The first index of the largest entry of z[i] (a NaN counts as largest, as in np.argmax)."""
    best = 0
    zb = z[i, 0]
    for c in range(1, z.shape[1]):
        zc = z[i, c]
        if zc > zb or (zc != zc and zb == zb):
            best = c
            zb = zc
    return best


@njit(cache=True, nogil=True)
def argmax_rows(z, out):
    """out[i] = the first index of the largest entry of z[i] (a NaN counts as largest, as in
    np.argmax). z: float64 (m, K); out: int64 (m,). One pass, no temporaries (np.argmax along
    a short last axis costs ~5 ns per entry)."""
    for i in range(z.shape[0]):
        out[i] = _argmax_row(z, i)


@njit(cache=True, nogil=True, fastmath=False)
def argmax_hits(z, y, sw, rows):
    """(weighted correct, weight) of a batch: the batch accuracy a mini-batch loop logs.

    z: float64 (m, K) logits of the rows ``rows`` (int64 (m,)); y: int64 (n,) labels; sw:
    float64 (n,) or size 0 (unit weights). A row is correct when its label is the first index
    of the largest logit (argmax_rows' rule, NaN as largest). Sums in row order; one pass, no
    temporaries (the NumPy version made a label array, a gather, a compare and a count)."""
    correct = 0.0
    weight = 0.0
    for i in range(z.shape[0]):
        r = rows[i]
        w = 1.0 if sw.size == 0 else sw[r]
        if _argmax_row(z, i) == y[r]:
            correct += w
        weight += w
    return correct, weight
