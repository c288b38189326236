"""The communication context: the one place that creates and holds the communicator.

Everything that talks MPI outside ``mpidml.parallel`` goes through a
:class:`Context`: collective agreement on errors, small typed reductions for
metadata and metrics, the abort-on-uncaught-exception hook, and the phase
timers that feed ``summary.json``.

The library ``Dup()``s the communicator it is given so that its messages can
never match a user's own messages on the same communicator.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
import traceback

import numpy as np
from mpi4py import MPI

from .errors import ConfigError, DataError, DivergedError, MpidmlError

# Fixed-size buffer for broadcasting an error message without pickle.
_MSG_BYTES = 4096
# Error classes that can cross ranks, by index (the index travels, not the object).
_ERROR_TYPES = (MpidmlError, ConfigError, DataError, DivergedError)

PHASES = ("io", "compute", "comm", "other")


class PhaseTimers:
    """Wall-clock seconds spent per phase on this rank.

    ``io``: reading data and writing outputs; ``compute``: kernels and
    optimizer math; ``comm``: time inside collectives (including waiting for
    slower ranks, which is where load imbalance shows up); ``other``: the rest
    of the wall time (Python overhead, logging, set-up).
    """

    def __init__(self):
        self.seconds = dict.fromkeys(PHASES[:-1], 0.0)
        self.start = time.perf_counter()

    def add(self, phase: str, seconds: float) -> None:
        self.seconds[phase] += seconds

    def snapshot(self) -> dict:
        wall = time.perf_counter() - self.start
        out = dict(self.seconds)
        out["other"] = max(0.0, wall - sum(self.seconds.values()))
        out["wall"] = wall
        return out


class Context:
    """Communicator, rank and size, plus the collectives the rest of mpidml needs.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator to run on (default ``MPI.COMM_WORLD``). It is
        duplicated so library traffic never mixes with the caller's.
    """

    def __init__(self, comm: MPI.Comm | None = None):
        base = MPI.COMM_WORLD if comm is None else comm
        self.comm = base.Dup()
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        self.is_root = self.rank == 0
        self.timers = PhaseTimers()
        self.watchdog: Watchdog | None = None

    def start_watchdog(self, timeout: float | None) -> None:
        """Start the --timeout watchdog (no-op for None/0)."""
        if timeout:
            self.watchdog = Watchdog(timeout, self.rank)

    def beat(self, what: str = "step", allowance: float = 0.0) -> None:
        """A step (or a start-up phase) completed: tell the watchdog (if any). ``allowance``:
        the next beat may take max(--timeout, allowance) seconds (see Watchdog.beat)."""
        if self.watchdog is not None:
            self.watchdog.beat(what, allowance)

    # -- error agreement -------------------------------------------------
    def agree(self, error: BaseException | None) -> None:
        """Collective: raise the same MpidmlError on every rank if any rank had one.

        Each rank passes the expected error it found locally (or None). The
        lowest failing rank's message is broadcast, so every rank raises an
        identical error marked ``agreed`` and exits the same way; no rank is
        left waiting in a later collective. When that rank is not rank 0 the message
        starts with ``[rank r on HOST]``: a file missing on one node, a bad row in
        one rank's shard (rank 0 also runs the checks made once for the job, which
        need no such prefix).
        """
        flag = np.array([self.rank if error is not None else self.size], dtype=np.int64)
        self.comm.Allreduce(MPI.IN_PLACE, flag, op=MPI.MIN)
        first = int(flag[0])
        if first == self.size:
            return
        msg = np.zeros(_MSG_BYTES, dtype=np.uint8)
        kind = np.zeros(1, dtype=np.int64)
        if self.rank == first:
            where = f"[rank {first} on {socket.gethostname()}] " if first > 0 else ""
            text = (where + str(error)).encode("utf-8", "replace")[: _MSG_BYTES - 1]
            msg[: len(text)] = np.frombuffer(text, dtype=np.uint8)
            kind[0] = _ERROR_TYPES.index(type(error)) if type(error) in _ERROR_TYPES else 0
        self.comm.Bcast(kind, root=first)
        self.comm.Bcast(msg, root=first)
        text = bytes(msg).split(b"\0", 1)[0].decode("utf-8", "replace")
        exc = _ERROR_TYPES[int(kind[0])](text)
        exc.agreed = True
        raise exc

    def collective(self, fn, *args, **kwargs):
        """Run ``fn`` locally, then agree on expected errors across ranks."""
        result, error = None, None
        try:
            result = fn(*args, **kwargs)
        except MpidmlError as e:
            error = e
        self.agree(error)
        return result

    # -- small typed collectives for metadata and metrics ----------------
    def allreduce_scalar(self, value: float, op: str = "sum", dtype=np.float64):
        buf = np.array([value], dtype=dtype)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=_OPS[op])
        return buf[0].item()

    def allreduce_array(self, arr: np.ndarray, op: str = "sum") -> np.ndarray:
        """In-place Allreduce of a typed array; returns it."""
        self.comm.Allreduce(MPI.IN_PLACE, arr, op=_OPS[op])
        return arr

    def bcast_array(self, arr: np.ndarray, root: int = 0) -> np.ndarray:
        self.comm.Bcast(arr, root=root)
        return arr

    def agreed_sum(self, arr: np.ndarray) -> np.ndarray:
        """In-place sum over ranks that is bitwise identical on every rank; returns ``arr``.

        MPI does not promise an Allreduce rounds alike everywhere; when decisions or stored
        statistics depend on the value, reduce to rank 0 and broadcast its bits instead.
        """
        if self.is_root:
            self.comm.Reduce(MPI.IN_PLACE, arr, op=MPI.SUM, root=0)
        else:
            self.comm.Reduce(arr, None, op=MPI.SUM, root=0)
        self.comm.Bcast(arr, root=0)
        return arr

    def gather_floats(self, values, root: int = 0) -> np.ndarray | None:
        """Gather a fixed-length float64 vector from every rank to root: (size, len)."""
        send = np.ascontiguousarray(values, dtype=np.float64)
        recv = np.empty((self.size, send.size), dtype=np.float64) if self.rank == root else None
        self.comm.Gather(send, recv, root=root)
        return recv

    def gather_hostnames(self) -> list[str] | None:
        """Hostnames of all ranks on root (fixed-width byte buffers, no pickle)."""
        name = socket.gethostname().encode()[:255]
        send = np.zeros(256, dtype=np.uint8)
        send[: len(name)] = np.frombuffer(name, dtype=np.uint8)
        recv = np.empty((self.size, 256), dtype=np.uint8) if self.is_root else None
        self.comm.Gather(send, recv, root=0)
        if not self.is_root:
            return None
        return [bytes(r).rstrip(b"\0").decode("utf-8", "replace") for r in recv]

    def barrier(self) -> None:
        self.comm.Barrier()

    def abort(self, code: int = 1) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        MPI.COMM_WORLD.Abort(code)

    def free(self) -> None:
        if self.comm != MPI.COMM_NULL:
            self.comm.Free()


_OPS = {"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}


def install_abort_hook() -> None:
    """Make an uncaught exception on any rank abort the whole job.

    Without this, one rank dies while the others wait forever in their next
    collective. The traceback is printed with the rank prefixed to each line,
    then ``MPI_Abort`` tears down every rank (mpirun exits non-zero).
    """

    def hook(exc_type, exc, tb):
        rank = MPI.COMM_WORLD.Get_rank()
        lines = traceback.format_exception(exc_type, exc, tb)
        text = "".join(lines).rstrip("\n")
        sys.stderr.write("\n".join(f"[rank {rank}] {line}" for line in text.split("\n")) + "\n")
        sys.stderr.flush()
        if MPI.Is_initialized() and not MPI.Is_finalized():
            MPI.COMM_WORLD.Abort(1)
        os._exit(1)

    sys.excepthook = hook


class Watchdog:
    """Abort the whole job when no training step completes within ``timeout`` seconds.

    A hung collective (a dead network link, a stalled rank, a deadlock) would
    otherwise burn the whole allocation. The training loop calls :meth:`beat`
    after every step (one float store); a daemon thread checks the time since
    the last beat and, past the limit, prints one line and calls MPI_Abort
    (exit code 4). If Abort itself cannot get through, the process exits anyway.
    Compiled code that runs many steps in one call (mpidml.parallel.steploop) counts them
    in an int64 array instead (:meth:`watch`); a change of the count is a beat.

    Start-up is watched too (a collective read can hang as well as a step), phase by phase:
    reading the data gets --timeout; from then to the end of the kernels' warm-up, where they
    compile, at least COMPILE_ALLOWANCE seconds, since a cold Numba cache takes tens of seconds
    there (28 s measured for softmax on 2 ranks) and a healthy first run must not be killed by
    a --timeout sized for steps.
    """

    EXIT_CODE = 4
    COMPILE_ALLOWANCE = 600.0  # seconds: the limit while kernels compile, if --timeout is shorter

    def __init__(self, timeout: float, rank: int):
        self.timeout = float(timeout)
        self.rank = rank
        self.last = time.monotonic()
        self.what = "start-up"
        self.limit = self.timeout  # for the phase since the last beat
        self._progress = None  # int64 array whose [0] counts steps done by compiled code
        self._seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpidml-watchdog", daemon=True)
        self._thread.start()

    def beat(self, what: str = "step", allowance: float = 0.0) -> None:
        """``what`` completed; the next beat must come within max(timeout, allowance) seconds."""
        self.limit = max(self.timeout, float(allowance))
        self.last = time.monotonic()
        self.what = what

    def watch(self, progress) -> None:
        """Also count a change of ``progress[0]`` (int64 array, written by compiled code) as a beat."""
        self._progress = progress
        self._seen = int(progress[0])

    def stop(self) -> None:
        self._stop.set()

    def _run(self):
        period = min(1.0, self.timeout / 4)
        while not self._stop.wait(period):
            progress = self._progress
            if progress is not None and int(progress[0]) != self._seen:
                self._seen = int(progress[0])
                self.beat("step")
            idle = time.monotonic() - self.last
            limit = self.limit
            if idle > limit:
                allowed = f"--timeout {self.timeout:g}" if limit == self.timeout else \
                    f"--timeout {self.timeout:g}, {limit:g} s allowed after {self.what}"
                sys.stderr.write(f"mpidml: error: [rank {self.rank}] no training step completed in {idle:.0f} s "
                                 f"({allowed}; last: {self.what}); a rank is hung or stalled, "
                                 "aborting the job\n")
                sys.stderr.flush()
                threading.Timer(5.0, os._exit, args=(self.EXIT_CODE,)).start()
                MPI.COMM_WORLD.Abort(self.EXIT_CODE)
                return


def mpi_library_version() -> str:
    return MPI.Get_library_version().strip().split("\n")[0]


def mpi_vendor() -> str:
    name, ver = MPI.get_vendor()
    return f"{name} {'.'.join(map(str, ver))}"
