"""Model.batch_hits: the batch accuracy the mini-batch loop logs, against NumPy labels."""

import numpy as np
import pytest

from mpidml.models import make_model

from helpers import make_problem, shard_of
from sparse_helpers import csr_shard_of, sparse_problem


def _numpy_labels(kind, X, params, k):
    """Predicted labels from the parameters alone: sign of the margin / argmax of the logits."""
    d = X.shape[1]
    if kind == "logistic":
        return (X @ params[:d] + params[d] > 0).astype(np.int64)
    W, b = params[:k * d].reshape(k, d), params[k * d:]
    return np.argmax(X @ W.T + b, axis=1)


@pytest.mark.parametrize("kind", ["logistic", "softmax"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_batch_hits_match_numpy(kind, weighted, sparse):
    k = 4 if kind == "softmax" else 2
    if sparse:
        A, y = sparse_problem(kind, n=400, d=60, k=k, density=0.1, seed=3)
        X = A.toarray()
    else:
        X, y = make_problem(kind, n=400, d=9, k=k, seed=3)
    sw = np.random.default_rng(4).uniform(0.1, 3.0, len(y)) if weighted else None
    shard = (csr_shard_of if sparse else shard_of)(A if sparse else X, y, 1, 2, sw=sw)
    model = make_model(kind, X.shape[1], k)
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
