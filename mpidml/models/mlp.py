"""A small multi-layer perceptron: one or two ReLU hidden layers, softmax output.

Parameters: one flat float64 vector, all weight matrices first (row-major, layer
by layer), then all biases (see :mod:`mpidml.kernels.mlp`)::

    [W1 (H1, D), W2 (H2, H1), ..., Wout (K, H_last), b1 (H1), b2 (H2), ..., bout (K)]

The L2 penalty applies to the weight matrices, not to the biases, so
``penalized`` is the leading slice ``[0, n_weights)``, as for the linear models.

The objective is not convex: parameters start from He initialisation (weights
N(0, 2 / fan_in) for the ReLU layers, N(0, 1 / fan_in) for the output layer,
biases 0), drawn from a generator seeded by ``--seed`` only, so every rank
starts from bitwise the same vector without a broadcast.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from ..buffers import aligned_zeros
from ..errors import ConfigError
from .base import Model, check_integer_labels
from .classmetrics import classification_metrics, n_class_stats
from .linear import _NO_HITS, _proba_stats

MAX_HIDDEN_LAYERS = 2


def parse_hidden(text) -> tuple[int, ...]:
    """``"64"`` or ``"128,64"`` -> (64,) / (128, 64); ConfigError unless 1-2 positive ints."""
    if isinstance(text, (tuple, list)):
        parts = [str(p) for p in text]
    else:
        parts = [p.strip() for p in str(text).split(",")] if str(text).strip() else []
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--hidden must be one or two positive integers like 64 or 128,64; got {text!r}") from None
    if not 1 <= len(sizes) <= MAX_HIDDEN_LAYERS or any(s < 1 for s in sizes):
        raise ConfigError(f"--hidden must be one or two positive integers like 64 or 128,64; got {text!r}")
    return sizes


class MLPClassifier(Model):
    name = "mlp"
    is_classifier = True
    y_dtype = np.int64
    # kernels._forward_row serves both mlp_loss_grad and mlp_predict_proba: the warm-up
    # compiles the evaluation with the loss kernel (mpidml.train.warm_up_groups)
    eval_shares_loss_kernel = True

    def __init__(self, n_features: int, n_classes: int, hidden=(64,)):
        super().__init__(n_features, n_classes)
        self.n_classes = int(n_classes)
        self.hidden = parse_hidden(hidden)
        self.sizes = (self.n_features,) + self.hidden + (self.n_classes,)
        self.layout, self.n_params, n_weights, n_act = kernels.mlp_layout(self.sizes)
        self.penalized = slice(0, n_weights)
        # Kernel scratch (activations + deltas of one row), allocated once.
        self._work = np.zeros(2 * n_act)

    def lbfgs_h0(self, mean_sq, l2):
        return None  # hidden-layer weights are not per-feature coefficients: L-BFGS keeps H0 = gamma I

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    def check_labels(self, y, lo):
        check_integer_labels(y, lo, self.n_classes, f"mlp with {self.n_classes} classes (labels must be integers "
                                                    f"0..{self.n_classes - 1})")

    # -- parameters --------------------------------------------------------
    def init_params(self, seed: int = 0) -> np.ndarray:
        """He initialisation from ``seed`` (identical on every rank); biases 0."""
        rng = np.random.default_rng([int(seed), 0x6D6C70])  # "mlp": independent of the epoch shuffles
        params = aligned_zeros(self.n_params)
        for l, W in enumerate(self.weights(params)):
            gain = 2.0 if l < self.n_layers - 1 else 1.0
            W[...] = rng.standard_normal(W.shape) * np.sqrt(gain / W.shape[1])
        return params

    def weights(self, params) -> list[np.ndarray]:
        """Views of the weight matrices W_l, shapes (n_{l+1}, n_l)."""
        return [params[o:o + i * n].reshape(n, i) for i, n, o, _, _ in self.layout]

    def biases(self, params) -> list[np.ndarray]:
        return [params[o:o + n] for _, n, _, o, _ in self.layout]

    def to_arrays(self, params) -> dict:
        """model.h5 datasets: W1, b1, W2, b2, ... (W_l of shape (out, in))."""
        out = {}
        for l, (W, b) in enumerate(zip(self.weights(params), self.biases(params)), start=1):
            out[f"W{l}"], out[f"b{l}"] = W, b
        return out

    def params_from_arrays(self, arrays: dict) -> np.ndarray:
        params = np.zeros(self.n_params)
        for l, (W, b) in enumerate(zip(self.weights(params), self.biases(params)), start=1):
            W[...] = np.asarray(arrays[f"W{l}"], dtype=np.float64).reshape(W.shape)
            b[...] = np.asarray(arrays[f"b{l}"], dtype=np.float64).reshape(b.shape)
        return params

    def coef_intercept(self, params):
        raise NotImplementedError("an MLP has no single coef/intercept; use to_arrays")

    # -- objective ---------------------------------------------------------
    def loss_grad(self, shard, params, rows, grad, with_loss=True):
        return kernels.mlp_loss_grad(shard.X, shard.y, shard.sw, params, rows, grad, with_loss,
                                     self.layout, self._work, _NO_HITS)

    def loss_grad_hits(self, shard, params, rows, grad, hits) -> float:
        """Loss, gradient and the batch's hits from one forward pass per row (kernels.mlp_loss_grad
        with hits; batch_hits runs the forward pass again)."""
        return kernels.mlp_loss_grad(shard.X, shard.y, shard.sw, params, rows, grad, True,
                                     self.layout, self._work, hits)

    def fused_hits(self, shard) -> bool:
        return True

    def predict_proba(self, shard, params, rows) -> np.ndarray:
        """(m, K) float64 class probabilities of the rows ``rows`` of shard.X."""
        out = np.empty((rows.size, self.n_classes))
        kernels.mlp_predict_proba(shard.X, params, rows, self.layout, self._work, out)
        return out

    def predict_labels(self, shard, params, rows) -> np.ndarray:
        out = np.empty(rows.size, dtype=np.int64)
        kernels.argmax_rows(self.predict_proba(shard, params, rows), out)
        return out

    # -- evaluation --------------------------------------------------------
    def n_stats(self):
        return n_class_stats(self.n_classes)

    def stats(self, shard, params, rows):
        return _proba_stats(self, shard, params, rows)

    def metrics_from_stats(self, s, weight_sum):
        return classification_metrics(s, self.n_classes)
