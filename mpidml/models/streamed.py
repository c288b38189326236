"""A model over a :class:`~mpidml.data.stream.StreamingShard`: same sums, X read from disk.

Wraps any dense model. A full pass (rows = all local rows in order) runs the
model chunk by chunk over the streamed X, adding into the same gradient buffer
in the same row order as the in-memory pass; a mini-batch reads the batch's
rows and runs the model on them. Strategies and optimizers see an ordinary
model: nothing else changes for data larger than memory.
"""

from __future__ import annotations

import numpy as np

from ..buffers import aligned_empty


class _View:
    """A few rows in memory, shaped like a DenseShard for the wrapped model."""

    __slots__ = ("X", "y", "sw", "n_local")

    def __init__(self, X, y, sw):
        self.X, self.y, self.sw, self.n_local = X, y, sw, X.shape[0]


class StreamedModel:
    """Delegates everything to ``inner`` except the passes over X."""

    def __init__(self, inner, shard, max_batch: int):
        self.inner = inner
        self._arange = np.arange(max(shard.chunk_rows, max_batch, 1), dtype=np.int64)
        self._batch = aligned_empty((max(max_batch, 1), shard.n_features), shard.x_dtype)  # see mpidml/buffers.py
        self._y = np.empty(max(max_batch, 1), dtype=shard.y.dtype)
        self._sw = np.empty(max(max_batch, 1) if shard.sw.size else 0)

    def __getattr__(self, name):
        return getattr(self.inner, name)

    @staticmethod
    def _is_full(shard, rows) -> bool:
        n = shard.n_local
        return rows.size == n and (n == 0 or (rows[0] == 0 and rows[-1] == n - 1 and
                                              (n < 3 or bool(np.all(np.diff(rows) == 1)))))

    def _views(self, shard, rows):
        """Yield in-memory views covering ``rows`` (all rows: chunk by chunk; else one batch)."""
        if self._is_full(shard, rows):
            for start, stop, X in shard.chunks():
                sw = shard.sw[start:stop] if shard.sw.size else shard.sw
                yield _View(X, shard.y[start:stop], sw), self._arange[: stop - start]
            return
        m = rows.size
        X = shard.gather(rows, self._batch)
        np.take(shard.y, rows, out=self._y[:m])
        sw = shard.sw
        if sw.size:
            np.take(shard.sw, rows, out=self._sw[:m])
            sw = self._sw[:m]
        yield _View(X, self._y[:m], sw), self._arange[:m]

    def loss_grad(self, shard, params, rows, grad, with_loss=True) -> float:
        total = 0.0
        for view, local in self._views(shard, rows):
            total += self.inner.loss_grad(view, params, local, grad, with_loss)
        return total

    def stats(self, shard, params, rows) -> np.ndarray:
        total = np.zeros(self.inner.n_stats())
        for view, local in self._views(shard, rows):
            total += self.inner.stats(view, params, local)
        return total

    def loss_grad_hits(self, shard, params, rows, grad, hits) -> float:
        total = correct = 0.0
        for view, local in self._views(shard, rows):  # a mini-batch: one gather for both
            total += self.inner.loss_grad_hits(view, params, local, grad, hits)
            correct += hits[0]
        hits[0] = correct
        return total

    def batch_hits(self, shard, params, rows) -> tuple[float, float]:
        correct = weight = 0.0
        for view, local in self._views(shard, rows):
            c, w = self.inner.batch_hits(view, params, local)
            correct += c
            weight += w
        return correct, weight
