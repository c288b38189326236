"""Fused single-pass loss/gradient driver shared by the linear and logistic kernels."""
from numba import njit

from .util import FASTMATH, PREFETCH_BYTES, link_residual, next_run, prefetch_ahead, prefetch_scattered


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _four_rows(X, y, sw, params, b, a0, a1, a2, a3, grad, with_loss, model):
    """Rows a0..a3 of X: grad[:D] += their weighted residual x row; returns (residual sum, loss sum).

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
    r0, l0 = link_residual(model, z0, y[a0], 1.0, with_loss)
    r1, l1 = link_residual(model, z1, y[a1], 1.0, with_loss)
    r2, l2 = link_residual(model, z2, y[a2], 1.0, with_loss)
    r3, l3 = link_residual(model, z3, y[a3], 1.0, with_loss)
    if sw.size:
        r0, l0 = r0 * sw[a0], l0 * sw[a0]
        r1, l1 = r1 * sw[a1], l1 * sw[a1]
        r2, l2 = r2 * sw[a2], l2 * sw[a2]
        r3, l3 = r3 * sw[a3], l3 * sw[a3]
    for j in range(D):
        grad[j] += (r0 * X[a0, j] + r1 * X[a1, j]) + (r2 * X[a2, j] + r3 * X[a3, j])
    return (r0 + r1) + (r2 + r3), (l0 + l1) + (l2 + l3)


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _eight_rows(X, y, sw, params, b, a0, a1, a2, a3, a4, a5, a6, a7, grad, with_loss, model):
    """Rows a0..a7 of X (any rows): as _four_rows, with eight rows' loads and links in flight."""
    D = X.shape[1]
    z0 = b
    z1 = b
    z2 = b
    z3 = b
    z4 = b
    z5 = b
    z6 = b
    z7 = b
    for j in range(D):
        wj = params[j]
        z0 += X[a0, j] * wj
        z1 += X[a1, j] * wj
        z2 += X[a2, j] * wj
        z3 += X[a3, j] * wj
        z4 += X[a4, j] * wj
        z5 += X[a5, j] * wj
        z6 += X[a6, j] * wj
        z7 += X[a7, j] * wj
    r0, l0 = link_residual(model, z0, y[a0], 1.0, with_loss)
    r1, l1 = link_residual(model, z1, y[a1], 1.0, with_loss)
    r2, l2 = link_residual(model, z2, y[a2], 1.0, with_loss)
    r3, l3 = link_residual(model, z3, y[a3], 1.0, with_loss)
    r4, l4 = link_residual(model, z4, y[a4], 1.0, with_loss)
    r5, l5 = link_residual(model, z5, y[a5], 1.0, with_loss)
    r6, l6 = link_residual(model, z6, y[a6], 1.0, with_loss)
    r7, l7 = link_residual(model, z7, y[a7], 1.0, with_loss)
    if sw.size:
        r0, l0 = r0 * sw[a0], l0 * sw[a0]
        r1, l1 = r1 * sw[a1], l1 * sw[a1]
        r2, l2 = r2 * sw[a2], l2 * sw[a2]
        r3, l3 = r3 * sw[a3], l3 * sw[a3]
        r4, l4 = r4 * sw[a4], l4 * sw[a4]
        r5, l5 = r5 * sw[a5], l5 * sw[a5]
        r6, l6 = r6 * sw[a6], l6 * sw[a6]
        r7, l7 = r7 * sw[a7], l7 * sw[a7]
    for j in range(D):
        grad[j] += (((r0 * X[a0, j] + r1 * X[a1, j]) + (r2 * X[a2, j] + r3 * X[a3, j]))
                    + ((r4 * X[a4, j] + r5 * X[a5, j]) + (r6 * X[a6, j] + r7 * X[a7, j])))
    return ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7))


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def glm_loss_grad(X, y, sw, params, rows, grad, with_loss, model):
    """Weighted loss sum and gradient sum of a GLM with margin z = x.w + b.

    X: (n, D) float32/float64 C-contiguous; y: float64 (n,); sw: float64 (n,) or size 0
    (all ones); params: float64 (D+1,) = [w, b]; rows: int64 (m,) rows of X to use;
    grad: float64 (D+1,), ADDED to: grad += sum_i sw_i * dloss_i/dparams.
    model: util.LINEAR or util.LOGISTIC. Returns sum_i sw_i * loss_i if with_loss
    else 0.0. No allocation.

    One pass over X, four consecutive rows at a time (then single rows): the four dot
    products share each load of w, the four (strict) link evaluations are independent
    so their latencies overlap, and one sweep over grad adds all four rows' terms while
    they are still in L1. X is software-prefetched PREFETCH_BYTES ahead (util).
    Scattered rows (a mini-batch) go eight at a time, whole rows prefetched up to ROWS_AHEAD
    past the group: more rows' cache misses in flight (2048 rows of 1e6 x 64, side by side:
    eight vs four 280 vs 305 us, 105 vs 128 us with the rows in cache; the prefetch reaching
    past the group of eight 268 vs 294 us); runs keep four (eight: 66 vs 45 ms per pass).
    """
    D = X.shape[1]
    b = params[D]
    unweighted = sw.size == 0
    m = rows.size
    if m == 0:
        return 0.0
    lead = PREFETCH_BYTES // X.itemsize
    loss = 0.0
    gb = 0.0
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        pr = prefetch_scattered(X, rows, pr, i, max(cnt, 8))  # scattered: 8 rows now, ROWS_AHEAD beyond
        if cnt < 8 and i + 8 <= m:
            # Scattered rows (a mini-batch): any eight at a time, so that more rows' loads are
            # in flight and their link evaluations overlap; the rows ROWS_AHEAD further are
            # requested too.
            dg, dl = _eight_rows(X, y, sw, params, b, rows[i], rows[i + 1], rows[i + 2], rows[i + 3], rows[i + 4],
                                 rows[i + 5], rows[i + 6], rows[i + 7], grad, with_loss, model)
            gb += dg
            loss += dl
            i += 8
            continue
        hi = lo + cnt
        r = lo
        pf = lo * D + lead
        while r + 4 <= hi:
            pf = prefetch_ahead(X, pf, (r + 4) * D)
            dg, dl = _four_rows(X, y, sw, params, b, r, r + 1, r + 2, r + 3, grad, with_loss, model)
            gb += dg
            loss += dl
            r += 4
        while r < hi:
            pf = prefetch_ahead(X, pf, (r + 1) * D)
            z0 = b
            for j in range(D):
                z0 += X[r, j] * params[j]
            s0 = 1.0 if unweighted else sw[r]
            r0, l0 = link_residual(model, z0, y[r], s0, with_loss)
            for j in range(D):
                grad[j] += r0 * X[r, j]
            gb += r0
            loss += l0
            r += 1
        i += cnt
    grad[D] += gb
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=FASTMATH, inline="always")
def _scores4(X, params, a0, a1, a2, a3, out, t):
    """out[t .. t+3, :] = the scores of rows a0..a3: each coefficient loaded once for four rows."""
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
        out[t + 1, k] = z1
        out[t + 2, k] = z2
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
    K = out.shape[1]
    KD = K * D
    m = rows.size
    lead = PREFETCH_BYTES // X.itemsize
    i = 0
    pr = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        pr = prefetch_scattered(X, rows, pr, i, max(cnt, 4))
        if cnt < 4 and i + 4 <= m:  # scattered rows: any four at a time
            _scores4(X, params, rows[i], rows[i + 1], rows[i + 2], rows[i + 3], out, i)
            i += 4
            continue
        hi = lo + cnt
        r = lo
        t = i
        pf = lo * D + lead
        while r + 4 <= hi:
            pf = prefetch_ahead(X, pf, (r + 4) * D)
            _scores4(X, params, r, r + 1, r + 2, r + 3, out, t)
            r += 4
            t += 4
        while r < hi:
            pf = prefetch_ahead(X, pf, (r + 1) * D)
            for k in range(K):
                zk = params[KD + k]
                o = k * D
                for j in range(D):
                    zk += params[o + j] * X[r, j]
                out[t, k] = zk
            r += 1
            t += 1
        i += cnt


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def glm_margin(X, params, rows, out):
    """out[k] = X[rows[k]] . w + b for k < m. X (n, D) float32/64; params (D+1,); out float64 (m,)
    C-contiguous: linear_scores with one score per row."""
    linear_scores(X, params, rows, out.reshape((out.size, 1)))
