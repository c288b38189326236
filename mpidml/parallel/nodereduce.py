"""The mini-batch step's sum over ranks, on a node through shared memory instead of MPI_Allreduce.

A mini-batch step reduces a small buffer (P + 4 float64: the gradient sum and four scalars)
right after the kernel has swept ~1 MB of rows through this core's L2. MPI_Allreduce then runs
cache-cold: its code and state (collective selection, free lists, the shared-memory transport's
queues) come back from L3: 5-15 us after the kernel on the 2-core VM this was measured on,
depending on the hour, vs ~1.5 us back to back (``scripts/bench_step.py``'s
``allreduce_after_kernel``; the node sum right after the kernel: ~4 us). Here the ranks of a node sum through
one shared segment with a handful of cache lines and a few dozen instructions on the path.

Algorithm (``node_allreduce``; ``seq`` counts the calls, the same on every rank):

* every rank writes its buffer into its slot of the segment (two sets of slots, by the parity
  of ``seq``) and then publishes ``seq`` in its own flag line (a release store);
* one node: every rank waits until all flags reach ``seq`` (acquire loads) and sums the slots
  in local-rank order: every rank computes the same sum in the same order, so all ranks get
  bitwise the same result (MPI_Allreduce promises no fixed order);
* several nodes: the node's first rank (its leader) sums its node's slots in that order, then
  one MPI_Allreduce runs among the leaders, and the leader publishes the result in the
  segment for the rest of its node (result slot and flag, also by parity).

Waiting spins on the flag with the CPU's pause hint, and after ~50 us gives the core away
(``sched_yield``) at each poll: where ranks outnumber cores (``--oversubscribe``) the rank
being waited for needs it, as Open MPI's own progress loop yields when oversubscribed.

Two sets of slots are enough: a rank writes the set of call ``seq`` only after it has seen
every flag of call ``seq - 1``, which each rank publishes after it finished reading call
``seq - 2``'s set. Nothing waits without bound on its own: a rank that fails or exits makes
the MPI runtime end the job (as with a blocking MPI_Allreduce), and ``--timeout``'s watchdog
sees no step finish.

The segment is a file in ``/dev/shm`` that the node's first rank creates and removes as soon as
every rank of the node has mapped it, so a crash leaves nothing behind (unless it falls between
those two moments of the set-up: then a file of a few KB named ``mpidml-<random hex>``). Where it cannot
be made (no ``/dev/shm``, too little space), every rank uses MPI_Allreduce (a collective
decision).
"""

from __future__ import annotations

import ctypes
import mmap
import os
import platform
import uuid

import numpy as np
from llvmlite import ir
from mpi4py import MPI
from numba import njit
from numba.core import cgutils, types
from numba.extending import intrinsic

from . import native

__all__ = ["NodeReducer", "node_allreduce", "node_publish", "node_arrived", "node_complete"]

LINE = 8  # float64 / int64 words per cache line: every flag has a line of its own
# Every rank of a node reads all of the node's slots: local_size x n x 8 bytes per call. Beyond
# this MPI_Allreduce is used instead (its reduce-scatter / allgather moves ~2n x 8 bytes per rank
# whatever the node's size): e.g. up to 16 384 values with 2 ranks per node, 512 with 64.
MAX_READ_BYTES = 256 * 1024


@intrinsic
def _load_acquire(typingctx, arr, idx):
    """arr[idx] (int64 array) as an atomic load with acquire ordering: later loads stay after it."""

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        return builder.load_atomic(ptr, "acquire", 8)

    return types.int64(arr, idx), codegen


@intrinsic
def _store_release(typingctx, arr, idx, val):
    """arr[idx] = val (int64 array) as an atomic store with release ordering: earlier stores
    become visible to another core no later than this one."""

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, [args[1]])
        builder.store_atomic(args[2], ptr, "release", 8)
        return context.get_dummy_value()

    return types.void(arr, idx, types.int64), codegen


_X86 = platform.machine().lower() in ("x86_64", "amd64", "i686", "x86")


@intrinsic
def _spin_pause(typingctx):
    """The CPU's spin-wait hint (x86 ``pause``: less power, no memory-order flush when the flag
    changes); nothing on other architectures."""

    def codegen(context, builder, sig, args):
        if _X86:
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), []),
                                                "llvm.x86.sse2.pause")
            builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


native.add_symbols(ctypes.CDLL(None), ("sched_yield",))  # libc's, called by name like MPI's


@intrinsic
def _sched_yield(typingctx):
    """``sched_yield()``: give the core to another runnable process (the one being waited for,
    when ranks outnumber cores)."""

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        builder.call(fn, [])
        return context.get_dummy_value()

    return types.void(), codegen


SPINS_BEFORE_YIELD = 1000  # ~50 us of spinning; then every poll yields the core (oversubscribed ranks)


@njit(nogil=True, inline="always")
def _wait_for(flags, idx, seq):
    spins = 0
    while _load_acquire(flags, idx) < seq:
        if spins < SPINS_BEFORE_YIELD:
            spins += 1
            _spin_pause()
        else:
            _sched_yield()


@njit(nogil=True, inline="always")
def node_publish(mine, seg, flags, state, local_rank, local_size, stride):
    """The first half of :func:`node_allreduce`: this rank's buffer into its slot of this call's
    set, then its flag (a release store). Returns the call's ``seq`` for :func:`node_arrived` and
    :func:`node_complete`. Not cached: compiled into its callers."""
    n = mine.size
    seq = state[0] + 1
    state[0] = seq
    par = seq & 1
    data0 = LINE * (local_size + 1) + par * local_size * stride  # this call's set of slots
    mine_at = data0 + local_rank * stride
    for i in range(n):
        seg[mine_at + i] = mine[i]
    _store_release(flags, LINE * local_rank, seq)
    return seq


@njit(nogil=True, inline="always")
def node_arrived(flags, seq, local_rank, local_size, n_nodes):
    """True when :func:`node_complete` for call ``seq`` would find no flag to wait for on this
    node: every rank of the node published (a node's leader, or any rank of a one-node job), or
    the leader published the result (the other ranks of a node, several nodes). A step loop
    polls it to work while it waits (the leader's MPI_Allreduce among the nodes still blocks)."""
    if n_nodes == 1 or local_rank == 0:
        for q in range(local_size):
            if _load_acquire(flags, LINE * q) < seq:
                return False
        return True
    return _load_acquire(flags, LINE * local_size) >= seq


@njit(nogil=True, inline="always")
def node_complete(n, out, seg, flags, seq, local_rank, local_size, stride, n_nodes, dtype_h, op_h, leaders_h):
    """The second half of :func:`node_allreduce` for call ``seq`` (:func:`node_publish`'s): out[:n]
    = the sum over all ranks. Returns the MPI error code of the leaders' MPI_Allreduce."""
    par = seq & 1
    data0 = LINE * (local_size + 1) + par * local_size * stride  # this call's set of slots
    if n_nodes == 1 or local_rank == 0:
        for q in range(local_size):
            _wait_for(flags, LINE * q, seq)
        for i in range(n):
            out[i] = seg[data0 + i]
        for q in range(1, local_size):
            at = data0 + q * stride
            for i in range(n):
                out[i] += seg[at + i]
        if n_nodes == 1:
            return 0
    res0 = LINE * (local_size + 1) + 2 * local_size * stride + par * stride  # this call's result slot
    rc = 0
    if local_rank == 0:
        rc = native.mpi_allreduce(out, seg[res0:res0 + n], n, dtype_h, op_h, leaders_h)
        for i in range(n):
            out[i] = seg[res0 + i]
        _store_release(flags, LINE * local_size, seq)  # the node's result flag (also on error: no one waits)
    else:
        _wait_for(flags, LINE * local_size, seq)
        for i in range(n):
            out[i] = seg[res0 + i]
    return rc


@njit(cache=True, nogil=True)
def node_allreduce(mine, out, seg, flags, state, local_rank, local_size, stride, n_nodes, dtype_h, op_h,
                   leaders_h):
    """out = the sum of ``mine`` over all ranks (see the module docstring). Returns the MPI error
    code of the leaders' MPI_Allreduce (0: success; always 0 on one node).

    mine, out: float64 (n,), n <= stride; seg: float64 view of the node's segment, flags: int64
    view of the same memory (:class:`NodeReducer`'s layout); state: int64 (1,), the call count
    (incremented here); local_rank, local_size: this rank's place in its node; n_nodes: nodes in
    the job; dtype_h, op_h, leaders_h: MPI_DOUBLE, MPI_SUM and the leaders' communicator
    (leaders only; used when n_nodes > 1). :func:`node_publish` then :func:`node_complete`.
    """
    seq = node_publish(mine, seg, flags, state, local_rank, local_size, stride)
    return node_complete(mine.size, out, seg, flags, seq, local_rank, local_size, stride, n_nodes, dtype_h, op_h,
                         leaders_h)


def _compile(comm) -> None:
    """Collective: compile (or load) :func:`node_allreduce` on rank 0 first, then on the others,
    which load what it saved (no two ranks write a cache file at once). The call sums over a
    private one-rank segment: no communication."""

    def local_call():
        seg = np.zeros(LINE * 2 + 2 * LINE + 2 * LINE)
        one = np.zeros(1)
        node_allreduce(one, one, seg, seg.view(np.int64), np.zeros(1, dtype=np.int64), 0, 1, LINE, 1, 0, 0, 0)

    if comm.rank == 0:
        local_call()
    comm.Barrier()
    if comm.rank != 0:
        local_call()


_KEYVAL = None  # MPI attribute key of the reducers cached on a communicator (NodeReducer.shared)


def _close_cached(comm, keyval, cached) -> None:
    for red in cached.values():
        red.close()


class NodeReducer:
    """Sums of a float64 buffer of ``n`` values over ``comm``: shared memory on each node, one
    MPI_Allreduce among the nodes' first ranks. Collective to construct (over ``comm``).

    ``node_comm``: the ranks that share memory (default ``comm.Split_type(COMM_TYPE_SHARED)``;
    tests pass a split of one node's ranks to exercise the several-node path). After
    construction ``available`` says whether every rank got the segment; if not, nobody uses it.
    ``args``: the trailing arguments of :func:`node_allreduce` after ``mine, out`` (for the
    compiled step loop, which calls it directly).
    """

    def __init__(self, comm, n: int, node_comm=None):
        self.comm = comm
        self.n = int(n)
        self.stride = -(-self.n // LINE) * LINE
        self.node = node_comm if node_comm is not None else comm.Split_type(MPI.COMM_TYPE_SHARED)
        self.local_rank, self.local_size = self.node.rank, self.node.size
        largest = np.array([self.local_size], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, largest, op=MPI.MAX)
        self.max_local_size = int(largest[0])  # the most ranks any node has (1: nothing to share)
        self._map = None
        self.args = self.seg = self.flags = self.state = None
        self.n_nodes, self.leaders = None, MPI.COMM_NULL  # set below unless the reducer declines first
        if self.max_local_size * self.n * 8 > MAX_READ_BYTES:  # the same decision on every rank
            self.available = False
            self.why_not = (f"{self.n} values x {self.max_local_size} ranks on a node exceed the shared-memory "
                            f"sum's {MAX_READ_BYTES // 1024} KiB per rank")
            if node_comm is None:
                self.node.Free()
            self.node = None
            return
        is_leader = self.local_rank == 0
        leaders = comm.Split(0 if is_leader else MPI.UNDEFINED, comm.rank)
        count = np.array([leaders.size if is_leader else 0], dtype=np.int64)
        self.node.Bcast(count, root=0)  # the buffer API throughout: nothing received is unpickled
        self.n_nodes = int(count[0])
        if is_leader and self.n_nodes == 1:  # one node: no MPI call after this
            leaders.Free()
            leaders = MPI.COMM_NULL
        self.leaders = leaders
        words = LINE * (self.local_size + 1) + 2 * self.local_size * self.stride + 2 * self.stride
        err = ""
        path = None
        try:
            if is_leader:
                path = os.path.join("/dev/shm", f"mpidml-{uuid.uuid4().hex}")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.posix_fallocate(fd, 0, words * 8)  # the pages exist now: no SIGBUS later
                except OSError:
                    os.unlink(path)
                    raise
                finally:
                    os.close(fd)
        except OSError as e:
            err, path = f"{type(e).__name__}: {e}", None
        name = np.zeros(256, dtype=np.uint8)  # the segment's path, or empty: the leader could not make it
        if path is not None:
            name[:len(path)] = np.frombuffer(path.encode(), dtype=np.uint8)
        self.node.Bcast(name, root=0)
        path = bytes(name).rstrip(b"\0").decode() or None
        if path is not None:
            try:
                fd = os.open(path, os.O_RDWR)
                try:
                    self._map = mmap.mmap(fd, words * 8)
                finally:
                    os.close(fd)
            except OSError as e:
                err = f"{type(e).__name__}: {e}"
        self.node.Barrier()
        if node_comm is None:  # ours: only needed to set up
            self.node.Free()
            self.node = None
        if is_leader and path is not None:
            try:
                os.unlink(path)  # every rank of the node has it mapped
            except OSError:
                pass
        ok = self._map is not None
        every = np.array([1 if ok else 0], dtype=np.int64)
        comm.Allreduce(MPI.IN_PLACE, every, op=MPI.MIN)
        self.available = bool(every[0])
        self.why_not = None if self.available else f"no shared segment: {err or 'another rank could not map it'}"
        if not self.available:
            self.close()
            return
        self.seg = np.frombuffer(self._map, dtype=np.float64)
        self.flags = np.frombuffer(self._map, dtype=np.int64)
        self.state = np.zeros(1, dtype=np.int64)
        leaders_h = native.handle(self.leaders) if self.leaders != MPI.COMM_NULL else 0
        self.args = (self.seg, self.flags, self.state, self.local_rank, self.local_size, self.stride,
                     self.n_nodes, native.dtype_handle(np.float64), native.handle(MPI.SUM), leaders_h)
        _compile(comm)
        zeros = np.zeros(self.n)
        self.allreduce(zeros, zeros)  # the first sum, checked
        if zeros.any():
            raise RuntimeError("NodeReducer: the first sum of zeros is not zero")

    @classmethod
    def shared(cls, comm, n: int) -> "NodeReducer":
        """Collective: the reducer of ``n`` values cached on ``comm`` (an MPI attribute, closed
        when the communicator is freed), made on the first call. Every trainer on the same
        communicator and buffer size uses one segment and one call count: the set-up's ~8
        collectives (run cache-cold: ~0.5 ms) are paid once per process, not per fit."""
        global _KEYVAL
        if _KEYVAL is None:
            _KEYVAL = MPI.Comm.Create_keyval(delete_fn=_close_cached)
        cached = comm.Get_attr(_KEYVAL)
        if cached is None:
            cached = {}
            comm.Set_attr(_KEYVAL, cached)
        red = cached.get(int(n))
        if red is None:  # the same on every rank: each made the same calls on this communicator
            red = cls(comm, n)
            if red.available:  # a failed set-up (e.g. /dev/shm full) is tried again next time
                cached[int(n)] = red
        return red

    def allreduce(self, mine: np.ndarray, out: np.ndarray) -> None:
        """out = sum of mine over all ranks (float64 (n,) each; mine and out may be the same
        array). Raises mpi4py.MPI.Exception if the leaders' MPI_Allreduce failed."""
        if self.args is None:
            raise RuntimeError(f"NodeReducer: not available ({self.why_not or 'closed'})")
        if mine.size != self.n or out.size != self.n:
            raise ValueError(f"NodeReducer: buffers of {self.n} values expected, got {mine.size} and {out.size}")
        rc = node_allreduce(mine, out, *self.args)
        if rc != 0:
            raise MPI.Exception(int(rc))

    def close(self) -> None:
        """Unmap the segment (no collective). The reducer is unusable afterwards."""
        self.seg = self.flags = None
        self.args = None
        if self._map is not None:
            try:
                self._map.close()
            except BufferError:  # a view of it is still alive somewhere: the mapping goes with the process
                pass
            self._map = None
        self.available = False
