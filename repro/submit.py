"""Submit a target's run graph through submitit (local, debug or Slurm), or print a dry run.

Each run is one job; a child waits for its parent (Slurm `afterok` dependencies, or the local
executor finishing the parent first). Submitting again skips finished runs and reuses jobs
still queued or running, so no run is trained twice.
"""
from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .estimate import training_gpu_hours
from .fsio import atomic_write_json, read_json
from .jobs import ResolvedRun, Target, resolve_target
from .runner import git_commit, run_dir, run_state
from .train_job import TrainingJob

CLUSTERS = ("local", "slurm", "debug")
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                       "RESIZING", "SUSPENDED"}


SIGNAL_DELAY_S = 120
MAX_TIMEOUT_REQUEUES = 20   # a paper-scale stage spans several 24-hour jobs


class SlurmUnavailable(RuntimeError):
    pass


@dataclass
class Submitted:
    run: ResolvedRun
    action: str                 # submitted | skipped (done) | reused (queued) | blocked
    job_id: str | None = None
    job: Any = None             # submitit Job when submitted in this process
    stdout: str | None = None
    stderr: str | None = None


def sbatch_options(run: ResolvedRun, dependency: str | None, partition: str | None
                   ) -> dict[str, str]:
    res = run.resources
    options = {"job-name": f"{run.target}-{run.name}-{run.run_id}", "nodes": str(res.nodes),
               "ntasks-per-node": str(max(res.gpus_per_node, 1)),
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


def run_command(spec_path: Path) -> str:
    return f"{sys.executable} -m repro.runner {spec_path}"


def gpu_hours(run: ResolvedRun) -> float:
    return training_gpu_hours(run.stage, run.steps, run.resources.gpus)


TRAIN_OPTIONS = {"ci": {"checkpoint_every": 1, "workers": 0, "log_every": 1},
                 "smoke": {"checkpoint_every": 10, "workers": 1, "log_every": 5},
                 "lite": {"checkpoint_every": 500}, "paper": {"checkpoint_every": 1000}}
"""maskgwm.train.TrainOptions per scale (operational: they do not change results)."""


def run_spec(run: ResolvedRun) -> dict[str, Any]:
    return {"run_id": run.run_id, "parent_id": run.parent_id, "target": run.target,
            "name": run.name, "stage": run.stage, "variant": run.variant, "scale": run.scale,
            "config": run.config, "cells": list(run.cells), "protocol": run.protocol,
            "train_options": TRAIN_OPTIONS.get(run.scale, {})}


def dry_run(target: Target, scale: str, workdir: Path, partition: str | None = None,
            echo: Callable[[str], None] = print) -> float:
    """Print each run's Slurm options, command and GPU-hours; return the total. Writes nothing."""
    runs = resolve_target(target, scale)
    names = {run.run_id: run.name for run in runs}
    echo(f"# dry run: target {target.name}, scale {scale}, {len(runs)} runs (nothing submitted)")
    total = 0.0
    for run in runs:
        state, _ = run_state(run_dir(workdir, run.run_id))
        dependency = f"afterok:<job of {names[run.parent_id]}>" if run.parent_id else None
        hours = gpu_hours(run)
        total += 0.0 if state == "done" else hours
        echo(f"\n## {run.name}  run {run.run_id}  stage {run.stage}  variant {run.variant or '-'}"
             f"  parent {run.parent_id or '-'}  [{state}]")
        echo(f"   steps {run.steps}  protocol {run.protocol}"
             f"  cells {', '.join(run.cells) or '-'}")
        options = sbatch_options(run, dependency, partition)
        echo("   sbatch " + " ".join(f"--{key}={value}" for key, value in options.items()))
        echo(f"   command: {run_command(run_dir(workdir, run.run_id) / 'spec.json')}")
        echo(f"   estimated GPU-hours: {hours:,.0f}" + ("" if run.resources.gpus else " (CPU only)"))
    echo(f"\n# total estimated GPU-hours (runs not yet done): {total:,.0f} "
         f"(training only; see repro/estimate.py)")
    return total


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
    out = subprocess.run(["squeue", "-h", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         timeout=30)
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id] = "BLOCKED" if reason == "DependencyNeverSatisfied" else state
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def _executor(cluster: str, workdir: Path, run: ResolvedRun, dependency: str | None,
              partition: str | None):
    import submitit

    res = run.resources
    extra = {"slurm_max_num_timeout": MAX_TIMEOUT_REQUEUES} if cluster == "slurm" else {}
    executor = submitit.AutoExecutor(folder=workdir / "logs" / run.run_id / "%j", cluster=cluster,
                                     **extra)
    timeout_min = max(1, round(res.time_hours * 60))
    params: dict[str, Any] = {"name": f"{run.target}-{run.name}-{run.run_id}",
                              "timeout_min": timeout_min}
    if cluster == "slurm":
        # USR2 this long before the time limit: the run checkpoints and requeues (train_job.py)
        params.update(nodes=res.nodes, tasks_per_node=max(res.gpus_per_node, 1),
                      cpus_per_task=res.cpus_per_task, mem_gb=res.mem_gb,
                      slurm_signal_delay_s=min(SIGNAL_DELAY_S, timeout_min * 30))
        if res.gpus_per_node:
            params["gpus_per_node"] = res.gpus_per_node
        if partition or res.partition:
            params["slurm_partition"] = partition or res.partition
        if dependency:
            params["slurm_additional_parameters"] = {"dependency": dependency}
    executor.update_parameters(**params)
    return executor


def _check_writable(workdir: Path) -> None:
    probe = workdir / "runs" / ".write-check"
    atomic_write_json(probe, {}, hint="set REPRO_WORKDIR to a writable directory "
                      "(on a cluster, one every node can see)")
    probe.unlink()


def submit(target: Target, scale: str, cluster: str, workdir: Path, wait: bool = False,
           partition: str | None = None, echo: Callable[[str], None] = print) -> list[Submitted]:
    """Submit every unfinished run of `target` at `scale`; local and debug runs finish here."""
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster '{cluster}' (known: {', '.join(CLUSTERS)})")
    runs = resolve_target(target, scale)
    _check_writable(workdir)
    if cluster == "slurm":
        check_slurm()
    commit = git_commit()
    by_id: dict[str, Submitted] = {}
    for run in runs:
        by_id[run.run_id] = entry = submit_run(run, cluster, workdir, by_id, partition, commit)
        echo(f"{entry.action:>9}  {run.name:<24} run {run.run_id}"
             + (f"  job {entry.job_id}" if entry.job_id else "")
             + (f"  log {entry.stdout}" if entry.stdout else ""))
    record = {"target": target.name, "scale": scale, "cluster": cluster, "git_commit": commit,
              "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "runs": [{"run_id": e.run.run_id, "name": e.run.name, "action": e.action,
                        "job_id": e.job_id, "stdout": e.stdout, "stderr": e.stderr}
                       for e in by_id.values()]}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    atomic_write_json(workdir / "submissions" / f"{stamp}-{target.name}-{scale}.json", record)
    if cluster != "slurm":
        for entry in by_id.values():
            _wait(entry)
    elif wait:
        wait_for_slurm(list(by_id.values()), workdir)
    return list(by_id.values())


def wait_for_slurm(entries: list[Submitted], workdir: Path, poll_s: float = 2.0) -> None:
    """Until every job has a result, left the queue, or is blocked by a failed parent."""
    waiting = {e.job_id: e for e in entries if e.job_id}
    while waiting:
        for job_id, entry in list(waiting.items()):
            if run_state(run_dir(workdir, entry.run.run_id))[0] in ("done", "failed"):
                del waiting[job_id]
        live = slurm_states(list(waiting))
        for job_id in list(waiting):
            if live.get(job_id, "BLOCKED") == "BLOCKED":
                del waiting[job_id]
        if waiting:
            time.sleep(poll_s)


def submit_run(run: ResolvedRun, cluster: str, workdir: Path, by_id: dict[str, Submitted],
               partition: str | None, commit: str) -> Submitted:
    """Submit one run (its parent, if any, already in `by_id`) unless it is done or queued."""
    directory = run_dir(workdir, run.run_id)
    state, _ = run_state(directory)
    if state == "done":
        return Submitted(run, "skipped")
    previous = _previous_job(directory)
    if previous and previous.get("cluster") == "slurm" and cluster == "slurm":
        live = slurm_states([previous["job_id"]]).get(previous["job_id"])
        if live == "BLOCKED":  # its parent failed earlier; replace it
            subprocess.run(["scancel", previous["job_id"]], capture_output=True, timeout=30)
        elif live:
            return Submitted(run, "reused", previous["job_id"], stdout=previous.get("stdout"),
                             stderr=previous.get("stderr"))
    parent = by_id.get(run.parent_id) if run.parent_id else None
    if parent is not None and cluster != "slurm":
        _wait(parent)
        if run_state(run_dir(workdir, parent.run.run_id))[0] != "done":
            return Submitted(run, "blocked")
    dependency = None
    if parent is not None and cluster == "slurm" and parent.job_id:
        dependency = f"afterok:{parent.job_id}"
    spec_path = directory / "spec.json"
    atomic_write_json(spec_path, {**run_spec(run), "submitted_from_commit": commit})
    executor = _executor(cluster, workdir, run, dependency, partition)
    job = executor.submit(TrainingJob(), str(spec_path))
    entry = Submitted(run, "submitted", str(job.job_id), job, str(job.paths.stdout),
                      str(job.paths.stderr))
    atomic_write_json(directory / "job.json",
                      {"cluster": cluster, "job_id": entry.job_id, "stdout": entry.stdout,
                       "stderr": entry.stderr, "target": run.target, "name": run.name,
                       "scale": run.scale, "dependency": dependency})
    return entry


def _previous_job(directory: Path) -> dict[str, Any] | None:
    path = directory / "job.json"
    return read_json(path) if path.exists() else None


def _wait(entry: Submitted) -> None:
    if entry.job is None:
        return
    try:
        entry.job.result()
    except Exception:  # the run's failed.json and log hold the details; status reports them
        pass
    finally:
        entry.job = None
