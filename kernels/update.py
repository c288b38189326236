"""Per-step vector arithmetic of the training loop, fused into one call.

A mini-batch step of a small model spends microseconds per NumPy call on arrays of a few
dozen entries; one Numba call does the same arithmetic, in the same order (strict IEEE:
bitwise what the NumPy sequence gives).
"""
import numpy as np
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


@njit(cache=True, nogil=True, fastmath=False)
def penalty_norm2(params, n_pen):
    """||params[:n_pen]||^2 (float64 (P,), the penalised leading block), summed in order.

    The mini-batch log record's penalty (l2/2 times this): the compiled step loop computes it
    after its last update with the same function, so both loops log bitwise the same loss, and
    no cache-cold NumPy/BLAS call runs between two runs of the loop."""
    s = 0.0
    for j in range(n_pen):
        s += params[j] * params[j]
    return s


@njit(cache=True, nogil=True, fastmath=False)
def rows_weight_sum(sw, rows):
    """The weight of a batch: sum of sw[rows] (float64 (n,), int64 (m,)) added in the order of
    rows, or float(m) when sw has size 0 (unit weights). One call instead of NumPy's gather into
    a temporary and its sum; the compiled step loop calls the same function, so both loops
    divide by bitwise the same weight sum."""
    if sw.size == 0:
        return float(rows.size)
    s = 0.0
    for k in range(rows.size):
        s += sw[rows[k]]
    return s


@njit(cache=True, nogil=True, fastmath=False)
def sgd_update(params, grad, velocity, lr, momentum, nesterov):
    """One SGD step in place: params -= lr * u (PyTorch's momentum convention).

    params, grad: float64 (P,); velocity: float64 (P,), updated in place, or size 0 for
    plain SGD (u = grad). With momentum: v = momentum * v + grad; u = grad + momentum * v
    (nesterov) else v. Every operation rounded on its own (no fused multiply-add): bitwise
    what optim.SGD's NumPy sequence gives.
    """
    heavy = velocity.size != 0
    for j in range(params.size):
        g = grad[j]
        if heavy:
            v = velocity[j] * momentum + g
            velocity[j] = v
            u = (g + v * momentum) * lr if nesterov else v * lr
        else:
            u = g * lr
        params[j] = params[j] - u


@njit(cache=True, nogil=True, fastmath=False)
def adam_update(params, grad, m, v, lr, beta1, beta2, bias1, bias2, eps):
    """One Adam step in place (Kingma & Ba, with bias correction).

    params, grad, m, v: float64 (P,); m and v updated in place. bias1 = 1 - beta1**t,
    bias2 = 1 - beta2**t for this step's count t (computed by the caller, once).
    m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
    params -= lr * ((m / bias1) / (sqrt(v / bias2) + eps)), each operation rounded on its
    own: bitwise what optim.Adam's NumPy sequence gives.
    """
    c1 = 1.0 - beta1
    c2 = 1.0 - beta2
    for j in range(params.size):
        g = grad[j]
        mj = m[j] * beta1 + g * c1
        vj = v[j] * beta2 + (g * g) * c2
        m[j] = mj
        v[j] = vj
        params[j] = params[j] - ((mj / bias1) / (np.sqrt(vj / bias2) + eps)) * lr
