"""CSR kernels against the dense kernels on the same data densified, and against finite differences."""
import numpy as np
import pytest
import scipy.sparse as sp

from mpidml.kernels import (
    csr_glm_margin,
    csr_linear_loss_grad,
    csr_logistic_loss_grad,
    csr_softmax_decision,
    csr_softmax_loss_grad_ws,
    linear_loss_grad,
    logistic_decision,
    logistic_loss_grad,
    softmax_decision,
    softmax_loss_grad,
)

N, D, K = 53, 40, 4
EMPTY = np.empty(0, dtype=np.float64)


def sparse_problem(kind, dtype=np.float64, index_dtype=np.int32, seed=0, density=0.15):
    rng = np.random.default_rng(seed)
    A = sp.random(N, D, density=density, format="csr", random_state=seed, dtype=np.float64,
                  data_rvs=lambda n: rng.standard_normal(n) * 2.0)
    A = sp.csr_matrix(sp.diags((np.arange(N) % 9 != 4).astype(np.float64)) @ A)  # rows 4, 13, ... empty
    A.eliminate_zeros()
    A.data = A.data.astype(dtype)
    A.indices = A.indices.astype(index_dtype)
    A.indptr = A.indptr.astype(np.int64)
    assert (np.diff(A.indptr) == 0).any(), "want some empty rows"
    if kind == "softmax":
        y = rng.integers(0, K, N).astype(np.int64)
        params = rng.standard_normal(K * (D + 1))
    else:
        y = (rng.random(N) < 0.5).astype(np.float64) if kind == "logistic" else rng.standard_normal(N)
        params = rng.standard_normal(D + 1)
    return A, y, params


def csr_call(kind, A, y, sw, params, rows, grad, with_loss=True):
    if kind == "softmax":
        work = np.empty(K)
        return csr_softmax_loss_grad_ws(A.indptr, A.indices, A.data, y, sw, params, rows, grad, with_loss, K, work)
    f = csr_logistic_loss_grad if kind == "logistic" else csr_linear_loss_grad
    return f(A.indptr, A.indices, A.data, y, sw, params, rows, grad, with_loss)


def dense_call(kind, X, y, sw, params, rows, grad, with_loss=True):
    f = {"softmax": softmax_loss_grad, "logistic": logistic_loss_grad, "linear": linear_loss_grad}[kind]
    return f(X, y, sw, params, rows, grad, with_loss)


@pytest.mark.parametrize("kind", ["logistic", "softmax", "linear"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
@pytest.mark.parametrize("weighted", [False, True])
def test_csr_equals_dense_kernel(kind, dtype, index_dtype, weighted):
    A, y, params = sparse_problem(kind, dtype, index_dtype)
    X = np.ascontiguousarray(A.toarray())
    assert X.dtype == dtype
    sw = np.random.default_rng(1).random(N) * 2 if weighted else EMPTY
    rng = np.random.default_rng(2)
    for rows in (np.arange(N, dtype=np.int64), rng.choice(N, 17, replace=False).astype(np.int64),
                 np.array([5, 5, 0], dtype=np.int64), np.empty(0, dtype=np.int64)):
        g_csr = np.full(params.size, 0.25)  # kernels ADD into grad
        g_dense = np.full(params.size, 0.25)
        l_csr = csr_call(kind, A, y, sw, params, rows, g_csr)
        l_dense = dense_call(kind, X, y, sw, params, rows, g_dense)
        assert l_csr == pytest.approx(l_dense, rel=1e-12, abs=1e-12)
        np.testing.assert_allclose(g_csr, g_dense, rtol=1e-11, atol=1e-11)
        g_noloss = np.full(params.size, 0.25)
        assert csr_call(kind, A, y, sw, params, rows, g_noloss, with_loss=False) == 0.0
        np.testing.assert_array_equal(g_noloss, g_csr)


def test_duplicate_and_unsorted_columns_sum_like_scipy():
    # Row 0 holds column 3 twice and is unsorted: scipy sums duplicates, so must the kernel.
    indptr = np.array([0, 3, 4], dtype=np.int64)
    indices = np.array([3, 1, 3, 0], dtype=np.int32)
    data = np.array([1.5, -2.0, 0.5, 4.0])
    y = np.array([1.0, 0.0])
    params = np.array([0.3, -0.7, 0.1, 0.9, 0.2])
    X = sp.csr_matrix((data, indices, indptr), shape=(2, 4)).toarray()
    rows = np.arange(2, dtype=np.int64)
    g1, g2 = np.zeros(5), np.zeros(5)
    l1 = csr_logistic_loss_grad(indptr, indices, data, y, EMPTY, params, rows, g1, True)
    l2 = logistic_loss_grad(X, y, EMPTY, params, rows, g2, True)
    assert l1 == pytest.approx(l2, rel=1e-14)
    np.testing.assert_allclose(g1, g2, rtol=1e-14)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_csr_gradient_matches_finite_differences(kind):
    A, y, params = sparse_problem(kind, seed=3)
    sw = np.random.default_rng(4).random(N) + 0.5
    rows = np.arange(N, dtype=np.int64)
    g = np.zeros(params.size)
    csr_call(kind, A, y, sw, params, rows, g)
    h = 1e-6
    fd = np.empty(params.size)
    for i in range(params.size):
        p, m = params.copy(), params.copy()
        p[i] += h
        m[i] -= h
        fd[i] = (csr_call(kind, A, y, sw, p, rows, np.zeros(params.size))
                 - csr_call(kind, A, y, sw, m, rows, np.zeros(params.size))) / (2 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
def test_csr_loss_is_stable_for_huge_margins(kind):
    A, y, params = sparse_problem(kind, seed=5)
    params = params * 1e4  # margins of order 1e4: exp would overflow in a naive formula
    X = np.ascontiguousarray(A.toarray())
    rows = np.arange(N, dtype=np.int64)
    g1, g2 = np.zeros(params.size), np.zeros(params.size)
    l1 = csr_call(kind, A, y, EMPTY, params, rows, g1)
    l2 = dense_call(kind, X, y, EMPTY, params, rows, g2)
    assert np.isfinite(l1) and np.all(np.isfinite(g1))
    assert l1 == pytest.approx(l2, rel=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-11, atol=1e-9)


def test_csr_decisions_match_dense():
    A, _, params = sparse_problem("logistic", np.float32)
    X = np.ascontiguousarray(A.toarray())
    rows = np.array([0, 7, 3, 52], dtype=np.int64)
    z1, z2 = np.empty(4), np.empty(4)
    csr_glm_margin(A.indptr, A.indices, A.data, params, rows, z1)
    logistic_decision(X, params, rows, z2)
    np.testing.assert_allclose(z1, z2, rtol=1e-13, atol=1e-13)
    A, _, params = sparse_problem("softmax")
    X = np.ascontiguousarray(A.toarray())
    Z1, Z2 = np.empty((4, K)), np.empty((4, K))
    csr_softmax_decision(A.indptr, A.indices, A.data, params, rows, K, Z1)
    softmax_decision(X, params, rows, Z2)
    np.testing.assert_allclose(Z1, Z2, rtol=1e-13, atol=1e-13)


def test_touched_coords_are_the_gradient_support():
    from mpidml.kernels import csr_touched_coords

    A, y, params = sparse_problem("softmax", seed=7)
    seen = np.full(D, -1, dtype=np.int64)
    cols = np.empty(D, dtype=np.int64)
    out = np.empty(K * (D + 1), dtype=np.int64)
    for stamp, rows in enumerate([np.array([3, 5, 5, 17], dtype=np.int64), np.arange(N, dtype=np.int64),
                                  np.array([4], dtype=np.int64), np.empty(0, dtype=np.int64)]):
        c = csr_touched_coords(A.indptr, A.indices, rows, K, D, seen, stamp, cols, out)
        J = np.unique(A.indices[np.concatenate([np.arange(A.indptr[r], A.indptr[r + 1]) for r in rows] + [[]]).astype(int)])
        want = np.concatenate([k * D + J for k in range(K)] + [K * D + np.arange(K)])
        np.testing.assert_array_equal(out[:c], want)
        # the gradient is zero off these coordinates
        g = np.zeros(params.size)
        csr_call("softmax", A, y, EMPTY, params, rows, g)
        off = np.ones(params.size, dtype=bool)
        off[want] = False
        assert not g[off].any()
