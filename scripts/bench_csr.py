#!/usr/bin/env python3
"""CSR (sparse text) logistic kernel vs scipy.sparse, and vs the dense kernel per stored value (JSON out).

    .venv/bin/python scripts/bench_csr.py                    # 200k rows, 2^18 hashed features, 100 nnz/row
    .venv/bin/python scripts/bench_csr.py --quick

One thread (set before NumPy/Numba load). In the same run, ``--repeats`` times, interleaved:

* ``csr``: ``mpidml.kernels.csr_logistic_loss_grad`` over all rows (loss + gradient, one pass);
* ``scipy``: the same quantities with scipy.sparse and NumPy: ``z = A @ w + b``, the stable
  log-loss, ``A.T @ (sigmoid(z) - y)`` (two passes over A plus the vector work);
* ``dense``: ``mpidml.kernels.logistic_loss_grad`` on a dense X holding as many values as the
  CSR matrix stores (rows x 100 columns), for "as fast as the dense ones": seconds per stored
  value, and bytes of input read per second (CSR reads 8 + 4 bytes per value, dense 8).

Reports min and median; checks that the CSR kernel's loss and gradient match SciPy's.
"""

from __future__ import annotations

import os
import sys

for _v in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=1 << 18, help="columns (hashed feature space)")
    ap.add_argument("--nnz-per-row", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeats = 20_000, 2

    from mpidml.jitcache import configure_numba_cache

    configure_numba_cache()
    import numpy as np
    import scipy.sparse as sp

    from mpidml import kernels

    rng = np.random.default_rng(0)
    n, d, k = args.rows, args.features, args.nnz_per_row
    # Zipf-like column popularity, as hashed words have; sorted, distinct columns per row.
    cols = np.minimum((rng.pareto(1.1, size=n * k) * 50).astype(np.int64), d - 1)
    A = sp.csr_matrix((rng.random(n * k) + 0.5, cols, np.arange(0, n * k + 1, k, dtype=np.int64)), shape=(n, d))
    A.sum_duplicates()
    A.sort_indices()
    indptr, indices, data = A.indptr.astype(np.int64), A.indices.astype(np.int32), A.data.astype(np.float64)
    nnz = int(data.size)
    w_true = rng.standard_normal(d) * 0.05
    y = (rng.random(n) < 1 / (1 + np.exp(-(A @ w_true)))).astype(np.float64)
    params = np.append(rng.standard_normal(d) * 0.01, 0.1)
    sw = np.empty(0)
    rows = np.arange(n, dtype=np.int64)
    grad = np.zeros(d + 1)
    Xd = rng.standard_normal((n, k))  # the dense kernel on the same number of stored values
    pd = rng.standard_normal(k + 1) * 0.1
    gd = np.zeros(k + 1)

    def run_csr():
        grad[:] = 0.0
        return kernels.csr_logistic_loss_grad(indptr, indices, data, y, sw, params, rows, grad, True)

    At = A.T.tocsr()

    def run_scipy():
        z = A @ params[:-1] + params[-1]
        loss = float(np.sum(np.logaddexp(0.0, z) - y * z))
        r = 1.0 / (1.0 + np.exp(-z)) - y
        return loss, np.append(At @ r, r.sum())

    def run_dense():
        gd[:] = 0.0
        return kernels.logistic_loss_grad(Xd, y, sw, pd, rows, gd, True)

    loss_csr = run_csr()
    loss_ref, grad_ref = run_scipy()
    run_dense()
    t = {"csr": [], "scipy": [], "dense": []}
    for _ in range(args.repeats):
        for name, fn in (("csr", run_csr), ("scipy", run_scipy), ("dense", run_dense)):
            t0 = time.perf_counter()
            fn()
            t[name].append(time.perf_counter() - t0)
    S = benchlib.stats
    csr_bytes, dense_bytes = nnz * (8 + 4) + (n + 1) * 8, n * k * 8
    out = {
        "benchmark": "bench_csr", "rows": n, "features": d, "nnz": nnz, "nnz_per_row": nnz / n,
        "repeats": args.repeats, "unit": "seconds (min, median)",
        "seconds": {name: S(v) for name, v in t.items()},
        "ns_per_stored_value": {name: {q: S(v)[q] / (nnz if name != "dense" else n * k) * 1e9
                                       for q in ("min", "median")} for name, v in t.items()},
        "input_gb_per_s": {"csr": S([csr_bytes / s / 1e9 for s in t["csr"]]),
                           "dense": S([dense_bytes / s / 1e9 for s in t["dense"]])},
        "ratios": {"scipy_over_csr": {q: S(t["scipy"])[q] / S(t["csr"])[q] for q in ("min", "median")},
                   "csr_over_dense_per_value": {q: (S(t["csr"])[q] / nnz) / (S(t["dense"])[q] / (n * k))
                                                for q in ("min", "median")}},
        "check_vs_scipy": {"loss_rel_diff": abs(loss_csr - loss_ref) / abs(loss_ref),
                           "grad_rel_diff": float(np.abs(grad - grad_ref).max() / np.abs(grad_ref).max())},
        "command": " ".join([os.path.relpath(sys.executable), "scripts/bench_csr.py"] + sys.argv[1:]),
        "machine": benchlib.machine(),
    }
    benchlib.print_json(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
