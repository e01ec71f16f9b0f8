"""The job graph of a submission: one node per job, whatever the run's kind.

A run gives a run node (its own job: training, or Vista's prepare step) and, when its kind
evaluates it, an evaluation: one sample node per shard (after the run node) and a score node
(after every shard). A node knows its stable key, the folder of its state files, the file
that says it is done, the job it submits (callable, arguments, shape), its parents and the
job an earlier submit recorded for it. The scheduler (submit.py) places every node the same
way; the run and the evaluation each record their jobs in their `job.json`, in the format
`repro status` reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from evals.atomic import atomic_write_json, read_json
from maskgwm.config import get_scale

from repro.jobs.evaluation import SampleJob, ScoreJob, eval_record, eval_state, node_id
from repro.jobs.kinds import kind_of
from repro.jobs.run import TrainingJob
from repro.jobs.state import eval_dir, run_dir, run_state, shard_state_dir
from repro.launch.backends import Job, JobShape
from repro.launch.shapes import eval_shape
from repro.records import RunRecord, VistaFields, write_record
from repro.targets.jobfiles import ResolvedRun

MAX_TIMEOUT_REQUEUES = 20   # a paper-scale stage spans several 24-hour jobs


@dataclass
class Node:
    key: str
    kind: str                       # run | sample | score
    run: ResolvedRun
    state_dir: Path                 # running.json, done.json, failed.json
    done_file: Path                 # the node is done once this exists
    shape: JobShape
    call: Any                       # TrainingJob() | SampleJob() | ScoreJob()
    args: tuple
    parents: list["Node"] = field(default_factory=list)
    recorded: Callable[[], str | None] | None = None   # reads the job an earlier submit recorded
    prepare: Callable[[], None] | None = None   # before its job is submitted (writes spec.json)
    label: str = ""                 # what its job does, for progress lines

    def done(self) -> bool:
        return self.done_file.is_file()

    @property
    def previous_job(self) -> str | None:
        """The job id an earlier submit recorded for this node (read now, from job.json)."""
        return self.recorded() if self.recorded else None


@dataclass
class Placed:
    """What the scheduler did with a node: skipped (done), reused (its job is still queued),
    submitted, or blocked (a local submit: a parent is not done; `message` says why)."""
    node: Node
    action: str
    job: Job | None = None
    message: str = ""
    after: str | None = None        # the Slurm dependency it was submitted with

    @property
    def job_id(self) -> str | None:
        return self.job.job_id if self.job else None

    @property
    def run(self) -> ResolvedRun:
        return self.node.run


def run_record(run: ResolvedRun, train_options: dict[str, Any] | None = None,
               commit: str = "", vista: VistaFields | None = None) -> RunRecord:
    """The record (spec.json) a run's job reads; `train_options` override the scale's;
    `vista`: what the submit was given for Vista (a Vista run records it)."""
    return RunRecord(run_id=run.run_id, parent_id=run.parent_id, target=run.target,
                     name=run.name, stage=run.stage, variant=run.variant, scale=run.scale,
                     config=run.config, cells=list(run.cells), protocol=run.protocol,
                     train_options={**get_scale(run.scale).train, **(train_options or {})},
                     submitted_from_commit=commit,
                     **kind_of(run.stage, vista).record_fields(run))


def evaluated_runs(runs: list[ResolvedRun]) -> list[ResolvedRun]:
    """Runs that get sample and score jobs: those with paper cells that their kind evaluates."""
    return [run for run in runs if run.cells and kind_of(run.stage).evaluated(run)]


def previous_job(directory: Path) -> dict[str, Any] | None:
    path = directory / "job.json"
    return read_json(path) if path.exists() else None


def targets_of(job: dict[str, Any]) -> list[str]:
    """The targets that submitted a run or evaluation (job.json "targets"; older files: the
    last submitter only)."""
    return job.get("targets") or ([job["target"]] if job.get("target") else [])


def add_target(directory: Path, *targets: str) -> list[str]:
    """Record that `targets` use this run or evaluation too (a run shared by several targets
    shows under each in `repro status TARGET`); returns all its targets."""
    job = previous_job(directory) or {}
    every = sorted({*targets_of(job), *targets})
    if job and every != targets_of(job):
        atomic_write_json(directory / "job.json", {**job, "targets": every})
    return every


def run_node(run: ResolvedRun, workdir: Path, parent: Node | None, commit: str,
             train_options: dict[str, Any] | None = None,
             vista: VistaFields | None = None) -> Node:
    """A run's own job: its nodes and tasks per node as its kind asks."""
    directory = run_dir(workdir, run.run_id)
    spec = directory / "spec.json"
    shape = JobShape(f"{run.target}-{run.name}-{run.run_id}", workdir / "logs" / run.run_id / "%j",
                     kind_of(run.stage).job_resources(run), MAX_TIMEOUT_REQUEUES)
    return Node(run.run_id, "run", run, directory, directory / "done.json", shape,
                TrainingJob(), (str(spec),), [parent] if parent else [],
                lambda: (previous_job(directory) or {}).get("job_id"),
                lambda: write_record(spec, run_record(run, train_options, commit, vista)),
                f"{kind_of(run.stage).job_verb} {run.name} (run {run.run_id})")


@dataclass
class Evaluation:
    """A run's evaluation under its protocol: sample nodes, then the score node."""
    run: ResolvedRun
    directory: Path
    shards: int
    samples: list[Node]
    score: Node
    note: str = ""                  # a stale result moved aside, shards kept


def evaluation(run: ResolvedRun, run_job: Node, workdir: Path, commit: str,
               shards: int | None = None, vista: VistaFields | None = None) -> Evaluation:
    """The evaluation's nodes. A result scored under an older protocol version is moved aside
    first; an unfinished evaluation keeps the shard count it started with."""
    from repro.report.collect import current_protocol_hash
    directory = eval_dir(workdir, run.run_id, run.protocol)
    notes = []
    state, result = eval_state(directory)
    if state == "done" and result.get("protocol_hash") != current_protocol_hash(run):
        old = str(result.get("protocol_hash"))
        aside = run_dir(workdir, run.run_id) / "eval-stale" / f"{run.protocol}-{old}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        directory.rename(aside)
        notes.append(f"re-scored: the result of protocol version {old} was moved to {aside}")
    options = get_scale(run.scale).sampling
    previous = previous_job(directory) or {}
    requested = shards or options.shards
    shards = _started_shards(directory, previous) or requested
    if shards != requested:
        notes.append(f"kept the {shards} shards this evaluation started with ({requested} "
                     f"asked; delete {directory / 'sample'} and {directory / 'samples'} to "
                     "re-shard)")
    spec = directory / "spec.json"

    def recorded(key: str, shard: int | None = None) -> Callable[[], str | None]:
        def read() -> str | None:       # a sample job only where the shard count is the same
            job = previous_job(directory) or {}
            if shard is None:
                return job.get(key)
            same = int(job.get("shards") or 0) == shards
            return job.get(key, {}).get(str(shard)) if same else None
        return read

    def write_spec() -> None:
        write_record(spec, eval_record(run_record(run, vista=vista), run.protocol, workdir,
                                       shards, commit))

    sample_shape = eval_shape(run, workdir, "sample")
    folders = [shard_state_dir(directory, i, shards) for i in range(shards)]
    samples = [Node(node_id(run.run_id, run.protocol, "sample", i, shards), "sample", run,
                    folder, folder / "done.json", sample_shape, SampleJob(), (str(spec), i),
                    [run_job], recorded("sample_jobs", i), write_spec,
                    f"sample {run.name} shard {i + 1}/{shards}")
               for i, folder in enumerate(folders)]
    score = Node(node_id(run.run_id, run.protocol, "score"), "score", run, directory / "score",
                 directory / "result.json", eval_shape(run, workdir, "score"), ScoreJob(),
                 (str(spec),), samples, recorded("score_job"), write_spec,
                 f"score {run.name}")
    return Evaluation(run, directory, shards, samples, score, "; ".join(notes))


def _started_shards(directory: Path, previous: dict[str, Any]) -> int | None:
    """The shard count an unfinished evaluation already sampled with (its sample/<i>-of-<n>
    state folders), so that another count does not sample its finished clips again."""
    if eval_state(directory)[0] == "done":
        return None
    counts = {int(d.name.split("-of-")[1]) for d in (directory / "sample").glob("*-of-*")
              if run_state(d)[0] != "pending"}
    if not counts:
        return None
    recorded = int(previous.get("shards") or 0)
    return recorded if recorded in counts else max(counts)
