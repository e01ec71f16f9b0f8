"""Submit a target's run graph through submitit (local, debug or Slurm), or print a dry run.

Each run is one job; a child waits for its parent (Slurm `afterok` dependencies, or the local
executor finishing the parent first). Every trained run that fills paper cells then gets a
sample array and a score job (`submit_eval`, repro/eval_job.py). Submitting again skips
finished runs and evaluations and reuses jobs still queued or running, so no run is trained or
scored twice.
"""
from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from maskgwm.config.resolve import STAGES

from .estimate import training_gpu_hours
from .fsio import atomic_write_json, read_json
from .jobs import ResolvedRun, Target, resolve_target
from .runner import git_commit, run_dir, run_state
from .train_job import TrainingJob

CLUSTERS = ("local", "slurm", "debug")
ACTIVE_SLURM_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED",
                       "RESIZING", "SUSPENDED"}


EVAL_ENV = "REPRO_EVAL"     # REPRO_EVAL=0: submit trains only (no sample and score jobs)
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
        if run in evaluated_runs(runs):
            from .eval_job import EVAL_OPTIONS, eval_dir
            shards = EVAL_OPTIONS[scale]["shards"]
            echo(f"   then: sample array of {shards} shards (afterok on this job), score job "
                 f"(afterok on the array) -> "
                 f"{eval_dir(workdir, run.run_id, run.protocol) / 'result.json'}")
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
    out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r"], capture_output=True, text=True,
                         timeout=30)
    states = {}
    for line in out.stdout.splitlines():
        job_id, state, reason = (line.split("|") + ["", ""])[:3]
        states[job_id] = "BLOCKED" if reason == "DependencyNeverSatisfied" else state
    return {job_id: states[job_id] for job_id in job_ids if job_id in states}


def _make_executor(cluster: str, folder: Path, name: str, hours: float, res, nodes: int,
                   tasks: int, gpus: int, dependency: str | None, partition: str | None,
                   max_timeouts: int | None = None):
    """A submitit executor; on Slurm with the resources given and USR2 this long before the
    time limit, so the job checkpoints and requeues (train_job.py)."""
    import submitit

    extra = {"slurm_max_num_timeout": max_timeouts} \
        if cluster == "slurm" and max_timeouts is not None else {}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster, **extra)
    timeout_min = max(1, round(hours * 60))
    params: dict[str, Any] = {"name": name, "timeout_min": timeout_min}
    if cluster == "slurm":
        params.update(nodes=nodes, tasks_per_node=tasks, cpus_per_task=res.cpus_per_task,
                      mem_gb=res.mem_gb,
                      slurm_signal_delay_s=min(SIGNAL_DELAY_S, timeout_min * 30))
        if gpus:
            params["gpus_per_node"] = gpus
        if partition or res.partition:
            params["slurm_partition"] = partition or res.partition
        if dependency:
            params["slurm_additional_parameters"] = {"dependency": dependency}
    executor.update_parameters(**params)
    return executor


def _executor(cluster: str, workdir: Path, run: ResolvedRun, dependency: str | None,
              partition: str | None):
    """A training job: the run's nodes, one task per GPU."""
    res = run.resources
    return _make_executor(cluster, workdir / "logs" / run.run_id / "%j",
                          f"{run.target}-{run.name}-{run.run_id}", res.time_hours, res,
                          res.nodes, max(res.gpus_per_node, 1), res.gpus_per_node, dependency,
                          partition, MAX_TIMEOUT_REQUEUES)


def _check_writable(workdir: Path) -> None:
    probe = workdir / "runs" / ".write-check"
    atomic_write_json(probe, {}, hint="set REPRO_WORKDIR to a writable directory "
                      "(on a cluster, one every node can see)")
    probe.unlink()


def submit(target: Target, scale: str, cluster: str, workdir: Path, wait: bool = False,
           partition: str | None = None, echo: Callable[[str], None] = print,
           evaluate: bool | None = None, evals_out: list | None = None) -> list[Submitted]:
    """Submit every unfinished run of `target` at `scale`, then (with `evaluate`) the sample
    and score jobs of every trained run with paper cells (repro/eval_job.py); local and debug
    jobs finish here. The evaluation entries are appended to `evals_out`. `evaluate` None:
    on unless the environment sets REPRO_EVAL=0 (train only)."""
    if evaluate is None:
        evaluate = os.environ.get(EVAL_ENV, "1") != "0"
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
    evals: list[EvalSubmitted] = []
    if evaluate:
        for run in evaluated_runs(runs):
            item = submit_eval(run, cluster, workdir, by_id[run.run_id], partition, commit)
            evals.append(item)
            echo(f"{'eval ' + item.action:>14}  {run.name:<24} run {run.run_id}  "
                 f"{run.protocol}  {item.describe()}")
    if evals_out is not None:
        evals_out.extend(evals)
    record = {"target": target.name, "scale": scale, "cluster": cluster, "git_commit": commit,
              "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "runs": [{"run_id": e.run.run_id, "name": e.run.name, "action": e.action,
                        "job_id": e.job_id, "stdout": e.stdout, "stderr": e.stderr}
                       for e in by_id.values()],
              "evaluations": [e.record() for e in evals]}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    atomic_write_json(workdir / "submissions" / f"{stamp}-{target.name}-{scale}.json", record)
    if cluster != "slurm":
        for entry in by_id.values():
            _wait(entry)
    elif wait:
        wait_for_slurm(list(by_id.values()), workdir)
        wait_for_slurm_evals(evals)
    if evals and (cluster != "slurm" or wait):
        from .eval_job import eval_state
        done = sum(eval_state(e.directory)[0] == "done" for e in evals)
        echo(f"{done}/{len(evals)} evaluations done for {target.name} ({scale})")
        for e in evals:
            if eval_state(e.directory)[0] != "done":
                echo(f"eval not done: {e.run.name} (run {e.run.run_id}, {e.run.protocol}): "
                     f"{e.message or e.action}")
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


def evaluated_runs(runs: list[ResolvedRun]) -> list[ResolvedRun]:
    """Runs that get sample and score jobs: trained (stage 1a-3) and filling paper cells.
    Vista runs stay placeholders."""
    return [run for run in runs if run.cells and run.stage in STAGES]


@dataclass
class EvalSubmitted:
    """The evaluation of one run under its protocol: sample shards, then the score job."""
    run: ResolvedRun
    directory: Path
    action: str          # skipped (done) | submitted | reused (queued) | blocked | unsupported
    shards: int = 0
    sample_jobs: dict[int, str] = field(default_factory=dict)    # shard -> job id
    score_job: str | None = None
    jobs: list = field(default_factory=list)
    message: str = ""

    def describe(self) -> str:
        if self.message:
            return self.message
        if self.action == "skipped":
            return f"result {self.directory / 'result.json'}"
        jobs = ", ".join(f"{i}:{j}" for i, j in self.sample_jobs.items())
        return (f"sample shards [{jobs or 'done'}] of {self.shards}, score job "
                f"{self.score_job or '-'}")

    def record(self) -> dict[str, Any]:
        return {"run_id": self.run.run_id, "name": self.run.name, "protocol": self.run.protocol,
                "action": self.action, "dir": str(self.directory),
                "sample_jobs": {str(k): v for k, v in self.sample_jobs.items()},
                "score_job": self.score_job, "message": self.message}


def _eval_executor(cluster: str, workdir: Path, run: ResolvedRun, kind: str, hours: float,
                   dependency: str | None, partition: str | None):
    """Sample and score jobs: one task on one node, one GPU where training had GPUs."""
    res = run.resources
    folder = workdir / "logs" / run.run_id / f"eval-{run.protocol}-{kind}" / "%j"
    return _make_executor(cluster, folder, f"{run.target}-{run.name}-{kind}-{run.run_id}",
                          hours, res, 1, 1, 1 if res.gpus_per_node else 0, dependency,
                          partition)


def submit_eval(run: ResolvedRun, cluster: str, workdir: Path, train: Submitted,
                partition: str | None, commit: str) -> EvalSubmitted:
    """Submit the unfinished sample shards of `run` (after its training job) and the score job
    (after every shard), unless its result exists or its jobs are still queued."""
    from .eval_job import (EVAL_OPTIONS, eval_dir, eval_spec, eval_state, node_id,
                           shard_state_dir)
    directory = eval_dir(workdir, run.run_id, run.protocol)
    if eval_state(directory)[0] == "done":
        return EvalSubmitted(run, directory, "skipped")
    if run.protocol == "drivewm_mview":
        return EvalSubmitted(run, directory, "unsupported",
                             message="multi-view sampling and scoring are not implemented yet")
    options = EVAL_OPTIONS[run.scale]
    shards = options["shards"]
    previous = _previous_job(directory) or {}
    if cluster == "slurm" and previous.get("cluster") == "slurm":
        ids = [j for j in list(previous.get("sample_jobs", {}).values())
               + [previous.get("score_job")] if j]
        live = slurm_states(ids)
        if any(state == "BLOCKED" for state in live.values()):
            for job_id in ids:
                subprocess.run(["scancel", job_id], capture_output=True, timeout=30)
        elif previous.get("score_job") in live:
            return EvalSubmitted(run, directory, "reused", shards,
                                 {int(k): v for k, v in previous["sample_jobs"].items()},
                                 previous["score_job"])
    if cluster != "slurm":
        _wait(train)
        if run_state(run_dir(workdir, run.run_id))[0] != "done":
            return EvalSubmitted(run, directory, "blocked", shards,
                                 message="its training run is not done")
    spec_path = directory / "spec.json"
    spec = eval_spec({**run_spec(run)}, run.protocol, workdir)
    atomic_write_json(spec_path, {**spec, "submitted_from_commit": commit,
                                  "nodes": [node_id(run.run_id, run.protocol, "sample", i, shards)
                                            for i in range(shards)]
                                  + [node_id(run.run_id, run.protocol, "score")]})
    todo = [i for i in range(shards)
            if run_state(shard_state_dir(directory, i, shards))[0] != "done"]
    train_dep = f"afterok:{train.job_id}" if cluster == "slurm" and train.job_id and \
        train.action in ("submitted", "reused") else None
    entry = EvalSubmitted(run, directory, "submitted", shards)
    if todo:
        from .eval_job import SampleJob
        executor = _eval_executor(cluster, workdir, run, "sample", options["sample_hours"],
                                  train_dep, partition)
        jobs = executor.map_array(SampleJob(), [str(spec_path)] * len(todo), todo)
        entry.sample_jobs = {i: str(job.job_id) for i, job in zip(todo, jobs)}
        entry.jobs += jobs
    if cluster != "slurm":
        for job in entry.jobs:
            _wait_job(job)
        entry.jobs = []
        failed = [i for i in range(shards)
                  if run_state(shard_state_dir(directory, i, shards))[0] != "done"]
        if failed:
            entry.action, entry.message = "blocked", f"sample shards {failed} failed"
            _record_eval(entry, cluster)
            return entry
    score_dep = None
    if cluster == "slurm":
        array_ids = sorted({job_id.split("_")[0] for job_id in entry.sample_jobs.values()})
        score_dep = ("afterok:" + ":".join(array_ids)) if array_ids else train_dep
    from .eval_job import ScoreJob
    executor = _eval_executor(cluster, workdir, run, "score", options["score_hours"],
                              score_dep, partition)
    job = executor.submit(ScoreJob(), str(spec_path))
    entry.score_job = str(job.job_id)
    entry.jobs.append(job)
    if cluster != "slurm":
        _wait_job(job)
        entry.jobs = []
        if eval_state(directory)[0] != "done":
            entry.action, entry.message = "failed", f"scoring failed; log {job.paths.stderr}"
    _record_eval(entry, cluster)
    return entry


def _record_eval(entry: EvalSubmitted, cluster: str) -> None:
    run = entry.run
    atomic_write_json(entry.directory / "job.json",
                      {"cluster": cluster, "target": run.target, "name": run.name,
                       "scale": run.scale, "protocol": run.protocol, "shards": entry.shards,
                       "sample_jobs": {str(k): v for k, v in entry.sample_jobs.items()},
                       "score_job": entry.score_job,
                       "logs": str(entry.directory.parents[2] / "logs" / run.run_id)})


def wait_for_slurm_evals(evals: list[EvalSubmitted], poll_s: float = 2.0) -> None:
    """Until every evaluation's score job has a result or left the queue."""
    from .eval_job import eval_state
    waiting = [e for e in evals if e.score_job]
    while waiting:
        ids = [j for e in waiting for j in [e.score_job, *e.sample_jobs.values()]]
        live = slurm_states(ids)
        still = []
        for entry in waiting:
            if eval_state(entry.directory)[0] == "done":
                continue
            mine = [live.get(j) for j in [entry.score_job, *entry.sample_jobs.values()]]
            if any(state and state != "BLOCKED" for state in mine):
                still.append(entry)
        waiting = still
        if waiting:
            time.sleep(poll_s)


def _wait_job(job: Any) -> None:
    try:
        job.result()
    except Exception:  # the state files and the log hold the details
        pass


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
