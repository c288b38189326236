"""Distributed classification metrics (confusion matrix + score histograms) vs scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as skm

from mpidml.models.classmetrics import NBINS, auc_from_histograms, class_stats, classification_metrics


def split_sum(y, pred, score, sw, k, parts):
    """Statistics computed on `parts` pieces and added, as ranks do with Allreduce."""
    bounds = np.linspace(0, len(y), parts + 1).astype(int)
    total = 0
    for a, b in zip(bounds[:-1], bounds[1:]):
        total = total + class_stats(y[a:b], pred[a:b], None if score is None else score[a:b],
                                    np.empty(0) if sw is None else sw[a:b], k)
    return total


@pytest.mark.parametrize("weighted", [False, True])
def test_multiclass_metrics_match_sklearn(weighted, rng):
    k, n = 4, 2000
    y = rng.integers(0, k, n)
    pred = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))
    sw = rng.uniform(0.1, 3.0, n) if weighted else None
    m = classification_metrics(split_sum(y, pred, None, sw, k, 3), k)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, sample_weight=sw, zero_division=np.nan)
    np.testing.assert_allclose(m["precision"], p, rtol=1e-12)
    np.testing.assert_allclose(m["recall"], r, rtol=1e-12)
    np.testing.assert_allclose(m["f1"], f, rtol=1e-12)
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred, sample_weight=sw), rel=1e-12)
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred, sample_weight=sw), rel=1e-12)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", sample_weight=sw), rel=1e-12)
    assert "roc_auc" not in m


@pytest.mark.parametrize("weighted", [False, True])
def test_macro_f1_counts_classes_predicted_but_absent_like_sklearn(weighted, rng):
    # Class 3 never occurs in y but is predicted, class 4 neither: scikit-learn averages over
    # the labels in y or in the predictions (class 3's F1 is 0 there), not over y's alone.
    k, n = 5, 900
    y = rng.integers(0, 3, n)
    pred = np.where(rng.random(n) < 0.7, y, rng.integers(0, 4, n))
    sw = rng.uniform(0.1, 3.0, n) if weighted else None
    m = classification_metrics(split_sum(y, pred, None, sw, k, 3), k)
    assert m["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", sample_weight=sw), rel=1e-12)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("spread", [1.0, 4.0])
def test_binary_auc_from_histograms_matches_sklearn(weighted, spread, rng):
    n = 5000
    y = (rng.random(n) < 0.2).astype(np.int64)  # imbalanced
    z = spread * (rng.standard_normal(n) + 1.2 * y)
    score = 1 / (1 + np.exp(-z))
    pred = (score > 0.5).astype(np.int64)
    sw = rng.uniform(0.5, 2.0, n) if weighted else None
    m = classification_metrics(split_sum(y, pred, score, sw, 2, 3), 2)
    auc = skm.roc_auc_score(y, score, sample_weight=sw)
    assert abs(m["roc_auc"] - auc) <= max(m["auc_tie_bound"], 1e-15) + 1e-12
    assert abs(m["roc_auc"] - auc) <= 1e-3
    assert m["auc_bins"] == NBINS
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred, sample_weight=sw), rel=1e-12)


def test_auc_edge_cases():
    neg, pos = np.zeros(8), np.zeros(8)
    neg[2], pos[5] = 3, 4
    assert auc_from_histograms(neg, pos) == (1.0, 0.0)
    assert auc_from_histograms(pos, neg) == (0.0, 0.0)
    assert auc_from_histograms(neg, neg) == (0.5, 0.5)  # all tied: the bound says so
    assert np.isnan(auc_from_histograms(neg, np.zeros(8))[0])
