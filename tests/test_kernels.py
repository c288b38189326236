"""Serial tests of the Numba kernels against plain NumPy references (no MPI)."""
import numpy as np
import pytest

from mpidml.kernels import softmax as kernels_softmax
from mpidml.kernels import (
    linear_loss_grad,
    linear_predict,
    logistic_decision,
    logistic_loss_grad,
    softmax_decision,
    softmax_loss_grad,
    softmax_loss_grad_hits,
    softmax_loss_grad_ws,
)

N, D, K = 61, 7, 4
EMPTY = np.empty(0, dtype=np.float64)

# ---------------------------------------------------------------- NumPy references
# Each returns (loss_sum, grad_sum, loss_scale, grad_scale); the scales are the sums of
# absolute values of the summed terms, i.e. the natural bound for rounding errors.


def _softplus(z):
    return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def ref_linear(X, y, s, params):
    w, b = params[:-1], params[-1]
    d = X @ w + b - y
    loss = np.sum(s * 0.5 * d * d)
    r = s * d
    grad = np.append(X.T @ r, r.sum())
    a = np.abs(X) @ np.abs(w) + abs(b) + np.abs(y)  # bound on |d| terms
    lscale = np.sum(np.abs(s) * 0.5 * a * a)
    gscale = np.append(np.abs(X).T @ (np.abs(s) * a), np.sum(np.abs(s) * a))
    return loss, grad, lscale, gscale


def ref_logistic(X, y, s, params):
    w, b = params[:-1], params[-1]
    z = X @ w + b
    loss = np.sum(s * (_softplus(z) - y * z))
    r = s * (_sigmoid(z) - y)
    grad = np.append(X.T @ r, r.sum())
    lscale = np.sum(np.abs(s) * (_softplus(z) + np.abs(y * z)))
    gscale = np.append(np.abs(X).T @ np.abs(s), np.abs(s).sum())
    return loss, grad, lscale, gscale


def ref_softmax(X, y, s, params):
    k = params.size // (X.shape[1] + 1)
    W = params[: k * X.shape[1]].reshape(k, X.shape[1])
    c = params[k * X.shape[1]:]
    Z = X @ W.T + c
    zmax = Z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(Z - zmax).sum(axis=1)) + zmax[:, 0]
    zy = Z[np.arange(len(y)), y]
    loss = np.sum(s * (lse - zy))
    P = np.exp(Z - lse[:, None])
    G = (P - np.eye(k)[y]) * s[:, None]
    grad = np.concatenate([(G.T @ X).ravel(), G.sum(axis=0)])
    lscale = np.sum(np.abs(s) * (np.abs(lse) + np.abs(zy)))
    gscale = np.concatenate([np.outer(np.full(k, 2.0), np.abs(X).T @ np.abs(s)).ravel(),
                             np.full(k, 2.0 * np.abs(s).sum())])
    return loss, grad, lscale, gscale


MODELS = {
    "linear": (linear_loss_grad, ref_linear),
    "logistic": (logistic_loss_grad, ref_logistic),
    "softmax": (softmax_loss_grad, ref_softmax),
}


def make_problem(model, dtype, seed=0, n=N, d=D):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    if model == "softmax":
        y = rng.integers(0, K, n).astype(np.int64)
        params = rng.standard_normal(K * (d + 1)) / np.sqrt(d)
    elif model == "logistic":
        y = (rng.random(n) < 0.5).astype(np.float64)
        params = rng.standard_normal(d + 1) * 2.0 / np.sqrt(d)
    else:
        y = rng.standard_normal(n)
        params = rng.standard_normal(d + 1) / np.sqrt(d)
    sw = rng.uniform(0.1, 3.0, n)
    return X, y, sw, params


def rows_for(kind, n, seed=1):
    rng = np.random.default_rng(seed)
    if kind == "full":
        return np.arange(n, dtype=np.int64)
    if kind == "empty":
        return np.empty(0, dtype=np.int64)
    if kind == "subset":  # random unordered subset, with a repeated row
        r = rng.choice(n, n // 2, replace=False)
        return np.append(r, r[3]).astype(np.int64)
    if kind == "runs":  # contiguous runs of odd/even length, reversed runs, singletons
        return np.concatenate([np.arange(5, 12), [40, 3, 3, 17], np.arange(20, 29)[::-1],
                               np.arange(50, 53), np.arange(30, 36)]).astype(np.int64)
    raise ValueError(kind)


def check_close(got, ref, scale, rtol):
    got, ref, scale = np.atleast_1d(got), np.atleast_1d(ref), np.atleast_1d(scale)
    err = np.abs(got - ref)
    bound = rtol * np.maximum(scale, np.abs(ref)) + 1e-300
    assert np.all(err <= bound), f"max err/bound {np.max(err / bound)}\n{got}\n{ref}"


# ---------------------------------------------------------------- loss/grad vs NumPy


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("rows_kind", ["full", "subset", "runs", "empty"])
@pytest.mark.parametrize("d", [D, 64, 70])  # 70 float64 features: one-row-at-a-time path; 64: softmax vector path
def test_loss_grad_matches_numpy(model, dtype, weighted, rows_kind, d):
    kern, ref = MODELS[model]
    X, y, sw, params = make_problem(model, dtype, d=d)
    rows = rows_for(rows_kind, X.shape[0])
    Xr = X[rows].astype(np.float64)  # same float32 values, upcast exactly
    s = sw[rows] if weighted else np.ones(rows.size)
    rloss, rgrad, lscale, gscale = ref(Xr, y[rows], s, params)
    rtol = 1e-12 if dtype == np.float64 else 1e-10

    g0 = np.linspace(-1.0, 1.0, params.size)  # grad must be ADDED to
    grad = g0.copy()
    loss = kern(X, y, sw if weighted else EMPTY, params, rows, grad, True)
    check_close(loss, rloss, lscale, rtol)
    check_close(grad - g0, rgrad, gscale, rtol)
    if rows_kind == "empty":
        assert loss == 0.0 and np.array_equal(grad, g0)

    grad2 = np.zeros_like(params)
    out = kern(X, y, sw if weighted else EMPTY, params, rows, grad2, False)
    assert out == 0.0
    check_close(grad2, rgrad, gscale, rtol)
    np.testing.assert_allclose(grad2, grad - g0, rtol=1e-14, atol=1e-14 * np.max(np.abs(gscale)))


@pytest.mark.parametrize("model", ["linear", "logistic"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_glm_scattered_batches_of_every_length(model, dtype, weighted):
    """Mini-batch rows (scattered, ascending, as the epoch plan gives them) of 0..19 rows: eight
    at a time, then four or one, plus batches mixing short runs and single rows, against NumPy."""
    kern, ref = MODELS[model]
    X, y, sw, params = make_problem(model, dtype, n=400)
    rng = np.random.default_rng(16)
    batches = [np.sort(rng.choice(400, m, replace=False)) for m in range(20)]
    batches += [np.array([1, 2, 3, 50, 51, 90, 200, 201, 202, 203, 204, 300, 399]), np.arange(100, 117)]
    for rows in batches:
        rows = rows.astype(np.int64)
        s = sw[rows] if weighted else np.ones(rows.size)
        rloss, rgrad, lscale, gscale = ref(X[rows].astype(np.float64), y[rows], s, params)
        grad = np.zeros_like(params)
        loss = kern(X, y, sw if weighted else EMPTY, params, rows, grad, True)
        rtol = 1e-12 if dtype == np.float64 else 1e-10
        check_close(loss, rloss, lscale, rtol)
        check_close(grad, rgrad, gscale, rtol)


def test_softmax_ws_matches_allocating_version():
    X, y, sw, params = make_problem("softmax", np.float64)
    rows = rows_for("runs", X.shape[0])
    g1, g2 = np.zeros_like(params), np.zeros_like(params)
    l1 = softmax_loss_grad(X, y, sw, params, rows, g1, True)
    l2 = softmax_loss_grad_ws(X, y, sw, params, rows, g2, True, np.empty(4 * K + 3))
    assert l1 == l2 and np.array_equal(g1, g2)
    # the minimal 2*K workspace takes rows in pairs: same values up to rounding
    g3 = np.zeros_like(params)
    l3 = softmax_loss_grad_ws(X, y, sw, params, rows, g3, True, np.empty(2 * K))
    np.testing.assert_allclose(l3, l1, rtol=1e-13)
    np.testing.assert_allclose(g3, g1, rtol=1e-13, atol=1e-13 * np.abs(g1).max())


@pytest.mark.parametrize("d,k", [(8, 6), (16, 10), (40, 7), (64, 10), (72, 11), (96, 21), (3, 10), (13, 6), (70, 10),
                                 (100, 12)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows_kind", ["full", "scattered", "mixed"])
def test_softmax_vector_path_matches_numpy_and_scalar_path(d, k, dtype, rows_kind):
    """The 16-rows-at-a-time vector path (work >= work_size) against NumPy and the scalar path.

    Class counts (>= VECTOR_MIN_CLASSES) below, at and above the 10-class register tile; feature
    counts that are and are not multiples of 8 (masked last chunk) and of 16; row counts not
    divisible by 16 (the last block's padding lanes, weight 0); blocks of consecutive rows, of
    scattered rows (a mini-batch) and both mixed.
    """
    rng = np.random.default_rng(d * 100 + k)
    n = 203
    X = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, k, n).astype(np.int64)
    sw = rng.uniform(0.1, 3.0, n)
    params = rng.standard_normal(k * (d + 1)) / np.sqrt(d)
    if rows_kind == "full":
        rows = np.arange(n, dtype=np.int64)
    elif rows_kind == "scattered":
        rows = rng.choice(n, 77, replace=True).astype(np.int64)
    else:
        rows = np.concatenate([np.arange(3, 30), rng.choice(n, 13), np.arange(100, 117), [5, 5]]).astype(np.int64)
    work_size = kernels_softmax.work_size(k, d)
    for weighted in (False, True):
        s = sw[rows] if weighted else np.ones(rows.size)
        rloss, rgrad, lscale, gscale = ref_softmax(X[rows].astype(np.float64), y[rows], s, params)
        ref_logits = X[rows].astype(np.float64) @ params[:k * d].reshape(k, d).T + params[k * d:]
        for offset in (0, 1):  # the path aligns its scratch itself: any start works
            work = np.full(work_size + offset, np.nan)[offset:]
            g0 = np.linspace(-1.0, 1.0, params.size)
            grad = g0.copy()
            loss = softmax_loss_grad_ws(X, y, sw if weighted else EMPTY, params, rows, grad, True, work)
            check_close(loss, rloss, lscale, 1e-12)
            check_close(grad - g0, rgrad, gscale, 1e-12)
            grad2 = np.zeros_like(params)
            assert softmax_loss_grad_ws(X, y, sw if weighted else EMPTY, params, rows, grad2, False, work) == 0.0
            np.testing.assert_allclose(grad2, grad - g0, rtol=0, atol=1e-14 * np.max(gscale))
            # the dispatch took the vector path of this CPU; the other CPU's tiles (AVX-512's 10-class
            # tiles, AVX2's 5-class tiles) add in the same order: the same bits either way; with the
            # batch hits counted, the same loss and gradient, and the hits of NumPy's labels
            hits_ref = float(s[np.argmax(ref_logits, axis=1) == y[rows]].sum())
            for path in (kernels_softmax._vector_path_wide, kernels_softmax._vector_path_narrow):
                for hits in (EMPTY, np.zeros(1)):
                    grad_v = g0.copy()
                    loss_v = path(X, y, sw if weighted else EMPTY, params, rows, grad_v, True, work, hits)
                    assert loss_v == loss, path
                    np.testing.assert_array_equal(grad_v, grad, err_msg=str(path))
                assert hits[0] == pytest.approx(hits_ref, rel=1e-12), path
            grad_h = g0.copy()
            hits = np.full(1, -1.0)
            assert softmax_loss_grad_hits(X, y, sw if weighted else EMPTY, params, rows, grad_h, True, work,
                                          hits) == loss
            np.testing.assert_array_equal(grad_h, grad)
            assert hits[0] == pytest.approx(hits_ref, rel=1e-12)
        grad3 = np.zeros_like(params)  # scalar path: a workspace too small for the vector path
        loss3 = softmax_loss_grad_ws(X, y, sw if weighted else EMPTY, params, rows, grad3, True, np.empty(4 * k))
        np.testing.assert_allclose(loss3, loss, rtol=1e-13)
        np.testing.assert_allclose(grad3, grad - g0, rtol=0, atol=1e-13 * np.max(gscale))
        grad4, hits = np.zeros_like(params), np.full(1, -1.0)
        assert softmax_loss_grad_hits(X, y, sw if weighted else EMPTY, params, rows, grad4, True, np.empty(4 * k),
                                      hits) == loss3
        np.testing.assert_array_equal(grad4, grad3)
        assert hits[0] == pytest.approx(hits_ref, rel=1e-12)


def test_softmax_vector_path_extreme_and_nonfinite():
    # 8 features, logits of row i are scale_i * [1, 0, -1]: spread up to 2e4, no overflow
    scales = np.array([1e4, -1e4, 800.0, 5e3, -750.0, 0.0, 1.0, -3e3, 700.0])
    X = np.zeros((scales.size, 8))
    X[:, 0] = scales
    k = 6
    params = np.zeros(k * 9)
    params[[0, 16]] = 1.0, -1.0  # coef[0, 0] = 1, coef[2, 0] = -1
    y = np.array([0, 0, 1, 2, 1, 2, 0, 1, 2], dtype=np.int64)
    rows = np.arange(scales.size, dtype=np.int64)
    g = np.zeros(params.size)
    work = np.empty(kernels_softmax.work_size(k, 8))
    with np.errstate(all="raise"):
        loss = softmax_loss_grad_ws(X, y, EMPTY, params, rows, g, True, work)
    rloss, rgrad, lscale, gscale = ref_softmax(X, y, np.ones(scales.size), params)
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    check_close(loss, rloss, lscale, 1e-13)
    check_close(g, rgrad, gscale, 1e-13)
    # a NaN in one row of X (or an infinite coefficient) must not vanish from the sums
    Xn = X.copy()
    Xn[2, 5] = np.nan
    g = np.zeros(params.size)
    loss = softmax_loss_grad_ws(Xn, y, EMPTY, params, rows, g, True, work)
    assert np.isnan(loss) and not np.all(np.isfinite(g))
    p_inf = params.copy()
    p_inf[1] = np.inf
    g = np.zeros(params.size)
    loss = softmax_loss_grad_ws(np.abs(X) + 1.0, y, EMPTY, p_inf, rows[:8], g, True, work)
    assert not (np.isfinite(loss) and np.all(np.isfinite(g)))
    # the scalar path (a small workspace) too: non-finite sums, no exception
    for Xs, ps in ((Xn, params), (np.abs(X) + 1.0, p_inf)):
        g = np.zeros(params.size)
        with np.errstate(all="ignore"):
            loss = softmax_loss_grad_ws(Xs, y, EMPTY, ps, rows, g, True, np.empty(4 * k))
        assert not (np.isfinite(loss) and np.all(np.isfinite(g)))


def test_unit_weights_equal_empty_weights():
    for model, (kern, _) in MODELS.items():
        X, y, _, params = make_problem(model, np.float64)
        rows = rows_for("full", X.shape[0])
        g1, g2 = np.zeros_like(params), np.zeros_like(params)
        l1 = kern(X, y, EMPTY, params, rows, g1, True)
        l2 = kern(X, y, np.ones(X.shape[0]), params, rows, g2, True)
        assert l1 == l2 and np.array_equal(g1, g2)


# ---------------------------------------------------------------- finite differences


@pytest.mark.parametrize("model", list(MODELS))
def test_gradient_finite_differences(model):
    kern, _ = MODELS[model]
    X, y, sw, params = make_problem(model, np.float64, seed=3, n=40, d=5)
    params *= 0.5
    rows = rows_for("subset", X.shape[0])
    grad = np.zeros_like(params)
    kern(X, y, sw, params, rows, grad, True)
    fd = np.empty_like(params)
    tmp = np.zeros_like(params)
    for k in range(params.size):
        h = 1e-6 * max(1.0, abs(params[k]))
        pp, pm = params.copy(), params.copy()
        pp[k] += h
        pm[k] -= h
        fd[k] = (kern(X, y, sw, pp, rows, tmp, True) - kern(X, y, sw, pm, rows, tmp, True)) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-6 * np.abs(grad).max())


# ---------------------------------------------------------------- extreme margins


def test_logistic_extreme_margins():
    z = np.array([800.0, 800.0, -800.0, -800.0, 1e4, 1e4, -1e4, -1e4, 710.0, -745.5])
    y = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    X = np.column_stack([z, np.zeros_like(z)])
    params = np.array([1.0, 0.0, 0.0])
    rows = np.arange(z.size, dtype=np.int64)
    expected = np.where(y == 1.0, np.maximum(-z, 0.0), np.maximum(z, 0.0))  # exp(-|z|) underflows
    expected_r = np.where(z > 0, 1.0, 0.0) - y
    for i in range(z.size):
        g = np.zeros(3)
        with np.errstate(all="raise"):
            loss = logistic_loss_grad(X, y, EMPTY, params, rows[i:i + 1], g, True)
        assert np.isfinite(loss) and np.all(np.isfinite(g))
        assert loss == expected[i], (i, loss)
        assert g[2] == expected_r[i] and g[0] == expected_r[i] * z[i] and g[1] == 0.0
    g = np.zeros(3)
    total = logistic_loss_grad(X, y, EMPTY, params, rows, g, True)
    assert total == expected.sum() and np.all(np.isfinite(g))
    # moderate margin: loss = log1p(exp(-30)) accurately (relative), not 0 or rounding noise
    Xm = np.array([[30.0, 0.0]])
    lm = logistic_loss_grad(Xm, np.array([1.0]), EMPTY, params, np.zeros(1, np.int64), np.zeros(3), True)
    np.testing.assert_allclose(lm, np.log1p(np.exp(-30.0)), rtol=1e-14)


def test_softmax_extreme_logits():
    # logits of row i are scale_i * [1, 0, -1] (+ intercept 0): spread up to 2e4
    scales = np.array([1e4, -1e4, 800.0, 5e3])
    X = scales[:, None].astype(np.float64)
    params = np.array([1.0, 0.0, -1.0, 0.0, 0.0, 0.0])  # coef (3, 1), intercepts (3,)
    y = np.array([0, 0, 1, 2], dtype=np.int64)
    rows = np.arange(4, dtype=np.int64)
    g = np.zeros(6)
    with np.errstate(all="raise"):
        loss = softmax_loss_grad(X, y, EMPTY, params, rows, g, True)
    # argmax logit is |scale|; loss_i = |scale| - z_i[y_i]
    Z = scales[:, None] * np.array([1.0, 0.0, -1.0])
    expected = np.sum(np.abs(scales) - Z[rows, y])
    assert np.isfinite(loss) and loss == expected
    P = np.eye(3)[np.argmax(Z, axis=1)]
    G = P - np.eye(3)[y]
    np.testing.assert_array_equal(g, np.concatenate([(G.T @ X).ravel(), G.sum(0)]))


@pytest.mark.parametrize("n", [8, 13])  # the 8-row vector block alone, and with single rows after it
def test_logistic_extreme_margins_match_scalar_formula(n):
    """Margins from -1e308 to 1e308, +-750, +-1e-300 and 0 through the vector link (8 rows in the
    lanes): the loss and residuals of the stable formula, finite, computed per row in Python."""
    import math
    z = np.array([1e308, -1e308, 750.0, -750.0, 1e-300, -1e-300, 0.0, 36.7, -36.7, 1.0, -1.0, 20.0, -3.0])[:n]
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])[:n]
    X = np.zeros((n, 2))
    X[:, 0] = z  # margin = x0 * 1 + x1 * 0 + 0
    params = np.array([1.0, 0.0, 0.0])
    rows = np.arange(n, dtype=np.int64)
    g = np.zeros(3)
    with np.errstate(all="raise"):
        loss = logistic_loss_grad(X, y, EMPTY, params, rows, g, True)
    ref_loss, ref_r = 0.0, np.empty(n)
    for i in range(n):
        e = math.exp(-abs(z[i]))
        p = 1.0 / (1.0 + e) if z[i] >= 0 else e / (1.0 + e)
        ref_loss += (max(z[i], 0.0) - y[i] * z[i]) + math.log1p(e)
        ref_r[i] = p - y[i]
    assert np.isfinite(loss) and np.all(np.isfinite(g))
    assert loss == pytest.approx(ref_loss, rel=1e-15)
    np.testing.assert_allclose(g[2], ref_r.sum(), rtol=1e-15, atol=1e-15)
    np.testing.assert_allclose(g[0], (ref_r * z).sum(), rtol=1e-15)


def test_linear_large_values_finite():
    X = np.array([[1e150, 1.0], [-1e150, 2.0]])
    params = np.array([1.0, 0.0, 0.0])
    g = np.zeros(3)
    loss = linear_loss_grad(X, np.zeros(2), EMPTY, params, np.arange(2, dtype=np.int64), g, True)
    assert loss == pytest.approx(1e300, rel=1e-15) and np.all(np.isfinite(g))


# ---------------------------------------------------------------- predict / decision


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_predict_decision(dtype):
    X, _, _, p = make_problem("linear", dtype)
    for kind in ("full", "runs", "subset", "empty"):
        rows = rows_for(kind, X.shape[0])
        Xr = X[rows].astype(np.float64)
        for fn in (linear_predict, logistic_decision):
            out = np.full(rows.size, np.nan)
            fn(X, p, rows, out)
            np.testing.assert_allclose(out, Xr @ p[:-1] + p[-1], rtol=1e-12, atol=1e-12)
        ps = make_problem("softmax", dtype)[3]
        out = np.full((rows.size, K), np.nan)
        softmax_decision(X, ps, rows, out)
        ref = Xr @ ps[: K * D].reshape(K, D).T + ps[K * D:]
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- scalar helpers


def test_exp_nonpos_keeps_nan():
    from mpidml.kernels.util import exp_nonpos
    assert np.isnan(exp_nonpos(np.nan)) and exp_nonpos(-np.inf) == 0.0 and exp_nonpos(-800.0) == 0.0


def test_exp_nonpos_accuracy():
    import math

    from mpidml.kernels.util import exp_nonpos

    rng = np.random.default_rng(6)
    xs = np.concatenate([-rng.uniform(0.0, 708.0, 20000), -rng.uniform(0.0, 1.0, 20000),
                         -rng.uniform(0.0, 1e-8, 100), [0.0, -0.0, -0.34657359, -708.0]])
    for x in xs:
        ref = math.exp(x)
        assert abs(exp_nonpos(x) - ref) <= 4.5e-16 * ref, (x, exp_nonpos(x), ref)
    for x in (-708.1, -745.2, -1e4, -np.inf):
        assert exp_nonpos(x) == 0.0


def test_log1p_unit_accuracy():
    import math

    from mpidml.kernels.util import log1p_unit

    rng = np.random.default_rng(5)
    es = np.concatenate([rng.random(20000), np.exp(-rng.uniform(0.0, 745.0, 20000)),
                         [0.0, 5e-324, 1e-300, 1e-17, 0.41421356237309503,
                          np.nextafter(0.41421356237309503, 1.0), np.nextafter(1.0, 0.0), 1.0]])
    for e in es:
        ref = math.log1p(e)
        got = log1p_unit(e)
        assert abs(got - ref) <= 2.3e-16 * ref, (e, got, ref)


def test_mean_gradient_norm2_is_bitwise_the_numpy_sequence():
    from mpidml.kernels import mean_gradient_norm2
    from mpidml.parallel.allreduce import mean_gradient

    rng = np.random.default_rng(11)
    P, n_pen = 67, 60
    grad_sum, params = rng.standard_normal(P) * 1e3, rng.standard_normal(P)
    ref, tmp = np.empty(P), np.empty(P)
    mean_gradient(grad_sum, 4096.0, params, 1e-4, slice(0, n_pen), tmp, ref)
    out = np.empty(P)
    g2 = mean_gradient_norm2(grad_sum, 1.0 / 4096.0, params, 1e-4, n_pen, out)
    assert np.array_equal(out, ref)
    assert g2 == pytest.approx(float(ref @ ref), rel=1e-13)
    grad_sum[5] = np.inf
    assert not np.isfinite(mean_gradient_norm2(grad_sum, 1.0, params, 1e-4, n_pen, out))


def _sgd_numpy(params, grad, v, lr, momentum, nesterov):
    """optim.SGD's former NumPy ufunc sequence (each operation rounded on its own)."""
    if momentum == 0.0:
        buf = np.multiply(grad, lr)
    else:
        np.multiply(v, momentum, out=v)
        np.add(v, grad, out=v)
        buf = np.multiply(np.add(grad, np.multiply(v, momentum)), lr) if nesterov else np.multiply(v, lr)
    np.subtract(params, buf, out=params)


def _adam_numpy(params, grad, m, v, lr, b1, b2, t, eps):
    """optim.Adam's former NumPy ufunc sequence."""
    np.multiply(m, b1, out=m)
    np.add(m, np.multiply(grad, 1.0 - b1), out=m)
    np.multiply(v, b2, out=v)
    np.add(v, np.multiply(np.multiply(grad, grad), 1.0 - b2), out=v)
    den = np.add(np.sqrt(np.divide(v, 1.0 - b2 ** t)), eps)
    np.subtract(params, np.multiply(np.divide(np.divide(m, 1.0 - b1 ** t), den), lr), out=params)


@pytest.mark.parametrize("momentum,nesterov", [(0.0, False), (0.9, False), (0.9, True), (0.37, True)])
def test_sgd_update_is_bitwise_the_numpy_sequence(momentum, nesterov):
    from mpidml.kernels import sgd_update

    rng = np.random.default_rng(12)
    P = 1001
    params = rng.standard_normal(P)
    ref = params.copy()
    v, v_ref = np.zeros(P if momentum else 0), np.zeros(P)
    for step in range(25):  # varying scales, so that rounding differences would show
        grad = rng.standard_normal(P) * 10.0 ** rng.integers(-8, 8, P)
        lr = 0.3 / (1 + step)
        sgd_update(params, grad, v, lr, momentum, nesterov)
        _sgd_numpy(ref, grad, v_ref, lr, momentum, nesterov)
        assert np.array_equal(params, ref), step
    if momentum:
        assert np.array_equal(v, v_ref)


@pytest.mark.parametrize("b1,b2,eps", [(0.9, 0.999, 1e-8), (0.0, 0.5, 1e-3), (0.5, 0.0, 1e-8)])
def test_adam_update_is_bitwise_the_numpy_sequence(b1, b2, eps):
    from mpidml.kernels import adam_update

    rng = np.random.default_rng(13)
    P = 1001
    params = rng.standard_normal(P)
    ref = params.copy()
    m, v, m_ref, v_ref = np.zeros(P), np.zeros(P), np.zeros(P), np.zeros(P)
    for t in range(1, 26):
        grad = rng.standard_normal(P) * 10.0 ** rng.integers(-8, 8, P)
        lr = 0.01 * 0.9 ** t
        adam_update(params, grad, m, v, lr, b1, b2, 1.0 - b1 ** t, 1.0 - b2 ** t, eps)
        _adam_numpy(ref, grad, m_ref, v_ref, lr, b1, b2, t, eps)
        assert np.array_equal(params, ref), t
    assert np.array_equal(m, m_ref) and np.array_equal(v, v_ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_decision_any_rows(dtype):
    """Four rows at a time: runs and scattered rows of every length mod 4, against NumPy."""
    rng = np.random.default_rng(14)
    n, d, k = 203, 13, 7
    X = rng.standard_normal((n, d)).astype(dtype)
    params = rng.standard_normal(k * (d + 1))
    W, b = params[:k * d].reshape(k, d), params[k * d:]
    cases = [np.arange(n), np.arange(5, 12), np.sort(rng.choice(n, 37, replace=False)),
             np.array([3, 4, 5, 90, 91, 150, 151, 152, 153, 154, 200]), np.array([7]), np.arange(0)]
    for rows in cases:
        rows = rows.astype(np.int64)
        out = np.full((rows.size, k), np.nan)
        softmax_decision(X, params, rows, out)
        np.testing.assert_allclose(out, X[rows].astype(np.float64) @ W.T + b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d,k", [(5, 3), (13, 7), (64, 10), (3, 1)])
def test_linear_scores_of_a_row_do_not_depend_on_its_place(dtype, d, k):
    """A row's scores are the same bits wherever it sits in ``rows``: in a group of four, among a
    run's last 1-3 rows, or scattered. So `mpidml predict` gives the same bits on any number of
    ranks (a shard boundary moves rows between those places)."""
    from mpidml.kernels.glm import linear_scores

    rng = np.random.default_rng(d * 10 + k)
    n = 103
    X = rng.standard_normal((n, d)).astype(dtype)
    params = rng.standard_normal(k * (d + 1))
    whole = np.empty((n, k))
    linear_scores(X, params, np.arange(n, dtype=np.int64), whole)
    for cut in range(1, 9):  # every tail length on both sides of the cut
        for part in (np.arange(cut, dtype=np.int64), np.arange(cut, n, dtype=np.int64)):
            out = np.empty((part.size, k))
            linear_scores(X, params, part, out)
            np.testing.assert_array_equal(out, whole[part], err_msg=f"cut {cut}")
    scattered = np.array([5, 90, 17, 3, 3, 60, 102, 0, 41], dtype=np.int64)
    out = np.empty((scattered.size, k))
    linear_scores(X, params, scattered, out)
    np.testing.assert_array_equal(out, whole[scattered])


def test_argmax_rows_is_np_argmax():
    """Ties go to the first index and a NaN wins, as in np.argmax."""
    from mpidml.kernels import argmax_rows

    rng = np.random.default_rng(15)
    z = rng.integers(0, 4, (500, 7)).astype(np.float64)  # many ties
    z[rng.random(z.shape) < 0.02] = np.nan
    z[3] = [np.nan, 1, np.nan, 5, 5, 0, 0]
    z[4] = [-np.inf] * 7
    z[5, 6] = np.inf
    out = np.full(500, -1, dtype=np.int64)
    argmax_rows(z, out)
    np.testing.assert_array_equal(out, np.argmax(z, axis=1))
    assert out[3] == 0 and out[4] == 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [13, 16, 3])
def test_glm_margin_any_rows(dtype, d):
    """Margins eight rows at a time: runs (8-row blocks and every remainder) and scattered rows
    of every length 0..19, D with and without a partial last vector, against NumPy."""
    rng = np.random.default_rng(17)
    n = 203
    X = rng.standard_normal((n, d)).astype(dtype)
    params = rng.standard_normal(d + 1)
    cases = [np.arange(n), np.arange(5, 12), np.arange(5, 30),
             np.array([3, 4, 5, 90, 91, 150, 151, 152, 153, 154, 155, 156, 157, 158, 159, 200]),
             np.array([7]), np.arange(0)] + [np.sort(rng.choice(n, m, replace=False)) for m in range(1, 20)]
    for rows in cases:
        rows = rows.astype(np.int64)
        out = np.full(rows.size, np.nan)
        linear_predict(X, params, rows, out)
        np.testing.assert_allclose(out, X[rows].astype(np.float64) @ params[:d] + params[d], rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="C-contiguous"):
        linear_predict(X, params, np.arange(4, dtype=np.int64), np.empty(8)[::2])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("d", [13, 16, 64])
def test_glm_margin_of_a_row_does_not_depend_on_its_path(dtype, d):
    """An 8-row block's margins are the same bits whether its rows are consecutive (row after row,
    prefetched) or scattered (four rows' loads interleaved): a mini-batch scores a row as the
    full pass does."""
    rng = np.random.default_rng(d)
    n = 400  # the first 232 rows lie in blocks that prefetch (PREFETCH_BYTES inside X)
    X = rng.standard_normal((n, d)).astype(dtype)
    params = rng.standard_normal(d + 1)
    whole = np.empty(n)
    linear_predict(X, params, np.arange(n, dtype=np.int64), whole)
    scattered = np.arange(0, 224, 2, dtype=np.int64)  # no two consecutive: every block scattered
    out = np.empty(scattered.size)
    linear_predict(X, params, scattered, out)
    np.testing.assert_array_equal(out, whole[scattered])
    np.testing.assert_allclose(out, X[scattered].astype(np.float64) @ params[:d] + params[d], rtol=1e-12)


def test_logistic_proba_matches_the_stable_numpy_formula():
    from mpidml.kernels import logistic_proba

    z = np.concatenate([np.random.default_rng(18).standard_normal(1000) * 30,
                        [0.0, -0.0, 1e-300, -1e-300, 750.0, -750.0, 1e308, -1e308, np.inf, -np.inf]])
    out = np.full((z.size, 2), np.nan)
    logistic_proba(z, out)
    e = np.exp(-np.abs(z))
    ref1 = np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    ref0 = np.where(z >= 0, e / (1.0 + e), 1.0 / (1.0 + e))
    np.testing.assert_allclose(out[:, 1], ref1, rtol=4e-16, atol=0)
    np.testing.assert_allclose(out[:, 0], ref0, rtol=4e-16, atol=0)
    assert np.all(out[:-10].sum(axis=1) == pytest.approx(1.0, abs=1e-15))
    nan = np.empty((1, 2))
    logistic_proba(np.array([np.nan]), nan)
    assert np.isnan(nan).all()


def test_kernels_with_vector_paths_refuse_or_avoid_a_non_contiguous_x():
    """The vector code indexes X's buffer flat. A Fortran-ordered X: the GLM kernels raise
    (instead of a silently wrong sum); softmax takes its scalar path (same sums as C order)."""
    from mpidml.kernels import softmax_loss_grad

    rng = np.random.default_rng(23)
    Xc = rng.standard_normal((40, 16))
    Xf = np.asfortranarray(Xc)
    rows = np.arange(40, dtype=np.int64)
    for fn in (linear_loss_grad, logistic_loss_grad):
        with pytest.raises(ValueError, match="C-contiguous"):
            fn(Xf, np.zeros(40), np.empty(0), np.zeros(17), rows, np.zeros(17), True)
    with pytest.raises(ValueError, match="C-contiguous"):
        linear_predict(Xf, np.zeros(17), rows, np.empty(40))
    y, k = rng.integers(0, 10, 40), 10
    p = rng.standard_normal(k * 17) * 0.1
    g_c, g_f = np.zeros(p.size), np.zeros(p.size)
    loss_c = softmax_loss_grad(np.ascontiguousarray(Xc), y, np.empty(0), p, rows, g_c, True)
    loss_f = softmax_loss_grad(Xf, y, np.empty(0), p, rows, g_f, True)
    ref_loss, ref_grad, _, _ = ref_softmax(Xc, y, np.ones(40), p)
    for loss, g in ((loss_c, g_c), (loss_f, g_f)):
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-12)
        np.testing.assert_allclose(g, ref_grad, rtol=1e-10, atol=1e-12)


def test_cpu_dependent_choices_follow_the_cpu_name(monkeypatch):
    """The choices made by CPU name (NUMBA_CPU_NAME overrides the host's name), all False off x86:
    util.x86_other_than_zen, which picks the plan's lane width (shuffle.ROUNDS_IN_U64_LANES), False
    for AMD Zen names and True for Intel ones; util.stream_prefetch_into_l2, which picks the streamed
    GLM passes' prefetch level (util.STREAM_PREFETCH_INTO_L2), False only for the Zen generations
    measured faster into L1 (Zen 4 is not one); and the constants agree with them for this host."""
    import platform

    from numba.core import config

    from mpidml.kernels import shuffle, util

    x86 = platform.machine().lower() in ("x86_64", "amd64")
    for name, other, into_l2 in (("znver3", False, False), ("znver5", False, False), ("znver4", False, x86),
                                 ("sapphirerapids", x86, x86), ("skylake-avx512", x86, x86)):
        monkeypatch.setattr(config, "CPU_NAME", name)
        assert util.cpu_name() == name
        assert util.x86_other_than_zen() is other, name
        assert util.stream_prefetch_into_l2() is into_l2, name
    monkeypatch.setattr(config, "CPU_NAME", None)
    assert util.x86_other_than_zen() == shuffle.ROUNDS_IN_U64_LANES
    assert util.stream_prefetch_into_l2() == util.STREAM_PREFETCH_INTO_L2
    assert util.stream_prefetch is (util.prefetch_l2 if util.STREAM_PREFETCH_INTO_L2 else util._prefetch)
