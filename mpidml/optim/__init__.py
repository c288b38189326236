"""Optimizers: rank-local, deterministic, in-place math on one flat float64 vector.

First order (mini-batch SGD, full-batch gradient descent)::

    opt = SGD(n, lr, momentum=0.9)          # or Adam(n, lr)
    sched = make_schedule("cosine", lr, total_steps=T)
    for t in range(T):
        opt.step(params, grad, lr=sched(t))  # params updated in place

Full batch quasi-Newton::

    res = LBFGS(n, tol=1e-8).minimize(fun_grad, x0)   # fun_grad(x, grad_out) -> f

No MPI and no I/O here: every rank runs the same optimizer on the same
allreduced gradient and stays bitwise identical. ``state_dict()`` /
``load_state_dict()`` resume bitwise.
"""

from .adam import Adam
from .lbfgs import LBFGS, LBFGSResult
from .schedules import SCHEDULES, Schedule, make_schedule
from .sgd import SGD

__all__ = ["SGD", "Adam", "LBFGS", "LBFGSResult", "SCHEDULES", "Schedule", "make_schedule"]
