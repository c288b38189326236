"""Fused loss/gradient kernels for rows stored in CSR (compressed sparse row) form.

The same models and parameter layouts as the dense kernels (see the package docstring),
with X given by three arrays instead of one (n, D) matrix:

* ``indptr``: int64 (n+1,), non-decreasing, ``indptr[0] == 0``: row r's entries are
  ``indptr[r]:indptr[r+1]`` of ``indices`` and ``data``;
* ``indices``: int32 or int64 (nnz,), column of each entry, ``0 <= indices[k] < D``
  (need not be sorted within a row; a repeated column counts as the sum of its values,
  as in scipy.sparse);
* ``data``: float32 or float64 (nnz,), the stored values (accumulation is in float64).

D is not stored in the CSR arrays; it comes from the parameter vector
(linear/logistic: params (D+1,); softmax: K*(D+1) with K passed explicitly).
Each kernel reads each stored entry of a row once per pass for the margin and once
for the gradient (the row's entries are still in L1), adds the weighted gradient SUM
into the caller's dense ``grad`` and allocates nothing. Cost: O(nnz) for the
GLMs and O(K * nnz) for softmax, independent of D except for the dense bias terms.
The links (stable sigmoid, log1p, log-sum-exp) are the dense kernels' strict helpers,
so a CSR row and the same row densified give the same loss to rounding.
"""
import numpy as np
from numba import njit

from .glm import _hit
from .softmax import _residuals
from .util import FASTMATH, LINEAR, LOGISTIC, link_residual


@njit(cache=True, nogil=True, fastmath=FASTMATH)
def csr_glm_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss, model, hits):
    """Weighted loss sum and gradient sum of a GLM (margin z = x.w + b) over CSR ``rows``.

    indptr int64 (n+1,); indices int32/int64 (nnz,); data float32/float64 (nnz,);
    y float64 (n,); sw float64 (n,) or size 0 (all ones); params float64 (D+1,) = [w, b];
    rows int64 (m,) local row ids; grad float64 (D+1,), ADDED to:
    grad[indices[k]] += r_i * data[k] for row i's entries, grad[D] += r_i, with
    r_i = sw_i * dloss_i/dz_i. model: util.LINEAR or util.LOGISTIC. Returns the weighted
    loss sum if with_loss else 0.0. hits: float64 (1,), or size 0 for none: hits[0] = the
    weight of the rows whose label (1.0 where z > 0, else 0.0: a NaN margin predicts 0)
    equals y, as kernels.binary_hits counts it (a logged step's batch accuracy without a
    second pass over its rows). No allocation.
    """
    D = params.size - 1
    b = params[D]
    unweighted = sw.size == 0
    with_hits = hits.size > 0
    hit_sum = 0.0
    loss = 0.0
    gb = 0.0
    for t in range(rows.size):
        r = rows[t]
        a = indptr[r]
        e = indptr[r + 1]
        z = b
        # Columns are validated non-negative on read: an unsigned index skips Numba's
        # negative-index wraparound on every gather and scatter (~15% of the time).
        for k in range(a, e):
            z += data[k] * params[np.uint64(indices[k])]
        s = 1.0 if unweighted else sw[r]
        yr = y[r]
        res, l = link_residual(model, z, yr, s, with_loss)
        for k in range(a, e):
            grad[np.uint64(indices[k])] += res * data[k]
        gb += res
        loss += l
        if with_hits:
            hit_sum += _hit(z, yr, s)
    grad[D] += gb
    if with_hits:
        hits[0] = hit_sum
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=False)
def csr_logistic_loss_grad_hits(indptr, indices, data, y, sw, params, rows, grad, with_loss, hits):
    """Logistic regression (labels 0.0/1.0) on CSR rows; see :func:`csr_glm_loss_grad`.

    grad += sum_i sw_i (sigmoid(z_i) - y_i) [x_i, 1]; returns sum_i sw_i loss_i
    (log(1 + exp(z)) - y z, stable for any |z|) if with_loss, else 0.0; hits: the batch's
    weighted correct predictions, or size 0 for none.
    """
    return csr_glm_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss, LOGISTIC, hits)


@njit(cache=True, nogil=True, fastmath=False)
def csr_logistic_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss):
    """:func:`csr_logistic_loss_grad_hits` without hits."""
    return csr_glm_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss, LOGISTIC, grad[:0])


@njit(cache=True, nogil=True, fastmath=False)
def csr_linear_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss):
    """Least squares (0.5 (z - y)^2) on CSR rows; see :func:`csr_glm_loss_grad`."""
    return csr_glm_loss_grad(indptr, indices, data, y, sw, params, rows, grad, with_loss, LINEAR, grad[:0])


@njit(cache=True, nogil=True, fastmath=False)
def csr_glm_margin(indptr, indices, data, params, rows, out):
    """out[t] = x_{rows[t]} . w + b for t < m; params (D+1,); out float64 (m,)."""
    D = params.size - 1
    b = params[D]
    for t in range(rows.size):
        r = rows[t]
        z = b
        for k in range(indptr[r], indptr[r + 1]):
            z += data[k] * params[indices[k]]
        out[t] = z


@njit(cache=True, nogil=True, fastmath=False)
def csr_softmax_loss_grad_ws(indptr, indices, data, y, sw, params, rows, grad, with_loss, n_classes, work):
    """:func:`csr_softmax_loss_grad_hits` without hits."""
    return csr_softmax_loss_grad_hits(indptr, indices, data, y, sw, params, rows, grad, with_loss, n_classes, work,
                                      work[:0])


@njit(cache=True, nogil=True, fastmath=False)
def csr_softmax_loss_grad_hits(indptr, indices, data, y, sw, params, rows, grad, with_loss, n_classes, work, hits):
    """Weighted softmax cross-entropy loss sum and gradient sum over CSR ``rows``.

    indptr int64 (n+1,); indices int32/int64 (nnz,); data float32/float64 (nnz,);
    y int64 (n,) in 0..K-1; sw float64 (n,) or size 0; params float64 (K*(D+1),) =
    [coef (K, D) row-major, intercepts (K,)] with K = n_classes; rows int64 (m,);
    grad float64 like params, ADDED to: grad[k*D + j] += sw_i (p_ik - [k == y_i]) x_ij
    for the stored entries j of row i, grad[K*D + k] += sw_i (p_ik - [k == y_i]).
    work float64 (>= K,) scratch for one row's logits. Returns sum_i sw_i loss_i if
    with_loss (stable log-sum-exp: the max logit is subtracted first), else 0.0.
    hits: float64 (1,), or size 0 for none: hits[0] = the weight of the rows whose label is
    the first index of their largest logit (NaN as largest), as kernels.argmax_hits counts
    it. No allocation.
    """
    if hits.size > 0:
        hits[0] = 0.0
    K = n_classes
    D = params.size // K - 1
    KD = K * D
    unweighted = sw.size == 0
    loss = 0.0
    for t in range(rows.size):
        r = rows[t]
        a = indptr[r]
        e = indptr[r + 1]
        for k in range(K):
            work[k] = params[KD + k]
        for q in range(a, e):
            j = indices[q]
            v = data[q]
            for k in range(K):
                work[k] += params[k * D + j] * v
        # logits -> sw (p - onehot(y)) in place; same helper as the dense kernel.
        loss += _residuals(work, 1, K, y, sw, r, unweighted, with_loss, hits)
        for k in range(K):
            grad[KD + k] += work[k]
        for q in range(a, e):
            j = indices[q]
            v = data[q]
            for k in range(K):
                grad[k * D + j] += work[k] * v
    return loss if with_loss else 0.0


@njit(cache=True, nogil=True, fastmath=False)
def csr_softmax_decision(indptr, indices, data, params, rows, n_classes, out):
    """out[t, k] = coef[k] . x_{rows[t]} + intercept[k]; params (K*(D+1),); out float64 (m, K)."""
    K = n_classes
    D = params.size // K - 1
    KD = K * D
    for t in range(rows.size):
        r = rows[t]
        for k in range(K):
            out[t, k] = params[KD + k]
        for q in range(indptr[r], indptr[r + 1]):
            j = indices[q]
            v = data[q]
            for k in range(K):
                out[t, k] += params[k * D + j] * v


@njit(cache=True, nogil=True)
def csr_touched_coords(indptr, indices, rows, n_outputs, n_features, seen, stamp, cols, out):
    """The parameter coordinates a gradient over CSR ``rows`` can make non-zero, sorted.

    Layout of the linear models: coef (K, D) row-major, then K intercepts (K = n_outputs,
    D = n_features). For every column j stored in the rows (each once) the coordinates
    k*D + j for k < K, then the intercepts K*D + k. indptr int64 (n+1,); indices
    int32/int64 (nnz,); rows int64 (m,); seen int64 (D,) scratch: seen[j] == stamp marks
    j as listed, so callers pass a new stamp per call and never clear it; cols int64 (>= D,)
    scratch; out int64 (>= K * (D + 1),). Writes out[:count], returns count = K * (c + 1)
    for c distinct columns. No allocation (in-place sort of the c columns).
    """
    c = 0
    for t in range(rows.size):
        r = rows[t]
        for q in range(indptr[r], indptr[r + 1]):
            j = indices[q]
            if seen[j] != stamp:
                seen[j] = stamp
                cols[c] = j
                c += 1
    cols[:c].sort()
    K = n_outputs
    D = n_features
    for k in range(K):
        base = k * c
        off = k * D
        for i in range(c):
            out[base + i] = off + cols[i]
    for k in range(K):
        out[K * c + k] = K * D + k
    return K * (c + 1)
