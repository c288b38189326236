"""--class-weight reaches scikit-learn's class_weight optimum; option parsing and validation."""

import numpy as np
import pytest
from mpi4py import MPI
from sklearn.linear_model import LogisticRegression
from sklearn.utils.class_weight import compute_class_weight

from mpidml.comm import Context
from mpidml.config import TrainConfig
from mpidml.errors import ConfigError
from mpidml.imbalance import class_weight_vector, parse_class_weight

from helpers import objective_numpy
from imbalance_helpers import make_imbalanced, train_rows

L2 = 1e-3


def test_balanced_weights_are_sklearns():
    y = np.array([0] * 7 + [1] * 2 + [3] * 3)
    counts = np.bincount(y, minlength=4).astype(float)
    w = class_weight_vector(counts, "balanced", 4)
    np.testing.assert_allclose(w[[0, 1, 3]], compute_class_weight("balanced", classes=np.array([0, 1, 3]), y=y))
    assert w[2] == 0.0  # absent class


def test_parse_and_validate():
    assert parse_class_weight("") is None and parse_class_weight("balanced") == "balanced"
    assert parse_class_weight("0:1, 1:5") == {0: 1.0, 1: 5.0}
    for bad in ("0:1,0:2", "x", "1:-1", "0:1:2", "-1:2"):
        with pytest.raises(ConfigError, match="class-weight"):
            parse_class_weight(bad)
    with pytest.raises(ConfigError, match="classifiers"):
        TrainConfig(data="d", out="o", model="linear", class_weight="balanced").validate()
    with pytest.raises(ConfigError, match="shard"):
        TrainConfig(data="d", out="o", shard="random").validate()
    with pytest.raises(ConfigError, match="allreduce"):
        TrainConfig(data="d", out="o", shard="shuffled", strategy="ps", optimizer="sgd").validate()


@pytest.mark.parametrize("spec,sk", [("balanced", "balanced"), ("0:1,1:5", {0: 1.0, 1: 5.0})])
def test_class_weighted_lbfgs_reaches_sklearn_optimum(spec, sk):
    X, y = make_imbalanced(n=1500, d=6, seed=1)
    params, _, sh, cw = train_rows(Context(MPI.COMM_SELF), X, y, class_weight=spec, model="logistic",
                                   optimizer="lbfgs", tol=1e-10, l2=L2)
    sw = cw[y.astype(int)]
    clf = LogisticRegression(C=1.0 / (L2 * sw.sum()), class_weight=sk, tol=1e-14, max_iter=100_000).fit(X, y)
    f = objective_numpy("logistic", X, y, params[:-1], params[-1:], L2, sw)
    f_ref = objective_numpy("logistic", X, y, clf.coef_, clf.intercept_, L2, sw)
    assert (f - f_ref) / abs(f_ref) <= 1e-8
    # Balanced weights make the weight sum N (all classes present), as in scikit-learn.
    if spec == "balanced":
        assert sw.sum() == pytest.approx(len(y), rel=1e-12)


@pytest.mark.parametrize("model,k,spec", [("logistic", 2, {0: 1.0, 1: 5.0}),
                                          ("softmax", 3, {0: 1.0, 1: 3.0, 2: 0.5})])
def test_explicit_class_weights_optimum_is_sklearns_with_documented_C(model, k, spec):
    """The documented objective divides by W = sum of the (class x sample) weights, so the optimum
    is LogisticRegression(class_weight=..., C=1/(l2*W)), not C=1/(l2*N): W != N for explicit weights."""
    X, y = make_imbalanced(n=400, d=4, seed=3, k=k)
    text = ",".join(f"{c}:{w:g}" for c, w in spec.items())
    params, _, _, cw = train_rows(Context(MPI.COMM_SELF), X, y, class_weight=text, model=model,
                                  optimizer="lbfgs", tol=1e-12, max_iter=2000, l2=L2)
    W = float(np.sum([spec[int(c)] for c in y]))  # independent of mpidml's class_weight_vector
    np.testing.assert_allclose(cw, [spec[c] for c in range(k)])
    assert abs(W - len(y)) > 0.1 * len(y)  # the two candidate C's really differ here
    D, K = X.shape[1], (1 if k == 2 else k)
    coef, intercept = params[:K * D].reshape(K, D), params[K * D:]
    ref = LogisticRegression(C=1.0 / (L2 * W), class_weight=spec, tol=1e-14, max_iter=100_000).fit(X, y)
    np.testing.assert_allclose(coef, ref.coef_, rtol=0, atol=1e-6)
    np.testing.assert_allclose(intercept, ref.intercept_, rtol=0, atol=1e-6)
    # ...and it is not the optimum of the C = 1/(l2*N) objective (what unit weights would give).
    off = LogisticRegression(C=1.0 / (L2 * len(y)), class_weight=spec, tol=1e-14, max_iter=100_000).fit(X, y)
    assert np.max(np.abs(coef - off.coef_)) > 100 * 1e-6
