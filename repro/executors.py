"""Where jobs run: submitit executors (local, debug or Slurm) and what Slurm says about them.

A Slurm job gets its resources, an optional `afterok` dependency, and USR2 `SIGNAL_DELAY_S`
before its time limit, so that a training job checkpoints and requeues (repro/training.py).
"""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_json, read_json

from .jobs import ResolvedRun

CLUSTERS = ("local", "slurm", "debug")
SIGNAL_DELAY_S = 120
MAX_TIMEOUTS = 50
"""Times a job may hit its time limit and requeue (assumed; submitit's default is 3, which would
stop a long training run after its fourth time limit although every attempt resumes from its
checkpoint). Preemptions do not count."""


class SlurmUnavailable(RuntimeError):
    pass


def sbatch_options(run: ResolvedRun, dependency: str | None, partition: str | None
                   ) -> dict[str, str]:
    res = run.resources
    options = {"job-name": f"{run.target}-{run.name}-{run.run_id}", "nodes": str(res.nodes),
               "ntasks-per-node": str(res.tasks),
               "cpus-per-task": str(res.cpus_per_task), "mem": f"{res.mem_gb}G",
               "time": _slurm_time(res.time_hours)}
    if res.gpus_per_node:
        options["gpus-per-node"] = str(res.gpus_per_node)
    if partition or res.partition:
        options["partition"] = partition or res.partition
    if dependency:
        options["dependency"] = dependency
    return options


def _slurm_time(hours: float) -> str:
    minutes = max(1, round(hours * 60))
    return f"{minutes // 1440}-{minutes % 1440 // 60:02d}:{minutes % 60:02d}:00"


def check_slurm() -> None:
    """Raise SlurmUnavailable unless a Slurm controller answers."""
    if not shutil.which("sbatch") or not shutil.which("squeue"):
        raise SlurmUnavailable("Slurm is not installed here (no sbatch/squeue on PATH); "
                               "use --cluster local, or run on a Slurm login node")
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise SlurmUnavailable(f"Slurm controller not reachable ({err}); "
                               "check `scontrol ping`, or use --cluster local") from None
    if ping.returncode != 0 or "UP" not in ping.stdout:
        raise SlurmUnavailable("Slurm controller not reachable (`scontrol ping`: "
                               f"{(ping.stdout + ping.stderr).strip()}); use --cluster local")


def slurm_states(job_ids: list[str]) -> dict[str, str]:
    """Live Slurm states of queued or running jobs (finished jobs are absent). A job whose
    dependency failed is BLOCKED: Slurm would keep it pending forever."""
    if not job_ids or not shutil.which("squeue"):
        return {}
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         timeout=30)
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id] = "BLOCKED" if reason == "DependencyNeverSatisfied" else state
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def make_executor(cluster: str, folder: Path, name: str, hours: float, res, nodes: int,
                   tasks: int, gpus: int, dependency: str | None, partition: str | None,
                   max_timeouts: int = MAX_TIMEOUTS):
    """A submitit executor; on Slurm with the resources given and USR2 this long before the
    time limit, so the job checkpoints and requeues (training.py), up to `max_timeouts` times.
    A job of several tasks ends when one of them fails (srun --kill-on-bad-exit), instead of
    leaving the other ranks to wait in a collective until NCCL's timeout."""
    import submitit

    extra = {"slurm_max_num_timeout": max_timeouts} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **extra)
    timeout_min = max(1, round(hours * 60))
    params: dict[str, Any] = {"name": name, "timeout_min": timeout_min}
    if cluster == "slurm":
        params.update(nodes=nodes, tasks_per_node=tasks, cpus_per_task=res.cpus_per_task,
                      mem_gb=res.mem_gb,
                      slurm_signal_delay_s=min(SIGNAL_DELAY_S, timeout_min * 30))
        if gpus:
            params["gpus_per_node"] = gpus
        if nodes * tasks > 1:
            params["slurm_srun_args"] = ["--kill-on-bad-exit=1"]
        if partition or res.partition:
            params["slurm_partition"] = partition or res.partition
        if dependency:
            params["slurm_additional_parameters"] = {"dependency": dependency}
    executor.update_parameters(**params)
    return executor


@dataclass
class Submitted:
    run: ResolvedRun
    action: str                 # submitted | skipped (done) | reused (queued) | blocked
    job_id: str | None = None
    job: Any = None             # submitit Job when submitted in this process
    stdout: str | None = None
    stderr: str | None = None
    message: str = ""           # blocked: by which failed run


def previous_job(directory: Path) -> dict[str, Any] | None:
    path = directory / "job.json"
    return read_json(path) if path.exists() else None


def targets_of(job: dict[str, Any]) -> list[str]:
    """The targets that submitted a run or evaluation (job.json "targets"; older files: the
    last submitter only)."""
    return job.get("targets") or ([job["target"]] if job.get("target") else [])


def add_target(directory: Path, target: str) -> list[str]:
    """Record that `target` uses this run or evaluation too (a run shared by several targets
    shows under each in `repro status TARGET`); returns all its targets."""
    job = previous_job(directory) or {}
    targets = sorted({*targets_of(job), target})
    if job and targets != targets_of(job):
        atomic_write_json(directory / "job.json", {**job, "targets": targets})
    return targets


def wait_job(job: Any) -> None:
    """Wait for a submitit job; a failure is not raised here (state files and logs hold it).
    Ctrl-C cancels a local job rather than leaving it running behind the user's back."""
    try:
        job.result()
    except KeyboardInterrupt:
        job.cancel(check=False)
        raise
    except Exception:  # the state files and the log hold the details
        pass


def wait_run(entry: Submitted) -> None:
    """Wait for a job submitted in this process (local and debug executors); forget it after."""
    if entry.job is not None:
        wait_job(entry.job)
        entry.job = None
