"""Smoke runs of the fast benchmark scripts (--quick): they run, print the JSON they document,
and the kernels they time agree with the references beside them. No timing is asserted."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bench(script, *args, timeout=300):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", script), "--quick", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def positive(t):
    return t["min"] > 0 and t["median"] >= t["min"]


def test_bench_kernels_quick():
    doc = bench("bench_kernels.py")
    from mpidml.kernels import cpu_choices

    assert doc["machine"]["kernels"] == cpu_choices()  # the variants that ran (this process: the same CPU)
    results = doc["results"]
    assert {(r["kernel"], r["dtype"]) for r in results} == {(k, d) for k in ("linear", "logistic", "softmax")
                                                          for d in ("float32", "float64")}
    for r in results:
        tol = 1e-12 if r["dtype"] == "float64" else 1e-4  # NumPy's float32 BLAS passes vs float64 sums
        assert r["check_vs_numpy"]["loss_rel_diff"] < tol and r["check_vs_numpy"]["grad_rel_diff"] < tol, r
        assert all(positive(r["seconds"][k]) for k in ("grad", "loss_grad", "numpy", "stream"))
        mb = r["mini_batch"]
        assert mb["rows"] == 256 and all(positive(v) for v in mb["seconds_per_batch"].values())
        roof = r["roofline"]  # the compute bound: bytes of X over the FMAs' time at the measured peak
        d, per_row = r["features"], (r["classes"] or 1) * 2 * r["features"]
        assert roof["fma_per_row"] == per_row and roof["fma_peak_per_s"]["min"] >= roof["fma_peak_per_s"]["median"] > 0
        itemsize = 4 if r["dtype"] == "float32" else 8
        np.testing.assert_allclose(roof["compute_bound_gb_per_s"]["min"],
                                   d * itemsize / (per_row / roof["fma_peak_per_s"]["min"]) / 1e9, rtol=1e-12)
        lower = min(r["gb_per_s"]["stream"]["min"], roof["compute_bound_gb_per_s"]["min"])
        assert roof["bound"] == ("compute" if lower < r["gb_per_s"]["stream"]["min"] else "read")
        np.testing.assert_allclose(roof["grad_vs_bound"]["min"], r["gb_per_s"]["grad"]["min"] / lower, rtol=1e-12)
    assert set(doc["targets"]) >= {"logistic_f64_D64_grad_vs_stream_bw", "softmax_K10_f64_D64_grad_vs_stream_bw"}


def test_bench_step_quick():
    doc = bench("bench_step.py")
    for key in ("step", "kernel", "allreduce", "optimizer"):
        assert positive(doc[key]), key
    loop = doc["in_loop"]
    assert positive(loop["step"]) and positive(loop["kernel"])
    assert loop["kernel"]["min"] < loop["step"]["min"]
    assert loop["allreduce_total"]["min"] >= loop["allreduce_after_last_arrival"]["min"] > 0
    target = doc["target"]
    assert target["applies"] and "other_fraction_by_subtraction" in target
    # every step ran compiled: 'other' is also measured in the fit itself, and the verdict takes all three
    in_fit = target["other_fraction_in_fit"]
    assert 0 < in_fit["min"] <= in_fit["median"] < 1 and in_fit["n"] == 2
    # two repeats: the fastest fit's fraction is one of the two, min or 2 median - min (the max, to rounding)
    assert in_fit["min"] <= in_fit["fastest_fit"] <= max(in_fit["min"], 2 * in_fit["median"] - in_fit["min"]) + 1e-12
    estimates = [target["other_fraction_by_subtraction"], target["other_fraction_from_null_model"],
                 in_fit["fastest_fit"]]
    assert target["met"] == (max(estimates) <= 0.05)
    assert target["noisy"] == (min(estimates) < 0 or max(estimates) - min(estimates) > 0.05)
    assert doc["comm_dtype_float32"]["bytes_per_step"]["float32"] * 2 == doc["comm_dtype_float32"]["bytes_per_step"]["float64"]
    # logistic SGD runs the compiled step loop; the same fit in Python is measured beside it
    assert doc["step_loop"] == "compiled" and positive(doc["python_loop"]["step"])
    # ... so the optimizer part subtracted for 'other' is the compiled loop's own, not opt.step's from Python
    parts = doc["optimizer_parts"]
    assert positive(parts["python_call"]) and positive(parts["in_compiled_loop"])
    assert doc["optimizer"] == parts["in_compiled_loop"]
    assert doc["in_compiled_loop"]["share_of_steps"] > 0.25 and positive(doc["in_compiled_loop"]["kernel"])
    # the step in the fits' steady state (epochs 2..3), the whole fit's beside it; the next epoch's
    # plan is built while a rank waits at the node reducer (rank 0's share of that wait: >= 0)
    steady = doc["steady_state"]
    assert steady["epochs"] == 3 and positive(steady["step_whole_fit"])
    assert positive(steady["first_epoch_ms"]) and positive(steady["steady_epoch_ms"])
    waits = doc["in_compiled_loop"]["plan_in_waits"]
    assert 0 <= waits["min"] <= waits["median"] <= doc["in_compiled_loop"]["allreduce"]["median"]
    assert positive(doc["other_parts"]["null_model_compiled_loop"])
    # 2 ranks on one node: the steps sum through shared memory; MPI's sum measured beside it
    red = doc["reduction"]
    assert red["used"] == "shared memory" and positive(red["alone"]) and positive(red["after_kernel"])
    assert positive(red["step_with_reduction_mpi"]) and red["step_ratio_shared_memory_over_mpi"]["min"] > 0


def test_bench_startup_quick_sgd():
    """Cold and warm start with the compiled step loop: no cache file written by two ranks."""
    doc = bench("bench_startup.py", "--quick", "--optimizer", "sgd", timeout=600)
    assert doc["optimizer"] == "sgd"
    assert positive(doc["cold_cache"]["launch_to_first_step"]) and positive(doc["warm_cache"]["launch_to_first_step"])
    assert doc["cache_race"]["race_free"] and doc["cache_race"]["files_compiled_by_more_than_one_rank"] == []


def test_bench_csr_quick():
    doc = bench("bench_csr.py")
    assert all(positive(doc["seconds"][k]) for k in ("csr", "scipy", "dense"))
    assert doc["nnz"] > 0
    assert doc["check_vs_scipy"]["loss_rel_diff"] < 1e-12 and doc["check_vs_scipy"]["grad_rel_diff"] < 1e-12


@pytest.mark.parametrize("pages", ["huge", "4k"])
def test_bench_kernels_pages(pages):
    doc = bench("bench_kernels.py", "--kernels", "logistic", "--dtypes", "float64", "--batch", "0", "--pages", pages)
    (r,) = [r for r in doc["results"] if r["features"] == 32]
    assert r["x_pages"] == pages and r["mini_batch"] is None
    assert r["check_vs_numpy"]["grad_rel_diff"] < 1e-12
