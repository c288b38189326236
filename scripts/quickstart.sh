#!/usr/bin/env bash
# Demo, end to end: install into .venv, generate a synthetic logistic-regression dataset,
# train on 2 MPI ranks, print the final objective, accuracy and the run directory.
source "$(dirname "$0")/env.sh"
ensure_venv
cd "$ROOT"
RANKS="${RANKS:-2}"
mkdir -p data runs
"$VENV/bin/mpidml" generate logistic --rows 200000 --features 32 --seed 1 -o data/demo.h5 --overwrite >/dev/null
"$(mpirun_cmd)" -n "$RANKS" --oversubscribe "$VENV/bin/mpidml" train data/demo.h5 \
    --model logistic --optimizer lbfgs --l2 1e-4 --out runs/demo --overwrite >/dev/null
"$VENV/bin/python" - <<'PY'
import json
s = json.load(open("runs/demo/summary.json"))
print(f"final objective : {s['objective']:.10f}")
print(f"accuracy        : {s['accuracy']:.4f}")
print(f"ranks           : {s['ranks']} (io driver: {s['io']['driver']})")
print(f"iterations      : {s['steps']} L-BFGS, converged={s['converged']}")
t = s["time"]
print(f"time            : {t['wall']:.2f}s wall = io {t['io']:.2f} + compute {t['compute']:.2f} + comm {t['comm']:.2f} + other {t['other']:.2f}"
      f" (of which JIT compile/cache load {t['jit_compile']:.2f})")
print(f"run directory   : {s['run_dir']}")
PY
