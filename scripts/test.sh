#!/usr/bin/env bash
# The whole test suite: install into .venv (if needed), run the serial tests (unit tests and
# end-to-end runs that launch mpirun themselves, with timeouts), then the MPI tests under
# mpirun on 1, 2 and 3 ranks. Extra arguments go to every pytest run (e.g. -x, -k name).
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
MPIDML_TEST_LABEL=serial "$VENV/bin/python" -m pytest -m "not mpi" -q "$@" tests || status=1

for n in 1 2 3; do
    echo "==> MPI tests on $n rank(s)"
    # A hang must fail the run, not stall CI: each mpirun gets a hard time limit.
    MPIDML_TEST_LABEL="mpi$n" timeout -k 20 300 "$MPIRUN" -n "$n" --oversubscribe \
        scripts/rank-output.sh "$VENV/bin/python" -m pytest --with-mpi -m mpi -q --color=no -p no:cacheprovider "$@" tests || {
        status=1
        echo "!! MPI tests on $n rank(s) failed; logs of the other ranks:"
        for f in "$LOGS"/mpi$n-rank*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 60 "$f"; }; done
    }
done

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
