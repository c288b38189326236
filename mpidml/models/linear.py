"""Linear regression (squared loss) and binary logistic regression.

Parameters: ``[w_0 .. w_{D-1}, b]`` (D+1,). Losses per row (z = x.w + b):
linear 0.5*(z - y)^2; logistic log(1 + exp(z)) - y*z with y in {0, 1}.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .base import Model, check_integer_labels


class LinearRegression(Model):
    name = "linear"

    def __init__(self, n_features: int):
        super().__init__(n_features, 1)
        self._pred = None

    def loss_grad(self, shard, params, rows, grad, with_loss=True):
        return kernels.linear_loss_grad(shard.X, shard.y, shard.sw, params, rows, grad, with_loss)

    def n_stats(self):
        # sum sw*y, sum sw*y^2, sum sw*(pred-y)^2 -> R^2 and RMSE
        return 3

    def stats(self, shard, params, rows):
        pred = np.empty(rows.size)
        kernels.linear_predict(shard.X, params, rows, pred)
        y = shard.y[rows]
        sw = shard.sw[rows] if shard.sw.size else np.ones(rows.size)
        return np.array([np.dot(sw, y), np.dot(sw, y * y), np.dot(sw, (pred - y) ** 2)])

    def metrics_from_stats(self, s, weight_sum):
        mean = s[0] / weight_sum
        ss_tot = s[1] - weight_sum * mean * mean
        return {"rmse": float(np.sqrt(s[2] / weight_sum)),
                "r2": float(1.0 - s[2] / ss_tot) if ss_tot > 0 else float("nan")}


class LogisticRegression(Model):
    name = "logistic"
    is_classifier = True

    def __init__(self, n_features: int):
        super().__init__(n_features, 1)
        self.n_classes = 2

    def check_labels(self, y, lo):
        check_integer_labels(y, lo, 2, "logistic regression (labels must be 0 or 1)")

    def loss_grad(self, shard, params, rows, grad, with_loss=True):
        return kernels.logistic_loss_grad(shard.X, shard.y, shard.sw, params, rows, grad, with_loss)

    def predict_labels(self, shard, params, rows) -> np.ndarray:
        z = np.empty(rows.size)
        kernels.logistic_decision(shard.X, params, rows, z)
        return (z > 0).astype(np.int64)

    def n_stats(self):
        # confusion matrix (true class, predicted class), weighted, row-major 2x2
        return 4

    def stats(self, shard, params, rows):
        return _confusion(shard, rows, self.predict_labels(shard, params, rows), 2)

    def metrics_from_stats(self, s, weight_sum):
        return _classification_metrics(s, 2)


def _confusion(shard, rows, pred, n_classes) -> np.ndarray:
    y = shard.y[rows].astype(np.int64)
    sw = shard.sw[rows] if shard.sw.size else None
    cm = np.bincount(y * n_classes + pred, weights=sw, minlength=n_classes * n_classes)
    return cm.astype(np.float64)


def _classification_metrics(s, n_classes) -> dict:
    cm = s.reshape(n_classes, n_classes)
    total = cm.sum()
    return {
        "accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "class_counts": cm.sum(axis=1).tolist(),
        "predicted_counts": cm.sum(axis=0).tolist(),
        "correct_counts": np.diag(cm).tolist(),
        "confusion": cm.tolist(),
    }
