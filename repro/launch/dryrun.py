"""`repro submit --dry-run`: every job the submit would place, with its Slurm options, command
and GPU-hour estimate, from the same graph nodes (graph.py); nothing is written."""
from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable

from maskgwm.config import get_scale

from repro.jobs.evalsets import scaled_protocol
from repro.jobs.kinds import kind_of
from repro.jobs.state import run_state
from repro.launch.backends import sbatch_command, sbatch_options
from repro.launch.estimate import sampling_gpu_hours, training_gpu_hours
from repro.launch.gpumemory import REFUSED, describe
from repro.launch.graph import evaluated_runs, run_node
from repro.launch.preflight import warn_missing
from repro.launch.submit import EVAL_ENV
from repro.records import VistaFields
from repro.targets.jobfiles import ResolvedRun, Target, resolve_target
from repro.targets.union import by_run, fan_out, owners


def run_command(spec_path: Path) -> str:
    return shlex.join([sys.executable, "-m", "repro.jobs.run", str(spec_path)])


def gpu_hours(run: ResolvedRun) -> float:
    return training_gpu_hours(run.stage, run.steps, run.resources.gpus)


def dry_run(target: Target, scale: str, workdir: Path, partition: str | None = None,
            echo: Callable[[str], None] = print, seeds: int = 1,
            vista: VistaFields | None = None,
            train_options: dict[str, Any] | None = None) -> float:
    """Print each run's Slurm options, command, memory plan and GPU-hours; return the total.
    Writes nothing. Each run is printed and counted once, with every evaluation it gets (a
    union target's run may have several protocols). `vista`, `train_options`: as for
    submit."""
    from repro.vista.graph import split_runs
    from repro.vista.inputs import given_inputs
    vista = vista or given_inputs()
    runs, left_out = split_runs(resolve_target(target, scale, seeds), scale, vista)
    groups = by_run(runs)
    names = {run.run_id: run.name for run in runs}
    echo(f"# dry run: target {target.name}, scale {scale}, {len(groups)} runs "
         "(nothing submitted)")
    total = sampling = 0.0
    refused = 0
    evaluated = evaluated_runs(runs)
    for run_id, entries in groups.items():
        run = entries[0]
        node = run_node(run, workdir, None, "", vista=vista)
        state, _ = run_state(node.state_dir)
        dependency = f"afterok:<job of {names[run.parent_id]}>" if run.parent_id else None
        hours = gpu_hours(run)
        total += 0.0 if state == "done" else hours
        cells = [cell for entry in entries for cell in entry.cells]
        protocols = dict.fromkeys(entry.protocol for entry in entries if entry.cells)
        echo(f"\n## {run.name}  run {run_id}  stage {run.stage}  variant {run.variant or '-'}"
             f"  parent {run.parent_id or '-'}  [{state}]")
        echo(f"   steps {run.steps}  protocol {', '.join(protocols) or run.protocol}"
             f"  cells {', '.join(cells) or '-'}")
        if target.members:
            echo(f"   needed by {', '.join(owners(entries))}")
        options = sbatch_options(node.shape, dependency, partition)
        echo(f"   {sbatch_command(options)}")
        echo(f"   command: {run_command(node.args[0])}")
        memory_line = describe(run, train_options)
        refused += memory_line.startswith(REFUSED)
        echo(f"   {memory_line}")
        echo(f"   estimated GPU-hours: {hours:,.0f}" + ("" if run.resources.gpus else " (CPU only)"))
        for entry in entries:
            if entry in evaluated:
                sampling += echo_eval_plan(entry, workdir, partition, echo, vista)
    if left_out:
        echo("\n# " + left_out)
    if target.members:
        echo("\n# order: a run starts once its parent is done; siblings are independent")
        for line in fan_out(runs):
            echo(f"#   {line}")
    echo(f"\n# total estimated GPU-hours (runs not yet done): {total + sampling:,.0f} "
         f"(training {total:,.0f}, sampling for evaluation {sampling:,.1f}; each run and "
         "evaluation once; scoring and Vista's sampling not included; see "
         "repro/launch/estimate.py)")
    if refused:
        echo(f"\n# WARNING: {refused} training run(s) do not fit their GPUs' memory; `repro "
             "submit` will refuse them (see their memory lines)")
    warn_missing(runs, scale, workdir, os.environ.get(EVAL_ENV, "1") != "0", echo, vista)
    return total + sampling


def plan_hours(runs: list[ResolvedRun], vista: VistaFields | None = None
               ) -> tuple[float, float]:
    """(training, sampling) GPU-hours of every run and evaluation, each once, done or not."""
    training = sum(gpu_hours(entries[0]) for entries in by_run(runs).values())
    return training, sum(sampling_hours(run, vista) for run in evaluated_runs(runs))


def sampling_hours(run: ResolvedRun, vista: VistaFields | None = None) -> float:
    """GPU-hours to sample a run's evaluation set (0 on the CPU, or where its kind has no
    estimate)."""
    if kind_of(run.stage, vista).unestimated or not run.resources.gpus:
        return 0.0
    return sampling_gpu_hours(scaled_protocol(run.protocol, run.scale),
                              get_scale(run.scale).sampling.steps)


def echo_eval_plan(run: ResolvedRun, workdir: Path, partition: str | None,
                   echo: Callable[[str], None], vista: VistaFields | None = None) -> float:
    """Print a run's evaluation jobs and their sampling estimate; return its GPU-hours (0 when
    already scored, on the CPU, or not estimated for its kind)."""
    from repro.jobs.evaluation import eval_state
    from repro.jobs.state import eval_dir
    options = get_scale(run.scale).sampling
    directory = eval_dir(workdir, run.run_id, run.protocol)
    echo(f"   then: sample array of {options.shards} shards (afterok on this job), score "
         f"job (afterok on the array) -> {directory / 'result.json'}")
    kind = kind_of(run.stage, vista)
    kind.echo_plan(run, workdir, partition, echo)
    if kind.unestimated:
        echo(f"   estimated sampling GPU-hours: not estimated ({kind.unestimated})")
        return 0.0
    if not run.resources.gpus:
        echo("   estimated sampling GPU-hours: 0 (CPU only)")
        return 0.0
    hours = sampling_hours(run, vista)
    per_shard = hours / options.shards
    echo(f"   estimated sampling GPU-hours: {hours:,.1f} ({per_shard:,.2f} per shard; "
         f"time limit {options.sample_hours} h)")
    if per_shard > options.sample_hours:
        echo(f"   WARNING: a sample shard may need {per_shard:,.1f} h, over its "
             f"{options.sample_hours} h limit (it requeues and resumes, or raise "
             f"[{run.scale}] sampling.shards in maskgwm/config/scales.toml)")
    return 0.0 if eval_state(directory)[0] == "done" else hours
