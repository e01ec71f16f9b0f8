"""Submit a target's job graph (graph.py) through a backend (backends.py): one loop for every node.

`Scheduler.place` treats a run's job, a sample array and a score job alike: a node that is done
is skipped; a node whose recorded job is still queued is reused (cancelled and submitted again
when Slurm says it waits for a failed parent, or when one of its parents was submitted anew);
on a backend that runs jobs here, a node waits for an earlier submit's process still working
on it and is blocked while a parent is not done; the rest is submitted, after its parents'
jobs (here: one job at a time, each waited for before the next, and reported to the submit's
progress `Tracker`, progress.py, as it ends). Submitting again therefore skips finished work
and reuses jobs still queued or running, so no run is trained, sampled or scored twice. A run
listed more than once (a union target's run shared under several protocols,
repro/targets/union.py) gets one training node.
"""
from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from evals.atomic import atomic_write_json

from repro.jobs.kinds import kind_of
from repro.jobs.state import git_commit, run_state, wait_for_earlier_job
from repro.launch.backends import Backend, Job, afterok, backend_for
from repro.launch.graph import (Evaluation, Node, Placed, add_target, evaluated_runs,
                                evaluation, run_node)
from repro.launch.gpumemory import chosen_options
from repro.launch.preflight import check_inputs
from repro.launch.locks import node_locks
from repro.launch.progress import Tracker
from repro.records import VistaFields
from repro.targets.jobfiles import ResolvedRun, Target, resolve_target
from repro.targets.union import by_run, owners

EVAL_ENV = "REPRO_EVAL"     # REPRO_EVAL=0: submit trains only (no sample and score jobs)


class Scheduler:
    """Places nodes on one backend and remembers what it did with each (by node key);
    `progress` hears of every job run here as it ends, and of nodes left out."""

    def __init__(self, backend: Backend, progress: Tracker | None = None,
                 echo: Callable[[str], None] = print):
        self.backend, self.progress, self.echo = backend, progress, echo
        self.placed: dict[str, Placed] = {}

    def place(self, nodes: list[Node],
              record: Callable[[list[Placed]], None] | None = None) -> list[Placed]:
        """Place nodes of one shape and callable (one job, or a sample array); `record` sees
        the placements once all are placed, before the last job submitted here is waited for
        (for one node: before its job runs). The nodes' submit locks (locks.py) are held
        throughout, so what earlier submits recorded is read afresh under them."""
        with node_locks([(node.state_dir, f"{node.kind} {node.key}") for node in nodes],
                        self.echo):
            return self._place(nodes, record)

    def _place(self, nodes: list[Node],
               record: Callable[[list[Placed]], None] | None) -> list[Placed]:
        previous = {node.key: node.previous_job for node in nodes}
        live = self.backend.live([job for job in previous.values() if job])
        todo = []
        for node in nodes:
            if not self.backend.queues:
                wait_for_earlier_job(node.state_dir, f"{node.kind} {node.key}")
            renewed = [p for p in node.parents if self._action(p) == "submitted"]
            state = live.get(previous[node.key] or "")
            if node.done():
                self.placed[node.key] = Placed(node, "skipped")
            elif state and state != "BLOCKED" and not renewed:
                self.placed[node.key] = Placed(node, "reused", Job(previous[node.key]))
            else:
                if state:
                    self.backend.cancel([previous[node.key]])
                todo.append(node)
        if not self.backend.queues:
            todo = [node for node in todo if not self._blocked(node)]
        submitting = {node.key for node in todo}
        self.left_out([node for node in nodes if node.key not in submitting])
        if todo and todo[0].prepare:
            todo[0].prepare()
        if self.backend.queues and todo:
            self._submit(todo)
        elif todo:                      # here: one job at a time, each waited for
            for node in todo[:-1]:
                self._submit([node])
                self._wait(self.placed[node.key])
            self._submit(todo[-1:])
        placed = [self.placed[node.key] for node in nodes]
        if record:
            record(placed)
        for entry in placed:
            self._wait(entry)
        return placed

    def left_out(self, nodes: list[Node]) -> None:
        """Nodes this submit does not run (done, reused or blocked): progress counts them out."""
        for node in nodes if self.progress else []:
            self.progress.drop(node)

    def _wait(self, entry: Placed) -> None:
        """Until the entry's job ends (a job run here: its end goes to `progress`)."""
        job = entry.job
        if job is None:
            return
        here = job.handle is not None and not self.backend.queues
        self.backend.wait(job)
        if here and self.progress:
            self.progress.ended(entry.node, time.monotonic() - job.started,
                                failed=not entry.node.done(), log=job.stderr)

    def _action(self, node: Node) -> str | None:
        placed = self.placed.get(node.key)
        return placed.action if placed else None

    def _blocked(self, node: Node) -> bool:
        """Here: a parent not done blocks the node (why: `_why_blocked`)."""
        waiting = [parent for parent in node.parents if not parent.done()]
        if waiting:
            self.placed[node.key] = Placed(node, "blocked", message=self._why_blocked(node,
                                                                                      waiting))
        return bool(waiting)

    def _why_blocked(self, node: Node, waiting: list[Node]) -> str:
        if node.kind == "sample":
            return kind_of(node.run.stage).not_ready
        if node.kind == "score":
            return f"sample shards {[p.args[1] for p in waiting]} failed"
        parent = waiting[0]
        earlier = self.placed.get(parent.key)
        if earlier and earlier.message:     # a blocked parent's message names its run
            return earlier.message
        ended = "failed" if run_state(parent.state_dir)[0] == "failed" else "did not finish"
        return f"waits for run {parent.run.name} (run {parent.run.run_id}), which {ended}"

    def _submit(self, nodes: list[Node]) -> None:
        after = sorted({_dependency(self.placed[p.key]) for node in nodes for p in node.parents
                        if self._action(p) in ("submitted", "reused")})
        first = nodes[0]
        if len(nodes) == 1:
            jobs = [self.backend.submit(first.shape, after, first.call, *first.args)]
        else:
            jobs = self.backend.submit_array(first.shape, after, first.call,
                                             *map(list, zip(*(node.args for node in nodes))))
        dependency = afterok(after)
        for node, job in zip(nodes, jobs):
            self.placed[node.key] = Placed(node, "submitted", job, after=dependency)


def _dependency(placed: Placed) -> str:
    """A job's id as a dependency: an array submitted now by its array id (every task), a job
    submitted earlier by its own id (one task of an old array)."""
    job_id = placed.job_id or ""
    return job_id.split("_")[0] if placed.action == "submitted" else job_id


@dataclass
class EvalSubmitted:
    """What a submit did with one evaluation (its nodes' placements, summed up)."""
    evaluation: Evaluation
    action: str          # skipped (done) | submitted | reused (queued) | blocked | failed
    sample_jobs: dict[int, str]
    score_job: str | None = None
    message: str = ""

    @property
    def run(self) -> ResolvedRun:
        return self.evaluation.run

    @property
    def directory(self) -> Path:
        return self.evaluation.directory

    @property
    def shards(self) -> int:
        return self.evaluation.shards

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


def submit_run(scheduler: Scheduler, node: Node, owners: list[str] | None = None) -> Placed:
    """Place a run's own job and record it in the run's job.json, with the targets that need
    it (`owners`, default the run's own)."""
    targets = add_target(node.state_dir, *(owners or node.run.owners))

    def record(placed: list[Placed]) -> None:
        entry, run = placed[0], node.run
        if entry.action not in ("submitted", "blocked"):
            return
        blocked, job = entry.action == "blocked", entry.job
        atomic_write_json(node.state_dir / "job.json",
                          {"cluster": scheduler.backend.cluster, "job_id": entry.job_id,
                           "stdout": job and job.stdout, "stderr": job and job.stderr,
                           "target": run.target, "targets": targets, "name": run.name,
                           "scale": run.scale, "dependency": entry.after,
                           "blocked": entry.message if blocked else None,
                           "waits_for": run.parent_id if blocked else None})
    return scheduler.place([node], record)[0]


def submit_eval(scheduler: Scheduler, ev: Evaluation) -> EvalSubmitted:
    """Place an evaluation's sample nodes, then its score node (unless its result exists),
    recording each placement in the evaluation's job.json while the nodes' locks are held."""
    targets = add_target(ev.directory, *ev.run.owners)
    if ev.score.done():
        scheduler.left_out([*ev.samples, ev.score])
        return EvalSubmitted(ev, "skipped", {})

    def record(samples: list[Placed], score: Placed | None = None) -> None:
        _write_eval_job(scheduler.backend.cluster, ev, targets, samples, score)
    samples = scheduler.place(ev.samples, record)
    score = scheduler.place([ev.score], lambda placed: record(samples, placed[0]))[0]
    placed = [*samples, score]
    blocked = next((p.message for p in placed if p.action == "blocked"), "")
    if blocked:
        action = "blocked"
    elif all(p.action in ("reused", "skipped") for p in placed):
        action = "reused"
    elif not scheduler.backend.queues and not ev.score.done():
        action, blocked = "failed", f"scoring failed; log {score.job.stderr}"
    else:
        action = "submitted"
    return EvalSubmitted(ev, action, _sample_jobs(samples), score.job_id,
                         "; ".join(filter(None, (ev.note, blocked))))


def _sample_jobs(samples: list[Placed]) -> dict[int, str]:
    return {p.node.args[1]: p.job_id for p in samples if p.job_id}


def _write_eval_job(cluster: str, ev: Evaluation, targets: list[str], samples: list[Placed],
                    score: Placed | None) -> None:
    """The evaluation's job.json, in the format `repro status` reads; before its score node
    is placed, the score job an earlier submit recorded stays."""
    run, first = ev.run, samples[0] if samples else score
    blocked = first is not None and first.action == "blocked"
    atomic_write_json(ev.directory / "job.json",
                      {"cluster": cluster, "target": run.target, "targets": targets,
                       "name": run.name, "scale": run.scale, "protocol": run.protocol,
                       "shards": ev.shards,
                       "sample_jobs": {str(k): v for k, v in _sample_jobs(samples).items()},
                       "score_job": score.job_id if score else ev.score.previous_job,
                       "blocked": first.message if blocked else None,
                       "waits_for": run.run_id if blocked else None,
                       "logs": str(ev.directory.parents[2] / "logs" / run.run_id)})


def _check_writable(workdir: Path) -> None:
    probe = workdir / "runs" / ".write-check"
    atomic_write_json(probe, {}, hint="set REPRO_WORKDIR to a writable directory "
                      "(on a cluster, one every node can see)")
    probe.unlink()


def submit(target: Target, scale: str, cluster: str, workdir: Path, wait: bool = False,
           partition: str | None = None, echo: Callable[[str], None] = print,
           evaluate: bool | None = None, evals_out: list | None = None,
           seeds: int = 1, train_options: dict[str, Any] | None = None,
           vista: VistaFields | None = None) -> list[Placed]:
    """Submit every unfinished run of `target` at `scale`, then (with `evaluate`) the sample
    and score jobs of every evaluated run (repro/jobs/evaluation.py); local and debug jobs
    finish here, each echoing a progress line as it ends (progress.py). The evaluation
    entries are appended to `evals_out`. `evaluate` None: on unless the environment sets
    REPRO_EVAL=0 (train only). `train_options`: TrainOptions fields for the training jobs
    (e.g. {"strategy": "fsdp"}); on GPUs the memory plan chooses strategy and activation
    checkpointing within what they fix (gpumemory.py). `vista`: what the user gave for Vista
    runs (default: repro/vista/inputs.given_inputs(), from the environment)."""
    from repro.vista.graph import split_runs
    from repro.vista.inputs import given_inputs
    vista = vista or given_inputs()
    if evaluate is None:
        evaluate = os.environ.get(EVAL_ENV, "1") != "0"
    backend = backend_for(cluster, partition)
    runs, left_out = split_runs(resolve_target(target, scale, seeds), scale, vista)
    if left_out:
        echo(left_out)
    check_inputs(runs, scale, workdir, evaluate, vista)   # lite/paper: refuse before writing
    planned = chosen_options(runs, train_options)          # refuses runs that cannot fit
    _check_writable(workdir)
    for note in filter(None, (kind_of(run.stage, vista).before_submit(run, workdir)
                              for run in runs)):
        echo(note)
    backend.check()
    commit = git_commit()
    groups = by_run(runs)       # several entries: a union's run shared under several protocols
    nodes: dict[str, Node] = {}
    for run_id, entries in groups.items():
        nodes[run_id] = run_node(entries[0], workdir, nodes.get(entries[0].parent_id), commit,
                                 {**planned.get(run_id, {}), **(train_options or {})}, vista)
    evaluations = [evaluation(run, nodes[run.run_id], workdir, commit, vista=vista)
                   for run in (evaluated_runs(runs) if evaluate else [])]
    progress = None if backend.queues else Tracker(echo)
    if progress:
        progress.expect(_to_run(list(nodes.values()), evaluations))
    scheduler, placed = Scheduler(backend, progress, echo), []
    for run_id, entries in groups.items():
        run = entries[0]
        entry = submit_run(scheduler, nodes[run_id], owners(entries))
        placed.append(entry)
        job = entry.job
        echo(f"{entry.action:>9}  {run.name:<24} run {run.run_id}"
             + (f"  job {entry.job_id}" if entry.job_id else "")
             + (f"  log {job.stdout}" if job and job.stdout else "")
             + (f"  ({entry.message})" if entry.message else ""))
    evals: list[EvalSubmitted] = []
    for ev in evaluations:
        item, run = submit_eval(scheduler, ev), ev.run
        evals.append(item)
        echo(f"{'eval ' + item.action:>14}  {run.name:<24} run {run.run_id}  "
             f"{run.protocol}  {item.describe()}")
    if evals_out is not None:
        evals_out.extend(evals)
    _record_submission(target, scale, cluster, commit, placed, evals, workdir)
    if backend.queues and wait:
        wait_for_slurm(scheduler)
    if evals and (not backend.queues or wait):
        done = sum(e.evaluation.score.done() for e in evals)
        echo(f"{done}/{len(evals)} evaluations done for {target.name} ({scale})")
        for e in evals:
            if not e.evaluation.score.done():
                echo(f"eval not done: {e.run.name} (run {e.run.run_id}, {e.run.protocol}): "
                     f"{e.message or e.action}")
    if left_out:
        echo(left_out)
    return placed


def _to_run(run_nodes: list[Node], evaluations: list[Evaluation]) -> list[Node]:
    """The jobs a submit expects to run: nodes not done (none of an evaluation already scored,
    which `submit_eval` skips)."""
    eval_nodes = [node for ev in evaluations if not ev.score.done()
                  for node in (*ev.samples, ev.score)]
    return [node for node in run_nodes + eval_nodes if not node.done()]


def _record_submission(target: Target, scale: str, cluster: str, commit: str,
                       placed: list[Placed], evals: list[EvalSubmitted], workdir: Path) -> None:
    """<workdir>/submissions/<time>-<target>-<scale>.json: what this submit did."""
    record = {"target": target.name, "scale": scale, "cluster": cluster, "git_commit": commit,
              "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "runs": [{"run_id": p.node.run.run_id, "name": p.node.run.name,
                        "action": p.action, "job_id": p.job_id,
                        "stdout": p.job and p.job.stdout, "stderr": p.job and p.job.stderr}
                       for p in placed],
              "evaluations": [e.record() for e in evals]}
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    atomic_write_json(workdir / "submissions" / f"{stamp}-{target.name}-{scale}.json", record)


def wait_for_slurm(scheduler: Scheduler, poll_s: float = 2.0) -> None:
    """Until every job of this submit is done, failed, left the queue, or waits for a failed
    parent."""
    waiting = [p for p in scheduler.placed.values() if p.job_id]
    while waiting:
        live = scheduler.backend.live([p.job_id for p in waiting])
        waiting = [p for p in waiting if not p.node.done()
                   and run_state(p.node.state_dir)[0] != "failed"
                   and live.get(p.job_id, "BLOCKED") != "BLOCKED"]
        if waiting:
            time.sleep(poll_s)
