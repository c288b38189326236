"""The two warm-up groups share no compiled function, whatever the timing.

On a cold cache, rank 0 compiles the first group (the loss kernel) while rank 1 compiles the
second (mpidml.train.warm_up_kernels). A Numba function both groups reach would be compiled and
saved by both ranks, unless one rank happened to save it before the other looked it up: a
2-rank run shows such a race only by chance (the MLP's forward pass did not show it). Here each
group compiles alone, in its own process with its own empty cache, and the cache files the two
save must be disjoint. ``-loop``: a mini-batch run with the compiled step loop
(mpidml.parallel.steploop), which warm_up_kernels compiles after both groups, on one rank: it
links kernels of both (the loss kernel; the logged steps' margins and batch accuracy), and with
both groups' cache files present it must compile nothing but itself (a call with other argument
types than the groups' would compile a second specialisation of a kernel, seconds of start-up).
"""
import os
import re
import shutil
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))

SCRIPT = r"""
import sys
import numpy as np
sys.path.insert(0, {here!r})
from mpidml.models import make_model
from mpidml.train import warm_up_groups
kind, group = {kind!r}, {group}
with_loop = kind.endswith("-loop")  # the run uses the compiled step loop (group "loop")
kind = kind[:-len("-loop")] if with_loop else kind
if kind.startswith("csr"):
    from sparse_helpers import csr_shard_of, sparse_problem
    name = kind.split("-")[1]
    A, y = sparse_problem(name, n=50, d=40, k=3)
    shard = csr_shard_of(A, y, 0, 1)
    model = make_model(name, 40, 3 if name == "softmax" else 2)
else:
    from helpers import make_problem, shard_of
    name, k = kind.split("-") if "-" in kind else (kind, "3")
    k = int(k)
    X, y = make_problem("softmax" if name == "mlp" else name, n=50, d=16, k=k)
    shard = shard_of(X, y, 0, 1)
    model = make_model(name, 16, k if name in ("softmax", "mlp") else 2,
                       **({{"hidden": "8"}} if name == "mlp" else {{}}))
if group == "loop":  # both groups (loading their cache files), then the loop
    from mpi4py import MPI
    from mpidml.parallel.steploop import StepLoop
    for g in warm_up_groups(model, shard):
        g()
    print("[groups loaded]", flush=True)
    StepLoop(model, shard, MPI.COMM_SELF, model.n_params, 4, "float64", 1e-4, model.penalized.stop).compile()
else:
    warm_up_groups(model, shard)[group]()
"""


def _saved(kind, group, cache, env):
    code = SCRIPT.format(here=HERE, kind=kind, group=group)
    env = dict(env, NUMBA_CACHE_DIR=str(cache), NUMBA_DEBUG_CACHE="1")
    return subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.mark.parametrize("kind", ["logistic", "linear", "softmax-10", "softmax-3", "mlp", "csr-logistic",
                                  "csr-softmax", "logistic-loop", "linear-loop", "softmax-10-loop", "csr-logistic-loop",
                                  "csr-softmax-loop"])
def test_warm_up_groups_compile_disjoint_kernels(tmp_path, kind):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "NUMBA_DEBUG_CACHE")}
    procs = [_saved(kind, g, tmp_path / f"cache{g}", env) for g in (0, 1)]  # both at once: 2 cores
    saved = []
    for p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, out[-3000:]
        saved.append({os.path.basename(m) for m in re.findall(r"\[cache\] data saved to '([^']+)'", out)})
    assert saved[0] and saved[1], saved  # each group compiled something: the cache was cold
    assert not saved[0] & saved[1], f"compiled by both groups: {sorted(saved[0] & saved[1])}"
    if not kind.endswith("-loop"):
        return
    merged = tmp_path / "merged"
    for g in (0, 1):
        shutil.copytree(tmp_path / f"cache{g}", merged, dirs_exist_ok=True)
    p = _saved(kind, '"loop"', merged, env)
    out, _ = p.communicate(timeout=600)
    assert p.returncode == 0, out[-3000:]
    after = out.split("[groups loaded]", 1)[1]
    loop_saved = {os.path.basename(m) for m in re.findall(r"\[cache\] data saved to '([^']+)'", after)}
    assert loop_saved, out[-3000:]  # the loop itself was compiled
    assert all(name.startswith("steploop.") for name in loop_saved), sorted(loop_saved)
