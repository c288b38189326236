"""MPI calls from Numba-compiled code: ``MPI_Allreduce`` and ``MPI_Wtime`` as Numba intrinsics.

A mini-batch step of a small model is a few hundred microseconds, and between two kernels the
Python interpreter, mpi4py's argument handling and NumPy's dispatch run cache-cold (the
kernel's rows have just swept L1/L2), so they cost several times what they cost when timed
alone (``scripts/bench_step.py``'s ``after_kernel_probe``). The compiled step loop
(:mod:`mpidml.parallel.steploop`) therefore calls MPI directly: the same C library mpi4py
loaded, the same communicator, datatype and op handles (``MPI._handleof``).

How: the two symbols are looked up in mpi4py's extension module (``dlsym`` on it searches
its dependency, ``libmpi``) and registered with LLVM under their own names, so the compiled
code refers to them by name and Numba's on-disk cache stays valid across processes (the
addresses are resolved each time the cached code is loaded). Handles are passed as 64-bit
integers: Open MPI's handles are pointers; MPICH's are C ``int``s, which on x86-64 and
AArch64 travel in the same registers (MPI_Allreduce has six arguments, all in registers),
so the callee reads the low 32 bits, which hold the handle.

Errors: the return code comes back to the caller (the communicators mpidml uses have
MPI_ERRORS_RETURN, mpi4py's default), which raises :class:`mpi4py.MPI.Exception`.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
from llvmlite import ir
from mpi4py import MPI
from numba.core import cgutils, types
from numba.extending import intrinsic

__all__ = ["mpi_allreduce", "mpi_wtime", "handle", "dtype_handle", "AVAILABLE"]


def add_symbols(lib, names) -> None:
    """Make the C functions ``names`` of ctypes library ``lib`` known to LLVM by name, so compiled
    code calls them by name and Numba's on-disk cache holds no address of one process. Raises
    AttributeError for a name ``lib`` lacks."""
    for name in names:
        llvm.add_symbol(name, ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)


def _register() -> bool:
    try:
        add_symbols(ctypes.CDLL(MPI.__file__), ("MPI_Allreduce", "MPI_Wtime"))
    except (OSError, AttributeError):  # pragma: no cover - an mpi4py without its own MPI symbols
        return False
    # every handle fits the 64-bit argument slots (pointers: Open MPI; int: MPICH)
    return all(MPI._sizeof(t) in (4, 8) for t in (MPI.Comm, MPI.Datatype, MPI.Op))


#: False where the MPI symbols cannot be found: the training loop then stays in Python.
AVAILABLE = _register()


def handle(obj) -> int:
    """The C handle of an mpi4py Comm / Datatype / Op as a Python int (for the intrinsics)."""
    return int(MPI._handleof(obj))


def dtype_handle(dtype) -> int:
    """The MPI datatype handle of a NumPy float dtype (float64 -> MPI_DOUBLE, float32 -> MPI_FLOAT)."""
    import numpy as np

    return handle({np.dtype(np.float64): MPI.DOUBLE, np.dtype(np.float32): MPI.FLOAT}[np.dtype(dtype)])


@intrinsic
def mpi_allreduce(typingctx, send, recv, count, dtype_h, op_h, comm_h):
    """``MPI_Allreduce(send.data, recv.data, count, dtype_h, op_h, comm_h)`` -> int32 error code.

    send, recv: contiguous arrays of the element type ``dtype_h`` describes, at least
    ``count`` long, distinct (no MPI_IN_PLACE); the handles are ints from :func:`handle`.
    """
    if not (isinstance(send, types.Array) and isinstance(recv, types.Array)):
        return None
    sig = types.int32(send, recv, types.intp, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        vp = ir.IntType(8).as_pointer()
        h = ir.IntType(64)
        fnty = ir.FunctionType(ir.IntType(32), [vp, vp, ir.IntType(32), h, h, h])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "MPI_Allreduce")
        s = context.make_array(signature.args[0])(context, builder, args[0])
        r = context.make_array(signature.args[1])(context, builder, args[1])
        return builder.call(fn, [builder.bitcast(s.data, vp), builder.bitcast(r.data, vp),
                                 builder.trunc(args[2], ir.IntType(32)), args[3], args[4], args[5]])

    return sig, codegen


@intrinsic
def mpi_wtime(typingctx):
    """``MPI_Wtime()``: seconds (float64) on MPI's wall clock."""
    sig = types.float64()

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.DoubleType(), []), "MPI_Wtime")
        return builder.call(fn, [])

    return sig, codegen
