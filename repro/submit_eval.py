"""The evaluation part of a submission: for each trained run with paper cells, a sample array
over clip shards (after its training job) and a score job (after every shard), recorded in the
run's eval folder (repro/eval_job.py does the work inside the jobs).
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_json
from maskgwm.config.resolve import STAGES

from .executors import (Submitted, add_target, make_executor, previous_job, slurm_states,
                        wait_job, wait_run)
from .collect import current_protocol_hash
from .jobs import ResolvedRun
from .records import RunRecord, write_record
from .runner import run_dir, run_state, wait_for_earlier_job


def evaluated_runs(runs: list[ResolvedRun]) -> list[ResolvedRun]:
    """Runs that get sample and score jobs: trained (stage 1a-3) or Vista runs (their shards
    run Vista's sample.py, repro/vista/), filling paper cells."""
    return [run for run in runs if run.cells and (run.stage in STAGES or run.external)]


@dataclass
class EvalSubmitted:
    """The evaluation of one run under its protocol: sample shards, then the score job."""
    run: ResolvedRun
    directory: Path
    action: str          # skipped (done) | submitted | reused (queued) | blocked | failed
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
    return make_executor(cluster, folder, f"{run.target}-{run.name}-{kind}-{run.run_id}",
                          hours, res, 1, 1, 1 if res.gpus_per_node else 0, dependency,
                          partition)


def submit_eval(run: ResolvedRun, record: RunRecord, cluster: str, workdir: Path,
                train: Submitted, partition: str | None, commit: str,
                shards: int | None = None) -> EvalSubmitted:
    """Submit the unfinished sample shards of `run` (after its training job) and the score job
    (after every shard), unless its result exists or its jobs are still queued."""
    from maskgwm.config import get_scale

    from .eval_job import eval_dir, eval_record, eval_state, shard_state_dir
    directory = eval_dir(workdir, run.run_id, run.protocol)
    add_target(directory, run.target)
    state, result = eval_state(directory)
    stale = ""
    if state == "done":
        if result.get("protocol_hash") == current_protocol_hash(run):
            return EvalSubmitted(run, directory, "skipped")
        old = str(result.get("protocol_hash"))     # scored before the protocol changed
        aside = run_dir(workdir, run.run_id) / "eval-stale" / f"{run.protocol}-{old}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        directory.rename(aside)
        stale = f"re-scored: the result of protocol version {old} was moved to {aside}"
    options = get_scale(run.scale).sampling
    previous = previous_job(directory) or {}
    requested = shards or options.shards
    shards = _started_shards(directory, previous) or requested
    if shards != requested:
        stale = (stale + "; " if stale else "") + (
            f"kept the {shards} shards this evaluation started with ({requested} asked; "
            f"delete {directory / 'sample'} and {directory / 'samples'} to re-shard)")
    live_shards: dict[int, str] = {}     # shard -> its still queued or running Slurm job
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
        elif int(previous.get("shards") or 0) == shards:   # e.g. its score job was cancelled
            live_shards = {int(k): v for k, v in previous.get("sample_jobs", {}).items()
                           if v in live}
    if cluster != "slurm":
        wait_run(train)
        if run_state(run_dir(workdir, run.run_id))[0] != "done":
            entry = EvalSubmitted(run, directory, "blocked", shards,
                                  message="its training run is not done" if not run.external
                                  else "its Vista prepare step failed (checkout or checkpoint)")
            _record_eval(entry, cluster, blocked=entry.message)
            return entry
    spec_path = directory / "spec.json"
    write_record(spec_path, eval_record(record, run.protocol, workdir, shards, commit))
    if cluster != "slurm":
        for i in range(shards):
            wait_for_earlier_job(shard_state_dir(directory, i, shards),
                                 f"sample shard {i}/{shards} of run {run.run_id}")
    todo = [i for i in range(shards)
            if run_state(shard_state_dir(directory, i, shards))[0] != "done"
            and i not in live_shards]
    train_dep = f"afterok:{train.job_id}" if cluster == "slurm" and train.job_id and \
        train.action in ("submitted", "reused") else None
    entry = EvalSubmitted(run, directory, "submitted", shards, dict(live_shards),
                          message=stale)
    if todo:
        from .eval_job import SampleJob
        executor = _eval_executor(cluster, workdir, run, "sample", options.sample_hours,
                                  train_dep, partition)
        if cluster == "slurm":
            jobs = executor.map_array(SampleJob(), [str(spec_path)] * len(todo), todo)
            # beside the live shards' jobs, which job.json must keep listing
            entry.sample_jobs.update({i: str(job.job_id) for i, job in zip(todo, jobs)})
            entry.jobs += jobs
        else:   # one local job at a time (each uses every core)
            for i in todo:
                job = executor.submit(SampleJob(), str(spec_path), i)
                entry.sample_jobs[i] = str(job.job_id)
                wait_job(job)
    if cluster != "slurm":
        failed = [i for i in range(shards)
                  if run_state(shard_state_dir(directory, i, shards))[0] != "done"]
        if failed:
            entry.action, entry.message = "blocked", f"sample shards {failed} failed"
            _record_eval(entry, cluster)
            return entry
    score_dep = None
    if cluster == "slurm":
        array_ids = sorted({job_id.split("_")[0] for i, job_id in entry.sample_jobs.items()
                            if i not in live_shards})
        array_ids += [live_shards[i] for i in sorted(live_shards)]   # single array tasks
        score_dep = ("afterok:" + ":".join(array_ids)) if array_ids else train_dep
    from .eval_job import ScoreJob
    executor = _eval_executor(cluster, workdir, run, "score", options.score_hours,
                              score_dep, partition)
    job = executor.submit(ScoreJob(), str(spec_path))
    entry.score_job = str(job.job_id)
    entry.jobs.append(job)
    if cluster != "slurm":
        wait_job(job)
        entry.jobs = []
        if eval_state(directory)[0] != "done":
            entry.action, entry.message = "failed", f"scoring failed; log {job.paths.stderr}"
    _record_eval(entry, cluster)
    return entry


def _started_shards(directory: Path, previous: dict[str, Any]) -> int | None:
    """The shard count an unfinished evaluation already sampled with (its sample/<i>-of-<n>
    state folders), so that another count does not sample its finished clips again."""
    from .eval_job import eval_state
    if eval_state(directory)[0] == "done":
        return None
    counts = {int(d.name.split("-of-")[1]) for d in (directory / "sample").glob("*-of-*")
              if run_state(d)[0] != "pending"}
    if not counts:
        return None
    recorded = int(previous.get("shards") or 0)
    return recorded if recorded in counts else max(counts)


def _record_eval(entry: EvalSubmitted, cluster: str, blocked: str | None = None) -> None:
    """The evaluation's job.json: its jobs, or (`blocked`) why a local submit started none (its
    training run is not done)."""
    run = entry.run
    atomic_write_json(entry.directory / "job.json",
                      {"cluster": cluster, "target": run.target,
                       "targets": add_target(entry.directory, run.target), "name": run.name,
                       "scale": run.scale, "protocol": run.protocol, "shards": entry.shards,
                       "sample_jobs": {str(k): v for k, v in entry.sample_jobs.items()},
                       "score_job": entry.score_job,
                       "blocked": blocked, "waits_for": run.run_id if blocked else None,
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


