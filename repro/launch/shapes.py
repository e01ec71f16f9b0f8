"""The shape of an evaluation's sample and score jobs: one task each, named and logged after
the run (graph.py submits them; repro/vista/plan.py prints them for Vista's sample array)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from maskgwm.config import get_scale

from repro.launch.backends import JobShape
from repro.targets.jobfiles import ResolvedRun, Resources


def one_task(run: ResolvedRun, hours: float) -> Resources:
    """One node, one task, one GPU where the run's own job had GPUs."""
    return dataclasses.replace(run.resources, nodes=1, tasks_per_node=1,
                               gpus_per_node=1 if run.resources.gpus_per_node else 0,
                               time_hours=hours)


def eval_shape(run: ResolvedRun, workdir: Path, what: str) -> JobShape:
    """A `what` ("sample" or "score") job of the run's evaluation."""
    options = get_scale(run.scale).sampling
    hours = options.sample_hours if what == "sample" else options.score_hours
    return JobShape(f"{run.target}-{run.name}-{what}-{run.run_id}",
                    workdir / "logs" / run.run_id / f"eval-{run.protocol}-{what}" / "%j",
                    one_task(run, hours))
