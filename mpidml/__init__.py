"""mpidml: distributed machine learning on MPI for HPC clusters.

Kept free of heavy imports so that the command line can set thread counts
(NUMBA/OMP/BLAS) before NumPy and Numba are loaded.
"""

__version__ = "0.1.0"
