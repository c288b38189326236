"""Run every in-process check of test_ps_mpi.py on the ranks mpirun gives this script.

scripts/test.sh runs test_ps_mpi.py under pytest on 1, 2 and 3 ranks; test_ps_cli.py launches
this script on 4 ranks (``mpirun -n 4 --oversubscribe python tests/ps_checks.py``), so the
4-rank cases (sync == allreduce for SGD with momentum and Adam, sharded servers, ssp bounds,
async convergence) cost one launch. A failing check aborts the job with its traceback; rank 0
prints one line per check and "all N checks passed" at the end.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from mpi4py import MPI  # noqa: E402

from mpidml.comm import install_abort_hook  # noqa: E402

import test_ps_mpi as t  # noqa: E402


def checks():
    for i, (kind, options) in enumerate(t.SYNC_CASES):
        yield f"sync_equals_allreduce[{kind}-{options['optimizer']}-{i}]", t.test_sync_equals_allreduce, (kind, options)
    yield "sync_with_sample_weights_equals_allreduce", t.test_sync_with_sample_weights_equals_allreduce, ()
    for kind in ("logistic", "softmax"):
        yield f"sharded_servers_equal_one_server[{kind}]", t.test_sharded_servers_equal_one_server, (kind,)
    for mode, extra in (("async", {}), ("ssp", {"staleness": 2})):
        yield f"async_and_ssp_reach_the_sklearn_optimum[{mode}]", t.test_async_and_ssp_reach_the_sklearn_optimum, \
            (mode, extra)
    yield "ssp_never_lets_a_worker_run_more_than_s_ahead", t.test_ssp_never_lets_a_worker_run_more_than_s_ahead, ()
    yield "ssp_zero_is_bulk_synchronous", t.test_ssp_zero_is_bulk_synchronous, ()
    for mode in ("sync", "async"):
        yield f"divergence_stops_every_rank[{mode}]", t.test_divergence_stops_every_rank_with_one_error, (mode,)


if __name__ == "__main__":
    install_abort_hook()
    rank, n = MPI.COMM_WORLD.Get_rank(), 0
    for name, fn, args in checks():
        fn(*args)
        n += 1
        if rank == 0:
            print(f"ok {name}", flush=True)
    if rank == 0:
        print(f"all {n} checks passed on {MPI.COMM_WORLD.Get_size()} ranks", flush=True)
