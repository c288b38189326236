"""Matrix factorization with biases for ratings (``--model mf --rank k``).

Prediction for user u and item i::

    r_hat_ui = mu + b_u + c_i + p_u . q_i

with p_u, q_i in R^k, user and item biases b_u, c_i, and mu the global mean of
the training ratings (computed once, with one reduction, and then fixed: it is
not a parameter). Objective over the N training ratings::

    f(P, Q, b, c) = (1/N) sum_(u,i,r) 0.5 (r - r_hat_ui)^2
                    + (l2/2) (||P||^2 + ||Q||^2 + ||b||^2 + ||c||^2)

The same (1/N) loss + (l2/2)||.||^2 scaling as every other mpidml model. The
biases ARE penalised: with mu fixed, only this makes every user's and item's
block problem strictly convex (a user or item without ratings gets zero
factors and bias, i.e. the prediction mu + the other side's bias) and removes
the b_u + d, c_i - d ambiguity. ALS's normal equations therefore carry the
ridge N * l2 on every coordinate of [p_u, b_u] (see kernels/mf.py).

Parameters are ONE flat float64 vector, user block first::

    params = [ublock (U, k+1) row-major, iblock (I, k+1) row-major]
    ublock[u] = [p_u, b_u],  iblock[i] = [q_i, c_i]

(:meth:`MFModel.blocks` gives the two views.) This model does not know MPI:
it computes local sums; the strategies (mpidml.parallel.als, the parameter
server) add them over ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..kernels import mf as mfk
from ..buffers import aligned_zeros

__all__ = ["MFModel"]

# Standard deviation of the seeded random start of the item factors (user side starts at
# zero and is solved first by ALS): small, so the start carries no scale of its own.
INIT_STD = 0.1


@dataclass
class MFModel:
    n_users: int
    n_items: int
    rank: int
    name: str = "mf"

    def __post_init__(self):
        if self.rank < 1:
            raise ConfigError(f"--rank must be >= 1 for --model mf, got {self.rank}")
        if self.n_users < 1 or self.n_items < 1:
            raise ConfigError(f"mf needs at least one user and one item, got {self.n_users} and {self.n_items}")

    @property
    def n_params(self) -> int:
        return (self.n_users + self.n_items) * (self.rank + 1)

    def blocks(self, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views (ublock (U, k+1), iblock (I, k+1)) into the flat parameter vector."""
        k1 = self.rank + 1
        split = self.n_users * k1
        return params[:split].reshape(self.n_users, k1), params[split:].reshape(self.n_items, k1)

    def init_params(self, seed: int = 0) -> np.ndarray:
        """Zero users and biases; item factors ~ N(0, INIT_STD^2) from ``seed`` (same on every rank)."""
        params = aligned_zeros(self.n_params)
        _, iblock = self.blocks(params)
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
        iblock[:, :self.rank] = rng.normal(0.0, INIT_STD, size=(self.n_items, self.rank))
        return params

    def penalty(self, params: np.ndarray, l2: float) -> float:
        """(l2/2) ||params||^2: every factor and bias is penalised."""
        return 0.5 * l2 * float(np.dot(params, params))

    def loss_sum(self, shard, params: np.ndarray, mu: float) -> float:
        """sum over this shard's ratings of 0.5 (r - r_hat)^2."""
        ublock, iblock = self.blocks(params)
        return float(mfk.mf_loss(shard.user, shard.item, shard.rating, mu, ublock, iblock))

    def predict(self, user: np.ndarray, item: np.ndarray, params: np.ndarray, mu: float) -> np.ndarray:
        ublock, iblock = self.blocks(params)
        out = np.empty(user.shape[0])
        mfk.mf_predict(user, item, mu, ublock, iblock, out)
        return out

    def factors(self, params: np.ndarray) -> dict:
        """The arrays model.h5 stores: user_factors (U, k), item_factors (I, k), user_bias, item_bias."""
        ublock, iblock = self.blocks(params)
        k = self.rank
        return {"user_factors": ublock[:, :k].copy(), "item_factors": iblock[:, :k].copy(),
                "user_bias": ublock[:, k].copy(), "item_bias": iblock[:, k].copy()}

    def params_from(self, arrays: dict) -> np.ndarray:
        params = np.empty(self.n_params)
        ublock, iblock = self.blocks(params)
        k = self.rank
        ublock[:, :k], ublock[:, k] = arrays["user_factors"], arrays["user_bias"]
        iblock[:, :k], iblock[:, k] = arrays["item_factors"], arrays["item_bias"]
        return params
