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
        pr = prefetch_scattered(X, rows, pr, i, cnt)
        if cnt < 4 and i + 4 <= m:
            # Scattered rows (a mini-batch): any four at a time, like a run of four below, so
            # their link evaluations overlap too; the rows ROWS_AHEAD further are in flight.
            dg, dl = _four_rows(X, y, sw, params, b, rows[i], rows[i + 1], rows[i + 2], rows[i + 3], grad,
                                with_loss, model)
            gb += dg
            loss += dl
            i += 4
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


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def glm_margin(X, params, rows, out):
    """out[k] = X[rows[k]] . w + b for k < m. X (n, D) float32/64; params (D+1,); out float64 (m,)."""
    D = X.shape[1]
    b = params[D]
    m = rows.size
    i = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        for k in range(cnt):
            r = lo + k
            z = b
            for j in range(D):
                z += X[r, j] * params[j]
            out[i + k] = z
        i += cnt
