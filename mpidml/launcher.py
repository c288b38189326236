"""What launched this job: srun (SLURM), mpirun, or a single process.

Read from the environment the launcher sets, without any communication; the
hostnames of all ranks are gathered by the caller (``Context.gather_hostnames``)
and passed in. The result is the ``launcher`` section of ``summary.json``.
"""

from __future__ import annotations

import os
from collections import Counter

__all__ = ["launcher_info", "expand_tasks_per_node"]

# SLURM variables worth keeping (job-level, identical on every rank).
_SLURM_VARS = {
    "job_id": "SLURM_JOB_ID",
    "job_name": "SLURM_JOB_NAME",
    "step_id": "SLURM_STEP_ID",
    "array_job_id": "SLURM_ARRAY_JOB_ID",
    "array_task_id": "SLURM_ARRAY_TASK_ID",
    "partition": "SLURM_JOB_PARTITION",
    "cluster": "SLURM_CLUSTER_NAME",
    "nodelist": "SLURM_JOB_NODELIST",
    "step_nodelist": "SLURM_STEP_NODELIST",
    "nnodes": "SLURM_JOB_NUM_NODES",
    "ntasks": "SLURM_NTASKS",
    "step_tasks_per_node": "SLURM_STEP_TASKS_PER_NODE",
    "tasks_per_node": "SLURM_TASKS_PER_NODE",
    "cpus_per_task": "SLURM_CPUS_PER_TASK",
    "submit_dir": "SLURM_SUBMIT_DIR",
}


def expand_tasks_per_node(spec: str) -> list[int]:
    """SLURM's compressed task counts, e.g. ``"2(x3),1"`` -> ``[2, 2, 2, 1]``."""
    out: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "(x" in part and part.endswith(")"):
            count, reps = part[:-1].split("(x", 1)
            out.extend([int(count)] * int(reps))
        else:
            out.append(int(part))
    return out


def _kind(env) -> str:
    if "OMPI_COMM_WORLD_SIZE" in env:  # set by Open MPI's mpirun/mpiexec, not under srun
        return "mpirun"
    if "SLURM_STEP_ID" in env and "SLURM_PROCID" in env:  # a job step: srun started the ranks
        return "srun"
    if "PMI_SIZE" in env or "PMIX_RANK" in env or "HYDRA_CONTROL_FD" in env:
        return "mpiexec"
    return "single process"


def launcher_info(hostnames: list[str] | None, env=None) -> dict:
    """The ``launcher`` section: how the job was started and where its ranks ran.

    ``hostnames`` are the ranks' hostnames in rank order (root only; ``None``
    elsewhere). Under SLURM (``SLURM_JOB_ID`` set) a ``slurm`` section records
    the job id, node list and tasks per node.
    """
    env = os.environ if env is None else env
    hosts = list(hostnames or [])
    per_host = Counter(hosts)
    info = {
        "kind": _kind(env),
        "hostnames": hosts,
        "n_hosts": len(per_host),
        "ranks_per_host": dict(per_host),
    }
    if "SLURM_JOB_ID" in env:
        slurm = {key: env[var] for key, var in _SLURM_VARS.items() if var in env}
        spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
        if spec:
            try:
                slurm["tasks_per_node_list"] = expand_tasks_per_node(spec)
            except ValueError:
                pass
        info["slurm"] = slurm
    return info
