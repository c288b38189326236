#!/usr/bin/env bash
# mpirun wrapper: rank 0 keeps the terminal, other ranks write to $MPIDML_TEST_LOGS/<label>-rank<r>.log,
# so a parallel pytest run shows one report instead of N interleaved ones.
rank="${OMPI_COMM_WORLD_RANK:-${PMIX_RANK:-${PMI_RANK:-${SLURM_PROCID:-0}}}}"
if [ "$rank" != 0 ] && [ -n "${MPIDML_TEST_LOGS:-}" ]; then
    exec "$@" > "$MPIDML_TEST_LOGS/${MPIDML_TEST_LABEL:-mpi}-rank$rank.log" 2>&1
fi
exec "$@"
