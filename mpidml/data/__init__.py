"""Data layer: row partitions, dense and CSR (sparse) HDF5 shards, synthetic data and converters.

Never creates a communicator and never imports mpi4py: collective reads take the
caller's ``comm``.
"""

from .convert import convert
from .csr import CSRShard, inspect_csr, is_csr, read_csr_shard, write_csr
from .generate import generate
from .hdf5 import DenseShard, h5py_has_mpi, inspect, read_shard
from .partition import all_shard_bounds, shard_bounds

__all__ = [
    "CSRShard",
    "inspect_csr",
    "is_csr",
    "read_csr_shard",
    "write_csr",
    "DenseShard",
    "all_shard_bounds",
    "convert",
    "generate",
    "h5py_has_mpi",
    "inspect",
    "read_shard",
    "shard_bounds",
]
