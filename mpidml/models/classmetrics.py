"""Classification metrics from sufficient statistics that add across ranks.

Each rank computes, for its rows, one float64 vector (the model's ``stats``):

* the weighted confusion matrix (K, K), row = true class, column = predicted class;
* for binary problems (K = 2) also two score histograms of ``NBINS`` bins each: the weighted
  counts of negatives and of positives whose score s = P(y = 1 | x) falls in bin
  ``min(floor(s * NBINS), NBINS - 1)``.

The strategy sums these vectors with one Allreduce; :func:`classification_metrics` turns the
sum into accuracy, per-class precision / recall / F1, balanced accuracy and (binary) ROC AUC.

ROC AUC from the merged histograms: pairs (positive, negative) in different bins are ordered
exactly; pairs in the same bin count as ties (1/2), as for tied scores. The error against the
exact AUC is therefore at most ``auc_tie_bound`` = sum_b neg_b * pos_b / (2 * P * N), reported
with the AUC. With 4096 bins a bin is 1/4096 of probability wide; the bound is small unless
many positives and negatives share a score to within that (for instance both saturated near
0 or 1), and the report says so.
"""

from __future__ import annotations

import numpy as np

NBINS = 4096


def n_class_stats(n_classes: int) -> int:
    """Length of the statistics vector for ``n_classes`` classes."""
    return n_classes * n_classes + (2 * NBINS if n_classes == 2 else 0)


def class_stats(y, pred, score, sw, n_classes: int) -> np.ndarray:
    """Statistics of some rows: y, pred int64 (m,); score float64 (m,) = P(y = 1) for K = 2
    (ignored otherwise, may be None); sw float64 (m,) or size 0 (all ones)."""
    y = np.asarray(y).astype(np.int64)
    w = sw if (sw is not None and sw.size) else None
    K = n_classes
    out = np.zeros(n_class_stats(K))
    out[:K * K] = np.bincount(y * K + pred, weights=w, minlength=K * K)
    if K == 2:
        b = np.minimum((np.asarray(score) * NBINS).astype(np.int64), NBINS - 1)
        b = np.maximum(b, 0)
        out[K * K:] = np.bincount(y * NBINS + b, weights=w, minlength=2 * NBINS)
    return out


def _ratio(a, b):
    return np.divide(a, b, out=np.full_like(a, np.nan, dtype=np.float64), where=b > 0)


def classification_metrics(s: np.ndarray, n_classes: int) -> dict:
    """Metrics from summed statistics (see the module docstring). NaN where undefined."""
    K = n_classes
    cm = s[:K * K].reshape(K, K)
    total = cm.sum()
    tp = np.diag(cm)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * tp, support + predicted)
    present = support > 0
    seen = present | (predicted > 0)  # scikit-learn's labels for a macro average: in y or predicted
    out = {
        "accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "balanced_accuracy": float(np.mean(recall[present])) if present.any() else float("nan"),
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "f1": f1.tolist(),
        "macro_f1": float(np.mean(f1[seen])) if seen.any() else float("nan"),
        "class_counts": support.tolist(),
        "predicted_counts": predicted.tolist(),
        "correct_counts": tp.tolist(),
        "confusion": cm.tolist(),
    }
    if K == 2:
        auc, bound = auc_from_histograms(s[4:4 + NBINS], s[4 + NBINS:4 + 2 * NBINS])
        out.update({"roc_auc": auc, "auc_tie_bound": bound, "auc_bins": NBINS})
    return out


def auc_from_histograms(neg: np.ndarray, pos: np.ndarray) -> tuple[float, float]:
    """(ROC AUC, bound on its error) from weighted score histograms of negatives and positives.

    AUC = P(score_pos > score_neg) + P(tie)/2 over (positive, negative) pairs, bins in
    increasing score; same-bin pairs count as ties.
    """
    P, N = float(pos.sum()), float(neg.sum())
    if P <= 0 or N <= 0:
        return float("nan"), float("nan")
    neg_below = np.cumsum(neg) - neg  # negatives in strictly lower bins
    same = float(np.dot(pos, neg))
    auc = (float(np.dot(pos, neg_below)) + 0.5 * same) / (P * N)
    return auc, 0.5 * same / (P * N)
