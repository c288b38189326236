"""Fused single-pass loss/gradient driver shared by the linear and logistic kernels."""
from numba import njit

from .simd import ld, vabs, vadd, vdiv, vexp_nonpos, vfma, vhsum8, vlane, vload, vload_n, vlog1p_unit, vmax, vmul, \
    vselect_eq, vselect_ge, vselect_gt, vset8, vsplat, vstore, vsub
from .util import CACHE_LINE, FASTMATH, LINEAR, LOSS_PREFETCH_BYTES, LOSS_PREFETCH_ROWS, PREFETCH_BYTES, \
    SCATTERED_ROWS_AHEAD, _prefetch, link_residual, next_run, prefetch_ahead, prefetch_rows, prefetch_scattered, \
    stream_prefetch


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _four_rows(X, y, sw, params, b, a0, a1, a2, a3, grad, with_loss, model, with_hits):
    """Rows a0..a3 of X: grad[:D] += their weighted residual x row; returns (residual sum, loss
    sum, hits: the weight of the rows whose label z > 0 equals y, 0.0 unless with_hits).

    The four dot products share each load of w, the four (strict) link evaluations are
    independent so their latencies overlap, and one sweep over grad adds all four rows.
    """
    D = X.shape[1]
    z0 = b
    z1 = b
    z2 = b
    z3 = b
    for j in range(D):
        wj = params[j]
        z0 += X[a0, j] * wj
        z1 += X[a1, j] * wj
        z2 += X[a2, j] * wj
        z3 += X[a3, j] * wj
    y0, y1, y2, y3 = y[a0], y[a1], y[a2], y[a3]  # y's last use outside the branch below (no NRT calls)
    r0, l0 = link_residual(model, z0, y0, 1.0, with_loss)
    r1, l1 = link_residual(model, z1, y1, 1.0, with_loss)
    r2, l2 = link_residual(model, z2, y2, 1.0, with_loss)
    r3, l3 = link_residual(model, z3, y3, 1.0, with_loss)
    if sw.size == 0:  # if / else, as in _eight_rows: no NRT calls for sw in the loop
        s0 = s1 = s2 = s3 = 1.0
    else:
        s0, s1, s2, s3 = sw[a0], sw[a1], sw[a2], sw[a3]
    r0, l0 = r0 * s0, l0 * s0
    r1, l1 = r1 * s1, l1 * s1
    r2, l2 = r2 * s2, l2 * s2
    r3, l3 = r3 * s3, l3 * s3
    for j in range(D):
        grad[j] += (r0 * X[a0, j] + r1 * X[a1, j]) + (r2 * X[a2, j] + r3 * X[a3, j])
    hits = 0.0
    if with_hits:
        hits = (_hit(z0, y0, s0) + _hit(z1, y1, s1)) + (_hit(z2, y2, s2) + _hit(z3, y3, s3))
    return (r0 + r1) + (r2 + r3), (l0 + l1) + (l2 + l3), hits


@njit(cache=True, nogil=True, inline="always")
def _hit(z, yr, s):
    """s if the predicted label (1.0 where z > 0, else 0.0; a NaN margin predicts 0) equals
    yr, else 0.0: one row's share of the batch accuracy, as kernels.binary_hits counts it."""
    return s if (1.0 if z > 0.0 else 0.0) == yr else 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _link8(model, z, yv, with_loss):
    """util.link_residual for 8 rows at once (rows in the lanes): (s = 1) residuals and losses.

    Logistic: e = exp(-|z|) (simd.vexp_nonpos, within ~1 ulp of libm), p = 1/(1+e) or
    e/(1+e), loss = (max(z, 0) - y z) + log1p(e) (simd.vlog1p_unit, the same fdlibm kernel
    as util.log1p_unit): the formulas of link_residual, evaluated in vectors, so the
    transcendental functions of 8 rows cost about what one row's libm calls did.
    """
    zero = vsplat(0.0)
    if model == LINEAR:
        d = vsub(z, yv)
        return d, vmul(vmul(vsplat(0.5), d), d) if with_loss else zero
    one = vsplat(1.0)
    e = vexp_nonpos(vsub(zero, vabs(z)))
    inv = vdiv(one, vadd(one, e))
    r = vsub(vselect_ge(z, zero, inv, vmul(e, inv)), yv)
    if not with_loss:
        return r, zero
    return r, vadd(vsub(vmax(z, zero), vmul(yv, z)), vlog1p_unit(e))


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _row_dot(X, params, a, D8, lead, pf, shift):
    """Lanes of sum_j X.flat[a + j] w[j] over the first D8 features (D8 % 8 == 0), one vector
    accumulator; with lead >= 0, step j prefetches the line of X.flat[pf + (j >> shift)]
    (_margins8 says which lines).

    Row after row (not the 8 rows' chunks interleaved) and with the prefetch spread one line
    per load: side by side on 1e6 x 64 float64, 32-37 ms per gradient pass vs 43 for the
    interleaved order and 49-51 for a burst of prefetches per block of 8 rows.
    """
    s = vsplat(0.0)
    for j in range(0, D8, 8):
        if lead >= 0:
            stream_prefetch(X, pf + (j >> shift))
        s = vfma(vload(X, a + j), vload(params, j), s)
    return s


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _rows_dot4(X, params, a0, a1, a2, a3, D8):
    """_row_dot of four rows (no prefetch) with their loads interleaved: each load of w serves
    four rows and the four accumulator chains overlap. Each row's lanes are summed in the same
    order as by _row_dot (the same bits).

    For scattered rows only: side by side on 1e6 x 64 float64, AMD Zen 3, 2048-row mini-batches,
    median of 40: fresh rows 204 vs 219 us, the same rows again 78 vs 88 us; but consecutive rows
    streamed from memory were slower this way (a full pass 39-45 vs 32-38 ms), as on Zen 5 for
    eight interleaved rows (_row_dot's note).
    """
    s0 = vsplat(0.0)
    s1 = vsplat(0.0)
    s2 = vsplat(0.0)
    s3 = vsplat(0.0)
    for j in range(0, D8, 8):
        w = vload(params, j)
        s0 = vfma(vload(X, a0 + j), w, s0)
        s1 = vfma(vload(X, a1 + j), w, s1)
        s2 = vfma(vload(X, a2 + j), w, s2)
        s3 = vfma(vload(X, a3 + j), w, s3)
    return s0, s1, s2, s3


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _margins8(X, params, a0, a1, a2, a3, a4, a5, a6, a7, lead, half):
    """The 8 margins x.w + b (one vector, lanes in order) of the rows starting at flat offsets
    a0..a7 of X (C-contiguous; params (D+1,) = [w, b]).

    Each row's dot product in one vector accumulator (_row_dot, one row after the other; for
    scattered rows, lead < 0, _rows_dot4: four rows' loads interleaved, the same sums), the
    last D % 8 features masked (nothing past a row's end is read), the 8 accumulators reduced
    to one vector of 8 margins (simd.vhsum8, a fixed order).

    lead >= 0 (consecutive rows, a0 + 8 D + lead <= X.size): the lines lead elements ahead are
    prefetched, one per load: with half, the first half of the block's 8 D elements (row r's
    loop walks its eighth of them, X.flat[a0 + lead + r D // 2 ...], in address order; the
    caller's gradient sweep requests the second half), else all of them (each row its own line
    lead ahead of each load).
    """
    D = X.shape[1]
    D8 = D - D % 8
    if lead < 0:  # scattered rows (or the end of X): four rows' loads interleaved
        s0, s1, s2, s3 = _rows_dot4(X, params, a0, a1, a2, a3, D8)
        s4, s5, s6, s7 = _rows_dot4(X, params, a4, a5, a6, a7, D8)
    else:  # a run streamed from memory: row after row, in address order
        shift = 1 if half else 0
        s0 = _row_dot(X, params, a0, D8, lead, a0 + lead, shift)
        s1 = _row_dot(X, params, a1, D8, lead, a0 + lead + 1 * D // 2 if half else a1 + lead, shift)
        s2 = _row_dot(X, params, a2, D8, lead, a0 + lead + 2 * D // 2 if half else a2 + lead, shift)
        s3 = _row_dot(X, params, a3, D8, lead, a0 + lead + 3 * D // 2 if half else a3 + lead, shift)
        s4 = _row_dot(X, params, a4, D8, lead, a0 + lead + 4 * D // 2 if half else a4 + lead, shift)
        s5 = _row_dot(X, params, a5, D8, lead, a0 + lead + 5 * D // 2 if half else a5 + lead, shift)
        s6 = _row_dot(X, params, a6, D8, lead, a0 + lead + 6 * D // 2 if half else a6 + lead, shift)
        s7 = _row_dot(X, params, a7, D8, lead, a0 + lead + 7 * D // 2 if half else a7 + lead, shift)
    if D8 < D:
        n = D - D8
        w = vload_n(params, D8, n)
        s0 = vfma(vload_n(X, a0 + D8, n), w, s0)
        s1 = vfma(vload_n(X, a1 + D8, n), w, s1)
        s2 = vfma(vload_n(X, a2 + D8, n), w, s2)
        s3 = vfma(vload_n(X, a3 + D8, n), w, s3)
        s4 = vfma(vload_n(X, a4 + D8, n), w, s4)
        s5 = vfma(vload_n(X, a5 + D8, n), w, s5)
        s6 = vfma(vload_n(X, a6 + D8, n), w, s6)
        s7 = vfma(vload_n(X, a7 + D8, n), w, s7)
    # X and params (and sw in _eight_rows) are used after their branches on purpose: an array
    # whose last use is inside a branch of an inlined function keeps an NRT incref/decref pair
    # in the loop (Numba's refcount pruning cannot pair them across the branch), each a call
    # that spills every vector register.
    return vadd(vhsum8(s0, s1, s2, s3, s4, s5, s6, s7), vsplat(ld(params, X.shape[1])))


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _eight_rows(X, y, sw, params, i0, i1, i2, i3, i4, i5, i6, i7, grad, with_loss, model, rsum, lsum, lead,
                with_hits, hsum, rows, nxt):
    """Rows i0..i7 of X (any rows), in vectors: grad[:D] += their weighted residual x row.

    Returns (rsum, lsum, hsum) with the 8 rows' weighted residuals and losses added lane-wise,
    and (with_hits) the weights of the rows whose predicted label equals y (see _hit).
    The 8 margins in one vector (_margins8); the link of the 8 rows in vectors (_link8); the
    gradient: per 8 features, the 8 rows' terms summed in two chains of four and added to
    grad once. X must be C-contiguous.

    lead >= 0 (consecutive rows, i0 * D + 8 D + lead <= X.size): the block's 8 D elements lead
    ahead are prefetched in address order, spread over both loops: the margins request the first
    half (one line per load), the gradient sweep the second (four per step of 8 features), the
    last loop any lines left (D % 8 > 0, or all of them when D < 8). -1: no prefetch (the
    caller's). Before, the margins loop requested all of the block's lines: no new requests
    through the link and the sweep, then a burst (the core keeps only a few dozen misses in
    flight). Spread vs before, AMD Zen 3, logistic gradient in read-bandwidth ratios, both
    versions compiled side by side in each process, alternating, min of 5, three or more
    processes: 1e6 x 64 float64 0.80-0.93 vs 0.66-0.70 (loss + gradient 0.84-0.87 vs
    0.67-0.69), D = 128 0.77-0.79 vs 0.67-0.75, 1024 0.72-0.77 vs 0.71-0.73; float32 D = 256
    0.93-0.95 vs 0.67-0.70, 1024 0.82-0.87 vs 0.68-0.71; D = 16 float64 0.69-0.71 vs
    0.65-0.67, D = 5 0.59-0.61 vs 0.50-0.51; 256-byte rows (D = 32 float64, 64 float32), D = 16
    float32 and D = 67 the same within the noise.

    The streamed lines are requested into L1 on AMD Zen 3 and Zen 5, into L2 on other x86 cores
    (util.stream_prefetch: on Intel cores a prefetch into L1 that misses holds one of the core's 16
    line-fill buffers for a whole memory latency; on Zen 4 into L2 took a pass from 0.55x to ~0.8x
    of the read; util.STREAM_PREFETCH_INTO_L2 has the numbers).

    nxt >= 0 (scattered rows, lead = -1): rows[nxt:nxt + 8] are prefetched during the gradient
    sweep, one line of each of the 8 rows per line of the sweep (the caller requests lines past
    the first D8 features). Before, the caller requested the next block's whole rows at the
    start of each block, a burst of 8 rows' lines at once. 2048 scattered rows of 1e6 x 64
    float64 (AMD Zen 3, ns per row, min of 7 over 100 fresh batches, both versions in each of
    three processes): fresh rows 63-67 vs 80-100 (two blocks ahead; one block ahead 76-83,
    three or four blocks ahead as two), the same rows again 30-32 vs 34-38; D = 16 35-38 vs
    40-45, D = 67 83-86 vs 113-114, D = 256 207-275 vs 254-362 (one process each, two). -1: none.

    X, grad and sw keep an NRT incref/decref pair per block (their last uses sit in the tail loop
    and the sw branch). Without them (util.after_sizes at the end; tests/test_kernel_ir.py's loop
    check then passes), on AMD Zen 3, 1e6 x 64 float64, min of 7 per process, 5 processes each
    alternating: 4800 rows in cache 18.5-19.7 vs 21.8-23.6 ns per row, full passes the same
    within the noise (gradient 30.4-33.4 vs 31.0-38.6 ms), but 2048-row mini-batches slower:
    the same rows again 81-87 vs 78-80 us, fresh rows 206-225 vs 203-225 us. SGD steps run
    mini-batches, so the pair stays until a layout without it is faster there too. (Single
    processes timing both versions disagreed with each other by up to 15 % either way: where
    each compiled loop lands matters on this core.)
    """
    D = X.shape[1]
    D8 = D - D % 8
    step = CACHE_LINE // X.itemsize
    a0, a1, a2, a3, a4, a5, a6, a7 = i0 * D, i1 * D, i2 * D, i3 * D, i4 * D, i5 * D, i6 * D, i7 * D
    z = _margins8(X, params, a0, a1, a2, a3, a4, a5, a6, a7, lead, True)
    yv = vset8(ld(y, i0), ld(y, i1), ld(y, i2), ld(y, i3), ld(y, i4), ld(y, i5), ld(y, i6), ld(y, i7))
    r, l = _link8(model, z, yv, with_loss)
    if sw.size == 0:
        sv = vsplat(1.0)
    else:
        sv = vset8(ld(sw, i0), ld(sw, i1), ld(sw, i2), ld(sw, i3), ld(sw, i4), ld(sw, i5), ld(sw, i6), ld(sw, i7))
    r = vmul(r, sv)
    l = vmul(l, sv)
    if with_hits:
        zero = vsplat(0.0)
        hsum = vadd(hsum, vselect_eq(vselect_gt(z, zero, vsplat(1.0), zero), yv, sv, zero))
    c0, c1, c2, c3 = vlane(r, 0), vlane(r, 1), vlane(r, 2), vlane(r, 3)
    c4, c5, c6, c7 = vlane(r, 4), vlane(r, 5), vlane(r, 6), vlane(r, 7)
    r0, r1, r2, r3, r4, r5, r6, r7 = vsplat(c0), vsplat(c1), vsplat(c2), vsplat(c3), vsplat(c4), vsplat(c5), \
        vsplat(c6), vsplat(c7)
    for j in range(0, D8, 8):
        if lead >= 0:  # the second half of the block's lines, lead ahead, in address order
            q = a0 + lead + 4 * D + 4 * j
            stream_prefetch(X, q)
            stream_prefetch(X, q + 8)
            stream_prefetch(X, q + 16)
            stream_prefetch(X, q + 24)
        if nxt >= 0 and (j & (step - 1)) == 0:  # scattered: a line of each of 8 rows further on
            _prefetch(X, ld(rows, nxt) * D + j)
            _prefetch(X, ld(rows, nxt + 1) * D + j)
            _prefetch(X, ld(rows, nxt + 2) * D + j)
            _prefetch(X, ld(rows, nxt + 3) * D + j)
            _prefetch(X, ld(rows, nxt + 4) * D + j)
            _prefetch(X, ld(rows, nxt + 5) * D + j)
            _prefetch(X, ld(rows, nxt + 6) * D + j)
            _prefetch(X, ld(rows, nxt + 7) * D + j)
        u = vfma(vload(X, a1 + j), r1, vmul(vload(X, a0 + j), r0))
        u = vfma(vload(X, a2 + j), r2, u)
        u = vfma(vload(X, a3 + j), r3, u)
        v = vfma(vload(X, a5 + j), r5, vmul(vload(X, a4 + j), r4))
        v = vfma(vload(X, a6 + j), r6, v)
        v = vfma(vload(X, a7 + j), r7, v)
        vstore(grad, j, vadd(vload(grad, j), vadd(u, v)))
    if lead >= 0:  # lines the two loops did not reach: D % 8 > 0, or all of them (D < 8)
        q = a0 + lead + (4 * (D + D8) if D8 > 0 else 0)
        while q < a0 + lead + 8 * D:
            stream_prefetch(X, q)
            q += 8
    for j in range(D8, D):
        grad[j] += (((c0 * ld(X, a0 + j) + c1 * ld(X, a1 + j)) + (c2 * ld(X, a2 + j) + c3 * ld(X, a3 + j)))
                    + ((c4 * ld(X, a4 + j) + c5 * ld(X, a5 + j)) + (c6 * ld(X, a6 + j) + c7 * ld(X, a7 + j))))
    return vadd(rsum, r), vadd(lsum, l) if with_loss else lsum, hsum


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def glm_loss_grad(X, y, sw, params, rows, grad, with_loss, model, hits):
    """Weighted loss sum and gradient sum of a GLM with margin z = x.w + b.

    X: (n, D) float32/float64 C-contiguous; y: float64 (n,); sw: float64 (n,) or size 0
    (all ones); params: float64 (D+1,) = [w, b]; rows: int64 (m,) rows of X to use;
    grad: float64 (D+1,), ADDED to: grad += sum_i sw_i * dloss_i/dparams.
    model: util.LINEAR or util.LOGISTIC. Returns sum_i sw_i * loss_i if with_loss
    else 0.0. hits: float64 (1,), or size 0 for none: hits[0] = sum_i sw_i [label_i == y_i],
    label_i = 1.0 where z_i > 0 else 0.0 (a binary classifier's batch accuracy numerator, from
    the margins this pass computes: a logged SGD step needs no second pass over its rows, which
    cost 80 us for 2048 rows right after this kernel). No allocation.

    One pass over X, eight rows at a time in vectors (_eight_rows: margins, then the link of
    the 8 rows with their lanes side by side, so exp and log1p are vector code instead of
    one libm call per row; then one sweep over grad adds the 8 rows' terms while they are
    still in L1), the last < 8 rows of a run four at a time, then one at a time. Side by
    side with the former four-rows-with-scalar-links kernel on 1e6 x 64 float64 (a plain
    read of X 28-29 ms): gradient 33.7 vs 37.4 ms, loss + gradient 34.6 vs 41.8 ms; rows in
    L1 about 2x faster; D = 16: 48 vs 75 ms. Consecutive rows are prefetched
    LOSS_PREFETCH_ROWS (96) rows ahead, within 8-48 KiB (util.py has the numbers), each block's
    lines spread over its two loops (_eight_rows). Scattered rows (a mini-batch) go through the
    same 8-row block, each block requesting the rows SCATTERED_ROWS_AHEAD (16) further on
    during its gradient sweep: more rows' cache misses in flight, spread out.
    """
    if not X.flags.c_contiguous:  # the vector loads index X's buffer flat
        raise ValueError("glm_loss_grad: X must be C-contiguous")
    D = X.shape[1]
    b = params[D]
    unweighted = sw.size == 0
    m = rows.size
    if m == 0:
        if hits.size > 0:
            hits[0] = 0.0
        return 0.0
    # LOSS_PREFETCH_ROWS rows ahead, within [PREFETCH_BYTES, LOSS_PREFETCH_BYTES] (util.py has the numbers)
    lead = min(max(LOSS_PREFETCH_ROWS * D * X.itemsize, PREFETCH_BYTES), LOSS_PREFETCH_BYTES) // X.itemsize
    D8 = D - D % 8
    step = CACHE_LINE // X.itemsize
    # scattered rows whose lines the gradient sweep's prefetches (one per line of the first D8
    # features, from the row's start) do not all reach: D % 8 > 0, or rows that start off a line
    ragged = D8 < D or (D * X.itemsize) % CACHE_LINE != 0 or X.ctypes.data % CACHE_LINE != 0
    loss = 0.0
    gb = 0.0
    rsum = vsplat(0.0)  # 8-row blocks: weighted residual and loss sums, lane-wise
    lsum = vsplat(0.0)
    with_hits = hits.size > 0
    hsum = vsplat(0.0)  # and the hits
    hit_sum = 0.0
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        if cnt < 8 and i + 8 <= m:
            # Scattered rows (a mini-batch): any eight at a time, so that more rows' loads are
            # in flight and their link evaluations overlap. The block's gradient sweep requests
            # the 8 rows SCATTERED_ROWS_AHEAD further on, a line of each per step; rows before
            # those not yet requested (a batch's first blocks) and a batch's last rows, at once.
            nxt = i + SCATTERED_ROWS_AHEAD if i + SCATTERED_ROWS_AHEAD + 8 <= m else -1
            pr = prefetch_rows(X, rows, max(pr, i), nxt if nxt >= 0 else m, False)
            if nxt >= 0:
                pr = max(pr, nxt + 8)
            rsum, lsum, hsum = _eight_rows(X, y, sw, params, ld(rows, i), ld(rows, i + 1), ld(rows, i + 2),
                                           ld(rows, i + 3), ld(rows, i + 4), ld(rows, i + 5), ld(rows, i + 6),
                                           ld(rows, i + 7), grad, with_loss, model, rsum, lsum, -1, with_hits, hsum,
                                           rows, nxt)
            if ragged and nxt >= 0:  # those rows' lines the sweep's prefetches missed
                for t in range(nxt, nxt + 8):
                    rb = ld(rows, t) * D
                    for k in range(D8, D, step):
                        _prefetch(X, rb + k)
                    _prefetch(X, rb + D - 1)
            i += 8
            continue
        pr = prefetch_scattered(X, rows, pr, i, max(cnt, 8))  # a run: ROWS_AHEAD rows beyond it
        hi = lo + cnt
        r = lo
        while r + 8 <= hi:
            ahead = lead if (r + 8) * D + lead <= X.size else -1  # prefetch only inside X
            rsum, lsum, hsum = _eight_rows(X, y, sw, params, r, r + 1, r + 2, r + 3, r + 4, r + 5, r + 6, r + 7,
                                           grad, with_loss, model, rsum, lsum, ahead, with_hits, hsum, rows, -1)
            r += 8
        pf = r * D + lead  # the rows left (< 8) are prefetched from here on
        while r + 4 <= hi:
            pf = prefetch_ahead(X, pf, (r + 4) * D)
            dg, dl, dh = _four_rows(X, y, sw, params, b, r, r + 1, r + 2, r + 3, grad, with_loss, model, with_hits)
            gb += dg
            loss += dl
            hit_sum += dh
            r += 4
        while r < hi:
            pf = prefetch_ahead(X, pf, (r + 1) * D)
            z0 = b
            for j in range(D):
                z0 += X[r, j] * params[j]
            s0 = 1.0 if unweighted else sw[r]
            yr = y[r]
            r0, l0 = link_residual(model, z0, yr, s0, with_loss)
            for j in range(D):
                grad[j] += r0 * X[r, j]
            gb += r0
            loss += l0
            if with_hits:
                hit_sum += _hit(z0, yr, s0)
            r += 1
        i += cnt
    for t in range(8):
        gb += vlane(rsum, t)
        loss += vlane(lsum, t)
        hit_sum += vlane(hsum, t)
    grad[D] += gb
    if with_hits:
        hits[0] = hit_sum
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _scores4(X, params, a0, a1, a2, a3, out, t, n):
    """out[t .. t+n-1, :] = the scores of rows a0..a(n-1), n <= 4: each coefficient loaded once
    for four rows (n < 4: the last rows repeat one, not stored). Every score of every row, in any
    of the four places, is summed by the same instructions: a row's score does not depend on its
    place in ``rows`` (linear_scores' lone rows go through here too: summed by their own loop,
    reassociated otherwise, they differed in the last bit, and `mpidml predict`'s probabilities
    with the number of ranks; seen on AMD Zen 3)."""
    D = X.shape[1]
    K = out.shape[1]
    KD = K * D
    for k in range(K):
        o = k * D
        z0 = params[KD + k]
        z1 = z0
        z2 = z0
        z3 = z0
        for j in range(D):
            w = params[o + j]
            z0 += w * X[a0, j]
            z1 += w * X[a1, j]
            z2 += w * X[a2, j]
            z3 += w * X[a3, j]
        out[t, k] = z0
        if n > 1:
            out[t + 1, k] = z1
        if n > 2:
            out[t + 2, k] = z2
        if n > 3:
            out[t + 3, k] = z3


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def linear_scores(X, params, rows, out):
    """out[k, c] = coef[c] . X[rows[k]] + intercept[c]: K affine functions of each row.

    X: (n, D) float32/float64; params: float64 (K*(D+1),) = [coef (K, D) row-major, intercepts
    (K,)] with K = out.shape[1] (K = 1: a GLM's [w, b]; the softmax logits otherwise); rows:
    int64 (m,); out: float64 (m, K). Four rows at a time (four independent sums per score
    instead of one latency-bound chain: softmax logits 35 vs 56 ms for 5e5 x 64 rows and 10
    classes, GLM margins 17.4 vs 23.4 ms), X prefetched like the loss kernels: PREFETCH_BYTES
    ahead in runs, whole rows ahead for scattered rows (softmax: 190 vs 367 us for a 2048-row
    mini-batch).
    """
    D = X.shape[1]
    m = rows.size
    lead = PREFETCH_BYTES // X.itemsize
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        pr = prefetch_scattered(X, rows, pr, i, max(cnt, 4))
        if cnt < 4 and i + 4 <= m:  # scattered rows: any four at a time
            _scores4(X, params, rows[i], rows[i + 1], rows[i + 2], rows[i + 3], out, i, 4)
            i += 4
            continue
        hi = lo + cnt
        r = lo
        t = i
        pf = lo * D + lead
        while r + 4 <= hi:
            pf = prefetch_ahead(X, pf, (r + 4) * D)
            _scores4(X, params, r, r + 1, r + 2, r + 3, out, t, 4)
            r += 4
            t += 4
        if r < hi:  # the run's last 1-3 rows (the last one repeated in the unused places)
            _scores4(X, params, r, min(r + 1, hi - 1), min(r + 2, hi - 1), hi - 1, out, t, hi - r)
        i += cnt


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def glm_margin(X, params, rows, out):
    """out[k] = X[rows[k]] . w + b for k < m. X (n, D) float32/64 C-contiguous; params float64
    (D+1,); rows int64 (m,); out float64 (m,) C-contiguous. No allocation.

    Eight rows at a time in vectors, with the loss kernels' margin block (_margins8) and
    prefetching; the last < 8 rows of a run one at a time. Side by side with linear_scores'
    four serial chains per score (this function's former body; 5e5 x 64 float64, min of 30):
    2048 fresh scattered rows 57 vs 190 us, the same rows again 46 vs 76 us, right after the
    loss kernel read them (a logged step's batch accuracy) 80 vs 95 us; a full pass is
    memory-bound either way (16.1 ms).
    """
    if not (X.flags.c_contiguous and out.flags.c_contiguous):
        raise ValueError("glm_margin: X and out must be C-contiguous")
    D = X.shape[1]
    b = params[D]
    m = rows.size
    lead = PREFETCH_BYTES // X.itemsize
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        pr = prefetch_scattered(X, rows, pr, i, max(cnt, 8))
        if cnt < 8 and i + 8 <= m:  # scattered rows: any eight at a time
            vstore(out, i, _margins8(X, params, ld(rows, i) * D, ld(rows, i + 1) * D, ld(rows, i + 2) * D,
                                     ld(rows, i + 3) * D, ld(rows, i + 4) * D, ld(rows, i + 5) * D,
                                     ld(rows, i + 6) * D, ld(rows, i + 7) * D, -1, False))
            i += 8
            continue
        hi = lo + cnt
        r = lo
        t = i
        while r + 8 <= hi:
            ahead = lead if (r + 8) * D + lead <= X.size else -1  # prefetch only inside X
            a = r * D
            vstore(out, t, _margins8(X, params, a, a + D, a + 2 * D, a + 3 * D, a + 4 * D, a + 5 * D, a + 6 * D,
                                     a + 7 * D, ahead, False))
            r += 8
            t += 8
        pf = r * D + lead
        while r < hi:
            pf = prefetch_ahead(X, pf, (r + 1) * D)
            z = b
            for j in range(D):
                z += X[r, j] * params[j]
            out[t] = z
            r += 1
            t += 1
        i += cnt
