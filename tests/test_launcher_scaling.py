"""The launcher section of summary.json and the scaling post-processing (no MPI, no SLURM needed)."""

import json

import pytest

from mpidml.errors import DataError
from mpidml.launcher import expand_tasks_per_node, launcher_info
from mpidml.scaling import collect, main as scaling_main


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("32") == [32]
    assert expand_tasks_per_node("4,2(x2)") == [4, 2, 2]


def test_launcher_under_srun():
    env = {"SLURM_JOB_ID": "42", "SLURM_STEP_ID": "0", "SLURM_PROCID": "0", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_NTASKS": "3", "SLURM_TASKS_PER_NODE": "2,1",
           "SLURM_STEP_TASKS_PER_NODE": "2,1", "SLURM_CPUS_PER_TASK": "4", "PMIX_RANK": "0"}
    info = launcher_info(["n1", "n1", "n2"], env)
    assert info["kind"] == "srun" and info["n_hosts"] == 2 and info["ranks_per_host"] == {"n1": 2, "n2": 1}
    s = info["slurm"]
    assert s["job_id"] == "42" and s["nodelist"] == "n[1-2]" and s["tasks_per_node_list"] == [2, 1]
    assert s["cpus_per_task"] == "4" and s["ntasks"] == "3"


def test_launcher_mpirun_and_single_process():
    info = launcher_info(["a", "a"], {"OMPI_COMM_WORLD_SIZE": "2", "PMIX_RANK": "0"})
    assert info["kind"] == "mpirun" and "slurm" not in info and info["hostnames"] == ["a", "a"]
    # mpirun inside an allocation: still mpirun, and the job is recorded
    info = launcher_info(["a"], {"OMPI_COMM_WORLD_SIZE": "1", "SLURM_JOB_ID": "7", "SLURM_STEP_ID": "0",
                                 "SLURM_PROCID": "0"})
    assert info["kind"] == "mpirun" and info["slurm"]["job_id"] == "7"
    info = launcher_info(["h"], {})
    assert info["kind"] == "single process" and info["n_hosts"] == 1


def _summary(ranks, fit, evaluations=10, epochs=None, rows=1000):
    return {"ranks": ranks, "hostnames": ["h"] * ranks, "n_rows": rows, "n_features": 3, "objective": 0.5,
            "evaluations": evaluations, "epochs": epochs, "steps": evaluations,
            "time": {"wall": fit + 1, "fit": fit, "io": 0.1, "compute": fit * 0.8, "comm": fit * 0.1,
                     "other": 0.2},
            "time_per_rank": {"wall": [fit + 1] * ranks}, "io": {"driver": "independent"},
            "launcher": {"n_hosts": 1, "slurm": {"job_id": "9"}}}


def test_scaling_collect_json_and_plot(tmp_path):
    for mode, times in (("strong", {1: 8.0, 2: 4.4, 4: 2.5}), ("weak", {1: 2.0, 2: 2.2, 4: 2.5})):
        for n, t in times.items():
            d = tmp_path / mode / f"n{n}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps(_summary(n, t, rows=1000 if mode == "strong" else 250 * n)))
    (tmp_path / "strong" / "notes").mkdir()  # ignored
    result = collect(str(tmp_path))
    p = {(q["mode"], q["tasks"]): q for q in result["points"]}
    assert p[("strong", 1)]["time_per_epoch"] == pytest.approx(0.8)
    assert p[("strong", 2)]["speedup"] == pytest.approx(8.0 / 4.4)
    assert p[("strong", 4)]["efficiency"] == pytest.approx(8.0 / 2.5 / 4)
    assert p[("weak", 4)]["efficiency"] == pytest.approx(2.0 / 2.5)
    assert p[("weak", 4)]["speedup"] == pytest.approx(4 * 2.0 / 2.5)
    assert p[("strong", 1)]["job_id"] == "9"
    pytest.importorskip("matplotlib")
    assert scaling_main([str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "scaling.json").read_text())
    assert len(saved["points"]) == 6 and saved["plot"].endswith("scaling.png")
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


def test_scaling_epochs_count_for_minibatch(tmp_path):
    d = tmp_path / "strong" / "n1"
    d.mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps(_summary(1, 6.0, evaluations=1, epochs=3)))
    assert collect(str(tmp_path))["points"][0]["time_per_epoch"] == pytest.approx(2.0)
    with pytest.raises(DataError, match="no strong/weak"):
        collect(str(tmp_path / "nothing"))


def test_scaling_without_a_sweep_is_one_line_exit_2(tmp_path, capsys):
    assert scaling_main([str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mpidml: error: no strong/weak/n*/summary.json under")
