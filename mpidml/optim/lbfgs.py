"""Limited-memory BFGS for full-batch objectives, with a strong-Wolfe line search.

The objective is evaluated through ``fun_grad(x, grad_out) -> f``: it writes the
gradient at ``x`` (float64, shape ``(n_params,)``) into ``grad_out`` in place,
returns ``f`` and must not modify ``x``. In mpidml one call is a kernel pass on
every rank plus one MPI Allreduce, so:

* evaluations are expensive: the unit quasi-Newton step is tried first and
  accepted whenever it satisfies the strong Wolfe conditions;
* every rank must make the same calls with the same ``x``: all control flow
  here depends only on the values ``f`` and ``g`` returned (identical on every
  rank after the Allreduce) and on the constructor arguments. Inner products use
  element-wise ``np.multiply`` into a buffer followed by NumPy's (pairwise)
  ``np.add.reduce`` rather than BLAS ``dot``, so they do not depend on BLAS
  threading or on the CPU's BLAS kernel. Same inputs give bitwise the same
  iterates on every rank.

All vectors (iterate, gradient, curvature pairs, line-search points) live in
buffers allocated in the constructor; an iteration allocates no arrays.

Algorithm: two-loop recursion with ``H0 = gamma D``, ``gamma = s'y / y'Dy`` of the newest
pair (Nocedal & Wright, Alg. 7.4, where ``D = I``); ``D`` is a fixed positive diagonal,
``h0``, the identity unless given. A diagonal ``D`` is L-BFGS in the variables
``u = D^(-1/2) x``: with ``D_jj`` ~ 1 / (curvature along x_j) it removes the part of the
ill-conditioning that comes from the scales of the variables (features measured in
different units), which otherwise costs L-BFGS hundreds of iterations; the minimiser, the
stopping tests (on ``g`` itself) and every other rule are unchanged. Steepest descent
``d = -D g`` when the memory is empty (first step of length 1 in ``u``,
``a = 1/sqrt(g'Dg)``; after a restart ``a = gamma`` of the last pair); line search
of Nocedal & Wright Alg. 3.5/3.6 (bracketing, then zoom with safeguarded
cubic/quadratic interpolation and More-Thuente's bisection fallback). Pairs with
``s'y <= eps y'y`` are skipped; a non-descent direction restarts from steepest
descent, and so does a failed line search (once, before giving up).

Near the optimum, differences of ``f`` drown in rounding while the gradient is
still accurate. When the predicted decrease ``|g'd|`` is below ``1e-10 |f|`` the
line search therefore switches to Hager & Zhang's "approximate Wolfe" test:
accept ``|phi'(a)| <= c2 |phi'(0)|`` with ``f <= f0 + 1e-10 |f0|``, bracketing on
the sign of ``phi'`` and interpolating by secants. This lets the iteration reach
tight gradient tolerances instead of stopping on a failed line search.
"""

from __future__ import annotations

import math

import numpy as np

from ..buffers import aligned_zeros

__all__ = ["LBFGS", "LBFGSResult"]

_EPS = float(np.finfo(np.float64).eps)
# Rounding level of f, relative to |f|. A line search whose predicted decrease
# |g'd| is below NOISE_EPS |f| cannot rely on differences of f and switches to
# the derivative-based (approximate Wolfe) search; a step may then raise f by at
# most NOISE_EPS |f|.
_NOISE_EPS = 1e-10

# status codes (an int so that the state dict holds numbers only)
_NOT_STARTED = -1
_RUNNING = 0
_CONVERGED = 1
_MAX_ITER = 2
_LS_FAILED = 3
_FTOL = 4
_NONFINITE = 5
_NO_PROGRESS = 6
_CALLBACK = 7

_MESSAGES = {
    _NOT_STARTED: "not started: call reset(x0, fun_grad) or minimize()",
    _RUNNING: "running",
    _CONVERGED: "converged: max|grad| <= tol",
    _MAX_ITER: "stopped: reached max_iter iterations",
    _LS_FAILED: ("stopped: line search found no step with sufficient decrease within max_ls "
                 "evaluations (often the limit of floating-point precision near the optimum)"),
    _FTOL: "stopped: relative reduction of the objective <= ftol",
    _NONFINITE: "stopped: objective or gradient is not finite at the initial point",
    _NO_PROGRESS: "stopped: the accepted step did not change x (no progress possible)",
    _CALLBACK: "stopped by callback",
}

# line-search outcomes
_LS_FAIL, _LS_TRIAL, _LS_LO = 0, 1, 2


class LBFGSResult:
    """Result of :meth:`LBFGS.minimize`.

    Attributes: ``x`` (copy of the final iterate, shape ``(n_params,)``), ``fun``
    (objective there), ``grad`` (copy of its gradient), ``n_iter``, ``n_evals``
    (``fun_grad`` calls, including the one at ``x0``), ``converged`` (max|grad| <=
    tol) and ``message``.
    """

    __slots__ = ("x", "fun", "grad", "n_iter", "n_evals", "converged", "message")

    def __init__(self, x, fun, grad, n_iter, n_evals, converged, message):
        self.x, self.fun, self.grad = x, fun, grad
        self.n_iter, self.n_evals = n_iter, n_evals
        self.converged, self.message = converged, message

    def __repr__(self) -> str:
        return (f"LBFGSResult(fun={self.fun!r}, n_iter={self.n_iter}, n_evals={self.n_evals}, "
                f"converged={self.converged}, message={self.message!r})")


def _int_arg(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_arg(name, value, ok, what):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number {what}, got {value!r}") from None
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def _cubic_min(a0, f0, d0, a1, f1, d1):
    """Minimiser of the cubic through (a0, f0, f'=d0) and (a1, f1, f'=d1); nan if none."""
    dd1 = d0 + d1 - 3.0 * (f0 - f1) / (a0 - a1)
    rad = dd1 * dd1 - d0 * d1
    if not (rad >= 0.0):
        return math.nan
    dd2 = math.copysign(math.sqrt(rad), a1 - a0)
    den = d1 - d0 + 2.0 * dd2
    if den == 0.0:
        return math.nan
    return a1 - (a1 - a0) * ((d1 + dd2 - dd1) / den)


def _quad_min(a0, f0, d0, a1, f1):
    """Minimiser of the quadratic through (a0, f0, f'=d0) and (a1, f1); nan if none."""
    w = a1 - a0
    den = 2.0 * (f1 - f0 - d0 * w)
    if not (den > 0.0):
        return math.nan
    return a0 - d0 * w * w / den


class LBFGS:
    """L-BFGS minimiser for a smooth function of one flat float64 vector.

    Parameters
    ----------
    n_params : int
        Length of the parameter vector.
    memory : int
        Number of curvature pairs (s, y) kept (>= 1).
    tol : float
        Converged when ``max|g| <= tol`` (>= 0), as SciPy's ``pgtol``.
    max_iter : int
        Maximum number of iterations (>= 0).
    ftol : float
        Stop when ``(f_old - f) / max(|f_old|, |f|, 1) <= ftol``; 0 disables.
    max_ls : int
        Maximum objective evaluations per line search (>= 1).
    c1, c2 : float
        Strong Wolfe constants, ``0 < c1 < c2 < 1``.
    h0 : array of shape ``(n_params,)`` or None
        Positive finite diagonal ``D`` of the initial inverse-Hessian shape ``H0 = gamma D``
        (copied); None: the identity. A good ``D_jj`` is 1 / (diagonal of the Hessian),
        e.g. 1 / (mean of x_j^2 + l2) for a linear model's coefficient j.

    Use :meth:`minimize`, or :meth:`reset` then :meth:`step` repeatedly.
    Attributes after :meth:`reset`: ``x`` and ``g`` (the current iterate and its
    gradient, shape ``(n_params,)``; owned by the optimizer and swapped with
    internal buffers between iterations, so read them, do not keep references),
    ``f``, ``n_iter``, ``n_evals``, ``converged``, ``message``, ``done``.
    """

    def __init__(self, n_params: int, memory: int = 10, tol: float = 1e-8, max_iter: int = 500,
                 ftol: float = 0.0, max_ls: int = 25, c1: float = 1e-4, c2: float = 0.9, h0=None):
        self.n_params = n = _int_arg("n_params", n_params, 1)
        self.memory = m = _int_arg("memory", memory, 1)
        self.tol = _float_arg("tol", tol, lambda v: v >= 0.0, ">= 0")
        self.max_iter = _int_arg("max_iter", max_iter, 0)
        self.ftol = _float_arg("ftol", ftol, lambda v: v >= 0.0, ">= 0")
        self.max_ls = _int_arg("max_ls", max_ls, 1)
        self.c1 = _float_arg("c1", c1, lambda v: 0.0 < v < 1.0, "in (0, 1)")
        self.c2 = _float_arg("c2", c2, lambda v: self.c1 < v < 1.0, f"in (c1, 1) = ({self.c1}, 1)")
        self.name = "lbfgs"
        if h0 is None:
            self._h0 = None
        else:
            h0 = np.array(h0, dtype=np.float64)
            if h0.shape != (n,) or not (np.all(np.isfinite(h0)) and np.all(h0 > 0.0)):
                raise ValueError(f"h0 must be a positive finite vector of shape ({n},)")
            self._h0 = h0
        # current iterate; every n-vector on a cache line (mpidml.buffers.aligned_zeros): the trial
        # points are the parameters the loss kernels read, and the buffers trade places
        self.x = aligned_zeros(n)
        self.g = aligned_zeros(n)
        self.f = math.nan
        self.n_iter = 0
        self.n_evals = 0
        self._status = _NOT_STARTED
        # curvature pairs: ring of `memory` slots (slot buffers are swapped, never copied)
        self._S = [aligned_zeros(n) for _ in range(m)]
        self._Y = [aligned_zeros(n) for _ in range(m)]
        self._rho = np.zeros(m)
        self._alpha = np.zeros(m)
        self._head = 0      # slot that receives the next pair
        self._count = 0     # pairs in use
        self._gamma = 0.0   # s'y/y'y of the newest accepted pair (0: none yet)
        self._s_new = aligned_zeros(n)
        self._y_new = aligned_zeros(n)
        # work buffers: direction, scratch, line-search trial point and best point
        self._d = aligned_zeros(n)
        self._tmp = aligned_zeros(n)
        self._xt = aligned_zeros(n)
        self._gt = aligned_zeros(n)
        self._xlo = aligned_zeros(n)
        self._glo = aligned_zeros(n)

    # -- properties -----------------------------------------------------------------

    @property
    def converged(self) -> bool:
        """True when stopped with ``max|g| <= tol``."""
        return self._status == _CONVERGED

    @property
    def done(self) -> bool:
        """True once stopped (converged or not): :meth:`step` does nothing more."""
        return self._status > _RUNNING

    @property
    def message(self) -> str:
        return _MESSAGES[self._status]

    @property
    def line_search_failed(self) -> bool:
        """True if it stopped because no step along the search direction decreased f enough."""
        return self._status == _LS_FAILED

    # -- small deterministic kernels ------------------------------------------------

    def _dot(self, a: np.ndarray, b: np.ndarray) -> float:
        tmp = self._tmp
        np.multiply(a, b, out=tmp)
        return float(np.add.reduce(tmp))

    def _dot3(self, a: np.ndarray, w: np.ndarray, b: np.ndarray) -> float:
        """sum_j a_j w_j b_j, as _dot (elementwise products, then NumPy's pairwise sum)."""
        tmp = self._tmp
        np.multiply(a, w, out=tmp)
        np.multiply(tmp, b, out=tmp)
        return float(np.add.reduce(tmp))

    def _max_abs(self, a: np.ndarray) -> float:
        tmp = self._tmp
        np.abs(a, out=tmp)
        return float(tmp.max())

    def _eval(self, fun_grad, x: np.ndarray, g: np.ndarray) -> float:
        f = float(fun_grad(x, g))
        self.n_evals += 1
        return f

    def _clear_memory(self) -> None:
        self._count = 0
        self._head = 0

    # -- public API -----------------------------------------------------------------

    def reset(self, x0, fun_grad) -> None:
        """Start from ``x0`` (shape ``(n_params,)``, copied): one ``fun_grad`` call, clears
        the memory and the counters. ``x0`` is not modified."""
        x0 = np.asarray(x0)
        if x0.shape != (self.n_params,):
            raise ValueError(f"x0 must have shape ({self.n_params},), got {x0.shape}")
        np.copyto(self.x, x0, casting="same_kind")
        self._clear_memory()
        self._gamma = 0.0
        self.n_iter = 0
        self.n_evals = 0
        self.f = self._eval(fun_grad, self.x, self.g)
        gmax = self._max_abs(self.g)
        if not (math.isfinite(self.f) and math.isfinite(gmax)):
            self._status = _NONFINITE
        elif gmax <= self.tol:
            self._status = _CONVERGED
        elif self.max_iter == 0:
            self._status = _MAX_ITER
        else:
            self._status = _RUNNING

    def step(self, fun_grad) -> bool:
        """One iteration: direction, line search, memory update, stopping tests.

        Updates ``x``, ``f``, ``g``, the memory and the counters. Returns True when
        stopped (see ``converged`` and ``message``); then further calls do nothing.
        """
        if self._status == _NOT_STARTED:
            raise RuntimeError("LBFGS.step() before reset(x0, fun_grad)")
        if self._status != _RUNNING:
            return True
        if self.n_iter >= self.max_iter:
            self._status = _MAX_ITER
            return True
        while True:
            gtd = self._direction()
            if self._count > 0:
                a0 = 1.0
            elif self._gamma > 0.0:
                a0 = self._gamma              # scaled steepest descent after a restart
            elif gtd < 0.0:
                a0 = 1.0 / math.sqrt(-gtd)    # d = -D g: first step has length 1 (in u = D^(-1/2) x)
            else:
                a0 = 1.0                      # g'g underflowed to 0
            outcome, f_new = self._line_search(fun_grad, gtd, a0)
            if outcome != _LS_FAIL:
                break
            if self._count == 0:
                self._status = _LS_FAILED
                return True
            self._clear_memory()              # retry once along steepest descent
        if outcome == _LS_TRIAL:
            x_new, g_new = self._xt, self._gt
        else:
            x_new, g_new = self._xlo, self._glo
        s, y = self._s_new, self._y_new
        np.subtract(x_new, self.x, out=s)
        np.subtract(g_new, self.g, out=y)
        # accept: swap buffers (no copies)
        if outcome == _LS_TRIAL:
            self.x, self._xt = self._xt, self.x
            self.g, self._gt = self._gt, self.g
        else:
            self.x, self._xlo = self._xlo, self.x
            self.g, self._glo = self._glo, self.g
        f_old, self.f = self.f, f_new
        self.n_iter += 1
        # curvature pair, guarded: skip unless s'y > eps * y'y
        sy = self._dot(s, y)
        yy = self._dot(y, y) if self._h0 is None else self._dot3(y, self._h0, y)
        if sy > _EPS * yy and math.isfinite(sy) and math.isfinite(yy):
            h = self._head
            self._S[h], self._s_new = s, self._S[h]
            self._Y[h], self._y_new = y, self._Y[h]
            self._rho[h] = 1.0 / sy
            self._gamma = sy / yy
            self._head = (h + 1) % self.memory
            self._count = min(self._count + 1, self.memory)
        # stopping tests
        if self._max_abs(self.g) <= self.tol:
            self._status = _CONVERGED
        elif self.ftol > 0.0 and (f_old - self.f) <= self.ftol * max(abs(f_old), abs(self.f), 1.0):
            self._status = _FTOL
        elif self._max_abs(s) == 0.0:
            self._status = _NO_PROGRESS
        elif self.n_iter >= self.max_iter:
            self._status = _MAX_ITER
        return self._status != _RUNNING

    def minimize(self, fun_grad, x0, callback=None) -> LBFGSResult:
        """Minimise from ``x0`` (not modified). ``callback(self)`` is called after every
        iteration; a truthy return value stops the run (message "stopped by callback")."""
        self.reset(x0, fun_grad)
        while self._status == _RUNNING:
            it = self.n_iter
            self.step(fun_grad)
            if callback is not None and self.n_iter > it and callback(self) and self._status == _RUNNING:
                self._status = _CALLBACK
        return LBFGSResult(self.x.copy(), self.f, self.g.copy(), self.n_iter, self.n_evals,
                           self.converged, self.message)

    # -- state ----------------------------------------------------------------------

    def state_dict(self) -> dict:
        """Copies of everything needed to resume bitwise with :meth:`step`: ``x``, ``g``
        (shape ``(n_params,)``), ``f``, the ring buffers ``S``, ``Y`` (shape ``(memory,
        n_params)``, slot order), ``rho`` (``(memory,)``), ``head`` (next slot), ``count``,
        ``gamma``, ``n_iter``, ``n_evals`` and ``status`` (int code). Numbers and arrays only."""
        return {
            "n_params": self.n_params, "memory": self.memory,
            "x": self.x.copy(), "g": self.g.copy(), "f": self.f,
            "S": np.stack(self._S), "Y": np.stack(self._Y), "rho": self._rho.copy(),
            "head": self._head, "count": self._count, "gamma": self._gamma,
            "n_iter": self.n_iter, "n_evals": self.n_evals, "status": self._status,
        }

    def load_state_dict(self, d: dict) -> None:
        """Restore a :meth:`state_dict` (copied into this optimizer's buffers)."""
        n, m = self.n_params, self.memory
        if int(d.get("n_params", -1)) != n or int(d.get("memory", -1)) != m:
            raise ValueError(f"state is for n_params={d.get('n_params')}, memory={d.get('memory')}; "
                             f"this optimizer has n_params={n}, memory={m}")

        def arr(key, shape):
            if key not in d:
                raise ValueError(f"state dict has no {key!r}")
            a = np.asarray(d[key], dtype=np.float64)
            if a.shape != shape:
                raise ValueError(f"state {key!r} has shape {a.shape}, expected {shape}")
            return a

        x, g = arr("x", (n,)), arr("g", (n,))
        S, Y, rho = arr("S", (m, n)), arr("Y", (m, n)), arr("rho", (m,))
        head, count = int(d["head"]), int(d["count"])
        status = int(d["status"])
        if not (0 <= head < m and 0 <= count <= m) or status not in _MESSAGES:
            raise ValueError(f"invalid state: head={head}, count={count}, status={status}")
        np.copyto(self.x, x)
        np.copyto(self.g, g)
        for i in range(m):
            np.copyto(self._S[i], S[i])
            np.copyto(self._Y[i], Y[i])
        np.copyto(self._rho, rho)
        self.f = float(d["f"])
        self._head, self._count = head, count
        self._gamma = float(d["gamma"])
        self.n_iter, self.n_evals = int(d["n_iter"]), int(d["n_evals"])
        self._status = status

    # -- internals ------------------------------------------------------------------

    def _direction(self) -> float:
        """Write d = -H g into ``_d`` (two-loop recursion); return g'd (< 0 unless g = 0).
        Falls back to d = -g (clearing the memory) if d is not a descent direction."""
        d, tmp, g = self._d, self._tmp, self.g
        m, head, count = self.memory, self._head, self._count
        if count > 0:
            S, Y, rho, alpha = self._S, self._Y, self._rho, self._alpha
            np.copyto(d, g)
            for k in range(count):                    # newest to oldest
                i = (head - 1 - k) % m
                a = rho[i] * self._dot(S[i], d)
                alpha[i] = a
                np.multiply(Y[i], a, out=tmp)
                np.subtract(d, tmp, out=d)
            np.multiply(d, self._gamma, out=d)
            if self._h0 is not None:
                np.multiply(d, self._h0, out=d)
            for k in range(count - 1, -1, -1):        # oldest to newest
                i = (head - 1 - k) % m
                b = rho[i] * self._dot(Y[i], d)
                np.multiply(S[i], alpha[i] - b, out=tmp)
                np.add(d, tmp, out=d)
            np.negative(d, out=d)
            gtd = self._dot(g, d)
            if gtd < 0.0 and math.isfinite(gtd):
                return gtd
            self._clear_memory()
        np.negative(g, out=d)
        if self._h0 is not None:
            np.multiply(d, self._h0, out=d)
        return self._dot(g, d)

    def _trial(self, fun_grad, a: float):
        """Evaluate at x + a d into the trial buffers; return (f, directional derivative)."""
        xt = self._xt
        np.multiply(self._d, a, out=xt)
        np.add(self.x, xt, out=xt)
        f = self._eval(fun_grad, xt, self._gt)
        return f, self._dot(self._gt, self._d)

    def _keep_trial_as_lo(self) -> None:
        self._xt, self._xlo = self._xlo, self._xt
        self._gt, self._glo = self._glo, self._gt

    def _line_search(self, fun_grad, gtd0: float, a: float):
        """Strong-Wolfe line search along ``_d`` from ``x`` starting with step ``a``.

        Returns (outcome, f) with outcome _LS_TRIAL (accepted point in the trial
        buffers), _LS_LO (best sufficient-decrease point, in the lo buffers) or
        _LS_FAIL (no point with sufficient decrease; x unchanged).
        """
        f0, c1, max_ls = self.f, self.c1, self.max_ls
        curv = -self.c2 * gtd0                 # strong Wolfe: |phi'(a)| <= curv
        tau = _NOISE_EPS * abs(f0)
        f_approx = f0 + tau
        if -gtd0 <= tau:
            return self._line_search_noisy(fun_grad, gtd0, a, f_approx)
        # lo: the lowest point with sufficient decrease so far (a = 0: the current x)
        a_lo, f_lo, d_lo, have_lo = 0.0, f0, gtd0, False
        a_prev, f_prev, d_prev = 0.0, f0, gtd0
        n = 0
        bracketed = False
        # phase 1: bracket (Nocedal & Wright Alg. 3.5)
        while n < max_ls:
            f, dphi = self._trial(fun_grad, a)
            n += 1
            finite = math.isfinite(f) and math.isfinite(dphi)
            if not finite or f > f0 + c1 * a * gtd0 or (n > 1 and f >= f_prev):
                if finite and abs(dphi) <= curv and f <= f_approx:
                    return _LS_TRIAL, f
                a_hi, f_hi, d_hi, hi_finite = a, f, dphi, finite
                bracketed = True
                break
            if abs(dphi) <= curv:
                return _LS_TRIAL, f
            self._keep_trial_as_lo()
            a_lo, f_lo, d_lo, have_lo = a, f, dphi, True
            if dphi >= 0.0:
                a_hi, f_hi, d_hi, hi_finite = a_prev, f_prev, d_prev, True
                bracketed = True
                break
            # extrapolate: safeguarded cubic step in [a + 1.1 (a - a_prev), a + 4 (a - a_prev)]
            lo_b, hi_b = a + 1.1 * (a - a_prev), a + 4.0 * (a - a_prev)
            a_new = _cubic_min(a_prev, f_prev, d_prev, a, f, dphi)
            if not (a_new <= hi_b):            # no minimiser (nan) or beyond the bound
                a_new = hi_b
            elif a_new < lo_b:
                a_new = lo_b
            a_prev, f_prev, d_prev = a, f, dphi
            a = a_new
        # phase 2: zoom between lo (sufficient decrease, lowest f) and hi (Alg. 3.6)
        # bisect when the bracket did not shrink to 0.66 of its width two trials ago
        # (More & Thuente's safeguard against slow interpolation progress)
        width = abs(a_hi - a_lo) if bracketed else 0.0
        width1 = 2.0 * width
        bisect = False
        while bracketed and n < max_ls:
            w = a_hi - a_lo
            if abs(w) <= _EPS * max(abs(a_lo), abs(a_hi)):
                break
            if bisect:
                a = a_lo + 0.5 * w
            elif not hi_finite:
                a = a_lo + 0.1 * w             # overflow at hi: retreat far towards lo
            else:
                a = _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi)
                t = (a - a_lo) / w
                if not (0.0 < t < 1.0):
                    a = _quad_min(a_lo, f_lo, d_lo, a_hi, f_hi)
                    t = (a - a_lo) / w
                    if not (0.0 < t < 1.0):
                        t = 0.5
                t = min(max(t, 1e-3), 0.9)    # keep off the ends of the interval
                a = a_lo + t * w
            f, dphi = self._trial(fun_grad, a)
            n += 1
            finite = math.isfinite(f) and math.isfinite(dphi)
            if not finite or f > f0 + c1 * a * gtd0 or f >= f_lo:
                if finite and abs(dphi) <= curv and f <= f_approx:
                    return _LS_TRIAL, f
                a_hi, f_hi, d_hi, hi_finite = a, f, dphi, finite
            else:
                if abs(dphi) <= curv:
                    return _LS_TRIAL, f
                if dphi * (a_hi - a_lo) >= 0.0:
                    a_hi, f_hi, d_hi, hi_finite = a_lo, f_lo, d_lo, True
                self._keep_trial_as_lo()
                a_lo, f_lo, d_lo, have_lo = a, f, dphi, True
            new_width = abs(a_hi - a_lo)
            bisect = new_width >= 0.66 * width1
            width1, width = width, new_width
        if have_lo:
            return _LS_LO, f_lo
        return _LS_FAIL, f0

    def _line_search_noisy(self, fun_grad, gtd0: float, a: float, f_ok: float):
        """Line search for when differences of f are at rounding level (Hager & Zhang's
        approximate Wolfe conditions): accept a step with ``|phi'(a)| <= c2 |phi'(0)|``
        and ``f <= f_ok``; bracket on the sign of ``phi'`` and interpolate it by secants
        (exact for a quadratic). Same outcomes as :meth:`_line_search`."""
        max_ls = self.max_ls
        curv = -self.c2 * gtd0
        a_lo, f_lo, d_lo, have_lo = 0.0, self.f, gtd0, False
        a_hi, f_hi, d_hi, hi_slope = 0.0, math.nan, math.nan, False
        bracketed = False
        width = width1 = math.inf
        bisect = False
        n = 0
        while n < max_ls:
            f, dphi = self._trial(fun_grad, a)
            n += 1
            ok = math.isfinite(f) and math.isfinite(dphi) and f <= f_ok
            if ok and abs(dphi) <= curv:
                return _LS_TRIAL, f
            if ok and dphi < 0.0:
                a_p, d_p = a_lo, d_lo
                self._keep_trial_as_lo()
                a_lo, f_lo, d_lo, have_lo = a, f, dphi, True
            else:
                a_hi, f_hi, d_hi, hi_slope = a, f, dphi, ok
                bracketed = True
            if not bracketed:
                # extrapolate along the secant of phi' in [a + 1.1 (a - a_p), a + 4 (a - a_p)]
                step = a_lo - a_p
                a = a_lo + 4.0 * step
                if d_lo > d_p:
                    a = min(a, max(a_lo - d_lo * step / (d_lo - d_p), a_lo + 1.1 * step))
                continue
            w = a_hi - a_lo
            if abs(w) <= _EPS * max(abs(a_lo), abs(a_hi)):
                break
            new_width = abs(w)
            bisect, width1, width = new_width >= 0.66 * width1, width, new_width
            if bisect:
                t = 0.5
            else:
                if hi_slope:                   # phi'(lo) < 0 <= phi'(hi): secant root of phi'
                    t = d_lo / (d_lo - d_hi)
                elif math.isfinite(f_hi):      # f rose above f_ok: quadratic through f values
                    t = (_quad_min(a_lo, f_lo, d_lo, a_hi, f_hi) - a_lo) / w
                else:
                    t = 0.1
                if not (0.0 < t < 1.0):
                    t = 0.5
                t = min(max(t, 1e-3), 0.9)
            a = a_lo + t * w
        if have_lo:
            return _LS_LO, f_lo
        return _LS_FAIL, self.f
