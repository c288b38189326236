"""mpidml.parallel.nodereduce: the step's shared-memory sum over ranks against NumPy.

Run under mpirun -n 1, 2, 3. Each case checks the sum on every rank against the sum in the
reducer's documented order (local ranks in order, then the nodes) computed here from all
ranks' inputs, bitwise where that order is fixed, and that every rank holds the same bits.
"One node" is the real node; the several-node path (leaders' MPI_Allreduce, result slots)
runs on the same node with the ranks split into pretend nodes of two.
"""

import os

import numpy as np
import pytest
from mpi4py import MPI

from mpidml.parallel.nodereduce import NodeReducer, node_allreduce

pytestmark = pytest.mark.mpi


def _reference(inputs, groups):
    """The reducer's sum: per group (node) in rank order, then the groups' sums in order."""
    node_sums = []
    for g in groups:
        s = inputs[g[0]].copy()
        for r in g[1:]:
            s += inputs[r]
        node_sums.append(s)
    total = node_sums[0].copy()
    for s in node_sums[1:]:
        total += s
    return total


@pytest.mark.parametrize("pretend_node", [None, 2])
@pytest.mark.parametrize("n", [1, 69, 1027])
def test_node_allreduce_sums_like_numpy_on_every_rank(n, pretend_node):
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    node = None if pretend_node is None else comm.Split(rank // pretend_node, rank)
    red = NodeReducer(comm, n, node_comm=node)
    assert red.available, red.why_not
    groups = ([list(range(size))] if pretend_node is None else
              [list(range(a, min(a + pretend_node, size))) for a in range(0, size, pretend_node)])
    assert red.n_nodes == len(groups)
    rng = np.random.default_rng([7, rank, n])
    out = np.empty(n)
    calls_before = int(red.state[0])  # the constructor's first, checked sum
    # many calls in a row: the two sets of slots are reused, the flags keep counting
    for call in range(25):
        mine = rng.standard_normal(n) * 10.0 ** rng.integers(-3, 4, n)
        before = mine.copy()
        if call % 3 == 2:  # in place, as the Python loop calls it
            out = mine
            red.allreduce(mine, mine)
        else:
            red.allreduce(mine, out)
            assert np.array_equal(mine, before)  # the input is left alone
        inputs = comm.allgather(before)
        want = _reference(inputs, groups)
        if len(groups) <= 2:  # the leaders' MPI sum of two values is exact in either order
            np.testing.assert_array_equal(out, want)
        else:
            np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12 * np.abs(np.stack(inputs)).sum(0).max())
        everyone = comm.allgather(out.copy())
        for other in everyone:
            assert np.array_equal(other, everyone[0])  # bitwise the same on all ranks
    assert red.state[0] == calls_before + 25
    red.close()


def test_node_allreduce_ranks_arriving_late():
    """A rank that is slow to arrive: the others wait for it, nothing is summed early."""
    import time

    comm = MPI.COMM_WORLD
    red = NodeReducer(comm, 5)
    assert red.available
    out = np.empty(5)
    for call in range(6):
        if comm.rank == call % comm.size:
            time.sleep(0.05)
        red.allreduce(np.full(5, float(comm.rank + call)), out)
        want = sum(float(r + call) for r in range(comm.size))
        np.testing.assert_array_equal(out, np.full(5, want))
    red.close()


def test_node_allreduce_rejects_wrong_sizes():
    comm = MPI.COMM_WORLD
    red = NodeReducer(comm, 4)
    with pytest.raises(ValueError, match="4 values"):
        red.allreduce(np.zeros(3), np.zeros(3))
    red.close()
    assert node_allreduce is not None


def test_no_shared_segment_means_mpi_on_every_rank(monkeypatch):
    """If the node's first rank cannot make the segment (here: /dev/shm full), no rank uses
    the reducer and the trainer says why; training still runs (MPI_Allreduce)."""
    from mpidml.comm import Context
    from mpidml.parallel import nodereduce

    from helpers import make_problem, train

    def full(fd, offset, length):
        raise OSError(28, "No space left on device")

    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        monkeypatch.setattr(nodereduce.os, "posix_fallocate", full)
    red = NodeReducer(comm, 8)
    assert not red.available and red.args is None
    assert not any(f.startswith("mpidml-") for f in os.listdir("/dev/shm"))  # nothing left behind
    assert "No space left" in red.why_not if comm.rank == 0 else red.why_not
    X, y = make_problem("logistic", n=301, d=5, seed=1)
    mine = comm.Dup()  # the trainer's reducer is cached on its communicator: keep this one apart
    got, trainer = train(Context(mine), X, y, model="logistic", optimizer="sgd", lr=0.2, batch_size=32, epochs=1)
    section = trainer.summary_section()["comm"]
    assert section["reduction"] == "mpi"
    if comm.size > 1:
        assert section["mpi_because"].startswith("no shared segment")
    assert np.all(np.isfinite(got))
    monkeypatch.undo()  # the failure is not cached: the next trainer gets the segment
    _, trainer = train(Context(mine), X, y, model="logistic", optimizer="sgd", lr=0.2, batch_size=32, epochs=1)
    assert trainer.summary_section()["comm"]["reduction"] == ("shared memory" if comm.size > 1 else "mpi")
    mine.Free()


def test_reducer_is_cached_on_its_communicator():
    """NodeReducer.shared: one reducer per communicator and size (trainers share it), a new
    one for another size or communicator, closed when its communicator is freed."""
    world = MPI.COMM_WORLD
    comm = world.Dup()
    a = NodeReducer.shared(comm, 7)
    assert NodeReducer.shared(comm, 7) is a and a.available
    b = NodeReducer.shared(comm, 9)
    assert b is not a and b.n == 9
    other = world.Dup()
    c = NodeReducer.shared(other, 7)
    assert c is not a
    out = np.empty(7)
    a.allreduce(np.ones(7), out)
    assert np.array_equal(out, np.full(7, float(world.size)))
    assert a.max_local_size == world.size  # one node here
    comm.Free()
    assert not a.available and a.args is None and not b.available  # closed by the attribute's delete
    c.allreduce(np.ones(7), out)  # the other communicator's is untouched
    assert np.array_equal(out, np.full(7, float(world.size)))
    other.Free()


def test_large_buffers_keep_mpi():
    """Every rank of a node reads all of its slots: past MAX_READ_BYTES per rank the reducer
    declines (the same on every rank, before any segment is made) and MPI_Allreduce is used."""
    from mpidml.parallel import nodereduce

    comm = MPI.COMM_WORLD
    n = nodereduce.MAX_READ_BYTES // (8 * comm.size) + 1
    red = NodeReducer(comm, n)
    assert not red.available and red.args is None and "KiB per rank" in red.why_not
    assert red.n_nodes is None and red.leaders == MPI.COMM_NULL and red.state is None
    with pytest.raises(RuntimeError, match="not available .*KiB per rank"):
        red.allreduce(np.zeros(n), np.zeros(n))
    assert not any(f.startswith("mpidml-") for f in os.listdir("/dev/shm"))
    fits = NodeReducer(comm, n - 1)
    assert fits.available
    fits.close()
