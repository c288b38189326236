"""Linear regression (squared loss) and binary logistic regression.

Parameters: ``[w_0 .. w_{D-1}, b]`` (D+1,). Losses per row (z = x.w + b):
linear 0.5*(z - y)^2; logistic log(1 + exp(z)) - y*z with y in {0, 1}.
Dense shards use the dense kernels, CSR shards (sparse text) the CSR kernels.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .base import Model, check_integer_labels, is_sparse
from .classmetrics import class_stats, classification_metrics, n_class_stats


_NO_HITS = np.zeros(0)  # the hits kernels' hits for a step that does not count them (every classifier)


class LinearRegression(Model):
    name = "linear"

    def __init__(self, n_features: int):
        super().__init__(n_features, 1)
        self._pred = None

    def loss_grad(self, shard, params, rows, grad, with_loss=True):
        if is_sparse(shard):
            return kernels.csr_linear_loss_grad(shard.indptr, shard.indices, shard.data, shard.y, shard.sw, params,
                                                rows, grad, with_loss)
        return kernels.linear_loss_grad(shard.X, shard.y, shard.sw, params, rows, grad, with_loss)

    def predict(self, shard, params, rows) -> np.ndarray:
        """(m,) float64 predictions x.w + b of the rows ``rows``."""
        return _margin(shard, params, rows)

    def n_stats(self):
        # sum sw*y, sum sw*y^2, sum sw*(pred-y)^2 -> R^2 and RMSE
        return 3

    def stats(self, shard, params, rows):
        pred = self.predict(shard, params, rows)
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
        # the hits kernels without hits: the one compiled wrapper of glm_loss_grad for both calls
        # (a second wrapper compiles the whole kernel again: +2 s on a cold start)
        return self._loss_grad_hits(shard, params, rows, grad, with_loss, _NO_HITS)

    def loss_grad_hits(self, shard, params, rows, grad, hits) -> float:
        """Loss, gradient and hits in one pass (kernels.logistic_loss_grad_hits, CSR:
        csr_logistic_loss_grad_hits: the loss kernel counting each row's z > 0 against its
        label; a logged step's second pass over its rows cost ~80-140 us per 2048 dense rows)."""
        return self._loss_grad_hits(shard, params, rows, grad, True, hits)

    def _loss_grad_hits(self, shard, params, rows, grad, with_loss, hits) -> float:
        if is_sparse(shard):
            return kernels.csr_logistic_loss_grad_hits(shard.indptr, shard.indices, shard.data, shard.y, shard.sw,
                                                       params, rows, grad, with_loss, hits)
        return kernels.logistic_loss_grad_hits(shard.X, shard.y, shard.sw, params, rows, grad, with_loss, hits)

    def fused_hits(self, shard) -> bool:
        return True

    def predict_labels(self, shard, params, rows) -> np.ndarray:
        return (_margin(shard, params, rows) > 0).astype(np.int64)

    def batch_hits(self, shard, params, rows) -> tuple[float, float]:
        """(weighted correct, weight) of ``rows`` (see Model.batch_hits): one margin pass and one
        counting pass, no label or mask temporaries."""
        return kernels.binary_hits(_margin(shard, params, rows), shard.y, shard.sw, rows)

    def predict_proba(self, shard, params, rows) -> np.ndarray:
        """(m, 2) float64: [P(y=0), P(y=1)] = [1 - sigmoid(z), sigmoid(z)], computed stably."""
        out = np.empty((rows.size, 2))
        kernels.logistic_proba(_margin(shard, params, rows), out)
        return out

    def n_stats(self):
        # weighted confusion matrix (2x2) + score histograms of negatives and positives (AUC)
        return n_class_stats(2)

    def stats(self, shard, params, rows):
        return _proba_stats(self, shard, params, rows)

    def metrics_from_stats(self, s, weight_sum):
        return classification_metrics(s, 2)


def _margin(shard, params, rows) -> np.ndarray:
    """(m,) float64 margins x.w + b of a dense or CSR shard's rows ``rows``."""
    z = np.empty(rows.size)
    if is_sparse(shard):
        kernels.csr_glm_margin(shard.indptr, shard.indices, shard.data, params, rows, z)
    else:
        kernels.linear_predict(shard.X, params, rows, z)
    return z


def _proba_stats(model, shard, params, rows) -> np.ndarray:
    """Confusion matrix (+ score histograms when binary) of a classifier with predict_proba.

    More than two classes need only the predicted labels (``predict_labels``: for softmax the
    argmax of the logits, without computing the probabilities; 119 -> ~60 ms per 5e5 x 64
    rows, 10 classes); two classes need the scores P(y = 1) for the AUC histograms.
    """
    sw = shard.sw[rows] if shard.sw.size else shard.sw
    if model.n_classes > 2:
        return class_stats(shard.y[rows], model.predict_labels(shard, params, rows), None, sw, model.n_classes)
    proba = model.predict_proba(shard, params, rows)
    pred = (proba[:, 1] > proba[:, 0]).astype(np.int64)
    return class_stats(shard.y[rows], pred, proba[:, 1], sw, 2)

