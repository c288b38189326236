#!/usr/bin/env bash
# The whole test suite: install into .venv (if needed), run the serial tests (unit tests and
# end-to-end runs that launch mpirun themselves, with timeouts), then the MPI tests under
# mpirun on 1, 2 and 3 ranks, then the parallel-HDF5 runs with .venv-mpio (below). The serial
# tests include tests/test_slurm.py, which installs and starts a local SLURM (scripts/slurm-local.sh).
# Extra arguments go to every pytest run (e.g. -x, -k name).
source "$(dirname "$0")/env.sh"
ensure_venv
cd "$ROOT"
MPIRUN="$(mpirun_cmd)"
TALLY="$(mktemp -d)"
LOGS="$ROOT/tests/.mpi-logs"
rm -rf "$LOGS"; mkdir -p "$LOGS"
export MPIDML_TEST_TALLY="$TALLY" MPIDML_TEST_LOGS="$LOGS"
status=0

echo "==> serial tests"
# tests/test_mpio.py needs h5py with MPI: it runs with .venv-mpio further down.
MPIDML_TEST_LABEL=serial "$VENV/bin/python" -m pytest -m "not mpi" -q --ignore=tests/test_mpio.py "$@" tests || status=1

for n in 1 2 3; do
    echo "==> MPI tests on $n rank(s)"
    # A hang must fail the run, not stall CI: each mpirun gets a hard time limit.
    MPIDML_TEST_LABEL="mpi$n" timeout -k 20 300 "$MPIRUN" -n "$n" --oversubscribe \
        scripts/rank-output.sh "$VENV/bin/python" -m pytest --with-mpi -m mpi -q --color=no -p no:cacheprovider \
        --ignore=tests/test_mpio.py "$@" tests || {
        status=1
        echo "!! MPI tests on $n rank(s) failed; logs of the other ranks:"
        for f in "$LOGS"/mpi$n-rank*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 60 "$f"; }; done
    }
done

# Parallel HDF5 for real: .venv-mpio has mpi4py and h5py built against Debian's Open MPI and
# parallel HDF5 (built once, about 5 minutes; re-used afterwards). It is launched with Debian's
# /usr/bin/mpirun, never with the PyPI Open MPI's. Where it cannot be installed (no root or no
# apt-get) this is skipped with the reason, except under CI=true, where that fails the run.
echo "==> parallel HDF5: building or re-using .venv-mpio"
MPIO_VENV="${MPIDML_MPIO_VENV:-$ROOT/.venv-mpio}"
mpio_rc=0
"$ROOT/scripts/install-parallel-hdf5.sh" || mpio_rc=$?
if [ "$mpio_rc" = 0 ]; then
    echo "==> parallel HDF5: data tests and end-to-end runs (serial; they launch /usr/bin/mpirun)"
    MPIDML_TEST_LABEL=mpio-serial "$MPIO_VENV/bin/python" -m pytest -m "not mpi" -q \
        tests/test_data.py tests/test_mpio.py "$@" || status=1
    for n in 2 3; do
        echo "==> parallel HDF5: MPI data tests on $n ranks (/usr/bin/mpirun)"
        MPIDML_TEST_LABEL="mpio-mpi$n" timeout -k 20 300 /usr/bin/mpirun -n "$n" --oversubscribe \
            scripts/rank-output.sh "$MPIO_VENV/bin/python" -m pytest --with-mpi -m mpi -q --color=no \
            -p no:cacheprovider tests/test_data_mpi.py tests/test_mpio.py "$@" || {
            status=1
            echo "!! parallel-HDF5 MPI tests on $n ranks failed; logs of the other ranks:"
            for f in "$LOGS"/mpio-mpi$n-rank*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 60 "$f"; }; done
        }
    done
elif [ "$mpio_rc" = 77 ] && [ "${CI:-}" != true ]; then
    echo "!! parallel HDF5 tests SKIPPED: scripts/install-parallel-hdf5.sh cannot install here (see above)"
    echo '{"skipped": 1}' > "$TALLY/mpio-skipped.json"
else
    echo "!! parallel HDF5: scripts/install-parallel-hdf5.sh failed (exit $mpio_rc)${CI:+ (CI=$CI: a skip is a failure)}"
    echo '{"failed": 1}' > "$TALLY/mpio-install.json"
    status=1
fi

# One closing line over all runs (each pytest run above printed its own).
"$VENV/bin/python" - "$TALLY" "$status" <<'PY'
import json, pathlib, sys
tot = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
runs = sorted(pathlib.Path(sys.argv[1]).glob("*.json"))
for p in runs:
    d = json.loads(p.read_text())
    for k in tot:
        tot[k] += d.get(k, 0)
print(f"runs: {', '.join(p.stem for p in runs)}")
failed = tot["failed"] + tot["error"]
if sys.argv[2] != "0" and failed == 0:
    failed = 1  # a run failed without a pytest failure on rank 0 (another rank, a crash or a timeout)
line = f"{tot['passed']} passed, {failed} failed"
if tot["skipped"]:
    line += f", {tot['skipped']} skipped"
print(f"total: {line}")
PY
rm -rf "$TALLY"
exit $status
