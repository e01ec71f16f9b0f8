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
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from evals.atomic import atomic_write_json
from maskgwm.config import get_scale

from .estimate import sampling_gpu_hours, training_gpu_hours
from .executors import (CLUSTERS, Submitted, add_target, check_slurm, make_executor,
                        previous_job, sbatch_options, slurm_states, wait_run)
from .jobs import ResolvedRun, Target, resolve_target
from .records import RunRecord, write_record
from .preflight import check_inputs, warn_missing
from .runner import git_commit, run_dir, run_state, wait_for_earlier_job
from .submit_eval import EvalSubmitted, evaluated_runs, submit_eval, wait_for_slurm_evals
from .train_job import TrainingJob


EVAL_ENV = "REPRO_EVAL"     # REPRO_EVAL=0: submit trains only (no sample and score jobs)
MAX_TIMEOUT_REQUEUES = 20   # a paper-scale stage spans several 24-hour jobs


def run_command(spec_path: Path) -> str:
    return f"{sys.executable} -m repro.runner {spec_path}"


def gpu_hours(run: ResolvedRun) -> float:
    return training_gpu_hours(run.stage, run.steps, run.resources.gpus)


def run_record(run: ResolvedRun, train_options: dict[str, Any] | None = None,
               commit: str = "") -> RunRecord:
    """The record (spec.json) a run's jobs read; `train_options` override the scale's."""
    from .vista.job import vista_fields
    return RunRecord(run_id=run.run_id, parent_id=run.parent_id, target=run.target,
                     name=run.name, stage=run.stage, variant=run.variant, scale=run.scale,
                     config=run.config, cells=list(run.cells), protocol=run.protocol,
                     train_options={**get_scale(run.scale).train, **(train_options or {})},
                     vista=vista_fields() if run.stage == "vista" else None,
                     submitted_from_commit=commit)


def dry_run(target: Target, scale: str, workdir: Path, partition: str | None = None,
            echo: Callable[[str], None] = print, seeds: int = 1) -> float:
    """Print each run's Slurm options, command and GPU-hours; return the total. Writes nothing."""
    from .vista.graph import split_runs
    runs, left_out = split_runs(resolve_target(target, scale, seeds), scale)
    names = {run.run_id: run.name for run in runs}
    echo(f"# dry run: target {target.name}, scale {scale}, {len(runs)} runs (nothing submitted)")
    total = sampling = 0.0
    for run in runs:
        state, _ = run_state(run_dir(workdir, run.run_id))
        dependency = f"afterok:<job of {names[run.parent_id]}>" if run.parent_id else None
        hours = gpu_hours(run)
        total += 0.0 if state == "done" else hours
        echo(f"\n## {run.name}  run {run.run_id}  stage {run.stage}  variant {run.variant or '-'}"
             f"  parent {run.parent_id or '-'}  [{state}]")
        echo(f"   steps {run.steps}  protocol {run.protocol}"
             f"  cells {', '.join(run.cells) or '-'}")
        options = sbatch_options(run if not run.external else prepare_run(run), dependency,
                                 partition)
        echo("   sbatch " + " ".join(f"--{key}={value}" for key, value in options.items()))
        echo(f"   command: {run_command(run_dir(workdir, run.run_id) / 'spec.json')}")
        echo(f"   estimated GPU-hours: {hours:,.0f}" + ("" if run.resources.gpus else " (CPU only)"))
        if run in evaluated_runs(runs):
            sampling += echo_eval_plan(run, scale, workdir, partition, echo)
    if left_out:
        echo("\n# " + left_out)
    echo(f"\n# total estimated GPU-hours (runs not yet done): {total + sampling:,.0f} "
         f"(training {total:,.0f}, sampling for evaluation {sampling:,.1f}; scoring and "
         f"Vista's sampling not included; see repro/estimate.py)")
    warn_missing(runs, scale, workdir, os.environ.get(EVAL_ENV, "1") != "0", echo)
    return total + sampling


def echo_eval_plan(run: ResolvedRun, scale: str, workdir: Path, partition: str | None,
                   echo: Callable[[str], None]) -> float:
    """Print a run's evaluation jobs and their sampling estimate; return its GPU-hours (0 when
    already scored, on the CPU, or Vista's, which is not estimated)."""
    from .eval_job import eval_dir, eval_state
    from .evalsets import scaled_protocol
    options, directory = get_scale(scale).sampling, eval_dir(workdir, run.run_id, run.protocol)
    echo(f"   then: sample array of {options.shards} shards (afterok on this job), score "
         f"job (afterok on the array) -> {directory / 'result.json'}")
    if run.external:
        from .vista.plan import echo_plan
        echo_plan(run, workdir, partition, echo)
        echo("   estimated sampling GPU-hours: not estimated (Vista's sampler not measured)")
        return 0.0
    if not run.resources.gpus:
        echo("   estimated sampling GPU-hours: 0 (CPU only)")
        return 0.0
    hours = sampling_gpu_hours(scaled_protocol(run.protocol, scale), options.steps)
    per_shard = hours / options.shards
    echo(f"   estimated sampling GPU-hours: {hours:,.1f} ({per_shard:,.2f} per shard; "
         f"time limit {options.sample_hours} h)")
    if per_shard > options.sample_hours:
        echo(f"   WARNING: a sample shard may need {per_shard:,.1f} h, over its "
             f"{options.sample_hours} h limit (it requeues and resumes, or raise "
             f"[{scale}] sampling.shards in maskgwm/config/scales.toml)")
    return 0.0 if eval_state(directory)[0] == "done" else hours


PREPARE_HOURS = 0.5   # a Vista run's own job: check the checkout, hash the checkpoint


def prepare_run(run: ResolvedRun) -> ResolvedRun:
    """A Vista run as its prepare job needs it: one node, one task, no GPU, half an hour."""
    import dataclasses
    res = dataclasses.replace(run.resources, nodes=1, gpus_per_node=0, tasks_per_node=None,
                              time_hours=PREPARE_HOURS)
    return dataclasses.replace(run, resources=res)


def _executor(cluster: str, workdir: Path, run: ResolvedRun, dependency: str | None,
              partition: str | None):
    """A training job: the run's nodes, one task per GPU (a Vista run: prepare_run's)."""
    if run.external:
        run = prepare_run(run)
    res = run.resources
    return make_executor(cluster, workdir / "logs" / run.run_id / "%j",
                          f"{run.target}-{run.name}-{run.run_id}", res.time_hours, res,
                          res.nodes, res.tasks, res.gpus_per_node, dependency,
                          partition, MAX_TIMEOUT_REQUEUES)


def _check_writable(workdir: Path) -> None:
    probe = workdir / "runs" / ".write-check"
    atomic_write_json(probe, {}, hint="set REPRO_WORKDIR to a writable directory "
                      "(on a cluster, one every node can see)")
    probe.unlink()


def submit(target: Target, scale: str, cluster: str, workdir: Path, wait: bool = False,
           partition: str | None = None, echo: Callable[[str], None] = print,
           evaluate: bool | None = None, evals_out: list | None = None,
           seeds: int = 1, train_options: dict[str, Any] | None = None) -> list[Submitted]:
    """Submit every unfinished run of `target` at `scale`, then (with `evaluate`) the sample
    and score jobs of every trained run with paper cells (repro/eval_job.py); local and debug
    jobs finish here. The evaluation entries are appended to `evals_out`. `evaluate` None:
    on unless the environment sets REPRO_EVAL=0 (train only). `train_options`: TrainOptions
    fields for the training jobs (e.g. {"strategy": "fsdp"})."""
    if evaluate is None:
        evaluate = os.environ.get(EVAL_ENV, "1") != "0"
    if cluster not in CLUSTERS:
        raise ValueError(f"unknown cluster '{cluster}' (known: {', '.join(CLUSTERS)})")
    from .vista.graph import retire_if_changed, split_runs
    runs, left_out = split_runs(resolve_target(target, scale, seeds), scale)
    if left_out:
        echo(left_out)
    check_inputs(runs, scale, workdir, evaluate)   # lite/paper: refuse before writing anything
    _check_writable(workdir)
    for note in filter(None, (retire_if_changed(run, workdir) for run in runs)):
        echo(note)
    if cluster == "slurm":
        check_slurm()
    commit = git_commit()
    by_id: dict[str, Submitted] = {}
    for run in runs:
        by_id[run.run_id] = entry = submit_run(run, cluster, workdir, by_id, partition, commit,
                                               train_options)
        echo(f"{entry.action:>9}  {run.name:<24} run {run.run_id}"
             + (f"  job {entry.job_id}" if entry.job_id else "")
             + (f"  log {entry.stdout}" if entry.stdout else "")
             + (f"  ({entry.message})" if entry.message else ""))
        if cluster != "slurm":
            wait_run(entry)   # one local job at a time: concurrent CPU jobs thrash
    evals: list[EvalSubmitted] = []
    if evaluate:
        for run in evaluated_runs(runs):
            item = submit_eval(run, run_record(run), cluster, workdir, by_id[run.run_id],
                               partition, commit)
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
    if cluster == "slurm" and wait:
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
    if left_out:
        echo(left_out)
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
               partition: str | None, commit: str,
               train_options: dict[str, Any] | None = None) -> Submitted:
    """Submit one run (its parent, if any, already in `by_id`) unless it is done or queued."""
    directory = run_dir(workdir, run.run_id)
    targets = add_target(directory, run.target)
    if cluster != "slurm":
        wait_for_earlier_job(directory, f"run {run.run_id}")
    if run_state(directory)[0] == "done":
        return Submitted(run, "skipped")
    previous = previous_job(directory)
    if previous and previous.get("cluster") == "slurm" and cluster == "slurm":
        live = slurm_states([previous["job_id"]]).get(previous["job_id"])
        if live == "BLOCKED":  # its parent failed earlier; replace it
            subprocess.run(["scancel", previous["job_id"]], capture_output=True, timeout=30)
        elif live:
            return Submitted(run, "reused", previous["job_id"], stdout=previous.get("stdout"),
                             stderr=previous.get("stderr"))
    parent = by_id.get(run.parent_id) if run.parent_id else None
    if parent is not None and cluster != "slurm":
        wait_run(parent)
        parent_state = run_state(run_dir(workdir, parent.run.run_id))[0]
        if parent_state != "done":
            ended = "failed" if parent_state == "failed" else "did not finish"
            entry = Submitted(run, "blocked",       # a blocked parent's message names its run
                              message=parent.message or f"waits for run {parent.run.name} "
                              f"(run {parent.run.run_id}), which {ended}")
            _record_job(directory, entry, cluster, targets, None)
            return entry
    dependency = None
    if parent is not None and cluster == "slurm" and parent.job_id:
        dependency = f"afterok:{parent.job_id}"
    spec_path = directory / "spec.json"
    write_record(spec_path, run_record(run, train_options, commit))
    executor = _executor(cluster, workdir, run, dependency, partition)
    job = executor.submit(TrainingJob(), str(spec_path))
    entry = Submitted(run, "submitted", str(job.job_id), job, str(job.paths.stdout),
                      str(job.paths.stderr))
    _record_job(directory, entry, cluster, targets, dependency)
    return entry


def _record_job(directory: Path, entry: Submitted, cluster: str, targets: list[str],
                dependency: str | None) -> None:
    """job.json: the run's job, or ("blocked") why a local submit did not start it: its
    parent ("waits_for") is not done."""
    run, blocked = entry.run, entry.action == "blocked"
    atomic_write_json(directory / "job.json",
                      {"cluster": cluster, "job_id": entry.job_id, "stdout": entry.stdout,
                       "stderr": entry.stderr, "target": run.target, "targets": targets,
                       "name": run.name, "scale": run.scale, "dependency": dependency,
                       "blocked": entry.message if blocked else None,
                       "waits_for": run.parent_id if blocked else None})


