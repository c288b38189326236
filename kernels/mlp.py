"""Multi-layer perceptron kernels: ReLU hidden layers, softmax output.

Parameter layout (one flat float64 vector, weights first, biases last):

    [W_0 (n_1, n_0), W_1 (n_2, n_1), ..., W_{L-1} (n_L, n_{L-1}),  b_0 (n_1), ..., b_{L-1} (n_L)]

each W_l row-major (output unit j of layer l reads ``W_l[j, :]``), with n_0 = D features,
n_1..n_{L-1} hidden sizes and n_L = K classes. Hidden activations are ReLU, the output
layer gives logits z; loss_i = logsumexp(z_i) - z_i[y_i], labels y int64 in 0..K-1.

``layout``: int64 (L, 5), one row per layer ``[n_in, n_out, w_off, b_off, a_off]``:
the offsets of W_l and b_l in params, and of the layer's outputs in the activation
workspace. Built once by the model (:func:`mlp_layout`).

``work``: float64 (2 * A,) with A = n_1 + ... + n_L: the activations of one row
(``work[a_off:a_off+n_out]``) then the back-propagated deltas (``work[A + a_off:...]``).

Rows are processed one at a time: forward through the layers, stable softmax,
then backward, adding ``sw_i * d loss_i / d params`` into ``grad``. Strict IEEE
arithmetic (no fastmath) so that results are reproducible across rank counts up to
the order of the final sums.
"""
import math

import numpy as np
from numba import njit


def mlp_layout(sizes):
    """Layout table for layer sizes ``(n_0 = D, n_1, ..., n_L = K)``.

    Returns ``(layout int64 (L, 5), n_params, n_weights, A)``: n_weights is the length of
    the weight block (the penalised entries, params[:n_weights]); A the activation count.
    """
    sizes = [int(s) for s in sizes]
    L = len(sizes) - 1
    layout = np.zeros((L, 5), dtype=np.int64)
    w = 0
    for l in range(L):
        layout[l, 0], layout[l, 1], layout[l, 2] = sizes[l], sizes[l + 1], w
        w += sizes[l] * sizes[l + 1]
    b, a = w, 0
    for l in range(L):
        layout[l, 3], layout[l, 4] = b, a
        b += sizes[l + 1]
        a += sizes[l + 1]
    return layout, b, w, a


@njit(cache=True, nogil=True)
def _forward_row(X, r, params, layout, work):
    """Forward pass of row r: activations into work[:A]; returns the offset of the logits."""
    L = layout.shape[0]
    for l in range(L):
        n_in, n_out, wo, bo, ao = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3], layout[l, 4]
        relu = l < L - 1
        if l == 0:
            for j in range(n_out):
                z = params[bo + j]
                o = wo + j * n_in
                for i in range(n_in):
                    z += params[o + i] * X[r, i]
                work[ao + j] = max(z, 0.0) if relu else z
        else:
            pa = layout[l - 1, 4]
            for j in range(n_out):
                z = params[bo + j]
                o = wo + j * n_in
                for i in range(n_in):
                    z += params[o + i] * work[pa + i]
                work[ao + j] = max(z, 0.0) if relu else z
    return layout[L - 1, 4]


@njit(cache=True, nogil=True)
def mlp_loss_grad(X, y, sw, params, rows, grad, with_loss, layout, work, hits):
    """Add sum_i sw_i * d loss_i / d params over ``rows`` into ``grad``; return the loss sum.

    X: (n, D) float32/float64 C-contiguous; y: int64 (n,) in 0..K-1; sw: float64 (n,) or
    size 0 (all ones); params, grad: float64 (n_params,); rows: int64 (m,); layout: int64
    (L, 5); work: float64 (>= 2*A,) scratch (see the module docstring). Returns the
    weighted loss sum (0.0 unless with_loss). hits: float64 (1,), or size 0 for none:
    hits[0] = the weight of the rows whose label is the first index of their largest class
    probability (NaN as largest), the probabilities as mlp_predict_proba computes them: what
    Model.batch_hits counts, from this pass's forward pass (a logged step needs no second
    one). No allocation.
    """
    L = layout.shape[0]
    A = layout[L - 1, 4] + layout[L - 1, 1]
    K = layout[L - 1, 1]
    unweighted = sw.size == 0
    with_hits = hits.size > 0
    hit_sum = 0.0
    loss = 0.0
    for k in range(rows.size):
        r = rows[k]
        s = 1.0 if unweighted else sw[r]
        zo = _forward_row(X, r, params, layout, work)
        zmax = work[zo]
        for c in range(1, K):
            zmax = max(zmax, work[zo + c])
        ssum = 0.0
        for c in range(K):
            ssum += math.exp(work[zo + c] - zmax)
        yr = y[r]
        if with_loss:
            loss += s * (math.log(ssum) + zmax - work[zo + yr])
        if with_hits:  # argmax_rows' rule on mlp_predict_proba's e / ssum
            best = 0
            pb = math.exp(work[zo] - zmax) / ssum
            for c in range(1, K):
                pc = math.exp(work[zo + c] - zmax) / ssum
                if pc > pb or (pc != pc and pb == pb):
                    best = c
                    pb = pc
            if best == yr:
                hit_sum += s
        # Output deltas: s * (p - onehot(y)).
        for c in range(K):
            work[A + zo + c] = s * math.exp(work[zo + c] - zmax) / ssum
        work[A + zo + yr] -= s
        # Backward: layer l's delta at work[A + a_off(l)].
        for l in range(L - 1, -1, -1):
            n_in, n_out, wo, bo, ao = layout[l, 0], layout[l, 1], layout[l, 2], layout[l, 3], layout[l, 4]
            da = A + ao
            for j in range(n_out):
                grad[bo + j] += work[da + j]
            if l == 0:
                for j in range(n_out):
                    dj = work[da + j]
                    if dj != 0.0:
                        o = wo + j * n_in
                        for i in range(n_in):
                            grad[o + i] += dj * X[r, i]
            else:
                pa = layout[l - 1, 4]
                dp = A + pa
                for i in range(n_in):
                    work[dp + i] = 0.0
                for j in range(n_out):
                    dj = work[da + j]
                    if dj != 0.0:
                        o = wo + j * n_in
                        for i in range(n_in):
                            grad[o + i] += dj * work[pa + i]
                            work[dp + i] += params[o + i] * dj
                for i in range(n_in):  # ReLU'(z) = 1 where the activation is positive
                    if work[pa + i] <= 0.0:
                        work[dp + i] = 0.0
    if with_hits:
        hits[0] = hit_sum
    return loss


@njit(cache=True, nogil=True)
def mlp_predict_proba(X, params, rows, layout, work, out):
    """out[k, c] = softmax probability of class c for row rows[k].

    X: (n, D); params float64; rows int64 (m,); layout int64 (L, 5); work float64 (>= A,);
    out float64 (m, K). No allocation.
    """
    L = layout.shape[0]
    K = layout[L - 1, 1]
    for k in range(rows.size):
        zo = _forward_row(X, rows[k], params, layout, work)
        zmax = work[zo]
        for c in range(1, K):
            zmax = max(zmax, work[zo + c])
        ssum = 0.0
        for c in range(K):
            e = math.exp(work[zo + c] - zmax)
            out[k, c] = e
            ssum += e
        for c in range(K):
            out[k, c] /= ssum
