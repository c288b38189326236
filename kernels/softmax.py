"""Multinomial (softmax) regression kernels.

params layout: float64 (K*(D+1),) = coef (K, D) row-major, then the K intercepts;
K = params.size // (D + 1). Labels y: int64 (n,) in 0..K-1.
loss_i = logsumexp(z_i) - z_i[y_i] with logits z_i = W x_i + c.
"""
import numpy as np
from numba import njit

from .simd import (WIDE_REGISTERS, align_offset, ld, vload_n, vadd, vbload, vdiv, vexp_nonpos, vfma, vlane, vload,
                   vmax, vmul, vselect_eq, vfence, vlog_ge1, vselect_gt, vset8, vsplat, vstore, vstore_t8, vsub)
from .glm import linear_scores
from .util import (CACHE_LINE, FASTMATH, PREFETCH_BYTES, exp_nonpos, log_strict, next_run, prefetch_ahead, prefetch_l2,
                   prefetch_rows, prefetch_scattered)

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
    padded gradient, the logits of 16 rows and 16 rows of X transposed, 8 lanes of batch hits,
    plus up to 7 elements to start on a 64-byte boundary. Enough for the scalar paths too.
    Plain Python (models call it on every rank before the kernels are warmed up, which
    must not compile anything); the kernels use its compiled twin _work_size.
    """
    kq = -(-n_classes // CLASS_TILE) * CLASS_TILE
    dp = n_features + (-n_features) % 8
    return max(2 * kq * dp + 25 * kq + 16 * dp + 8 + 7, WORK_ROWS * n_classes)


_work_size = njit(cache=True, nogil=True)(work_size)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _residuals(work, R, K, y, sw, r, unweighted, with_loss, hits):
    """In place for the R rows r..r+R-1: work[t*K:(t+1)*K] logits -> sw (p_k - [k == y]).

    Returns the weighted loss sum of the R rows (0.0 unless with_loss). Stable: each
    row is shifted by its max logit first, so exp never overflows; the exponentials of
    all R*K shifted logits are taken in one loop of util.exp_nonpos (vectorised).
    hits: float64 (1,) or size 0 (none): hits[0] += the weights of the rows whose label is
    the first index of their largest logit (a NaN counts as largest: argmax_hits' rule).
    """
    loss = 0.0
    if hits.size > 0:
        for t in range(R):
            b = t * K
            best = 0
            zb = work[b]
            for k in range(1, K):
                zc = work[b + k]
                if zc > zb or (zc != zc and zb == zb):
                    best = k
                    zb = zc
            if best == y[r + t]:
                hits[0] += 1.0 if unweighted else sw[r + t]
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
def softmax_loss_grad_hits(X, y, sw, params, rows, grad, with_loss, work, hits):
    """:func:`softmax_loss_grad_ws`, counting the batch's hits in the same pass.

    hits: float64 (1,), or size 0 for none: hits[0] = sum_i sw_i [argmax_k z_ik == y_i], the
    first index of the largest logit (a NaN counts as largest), as kernels.argmax_hits counts
    it, from the logits this pass computes: a logged SGD step needs no second pass over its
    rows for the batch accuracy. (These logits are summed in another order than
    softmax_decision's, so a row whose two largest logits differ in the last bits only may
    count otherwise than argmax_hits on those.) No allocation.

    With K >= VECTOR_MIN_CLASSES, rows.size >= 8, work.size >= work_size(K, D) and a
    C-contiguous X, rows are taken 16 at a time in explicit vectors (_vector_path, ~2.4x
    faster than the scalar path at D=64, K=10); otherwise the scalar path below. The two give
    the same sums up to rounding (they add in different orders).
    """
    if hits.size > 0:
        hits[0] = 0.0
    D = X.shape[1]
    K = params.size // (D + 1)
    # the vector path indexes X's buffer flat: C-contiguous X only (the scalar path takes any)
    if K >= VECTOR_MIN_CLASSES and rows.size >= 8 and work.size >= _work_size(K, D) and X.flags.c_contiguous:
        return _vector_path(X, y, sw, params, rows, grad, with_loss, work, hits)
    return _scalar_path(X, y, sw, params, rows, grad, with_loss, work, hits)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_loss_grad_ws(X, y, sw, params, rows, grad, with_loss, work):
    """Same as :func:`softmax_loss_grad` with a caller-provided workspace (no allocation).

    work: float64 scratch, >= 2*K elements (>= work_size(K, D) for the vector path). The
    paths: see :func:`softmax_loss_grad_hits`, called with no hits.
    """
    return softmax_loss_grad_hits(X, y, sw, params, rows, grad, with_loss, work, work[:0])


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _scalar_path(X, y, sw, params, rows, grad, with_loss, work, hits):
    """softmax_loss_grad_hits one row group at a time in scalar code (any D).

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
            loss += _residuals(work, 4, K, y, sw, r, unweighted, with_loss, hits)
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
            loss += _residuals(work, 2, K, y, sw, r, unweighted, with_loss, hits)
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
            loss += _residuals(work, 1, K, y, sw, r, unweighted, with_loss, hits)
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
def _row_id(rows, i, r, t, run, nvalid):
    """Row of X for lane t (0..15) of the block: r + t within a run of consecutive rows, else
    rows[i + t]; past the nvalid entries left, the last one again (a padding lane, weight 0)."""
    if run:
        return r + t
    return ld(rows, i + min(t, nvalid - 1))


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _offsets16(rows, i, r, run, nvalid, D):
    """The flat offsets in X of the block's 16 rows (_row_id(..., t, ...) * D for t < 16), read
    once per block: a gradient tile indexing X through ``rows`` at each load reloaded the
    row id and multiplied again (LLVM cannot hoist a load of ``rows`` over the stores to work).
    Runs keep (r + t) * D, which LLVM strength-reduces (through the tuple they were ~10 % slower).
    Side by side on AMD Zen 3 (1e6 x 64 float64, K = 10, 2048 scattered rows, median us): fresh
    rows 401 vs 431, the same rows again 266 vs 291; 2048-row runs 198 vs 203."""
    return (_row_id(rows, i, r, 0, run, nvalid) * D, _row_id(rows, i, r, 1, run, nvalid) * D,
            _row_id(rows, i, r, 2, run, nvalid) * D, _row_id(rows, i, r, 3, run, nvalid) * D,
            _row_id(rows, i, r, 4, run, nvalid) * D, _row_id(rows, i, r, 5, run, nvalid) * D,
            _row_id(rows, i, r, 6, run, nvalid) * D, _row_id(rows, i, r, 7, run, nvalid) * D,
            _row_id(rows, i, r, 8, run, nvalid) * D, _row_id(rows, i, r, 9, run, nvalid) * D,
            _row_id(rows, i, r, 10, run, nvalid) * D, _row_id(rows, i, r, 11, run, nvalid) * D,
            _row_id(rows, i, r, 12, run, nvalid) * D, _row_id(rows, i, r, 13, run, nvalid) * D,
            _row_id(rows, i, r, 14, run, nvalid) * D, _row_id(rows, i, r, 15, run, nvalid) * D)


# _transpose8, _softmax16 and the blocks are called, not inlined (see _vector_blocks), and compile
# without Numba's reference counting (_nrt=False; they allocate nothing): with it every call
# increfed and decrefed its array arguments, atomic operations that the refcount pruning cannot
# pair across the `run` branches (the transposes of 16 rows: 15 vs 12 ns per row, ad hoc).
@njit(cache=True, nogil=True, fastmath=FASTMATH, _nrt=False)
def _transpose8(X, rows, i, r, run, nvalid, h, work, o):
    """Rows 8h..8h+7 of the block transposed into work[o:]: work[o + 8 j + t] = X[row t, j]
    (the last features of each row read with masked loads: nothing past a row's end)."""
    D = X.shape[1]
    a0 = _row_id(rows, i, r, 8 * h, run, nvalid) * D
    a1 = _row_id(rows, i, r, 8 * h + 1, run, nvalid) * D
    a2 = _row_id(rows, i, r, 8 * h + 2, run, nvalid) * D
    a3 = _row_id(rows, i, r, 8 * h + 3, run, nvalid) * D
    a4 = _row_id(rows, i, r, 8 * h + 4, run, nvalid) * D
    a5 = _row_id(rows, i, r, 8 * h + 5, run, nvalid) * D
    a6 = _row_id(rows, i, r, 8 * h + 6, run, nvalid) * D
    a7 = _row_id(rows, i, r, 8 * h + 7, run, nvalid) * D
    D8 = D - D % 8
    for j in range(0, D8, 8):
        vstore_t8(work, o + 8 * j, vload(X, a0 + j), vload(X, a1 + j), vload(X, a2 + j), vload(X, a3 + j),
                  vload(X, a4 + j), vload(X, a5 + j), vload(X, a6 + j), vload(X, a7 + j))
    if D8 < D:
        n = D - D8
        vstore_t8(work, o + 8 * D8, vload_n(X, a0 + D8, n), vload_n(X, a1 + D8, n), vload_n(X, a2 + D8, n),
                  vload_n(X, a3 + D8, n), vload_n(X, a4 + D8, n), vload_n(X, a5 + D8, n), vload_n(X, a6 + D8, n),
                  vload_n(X, a7 + D8, n))


@njit(cache=True, nogil=True, fastmath=FASTMATH, _nrt=False)
def _softmax16(y, sw, rows, i, r, run, nvalid, K, work, oZ, oGB, with_loss, oH):
    """Softmax across the lanes of the block's 16 rows, as two vectors of 8 (a: rows 0-7, b: rows
    8-15): the logits work[oZ + 16 k:][:8] (a) and work[oZ + 16 k + 8:][:8] (b) of each class k
    become the weighted residuals s (p_k - [k == y]); the intercepts' per-lane sums in
    work[oGB + 8 k:] grow by those of a, then of b. Returns the rows' loss sum s (log(sum) - (z_y
    - max)), a's lanes summed in order, then b's, then the two added (0.0 unless with_loss).
    Padding lanes (past nvalid) have weight 0: residuals and loss 0. oH >= 0: the per-lane batch
    hits work[oH:oH + 8] grow by s where the row's label is the first index of its largest logit
    (a NaN counts as largest: argmax_hits' rule), a's then b's.

    The two halves' steps are interleaved: each is a chain of dependent steps (the max over the
    classes, the exponentials, their sum, one division), and side by side their latencies overlap.
    Each lane's arithmetic is the same as when the halves ran one after the other (two calls of an
    8-row version): the same bits. Side by side with that (ad hoc, one process per version, two
    rounds, min of 9, 1e6 x 64 float64, K = 10, Intel Xeon with AVX-512): gradient 53.7-54.1 vs
    55.7-56.3 ns per row from memory, 42.2-43.5 vs 44.7-44.9 in L2; loss + gradient 56.1-56.5 vs
    58.8-59.6 and 43.9-45.4 vs 47.7-47.8; compiled for AVX2 (NUMBA_CPU_NAME=znver3 on the same
    core) the same within the noise (81.8-82.3 vs 83.7-85.0 from memory). A tree for the max
    gained nothing more."""
    ids = (_row_id(rows, i, r, 0, run, nvalid), _row_id(rows, i, r, 1, run, nvalid),
           _row_id(rows, i, r, 2, run, nvalid), _row_id(rows, i, r, 3, run, nvalid),
           _row_id(rows, i, r, 4, run, nvalid), _row_id(rows, i, r, 5, run, nvalid),
           _row_id(rows, i, r, 6, run, nvalid), _row_id(rows, i, r, 7, run, nvalid),
           _row_id(rows, i, r, 8, run, nvalid), _row_id(rows, i, r, 9, run, nvalid),
           _row_id(rows, i, r, 10, run, nvalid), _row_id(rows, i, r, 11, run, nvalid),
           _row_id(rows, i, r, 12, run, nvalid), _row_id(rows, i, r, 13, run, nvalid),
           _row_id(rows, i, r, 14, run, nvalid), _row_id(rows, i, r, 15, run, nvalid))
    # labels and weights as lanes, built in registers (no scalar stores into vectors)
    ya = vset8(float(ld(y, ids[0])), float(ld(y, ids[1])), float(ld(y, ids[2])), float(ld(y, ids[3])),
               float(ld(y, ids[4])), float(ld(y, ids[5])), float(ld(y, ids[6])), float(ld(y, ids[7])))
    yb = vset8(float(ld(y, ids[8])), float(ld(y, ids[9])), float(ld(y, ids[10])), float(ld(y, ids[11])),
               float(ld(y, ids[12])), float(ld(y, ids[13])), float(ld(y, ids[14])), float(ld(y, ids[15])))
    if sw.size == 0:
        sa = vsplat(1.0)
        sb = vsplat(1.0)
    else:
        sa = vset8(ld(sw, ids[0]), ld(sw, ids[1]), ld(sw, ids[2]), ld(sw, ids[3]), ld(sw, ids[4]), ld(sw, ids[5]),
                   ld(sw, ids[6]), ld(sw, ids[7]))
        sb = vset8(ld(sw, ids[8]), ld(sw, ids[9]), ld(sw, ids[10]), ld(sw, ids[11]), ld(sw, ids[12]),
                   ld(sw, ids[13]), ld(sw, ids[14]), ld(sw, ids[15]))
    lanes = vset8(0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0)
    if nvalid < 8:  # a padding lane repeats a row: weight 0
        sa = vselect_gt(vsplat(float(nvalid)), lanes, sa, vsplat(0.0))
    if nvalid < 16:
        sb = vselect_gt(vsplat(float(nvalid - 8)), lanes, sb, vsplat(0.0))
    oa = oZ
    ob = oZ + 8
    ma = vload(work, oa)
    mb = vload(work, ob)
    for k in range(1, K):
        ma = vmax(ma, vload(work, oa + 16 * k))
        mb = vmax(mb, vload(work, ob + 16 * k))
    zero = vsplat(0.0)
    one = vsplat(1.0)
    if oH >= 0:  # the batch accuracy: each lane's first largest logit, as _argmax_row
        za = vload(work, oa)
        zb = vload(work, ob)
        besta = zero
        bestb = zero
        kv = zero
        for k in range(1, K):
            kv = vadd(kv, one)
            # 1.0 where zc is NaN and the best so far is not (x == x fails for NaN only), else zc > best
            zc = vload(work, oa + 16 * k)
            take = vselect_gt(zc, za, one, vselect_eq(za, za, vselect_eq(zc, zc, zero, one), zero))
            za = vselect_gt(take, zero, zc, za)
            besta = vselect_gt(take, zero, kv, besta)
            zc = vload(work, ob + 16 * k)
            take = vselect_gt(zc, zb, one, vselect_eq(zb, zb, vselect_eq(zc, zc, zero, one), zero))
            zb = vselect_gt(take, zero, zc, zb)
            bestb = vselect_gt(take, zero, kv, bestb)
        vstore(work, oH, vadd(vload(work, oH), vselect_eq(besta, ya, sa, zero)))
        vstore(work, oH, vadd(vload(work, oH), vselect_eq(bestb, yb, sb, zero)))
    zya = zero
    zyb = zero
    suma = zero
    sumb = zero
    kv = zero  # the class index k in every lane (counted up: no int -> float conversion per class)
    for k in range(K):
        zka = vsub(vload(work, oa + 16 * k), ma)
        zkb = vsub(vload(work, ob + 16 * k), mb)
        if with_loss:  # the shifted logit of the label
            zya = vselect_eq(ya, kv, zka, zya)
            zyb = vselect_eq(yb, kv, zkb, zyb)
        ea = vexp_nonpos(zka)
        eb = vexp_nonpos(zkb)
        vstore(work, oa + 16 * k, ea)
        vstore(work, ob + 16 * k, eb)
        suma = vadd(suma, ea)
        sumb = vadd(sumb, eb)
        kv = vadd(kv, one)
    loss_a = 0.0
    loss_b = 0.0
    if with_loss:  # s (log(sum) - (z_y - max)); sum >= 1 (the max term is exp(0)) or NaN
        lva = vmul(sa, vsub(vlog_ge1(suma), zya))
        lvb = vmul(sb, vsub(vlog_ge1(sumb), zyb))
        for t in range(8):
            loss_a += vlane(lva, t)
            loss_b += vlane(lvb, t)
    ca = vfence(vdiv(sa, suma))  # one division per 8 rows: see vfence
    cb = vfence(vdiv(sb, sumb))
    kv = zero
    for k in range(K):
        qa = vsub(vmul(vload(work, oa + 16 * k), ca), vselect_eq(ya, kv, sa, zero))
        qb = vsub(vmul(vload(work, ob + 16 * k), cb), vselect_eq(yb, kv, sb, zero))
        vstore(work, oa + 16 * k, qa)
        vstore(work, ob + 16 * k, qb)
        vstore(work, oGB + 8 * k, vadd(vadd(vload(work, oGB + 8 * k), qa), qb))
        kv = vadd(kv, one)
    return loss_a + loss_b


@njit(cache=True, nogil=True, fastmath=FASTMATH, _nrt=False)
def _block16(X, y, sw, rows, i, r, run, nvalid, K, kq, work, oW, oG, oGB, oZ, oT, oB, oH, with_loss, nb):
    """Loss and gradient terms of 16 rows (ids from _row_id), added to the padded sums in work.

    1. X rows transposed into work[oT:] (rows 0-7) and work[oT + 8 Dp:] (rows 8-15), so that
       lane t of a vector holds row t (or t + 8);
    2. logits, CLASS_TILE classes x 16 rows per register tile (20 accumulators): z_k += x_j *
       coef[k, j], each broadcast of coef[k, j] feeding two FMAs; stored to work[oZ + 16 k:];
    3. softmax across the lanes (_softmax16, both halves);
    4. gradient G[k, j:j+16] += sum_t R[k, t] X[row t, j:j+16] in CLASS_TILE-class x
       16-feature register tiles (features in the lanes), 16 rows per tile load and store.
    Sixteen rows instead of eight halve the broadcasts per FMA of the logits and the loads and
    stores of G per row, and a short last block needs no scalar tail; alone that gained little
    (1e6 x 64, K = 10, ad-hoc, X in L2: 58 vs 60 ns per row): the fenced division and the
    vector log in the softmax step and the spread prefetch (_vector_path) made the difference.
    """
    D = X.shape[1]
    Dp = D + (-D) % 8
    _transpose8(X, rows, i, r, run, nvalid, 0, work, oT)
    _transpose8(X, rows, i, r, run, nvalid, 1, work, oT + 8 * Dp)
    step = CACHE_LINE // X.itemsize
    lines_per_j = 16 * X.itemsize // CACHE_LINE  # the next block's 16 rows: D lines (float32) or 2 D (float64)
    for k in range(0, kq, CLASS_TILE):
        a0 = vbload(work, oB + k)
        a1 = vbload(work, oB + k + 1)
        a2 = vbload(work, oB + k + 2)
        a3 = vbload(work, oB + k + 3)
        a4 = vbload(work, oB + k + 4)
        a5 = vbload(work, oB + k + 5)
        a6 = vbload(work, oB + k + 6)
        a7 = vbload(work, oB + k + 7)
        a8 = vbload(work, oB + k + 8)
        a9 = vbload(work, oB + k + 9)
        b0, b1, b2, b3, b4, b5, b6, b7, b8, b9 = a0, a1, a2, a3, a4, a5, a6, a7, a8, a9
        for j in range(D):
            if k == 0 and nb >= 0:  # the next block's first D lines, one per step: see _vector_path
                prefetch_l2(X, nb + j * step)
            xa = vload(work, oT + 8 * j)
            xb = vload(work, oT + 8 * Dp + 8 * j)
            q = oW + j * kq + k
            w = vbload(work, q)
            a0 = vfma(xa, w, a0)
            b0 = vfma(xb, w, b0)
            w = vbload(work, q + 1)
            a1 = vfma(xa, w, a1)
            b1 = vfma(xb, w, b1)
            w = vbload(work, q + 2)
            a2 = vfma(xa, w, a2)
            b2 = vfma(xb, w, b2)
            w = vbload(work, q + 3)
            a3 = vfma(xa, w, a3)
            b3 = vfma(xb, w, b3)
            w = vbload(work, q + 4)
            a4 = vfma(xa, w, a4)
            b4 = vfma(xb, w, b4)
            w = vbload(work, q + 5)
            a5 = vfma(xa, w, a5)
            b5 = vfma(xb, w, b5)
            w = vbload(work, q + 6)
            a6 = vfma(xa, w, a6)
            b6 = vfma(xb, w, b6)
            w = vbload(work, q + 7)
            a7 = vfma(xa, w, a7)
            b7 = vfma(xb, w, b7)
            w = vbload(work, q + 8)
            a8 = vfma(xa, w, a8)
            b8 = vfma(xb, w, b8)
            w = vbload(work, q + 9)
            a9 = vfma(xa, w, a9)
            b9 = vfma(xb, w, b9)
        oz = oZ + 16 * k
        vstore(work, oz, a0)
        vstore(work, oz + 8, b0)
        vstore(work, oz + 16, a1)
        vstore(work, oz + 24, b1)
        vstore(work, oz + 32, a2)
        vstore(work, oz + 40, b2)
        vstore(work, oz + 48, a3)
        vstore(work, oz + 56, b3)
        vstore(work, oz + 64, a4)
        vstore(work, oz + 72, b4)
        vstore(work, oz + 80, a5)
        vstore(work, oz + 88, b5)
        vstore(work, oz + 96, a6)
        vstore(work, oz + 104, b6)
        vstore(work, oz + 112, a7)
        vstore(work, oz + 120, b7)
        vstore(work, oz + 128, a8)
        vstore(work, oz + 136, b8)
        vstore(work, oz + 144, a9)
        vstore(work, oz + 152, b9)
    loss = _softmax16(y, sw, rows, i, r, run, nvalid, K, work, oZ, oGB, with_loss, oH)
    # Padding classes (k >= K) keep their logits (0: zero coefficients and intercepts) as
    # residuals; their rows of G are never read.
    D16 = D - D % 16
    offs = _offsets16(rows, i, r, run, nvalid, D)  # scattered rows' offsets, read once
    for k in range(0, kq, CLASS_TILE):
        for j in range(0, Dp, 16):
            p = oG + k * Dp + j
            if j < D16:  # 16 features: two vectors
                g0a = vload(work, p)
                g0b = vload(work, p + 8)
                g1a = vload(work, p + Dp)
                g1b = vload(work, p + Dp + 8)
                g2a = vload(work, p + 2 * Dp)
                g2b = vload(work, p + 2 * Dp + 8)
                g3a = vload(work, p + 3 * Dp)
                g3b = vload(work, p + 3 * Dp + 8)
                g4a = vload(work, p + 4 * Dp)
                g4b = vload(work, p + 4 * Dp + 8)
                g5a = vload(work, p + 5 * Dp)
                g5b = vload(work, p + 5 * Dp + 8)
                g6a = vload(work, p + 6 * Dp)
                g6b = vload(work, p + 6 * Dp + 8)
                g7a = vload(work, p + 7 * Dp)
                g7b = vload(work, p + 7 * Dp + 8)
                g8a = vload(work, p + 8 * Dp)
                g8b = vload(work, p + 8 * Dp + 8)
                g9a = vload(work, p + 9 * Dp)
                g9b = vload(work, p + 9 * Dp + 8)
                for t in range(16):
                    if k == 0 and nb >= 0 and lines_per_j == 2:  # float64: the next block's other D lines
                        prefetch_l2(X, nb + (D + j + t) * step)
                    a = ((r + t) * D if run else offs[t]) + j
                    x0 = vload(X, a)
                    x1 = vload(X, a + 8)
                    q = oZ + 16 * k + t
                    c = vbload(work, q)
                    g0a = vfma(x0, c, g0a)
                    g0b = vfma(x1, c, g0b)
                    c = vbload(work, q + 16)
                    g1a = vfma(x0, c, g1a)
                    g1b = vfma(x1, c, g1b)
                    c = vbload(work, q + 32)
                    g2a = vfma(x0, c, g2a)
                    g2b = vfma(x1, c, g2b)
                    c = vbload(work, q + 48)
                    g3a = vfma(x0, c, g3a)
                    g3b = vfma(x1, c, g3b)
                    c = vbload(work, q + 64)
                    g4a = vfma(x0, c, g4a)
                    g4b = vfma(x1, c, g4b)
                    c = vbload(work, q + 80)
                    g5a = vfma(x0, c, g5a)
                    g5b = vfma(x1, c, g5b)
                    c = vbload(work, q + 96)
                    g6a = vfma(x0, c, g6a)
                    g6b = vfma(x1, c, g6b)
                    c = vbload(work, q + 112)
                    g7a = vfma(x0, c, g7a)
                    g7b = vfma(x1, c, g7b)
                    c = vbload(work, q + 128)
                    g8a = vfma(x0, c, g8a)
                    g8b = vfma(x1, c, g8b)
                    c = vbload(work, q + 144)
                    g9a = vfma(x0, c, g9a)
                    g9b = vfma(x1, c, g9b)
                vstore(work, p, g0a)
                vstore(work, p + 8, g0b)
                vstore(work, p + Dp, g1a)
                vstore(work, p + Dp + 8, g1b)
                vstore(work, p + 2 * Dp, g2a)
                vstore(work, p + 2 * Dp + 8, g2b)
                vstore(work, p + 3 * Dp, g3a)
                vstore(work, p + 3 * Dp + 8, g3b)
                vstore(work, p + 4 * Dp, g4a)
                vstore(work, p + 4 * Dp + 8, g4b)
                vstore(work, p + 5 * Dp, g5a)
                vstore(work, p + 5 * Dp + 8, g5b)
                vstore(work, p + 6 * Dp, g6a)
                vstore(work, p + 6 * Dp + 8, g6b)
                vstore(work, p + 7 * Dp, g7a)
                vstore(work, p + 7 * Dp + 8, g7b)
                vstore(work, p + 8 * Dp, g8a)
                vstore(work, p + 8 * Dp + 8, g8b)
                vstore(work, p + 9 * Dp, g9a)
                vstore(work, p + 9 * Dp + 8, g9b)
            else:  # the last one or two chunks of 8 features (masked past D)
                for jj in range(j, Dp, 8):
                    n = min(8, D - jj)
                    pp = oG + k * Dp + jj
                    g0a = vload(work, pp)
                    g1a = vload(work, pp + Dp)
                    g2a = vload(work, pp + 2 * Dp)
                    g3a = vload(work, pp + 3 * Dp)
                    g4a = vload(work, pp + 4 * Dp)
                    g5a = vload(work, pp + 5 * Dp)
                    g6a = vload(work, pp + 6 * Dp)
                    g7a = vload(work, pp + 7 * Dp)
                    g8a = vload(work, pp + 8 * Dp)
                    g9a = vload(work, pp + 9 * Dp)
                    for t in range(16):
                        if k == 0 and nb >= 0 and lines_per_j == 2 and t < 8 and jj + t < D:
                            prefetch_l2(X, nb + (D + jj + t) * step)
                        x0 = vload_n(X, ((r + t) * D if run else offs[t]) + jj, n)
                        q = oZ + 16 * k + t
                        g0a = vfma(x0, vbload(work, q), g0a)
                        g1a = vfma(x0, vbload(work, q + 16), g1a)
                        g2a = vfma(x0, vbload(work, q + 32), g2a)
                        g3a = vfma(x0, vbload(work, q + 48), g3a)
                        g4a = vfma(x0, vbload(work, q + 64), g4a)
                        g5a = vfma(x0, vbload(work, q + 80), g5a)
                        g6a = vfma(x0, vbload(work, q + 96), g6a)
                        g7a = vfma(x0, vbload(work, q + 112), g7a)
                        g8a = vfma(x0, vbload(work, q + 128), g8a)
                        g9a = vfma(x0, vbload(work, q + 144), g9a)
                    vstore(work, pp, g0a)
                    vstore(work, pp + Dp, g1a)
                    vstore(work, pp + 2 * Dp, g2a)
                    vstore(work, pp + 3 * Dp, g3a)
                    vstore(work, pp + 4 * Dp, g4a)
                    vstore(work, pp + 5 * Dp, g5a)
                    vstore(work, pp + 6 * Dp, g6a)
                    vstore(work, pp + 7 * Dp, g7a)
                    vstore(work, pp + 8 * Dp, g8a)
                    vstore(work, pp + 9 * Dp, g9a)
    return loss


@njit(cache=True, nogil=True, inline="always")
def _store5(work, p, stride, a0, a1, a2, a3, a4):
    """work[p + stride c:][:8] = a_c for c < 5: a 5-class tile of _block16_narrow back to work."""
    vstore(work, p, a0)
    vstore(work, p + stride, a1)
    vstore(work, p + 2 * stride, a2)
    vstore(work, p + 3 * stride, a3)
    vstore(work, p + 4 * stride, a4)


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _tile5(x, work, q, stride, g0, g1, g2, g3, g4):
    """g_c + x * work[q + stride c] for c < 5: one step of _block16_narrow's 5-class tiles."""
    return (vfma(x, vbload(work, q), g0), vfma(x, vbload(work, q + stride), g1),
            vfma(x, vbload(work, q + 2 * stride), g2), vfma(x, vbload(work, q + 3 * stride), g3),
            vfma(x, vbload(work, q + 4 * stride), g4))


@njit(cache=True, nogil=True, fastmath=FASTMATH, _nrt=False)
def _block16_narrow(X, y, sw, rows, i, r, run, nvalid, K, kq, work, oW, oG, oGB, oZ, oT, oB, oH, with_loss, nb):
    """_block16 in register tiles for 16 vector registers (AVX2: a F64x8 is two of them).

    The same steps, work layout and additions in the same order as _block16 (each lane sums
    over the features, then over the block's rows, in the same sequence), so the two give
    bitwise the same sums; only the tiles differ: logits 5 classes x 8 rows (5 accumulators,
    10 ymm registers, each broadcast of coef[k, j] feeding two FMAs) and gradient 5 classes x 8
    features. _block16's 20 accumulators would need 40 ymm registers: spilled, its FMAs waited
    on stores and reloads.
    """
    D = X.shape[1]
    Dp = D + (-D) % 8
    D8 = D - D % 8
    _transpose8(X, rows, i, r, run, nvalid, 0, work, oT)
    _transpose8(X, rows, i, r, run, nvalid, 1, work, oT + 8 * Dp)
    step = CACHE_LINE // X.itemsize
    lines_per_j = 16 * X.itemsize // CACHE_LINE
    for k in range(0, kq, 5):
        for h in range(2):
            a0 = vbload(work, oB + k)
            a1 = vbload(work, oB + k + 1)
            a2 = vbload(work, oB + k + 2)
            a3 = vbload(work, oB + k + 3)
            a4 = vbload(work, oB + k + 4)
            ox = oT + 8 * Dp * h
            for j in range(D):
                if k == 0 and h == 0 and nb >= 0:  # the next block's first D lines: see _vector_path
                    prefetch_l2(X, nb + j * step)
                a0, a1, a2, a3, a4 = _tile5(vload(work, ox + 8 * j), work, oW + j * kq + k, 1, a0, a1, a2, a3, a4)
            _store5(work, oZ + 16 * k + 8 * h, 16, a0, a1, a2, a3, a4)
    loss = _softmax16(y, sw, rows, i, r, run, nvalid, K, work, oZ, oGB, with_loss, oH)
    offs = _offsets16(rows, i, r, run, nvalid, D)  # scattered rows' offsets, read once
    for k in range(0, kq, 5):
        for j in range(0, Dp, 8):
            p = oG + k * Dp + j
            g0, g1, g2, g3, g4 = vload(work, p), vload(work, p + Dp), vload(work, p + 2 * Dp), \
                vload(work, p + 3 * Dp), vload(work, p + 4 * Dp)
            if k == 0 and nb >= 0 and lines_per_j == 2:  # float64: the next block's other D lines
                for t in range(min(8, D - j)):
                    prefetch_l2(X, nb + (D + j + t) * step)
            # the loops test nothing per row but the count (a test per row cost ~20% of this loop)
            q = oZ + 16 * k
            if j < D8:
                for t in range(16):
                    g0, g1, g2, g3, g4 = _tile5(vload(X, ((r + t) * D if run else offs[t]) + j), work, q + t,
                                                16, g0, g1, g2, g3, g4)
            else:
                for t in range(16):
                    g0, g1, g2, g3, g4 = _tile5(vload_n(X, ((r + t) * D if run else offs[t]) + j, D - j), work,
                                                q + t, 16, g0, g1, g2, g3, g4)
            _store5(work, p, Dp, g0, g1, g2, g3, g4)
    return loss


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _vector_blocks(X, y, sw, params, rows, grad, with_loss, work, hits, block):
    """softmax_loss_grad_ws 16 rows at a time in explicit vectors (work >= work_size).

    Blocks are 16 consecutive rows inside a run of ``rows`` (the next block prefetched
    during this one's logits) or else the next 16 entries of ``rows`` (a mini-batch, the
    rows prefetched a block ahead); the last block of a call may have fewer than 16 entries
    left, its other lanes repeat a row with weight 0. work holds, from its first 64-byte
    boundary on: coef transposed (D, kq) with zero padding classes (room for (Dp, kq)), the
    padded gradient sums (kq, Dp), per-lane intercept sums (kq, 8), logits (kq, 16), X
    transposed (2, Dp, 8), intercepts (kq,), per-lane hits (8,); Dp is D rounded up to a
    multiple of 8 (the last features are read with masked loads). hits: as
    softmax_loss_grad_hits' (its lanes summed in order at the end).

    block: _block16 (its tiles for AVX-512) or _block16_narrow (AVX2), the same sums bit for
    bit; the function itself, from the caller (_vector_path_wide / _vector_path_narrow), so
    only that one is compiled and called directly. (An inlined helper choosing between them by
    a flag kept five NRT refcount pairs per block: tests/test_kernel_ir.py.)

    The blocks, and _transpose8 and _softmax16 in them, are calls, not inlined: Numba's inlining
    copies a callee's IR block by block, each copy with its whole variable scope, and this path,
    built by inlining, took ~110 s to compile per dtype on an AVX2 CPU (AMD Zen 3), now ~16 s
    (and 8 more for the other CPU's tiles); the few calls per 16 rows cost nothing measurable
    there (97-98 ns per row either way, X in L2).
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    KD = K * D
    kq = -(-K // CLASS_TILE) * CLASS_TILE
    Dp = D + (-D) % 8
    oW = align_offset(work)
    oG = oW + kq * Dp
    oGB = oG + kq * Dp
    oZ = oGB + 8 * kq
    oT = oZ + 16 * kq
    oB = oT + 16 * Dp
    oH = oB + kq if hits.size > 0 else -1  # the batch hits' lanes, or none
    for q in range(oW, oZ):
        work[q] = 0.0
    for q in range(oB + kq, oB + kq + 8):
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
    while i < m:
        lo, cnt = next_run(rows, i)
        if cnt >= 16:
            r = lo
            for _ in range(cnt // 16):
                # The next 16 rows of the run are prefetched into L2, one cache line per step of
                # this block's logits loop and (float64: 2 D lines) one per row step of its first
                # gradient tiles. The hardware prefetcher stops at every 4 KiB page and, with ~2000
                # cycles of arithmetic per block, memory and compute did not overlap (a pass cost
                # about compute + read time). Spread out, the requests overlap the arithmetic:
                # 1e6 x 64 float64 (ad-hoc, X in L2 vs 1e6 rows, ns per row) 57 in L2, 73-74 with
                # all 2 D lines requested in the logits loop, 68 spread over both loops; further
                # ahead (2 blocks) was no better. (8-row blocks: into L1 and none were slower, as
                # was a burst at each block's start.)
                nb = (r + 16) * D if r + 32 <= lo + cnt else -1
                loss += block(X, y, sw, rows, i, r, True, 16, K, kq, work, oW, oG, oGB, oZ, oT, oB, oH, with_loss,
                              nb)
                r += 16
                i += 16
        else:
            nvalid = min(16, m - i)
            # The rows of the block after next (at a call's first block, its first 48 rows), into
            # L2: util.prefetch_scattered's 8 rows ahead into L1 (the 8-row blocks' choice) made
            # 16-row blocks slower, its lines evicting the block's own scratch. 2048 scattered rows
            # of a 1e6 x 64 float64 X, ad-hoc, us per batch min (fresh rows / the same rows again):
            # 462 / 241 with it vs 421 / 185 with no prefetch (one run); 355 / 158 with this vs
            # 386 / 163 for the former 8-row kernel (another run).
            pr = prefetch_rows(X, rows, max(pr, i), min(m, i + 48), True)
            loss += block(X, y, sw, rows, i, 0, False, nvalid, K, kq, work, oW, oG, oGB, oZ, oT, oB, oH, with_loss,
                          -1)
            i += nvalid
    for k in range(K):
        for j in range(D):
            grad[k * D + j] += work[oG + k * Dp + j]
        gb = 0.0
        for t in range(8):
            gb += work[oGB + 8 * k + t]
        grad[KD + k] += gb
    # work and hits are used outside a branch on purpose: an array whose last use is inside a
    # branch of an inlined function keeps an NRT incref/decref pair (see glm._margins8)
    h = 0.0
    for t in range(8 if oH >= 0 else 0):
        h += work[oH + t]
    for t in range(hits.size):  # hits[0], or none
        hits[t] += h
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _vector_path_wide(X, y, sw, params, rows, grad, with_loss, work, hits):
    """softmax_loss_grad_hits' vector path in _block16's tiles (for AVX-512); see _vector_blocks."""
    return _vector_blocks(X, y, sw, params, rows, grad, with_loss, work, hits, _block16)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _vector_path_narrow(X, y, sw, params, rows, grad, with_loss, work, hits):
    """softmax_loss_grad_hits' vector path in _block16_narrow's tiles (for AVX2); see _vector_blocks."""
    return _vector_blocks(X, y, sw, params, rows, grad, with_loss, work, hits, _block16_narrow)


# The one the dispatch takes on this CPU (the tests run both on any CPU: the same sums bit for bit).
_vector_path = _vector_path_wide if WIDE_REGISTERS else _vector_path_narrow


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
