"""Binary logistic regression kernels: loss_i = log(1 + exp(z_i)) - y_i z_i, z_i = x_i.w + b.

The work is done by glm.glm_loss_grad (eight rows at a time with the link evaluated in
vectors: simd.vexp_nonpos and simd.vlog1p_unit, the lane-wise twin of util.log1p_unit's
fdlibm kernel; software prefetch of X).
"""
import math

from numba import njit

from .glm import glm_loss_grad, glm_margin
from .util import LOGISTIC


@njit(cache=True, nogil=True, fastmath=False)
def logistic_loss_grad(X, y, sw, params, rows, grad, with_loss):
    """Weighted logistic loss sum and gradient sum over ``rows`` (labels y in {0.0, 1.0}).

    X: (n, D) float32/float64 C-contiguous; y: float64 (n,); sw: float64 (n,) or size 0
    (all weights 1); params: float64 (D+1,) = [w, b]; rows: int64 (m,);
    grad: float64 (D+1,), ADDED to: grad += sum_i sw_i (sigmoid(z_i) - y_i) [x_i, 1].
    Returns sum_i sw_i loss_i if with_loss (stable for any |z|: no overflow, no NaN),
    else 0.0 and skips the log. No regularisation.
    """
    return glm_loss_grad(X, y, sw, params, rows, grad, with_loss, LOGISTIC, grad[:0])  # grad[:0]: no hits


@njit(cache=True, nogil=True, fastmath=False)
def logistic_loss_grad_hits(X, y, sw, params, rows, grad, with_loss, hits):
    """:func:`logistic_loss_grad`, and the batch's hits from the same pass.

    hits: float64 (1,) or more, hits[0] = sum_i sw_i [label_i == y_i] with label_i = 1.0 where
    z_i > 0 (a NaN margin predicts 0.0): :func:`binary_hits`' correct weight, from the margins
    the kernel computes anyway (a logged SGD step's batch accuracy without a second pass over
    its rows); hits of size 0: none, then it is logistic_loss_grad. LogisticRegression and the
    compiled step loop call only this wrapper: each wrapper's compile compiles glm_loss_grad
    into it again (~2 s on a cold start). The same compiled glm_loss_grad as logistic_loss_grad
    (whose grad[:0] is of hits' type); with_loss a run-time bool for the same reason (a literal
    True or False would compile another specialisation)."""
    return glm_loss_grad(X, y, sw, params, rows, grad, with_loss, LOGISTIC, hits)


@njit(cache=True, nogil=True, fastmath=False)
def logistic_decision(X, params, rows, out):
    """out[k] = margin z = X[rows[k]] . w + b (float64 (m,)); X (n, D), params (D+1,)."""
    glm_margin(X, params, rows, out)


@njit(cache=True, nogil=True, fastmath=False)
def logistic_proba(z, out):
    """out[k] = [P(y = 0), P(y = 1)] for margins z: float64 (m,) -> float64 (m, 2).

    Stable for any z: e = exp(-|z|), then 1/(1+e) and e/(1+e) (no overflow), the same formula
    the NumPy version used, in one pass without temporaries. A NaN margin gives NaN.
    """
    for k in range(z.size):
        zk = z[k]
        e = math.exp(-abs(zk))
        big = 1.0 / (1.0 + e)
        small = e / (1.0 + e)
        if zk >= 0.0:
            out[k, 0] = small
            out[k, 1] = big
        else:
            out[k, 0] = big
            out[k, 1] = small


@njit(cache=True, nogil=True, fastmath=False)
def binary_hits(z, y, sw, rows):
    """(weighted correct, weight) of a batch: the batch accuracy a mini-batch loop logs.

    z: float64 (m,) margins of the rows ``rows`` (int64 (m,)); y: float64 (n,) labels 0.0 /
    1.0; sw: float64 (n,) or size 0 (unit weights). The predicted label is 1 where z > 0 (a
    NaN margin predicts 0), as predict_labels. Sums in row order; one pass, no temporaries."""
    correct = 0.0
    weight = 0.0
    for i in range(rows.size):
        r = rows[i]
        w = 1.0 if sw.size == 0 else sw[r]
        label = 1.0 if z[i] > 0.0 else 0.0
        if label == y[r]:
            correct += w
        weight += w
    return correct, weight
