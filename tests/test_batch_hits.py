"""Model.batch_hits: the batch accuracy the mini-batch loop logs, against NumPy labels."""

import numpy as np
import pytest
import scipy.sparse as sp

from mpidml.models import make_model

from helpers import make_problem, shard_of
from sparse_helpers import csr_shard_of, sparse_problem


def _numpy_labels(kind, X, params, k):
    """Predicted labels from the parameters alone: sign of the margin / argmax of the logits."""
    d = X.shape[1]
    if k == 2:
        return (X @ params[:d] + params[d] > 0).astype(np.int64)
    W, b = params[:k * d].reshape(k, d), params[k * d:]
    return np.argmax(X @ W.T + b, axis=1)


def _classifier_batch(kind, weighted, sparse):
    """(X, y, sw, shard, model, k): 400 rows of a logistic, 4-class softmax or ("softmax7") 7-class
    softmax problem (the dense kernel's scalar and vector paths), dense or CSR, unit or random
    weights, rank 1 of 2's shard of it, and the model."""
    k = {"logistic": 2, "softmax": 4, "softmax7": 7}[kind]
    kind = "softmax" if k > 2 else kind
    if sparse:
        A, y = sparse_problem(kind, n=400, d=60, k=k, density=0.1, seed=3)
        X = A.toarray()
    else:
        X, y = make_problem(kind, n=400, d=9, k=k, seed=3)
    sw = np.random.default_rng(4).uniform(0.1, 3.0, len(y)) if weighted else None
    shard = (csr_shard_of if sparse else shard_of)(A if sparse else X, y, 1, 2, sw=sw)
    model = make_model(kind, X.shape[1], k)
    return X, y, sw, shard, model, k


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_batch_hits_match_numpy(kind, weighted, sparse):
    X, y, sw, shard, model, k = _classifier_batch(kind, weighted, sparse)
    params = np.random.default_rng(5).standard_normal(model.n_params)
    rows = np.sort(np.random.default_rng(6).choice(shard.n_local, 77, replace=False)).astype(np.int64)
    Xl, yl = X[shard.lo:shard.hi][rows], y[shard.lo:shard.hi][rows]
    w = np.ones(rows.size) if sw is None else sw[shard.lo:shard.hi][rows]
    hit = _numpy_labels(kind, Xl, params, k) == yl
    correct, weight = model.batch_hits(shard, params, rows)
    assert 0 < hit.sum() < rows.size  # both outcomes occur: the count is a real test
    assert correct == pytest.approx(float(w[hit].sum()), rel=1e-12)
    assert weight == pytest.approx(float(w.sum()), rel=1e-12)
    # ... and they are the trace and sum of the confusion matrix in stats()
    cm = model.stats(shard, params, rows)[:k * k].reshape(k, k)
    assert (correct, weight) == pytest.approx((np.trace(cm), cm.sum()), rel=1e-12)


def test_mlp_batch_hits_are_the_confusion_trace():
    X, y = make_problem("softmax", n=300, d=5, k=3, seed=7)
    shard = shard_of(X, y, 0, 1)
    model = make_model("mlp", 5, 3, hidden="8")
    params = model.init_params(0)
    rows = np.arange(0, 300, 3, dtype=np.int64)
    cm = model.stats(shard, params, rows)[:9].reshape(3, 3)
    assert model.batch_hits(shard, params, rows) == (np.trace(cm), cm.sum())


@pytest.mark.parametrize("weighted", [False, True])
def test_mlp_loss_grad_hits_are_its_batch_hits(weighted):
    """The MLP's logged step: loss and gradient bitwise loss_grad's, the hits from the same forward
    pass equal to batch_hits' (argmax of mlp_predict_proba's probabilities), a NaN row included
    (all its probabilities NaN: class 0)."""
    X, y = make_problem("softmax", n=300, d=5, k=3, seed=7)
    X[[10, 40]] = np.nan
    y[10], y[40] = 0, 2
    sw = np.random.default_rng(8).uniform(0.1, 3.0, len(y)) if weighted else None
    shard = shard_of(X, y, 0, 1, sw=sw)
    model = make_model("mlp", 5, 3, hidden="8")
    assert model.fused_hits(shard)
    params = model.init_params(0)
    rows = np.arange(0, 300, 2, dtype=np.int64)
    g_ref, g = np.zeros(model.n_params), np.zeros(model.n_params)
    hits = np.full(1, -1.0)
    with np.errstate(all="ignore"):
        loss_ref = model.loss_grad(shard, params, rows, g_ref, True)
        loss = model.loss_grad_hits(shard, params, rows, g, hits)
        correct, weight = model.batch_hits(shard, params, rows)
    np.testing.assert_array_equal(np.array(loss), np.array(loss_ref))  # NaN == NaN here
    np.testing.assert_array_equal(g, g_ref)
    assert 0 < correct < weight
    assert hits[0] == pytest.approx(correct, rel=1e-12)


@pytest.mark.parametrize("kind", ["logistic", "softmax", "softmax7"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_loss_grad_hits_is_the_loss_kernel_and_the_numpy_hits(kind, weighted, sparse):
    """What a logged mini-batch step calls: loss and gradient bitwise those of loss_grad, and the
    weight of the correct predictions against NumPy's labels, counted in the loss kernel's own
    pass (fused_hits), dense or CSR: rows in runs of 13 and 5 and scattered ones, so that the
    8-row, 4-row and 1-row paths of glm_loss_grad and the softmax kernel's scalar (4 classes)
    and vector paths (7 classes: runs and scattered 16-row blocks) all count."""
    X, y, sw, shard, model, k = _classifier_batch(kind, weighted, sparse)
    assert model.fused_hits(shard)
    params = np.random.default_rng(5).standard_normal(model.n_params)
    scattered = np.random.default_rng(6).choice(np.arange(40, shard.n_local), 60, replace=False)
    rows = np.unique(np.concatenate([np.arange(0, 13), np.arange(20, 25), [30], scattered])).astype(np.int64)
    Xl, yl = X[shard.lo:shard.hi][rows], y[shard.lo:shard.hi][rows]
    w = np.ones(rows.size) if sw is None else sw[shard.lo:shard.hi][rows]
    hit = _numpy_labels(kind, Xl, params, k) == yl
    assert 0 < hit.sum() < rows.size
    g_ref, g = np.zeros(model.n_params), np.zeros(model.n_params)
    hits = np.full(1, -1.0)
    loss_ref = model.loss_grad(shard, params, rows, g_ref, True)
    loss = model.loss_grad_hits(shard, params, rows, g, hits)
    assert loss == loss_ref
    np.testing.assert_array_equal(g, g_ref)
    assert hits[0] == pytest.approx(float(w[hit].sum()), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fused_hits_count_like_binary_hits_at_zero_and_nan_margins(dtype):
    """A margin of exactly 0 predicts 0 (z > 0 is the positive class), a NaN margin predicts 0,
    as kernels.binary_hits; rows in all three paths of the dense kernel (8, 4, 1 rows) and in
    the CSR kernel."""
    from mpidml import kernels

    n, d = 29, 5
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(dtype)
    X[[3, 9, 17, 26]] = 0.0  # z = b = 0 exactly
    X[[5, 20, 28], 1] = np.nan  # z = NaN
    y = (rng.random(n) < 0.5).astype(np.float64)
    y[[3, 9]] = 0.0
    y[[17, 26]] = 1.0
    y[[5, 20]] = 0.0
    y[28] = 1.0
    params = np.append(rng.standard_normal(d), 0.0)
    sw = rng.uniform(0.5, 2.0, n)
    for rows in (np.arange(n), np.array([0, 3, 5, 9, 11, 17, 20, 22, 26, 28])):
        z = np.empty(rows.size)
        kernels.linear_predict(X, params, rows, z)
        for weights in (np.empty(0), sw):
            hits = np.zeros(1)
            kernels.logistic_loss_grad_hits(X, y, weights, params, rows, np.zeros(d + 1), True, hits)
            assert hits[0] == pytest.approx(kernels.binary_hits(z, y, weights, rows)[0], rel=1e-13)
            # the same rows in CSR form (the zero rows store nothing): csr_glm_loss_grad's count
            A = sp.csr_matrix(X)
            indptr = A.indptr.astype(np.int64)
            z_csr = np.empty(rows.size)
            kernels.csr_glm_margin(indptr, A.indices, A.data, params, rows, z_csr)
            hits_csr = np.zeros(1)
            kernels.csr_logistic_loss_grad_hits(indptr, A.indices, A.data, y, weights, params, rows, np.zeros(d + 1),
                                                True, hits_csr)
            assert hits_csr[0] == pytest.approx(kernels.binary_hits(z_csr, y, weights, rows)[0], rel=1e-13)
    assert kernels.binary_hits(z, y, np.empty(0), rows)[0] >= 3  # the zero-margin rows with y = 0 are hits


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmax_fused_hits_take_the_first_largest_logit_and_nan_as_largest(dtype):
    """Tied largest logits predict the first of their classes, a NaN logit counts as the largest
    (the first NaN), as kernels.argmax_hits on softmax_decision's logits; in the vector path
    (7 classes; a run of rows in 16-row blocks with a padded last block, and scattered rows)
    and in the scalar path (a workspace too small for the vector path)."""
    from mpidml import kernels

    n, d, k = 40, 5, 7
    rng = np.random.default_rng(1)
    X = rng.standard_normal((n, d)).astype(dtype)
    coef = rng.standard_normal((k, d)) * 0.1
    b = rng.standard_normal(k) * 0.1
    coef[3], b[1], b[3] = coef[1], 5.0, 5.0  # classes 1 and 3: the same largest logit on every row
    coef[5, 2] = np.inf  # class 5: +-inf, or NaN (inf * 0) where x_2 = 0
    X[[11, 25, 38], 2] = 0.0
    X[[7, 20, 33], 0] = np.nan  # every logit NaN: class 0
    params = np.concatenate([coef.ravel(), b])
    y = rng.integers(0, k, n).astype(np.int64)
    y[[2, 4, 6, 8]] = 1  # hits where class 1 wins the tie
    y[[10, 12, 14]] = 3  # never hits: 3 ties with the first class 1
    y[[11, 25, 7, 20]] = [5, 5, 0, 0]
    y[[38, 33]] = [1, 2]
    sw = rng.uniform(0.5, 2.0, n)
    small = np.empty(4 * k)
    work = np.empty(kernels.softmax.work_size(k, d))
    for rows in (np.arange(n), np.array([0, 7, 11, 3, 20, 25, 33, 12, 5, 30, 39, 1, 2, 4, 14, 10, 6, 8, 38])):
        z = np.empty((rows.size, k))
        kernels.softmax_decision(X, params, rows, z)
        for weights in (np.empty(0), sw):
            ref = kernels.argmax_hits(z, y, weights, rows)[0]
            assert ref > 0
            for scratch in (work, small):
                hits = np.full(1, -1.0)
                with np.errstate(all="ignore"):
                    kernels.softmax_loss_grad_hits(X, y, weights, params, rows, np.zeros(params.size), True, scratch,
                                                   hits)
                assert hits[0] == pytest.approx(ref, rel=1e-13), (rows.size, weights.size, scratch.size)
