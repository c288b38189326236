"""Multinomial (softmax) regression kernels.

params layout: float64 (K*(D+1),) = coef (K, D) row-major, then the K intercepts;
K = params.size // (D + 1). Labels y: int64 (n,) in 0..K-1.
loss_i = logsumexp(z_i) - z_i[y_i] with logits z_i = W x_i + c.
"""
import numpy as np
from numba import njit

from .util import FASTMATH, exp_shifted, next_run, softmax_row_loss


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def _residuals(work, base, K, s, yi):
    """In place: work[base:base+K] logits -> s * (p_k - [k == yi]).

    Returns (sum_k exp(z_k - zmax), zmax, z_yi) for the loss.
    """
    zmax = -np.inf
    for k in range(K):
        if work[base + k] > zmax:
            zmax = work[base + k]
    zy = work[base + yi]
    ssum = 0.0
    for k in range(K):
        e = exp_shifted(work[base + k], zmax)
        work[base + k] = e
        ssum += e
    c = s / ssum
    for k in range(K):
        work[base + k] *= c
    work[base + yi] -= s
    return ssum, zmax, zy


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def softmax_loss_grad_ws(X, y, sw, params, rows, grad, with_loss, work):
    """Same as :func:`softmax_loss_grad` with a caller-provided workspace (no allocation).

    work: float64 (>= 2*K,) scratch for two rows' logits/residuals.
    Rows are taken in pairs (x rows read once, kept in L1): 2K logits (each coef row
    read once for both rows), per row max, exp(z - max) (strict), sum,
    loss = log(sum) + max - z_y, then grad_coef[k] += sw (p_k - [k == y]) x for both
    rows in one pass over grad_coef[k], grad_intercept[k] += sw (p_k - [k == y]).
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    KD = K * D
    unweighted = sw.size == 0
    m = rows.size
    loss = 0.0
    i = 0
    while i < m:
        lo, cnt = next_run(rows, i)
        hi = lo + cnt
        r = lo
        while r + 2 <= hi:
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
            s0 = 1.0 if unweighted else sw[r]
            s1 = 1.0 if unweighted else sw[r + 1]
            a0, m0, zy0 = _residuals(work, 0, K, s0, y[r])
            a1, m1, zy1 = _residuals(work, K, K, s1, y[r + 1])
            if with_loss:
                loss += softmax_row_loss(a0, m0, zy0, s0) + softmax_row_loss(a1, m1, zy1, s1)
            for k in range(K):
                g0 = work[k]
                g1 = work[K + k]
                grad[KD + k] += g0 + g1
                o = k * D
                for j in range(D):
                    grad[o + j] += g0 * X[r, j] + g1 * X[r + 1, j]
            r += 2
        while r < hi:
            for k in range(K):
                z0 = params[KD + k]
                o = k * D
                for j in range(D):
                    z0 += params[o + j] * X[r, j]
                work[k] = z0
            s0 = 1.0 if unweighted else sw[r]
            a0, m0, zy0 = _residuals(work, 0, K, s0, y[r])
            if with_loss:
                loss += softmax_row_loss(a0, m0, zy0, s0)
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
    Allocates one 2K-length scratch vector per call; softmax_loss_grad_ws avoids it.
    """
    D = X.shape[1]
    K = params.size // (D + 1)
    work = np.empty(2 * K, dtype=np.float64)
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
