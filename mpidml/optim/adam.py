"""Adam (Kingma & Ba, 2015) with bias correction.

Rank-local, deterministic (a fixed sequence of element-wise operations, each
rounded on its own, run as one Numba call), in place, and allocation-free per
step; see :mod:`mpidml.optim.sgd`.
"""

from __future__ import annotations

import numpy as np

from .. import kernels
from .sgd import (_check_n_params, _check_positive, _check_unit_interval, _check_vectors,
                  _load_array, _load_int, _step_lr)

__all__ = ["Adam"]


class Adam:
    """Adam. With gradient ``g`` and step count ``t`` (1 on the first step)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * (g * g)
        m_hat = m / (1 - beta1**t)
        v_hat = v / (1 - beta2**t)
        params -= lr * (m_hat / (sqrt(v_hat) + eps))

    Parameters
    ----------
    n_params : int
        Length of the flat parameter vector.
    lr : float
        Constant learning rate (> 0); ``step(..., lr=...)`` overrides it per step.
    beta1, beta2 : float
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Denominator guard (> 0).
    """

    def __init__(self, n_params: int, lr: float, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = 1e-8):
        self.n_params = _check_n_params(n_params)
        self.lr = _check_positive("lr", lr)
        self.beta1 = _check_unit_interval("beta1", beta1)
        self.beta2 = _check_unit_interval("beta2", beta2)
        self.eps = _check_positive("eps", eps)
        self.name = "adam"
        self.t = 0
        n = self.n_params
        self.m = np.zeros(n)  # first moment estimate
        self.v = np.zeros(n)  # second moment estimate

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float | None = None) -> None:
        """One update. Modifies ``params`` (float64, shape ``(n_params,)``), ``m``, ``v``
        and ``t`` in place; ``grad`` (shape ``(n_params,)``) is only read.
        ``lr`` (>= 0), when given, replaces the constant learning rate for this step."""
        _check_vectors(self.n_params, params, grad)
        lr = _step_lr(self.lr, lr)
        self.t += 1
        bias1, bias2 = self.bias_corrections(self.t)
        kernels.adam_update(params, grad, self.m, self.v, lr, self.beta1, self.beta2, bias1, bias2, self.eps)

    def bias_corrections(self, t: int) -> tuple[float, float]:
        """``(1 - beta1**t, 1 - beta2**t)`` of step count ``t`` (Python float powers): what
        :meth:`step` divides the moments by; the compiled step loop takes the same values."""
        return 1.0 - self.beta1 ** t, 1.0 - self.beta2 ** t

    def state_dict(self) -> dict:
        """Copies of everything needed to resume bitwise: ``m``, ``v`` (shape
        ``(n_params,)``) and the step count ``t``. Hyperparameters come from the constructor."""
        return {"n_params": self.n_params, "t": self.t, "m": self.m.copy(), "v": self.v.copy()}

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` (copied into this optimizer's buffers)."""
        if int(d.get("n_params", -1)) != self.n_params:
            raise ValueError(f"state is for n_params={d.get('n_params')}, this optimizer has {self.n_params}")
        _load_array(d, "m", self.m)
        _load_array(d, "v", self.v)
        self.t = _load_int(d, "t")

    def __repr__(self) -> str:
        return (f"Adam(n_params={self.n_params}, lr={self.lr!r}, beta1={self.beta1!r}, "
                f"beta2={self.beta2!r}, eps={self.eps!r})")
