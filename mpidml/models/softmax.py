"""Multinomial (softmax) logistic regression.

Parameters: coef (K, D) row-major, then K intercepts: (K*(D+1),). Loss per
row: logsumexp(z) - z[y] with z = W x + c, labels y in 0..K-1.
Dense shards use the dense kernels, CSR shards (sparse text) the CSR kernels.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .base import Model, check_integer_labels, is_sparse
from .classmetrics import classification_metrics, n_class_stats
from .linear import _NO_HITS, _proba_stats


class SoftmaxRegression(Model):
    name = "softmax"
    is_classifier = True
    y_dtype = np.int64

    def __init__(self, n_features: int, n_classes: int):
        super().__init__(n_features, n_classes)
        self.n_classes = int(n_classes)
        # Kernel scratch, allocated once, large enough for the dense kernel's vector path (and the CSR kernel).
        self._work = np.empty(kernels.softmax.work_size(self.n_classes, int(n_features)))

    def check_labels(self, y, lo):
        check_integer_labels(y, lo, self.n_classes, f"softmax with {self.n_classes} classes (labels must be integers 0..{self.n_classes - 1})")

    def loss_grad(self, shard, params, rows, grad, with_loss=True):
        # the hits kernels without hits: one compiled entry for both calls (as LogisticRegression)
        return self._loss_grad_hits(shard, params, rows, grad, with_loss, _NO_HITS)

    def loss_grad_hits(self, shard, params, rows, grad, hits) -> float:
        """Loss, gradient and hits in one pass (kernels.softmax_loss_grad_hits, CSR:
        csr_softmax_loss_grad_hits: the loss kernel takes each row's first largest logit against
        its label; a logged step's second pass for the logits cost ~200 us per 2048 dense rows
        at K = 10)."""
        return self._loss_grad_hits(shard, params, rows, grad, True, hits)

    def _loss_grad_hits(self, shard, params, rows, grad, with_loss, hits) -> float:
        if is_sparse(shard):
            return kernels.csr_softmax_loss_grad_hits(shard.indptr, shard.indices, shard.data, shard.y, shard.sw,
                                                      params, rows, grad, with_loss, self.n_classes, self._work, hits)
        return kernels.softmax_loss_grad_hits(shard.X, shard.y, shard.sw, params, rows, grad, with_loss, self._work,
                                              hits)

    def fused_hits(self, shard) -> bool:
        return True

    def logits(self, shard, params, rows) -> np.ndarray:
        """(m, K) float64 logits of a dense or CSR shard's rows ``rows``."""
        z = np.empty((rows.size, self.n_classes))
        if is_sparse(shard):
            kernels.csr_softmax_decision(shard.indptr, shard.indices, shard.data, params, rows, self.n_classes, z)
        else:
            kernels.softmax_decision(shard.X, params, rows, z)
        return z

    def predict_labels(self, shard, params, rows) -> np.ndarray:
        out = np.empty(rows.size, dtype=np.int64)
        kernels.argmax_rows(self.logits(shard, params, rows), out)
        return out

    def batch_hits(self, shard, params, rows) -> tuple[float, float]:
        """(weighted correct, weight) of ``rows`` (see Model.batch_hits): the logits, then one
        argmax-and-count pass, no label or mask temporaries."""
        return kernels.argmax_hits(self.logits(shard, params, rows), shard.y, shard.sw, rows)

    def predict_proba(self, shard, params, rows) -> np.ndarray:
        """(m, K) float64 class probabilities (stable softmax of the logits)."""
        z = self.logits(shard, params, rows)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        return z

    def n_stats(self):
        # weighted confusion matrix (K x K) (+ score histograms for K = 2: AUC)
        return n_class_stats(self.n_classes)

    def stats(self, shard, params, rows):
        return _proba_stats(self, shard, params, rows)

    def metrics_from_stats(self, s, weight_sum):
        return classification_metrics(s, self.n_classes)
