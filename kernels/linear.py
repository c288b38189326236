"""Least-squares linear regression kernels: loss_i = 0.5 * (x_i.w + b - y_i)**2.

The work is done by glm.glm_loss_grad (eight rows at a time in vectors, software prefetch of X).
"""
from numba import njit

from .glm import glm_loss_grad, glm_margin
from .util import LINEAR


@njit(cache=True, nogil=True, fastmath=False)
def linear_loss_grad(X, y, sw, params, rows, grad, with_loss):
    """Weighted squared-error loss sum and gradient sum over ``rows``.

    X: (n, D) float32/float64 C-contiguous; y: float64 (n,); sw: float64 (n,) or size 0
    (all weights 1); params: float64 (D+1,) = [w_0..w_{D-1}, b]; rows: int64 (m,);
    grad: float64 (D+1,), ADDED to: grad += sum_i sw_i (z_i - y_i) [x_i, 1].
    Returns sum_i sw_i * 0.5 (z_i - y_i)**2 if with_loss, else 0.0. No regularisation.
    """
    return glm_loss_grad(X, y, sw, params, rows, grad, with_loss, LINEAR, grad[:0])  # grad[:0]: no hits


@njit(cache=True, nogil=True, fastmath=False)
def linear_predict(X, params, rows, out):
    """out[k] = X[rows[k]] . w + b (float64 (m,)); X (n, D) float32/64, params (D+1,)."""
    glm_margin(X, params, rows, out)
