"""Binary logistic regression kernels: loss_i = log(1 + exp(z_i)) - y_i z_i, z_i = x_i.w + b.

The work is done by glm.glm_loss_grad (four rows at a time, eight for scattered rows, software prefetch of X);
log1p(exp(-|z|)) uses util.log1p_unit (inlined fdlibm kernel, no libm call).
"""
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
    return glm_loss_grad(X, y, sw, params, rows, grad, with_loss, LOGISTIC)


@njit(cache=True, nogil=True, fastmath=False)
def logistic_decision(X, params, rows, out):
    """out[k] = margin z = X[rows[k]] . w + b (float64 (m,)); X (n, D), params (D+1,)."""
    glm_margin(X, params, rows, out)
