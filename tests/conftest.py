"""Test-suite plumbing shared by the serial and the MPI runs.

* Each run writes its pass/fail/skip counts to $MPIDML_TEST_TALLY so the test
  script can print one closing line for the whole suite.
"""

import json
import os
import sys

import pytest

from mpidml.jitcache import configure_numba_cache

configure_numba_cache()  # before anything imports Numba: a cache keyed by the kernels' source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rank_size():
    if "--with-mpi" not in sys.argv:
        return 0, 1
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def pytest_terminal_summary(terminalreporter):
    tally = os.environ.get("MPIDML_TEST_TALLY")
    if not tally:
        return
    rank, size = _rank_size()
    if rank != 0:
        return
    stats = terminalreporter.stats
    counts = {k: len([r for r in stats.get(k, []) if getattr(r, "when", "call") in ("call", "setup", "teardown")])
              for k in ("passed", "failed", "skipped", "error")}
    counts["size"] = size
    label = os.environ.get("MPIDML_TEST_LABEL", "run")
    with open(os.path.join(tally, f"{label}.json"), "w") as fh:
        json.dump(counts, fh)


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)
