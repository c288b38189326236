"""Per-step vector arithmetic of the training loop, fused into one call.

A mini-batch step of a small model spends microseconds per NumPy call on arrays of a few
dozen entries; one Numba call does the same arithmetic, in the same order (strict IEEE:
bitwise what the NumPy sequence gives).
"""
from numba import njit


@njit(cache=True, nogil=True, fastmath=False)
def mean_gradient_norm2(grad_sum, inv_weight, params, l2, n_pen, out):
    """out = grad_sum * inv_weight, plus l2 * params on the first n_pen entries; returns ||out||^2.

    grad_sum, params, out: float64 (P,); inv_weight: 1 / (global weight sum); n_pen: the
    penalised entries are out[:n_pen] (the coefficients; intercepts last, unpenalised).
    Each entry is (grad_sum[j] * inv_weight) + (params[j] * l2), rounded as NumPy's
    multiply-then-add; the squared norm (for the finiteness check) is summed in order.
    """
    s = 0.0
    for j in range(out.size):
        v = grad_sum[j] * inv_weight
        if j < n_pen:
            v = v + params[j] * l2
        out[j] = v
        s += v * v
    return s
