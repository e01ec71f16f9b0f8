"""Vista as a run kind: the same methods as repro/jobs/kinds.py's `TrainedRun`.

The run's own job is a prepare step on one CPU task (check and record the checkout, the
interpreter, the checkpoint and the CLIP weights: job.prepare); its sample shards run Vista's
sample.py (job.run_shard) and the score job checks that every shard ran the sample.py and
checkpoint the prepare step recorded. Every result says whose clips it scored (`vista_label`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from evals.atomic import atomic_write_json
from maskgwm.config import get_scale

from repro.jobs.state import run_dir, run_state, shard_state_dir
from repro.records import EvalRecord, RunRecord, VistaFields
from repro.targets.jobfiles import ResolvedRun, Resources

PREPARE_HOURS = 0.5   # the prepare job: check the checkout, hash the checkpoint
VISTA_LABEL = "Vista (official checkpoint, this suite's evaluation)"
VISTA_DOUBLE_LABEL = "Vista TEST DOUBLE (not the official checkpoint)"


def vista_label(record: dict[str, Any]) -> str:
    if record.get("vista_test_double"):
        return VISTA_DOUBLE_LABEL
    if not record.get("vista_ckpt_pinned"):
        return (f"Vista (checkpoint sha256 {str(record.get('vista_ckpt_sha256'))[:12]}..., NOT "
                "the published file; this suite's evaluation)")
    return VISTA_LABEL


class VistaRun:
    """`inputs`: what the submit was given for Vista (default: given_inputs(), the flags'
    environment variables); a job reads its record's instead."""
    name = "vista"
    job_verb = "prepare"
    not_ready = "its Vista prepare step failed (checkout or checkpoint)"
    unestimated = "Vista's sampler not measured"

    def __init__(self, inputs: VistaFields | None = None):
        self._inputs = inputs

    @property
    def inputs(self) -> VistaFields:
        from repro.vista.inputs import given_inputs
        return self._inputs or given_inputs()

    def evaluated(self, run: ResolvedRun) -> bool:
        return True

    def job_resources(self, run: ResolvedRun) -> Resources:
        return dataclasses.replace(run.resources, nodes=1, gpus_per_node=0,
                                   tasks_per_node=None, time_hours=PREPARE_HOURS)

    def record_fields(self, run: ResolvedRun) -> dict[str, Any]:
        return {"vista": self.inputs}

    def eval_fields(self, record: RunRecord, protocol: str) -> dict[str, Any]:
        from repro.vista.job import settings_for
        settings = settings_for(protocol, record.scale, record.config.get("seed", 0),
                                record.vista or VistaFields())
        return {"vista": dataclasses.replace(record.vista or VistaFields(),
                                             settings=settings.to_dict())}

    def before_submit(self, run: ResolvedRun, workdir: Path) -> str:
        from repro.vista.graph import retire_if_changed
        return retire_if_changed(run, workdir, self.inputs)

    def execute(self, spec: RunRecord, directory: Path) -> dict[str, Any]:
        """Check the checkout and checkpoint; record them and the resolved config."""
        from repro.vista.job import prepare
        record = spec.to_json()
        atomic_write_json(directory / "config.json",
                          {key: record.get(key) for key in ("run_id", "parent_id", "stage",
                                                            "variant", "scale", "config",
                                                            "vista")})
        return prepare(spec, directory)

    def sample(self, spec: EvalRecord, directory: Path, shard: int) -> dict[str, Any]:
        from repro.vista.job import run_shard
        _prepared(spec)
        return run_shard(spec, directory, shard)

    def model(self, spec: EvalRecord, directory: Path) -> dict[str, Any]:
        """The prepare record, after checking every shard ran the same sample.py and
        checkpoint."""
        record = _prepared(spec)
        keys = ("vista_sample_py_sha256", "vista_ckpt_sha256")
        for shard in range(spec.shards):
            done = run_state(shard_state_dir(directory, shard, spec.shards))[1]
            if any(done.get(key) != record[key] for key in keys):
                raise RuntimeError(f"sample shard {shard} of {directory} ran another Vista "
                                   "sample.py or checkpoint than the run recorded; delete "
                                   f"{directory} and "
                                   f"{run_dir(Path(spec.workdir), spec.run_id)}/done.json, "
                                   "then submit again")
        return record

    def provenance(self, spec: EvalRecord, model: dict[str, Any]) -> dict[str, Any]:
        settings = spec.vista.settings
        size = f"{settings['width']}x{settings['height']}"
        return {**model, "sampler": "vista", "sampling": {**settings, "shards": spec.shards},
                "vista_resolution": (f"{size} (the evaluation set's size: ci/smoke, test double)"
                                     if get_scale(spec.scale).synthetic
                                     else f"{size} (Vista's)"),
                "vista_label": vista_label(model)}

    def echo_plan(self, run: ResolvedRun, workdir: Path, partition: str | None,
                  echo: Callable[[str], None]) -> None:
        from repro.vista.plan import echo_plan
        echo_plan(run, workdir, partition, echo, inputs=self.inputs)


def _prepared(spec: EvalRecord) -> dict[str, Any]:
    """The Vista run's prepare record (checkout commit, sample.py and checkpoint SHA-256)."""
    state, record = run_state(run_dir(Path(spec.workdir), spec.run_id))
    if state != "done" or "vista" not in record:
        raise RuntimeError(f"Vista run {spec.run_id} ({spec.name}) is {state}, not "
                           "prepared; submit the target again")
    return record["vista"]
