"""Multinomial (softmax) regression kernels.

params layout: float64 (K*(D+1),) = coef (K, D) row-major, then the K intercepts;
K = params.size // (D + 1). Labels y: int64 (n,) in 0..K-1.
loss_i = logsumexp(z_i) - z_i[y_i] with logits z_i = W x_i + c.
"""
import numpy as np
from numba import njit

from .util import FASTMATH, PREFETCH_BYTES, exp_nonpos, log_strict, next_run, prefetch_ahead, prefetch_scattered

# Workspace (in units of K float64) that enables the four-rows-at-a-time path.
WORK_ROWS = 4


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


@njit(cache=True, nogil=True, fastmath=False)
def softmax_loss_grad(X, y, sw, params, rows, grad, with_loss):
    """Weighted softmax cross-entropy loss sum and gradient sum over ``rows``.

    X: (n, D) float32/float64 C-contiguous; y: int64 (n,) in 0..K-1; sw: float64 (n,)
    or size 0 (all weights 1); params: float64 (K*(D+1),) = [coef (K, D) row-major,
    intercepts (K,)]; rows: int64 (m,); grad: float64 like params, ADDED to:
    grad += sum_i sw_i d loss_i / d params. Returns sum_i sw_i loss_i if with_loss
    (stable log-sum-exp: logits may differ by 1e4 or more), else 0.0.
    Allocates one WORK_ROWS*K scratch vector per call; softmax_loss_grad_ws avoids it.
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    work = np.empty(WORK_ROWS * K, dtype=np.float64)
    return softmax_loss_grad_ws(X, y, sw, params, rows, grad, with_loss, work)


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_decision(X, params, rows, out):
    """out[k, c] = logit of class c for row rows[k]: coef[c] . x + intercept[c].

    X: (n, D) float32/float64; params (K*(D+1),); rows int64 (m,); out float64 (m, K).
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    KD = K * D
    m = rows.size
    i = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        for t in range(cnt):
            r = lo + t
            for k in range(K):
                zk = params[KD + k]
                o = k * D
                for j in range(D):
                    zk += params[o + j] * X[r, j]
                out[i + t, k] = zk
        i += cnt
