#!/usr/bin/env python3
"""The plain way: distributed L2-regularised logistic regression with mpi4py + NumPy + SciPy's L-BFGS-B.

The baseline that scripts/bench_e2e.py compares mpidml with (issue 6, item 3): what a user
would write without mpidml. Every rank reads its contiguous rows of X and y from the HDF5 file
with h5py, then runs SciPy's L-BFGS-B on the same objective as mpidml,

    f(w, b) = (1/N) sum_i [log(1 + exp(z_i)) - y_i z_i] + (l2/2) ||w||^2,   z_i = x_i.w + b,

where each evaluation is NumPy passes over the rank's rows (z = X @ w + b, then X.T @ (p - y))
and ONE Allreduce of [gradient sum, loss sum]. Every rank runs the optimizer on the reduced
values. Rank 0 writes the model (coef, intercept) to OUT.h5 and a JSON line with the
per-iteration trace (unix time, objective) to stdout.

    mpirun -n 2 .venv/bin/python scripts/baseline_scipy_lbfgs.py DATA.h5 OUT.h5 --l2 1e-4 --tol 1e-8
"""

import time

T_START = time.time()  # noqa: E402 - as early as possible: the trace is on the wall clock

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # one process per core, like mpidml

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402
from scipy.optimize import minimize  # noqa: E402
from scipy.special import expit  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--l2", type=float, default=1e-4)
    ap.add_argument("--tol", type=float, default=1e-8, help="gtol: stop when max |gradient| <= tol")
    ap.add_argument("--max-iter", type=int, default=10000)
    ap.add_argument("--ftol", type=float, default=64 * np.finfo(float).eps,
                    help="also stop when the relative reduction of f is <= ftol (default 64 eps, scikit-learn's "
                    "choice; 0 = stop on the gradient only, like mpidml)")
    args = ap.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    with h5py.File(args.data, "r") as f:
        n, d = f["X"].shape
        lo, hi = rank * n // size, (rank + 1) * n // size
        X = np.ascontiguousarray(f["X"][lo:hi], dtype=np.float64)
        y = np.asarray(f["y"][lo:hi], dtype=np.float64)
    t_loaded = time.time()
    buf = np.empty(d + 2)
    n_evals = [0]
    last = {}

    def fun(params):
        w, b = params[:d], params[d]
        z = X @ w
        z += b
        loss = np.logaddexp(0.0, z).sum() - y @ z
        r = expit(z)
        r -= y
        buf[:d] = X.T @ r
        buf[d] = r.sum()
        buf[d + 1] = loss
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        g = buf[:d + 1] / n
        g[:d] += args.l2 * w
        f = buf[d + 1] / n + 0.5 * args.l2 * float(w @ w)
        n_evals[0] += 1
        last["x"], last["f"] = params.copy(), f
        return f, g

    trace = []

    def callback(xk):
        f = last["f"] if np.array_equal(xk, last["x"]) else fun(xk)[0]
        trace.append((time.time(), f))

    x0 = np.zeros(d + 1)
    trace.append((None, None))
    res = minimize(fun, x0, jac=True, method="L-BFGS-B", callback=callback,
                   options={"maxiter": args.max_iter, "gtol": args.tol, "ftol": args.ftol,
                            "maxcor": 10, "maxls": 50})
    trace[0] = (t_loaded, None)
    if rank == 0:
        tmp = args.out + ".tmp"
        with h5py.File(tmp, "w") as f:
            f["coef"] = res.x[None, :d]
            f["intercept"] = res.x[d:]
            f.attrs["l2"] = args.l2
        os.replace(tmp, args.out)
        print(json.dumps({"objective": float(res.fun), "iterations": int(res.nit), "evaluations": n_evals[0],
                          "message": str(res.message), "ranks": size, "start_unix": T_START,
                          "loaded_unix": t_loaded, "model_written_unix": time.time(),
                          "trace": [[t, f] for t, f in trace[1:]]}))


if __name__ == "__main__":
    main()
