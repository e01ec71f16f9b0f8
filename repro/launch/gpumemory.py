"""Each GPU training run's memory plan at submit (maskgwm/train/memory.py): the cheapest
strategy and activation checkpointing that fit the job's GPUs, recorded in the run's train
options; a run that cannot fit is refused before anything is written. CPU-only runs (no GPUs
in their resources) and external runs (Vista) have no plan. The text tokens per frame are
those the job will load: `$REPRO_WEIGHTS/text_embeddings.pt`'s, else the zeros stand-in's."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from maskgwm.train.memory import DoesNotFit, MemoryPlan, choose_setting
from maskgwm.train.options import config_from_dict, env_path

from repro.targets.jobfiles import ResolvedRun

REFUSED = "memory per GPU: DOES NOT FIT"
"""How `describe` begins for a run that cannot fit."""

def plan_for(run: ResolvedRun, overrides: dict[str, Any] | None = None) -> MemoryPlan | None:
    """The chosen plan (DoesNotFit when none fits); None for a run without one."""
    if run.external or not run.resources.gpus:
        return None
    given = overrides or {}
    config = config_from_dict(run.config, where=f"run {run.run_id}")
    return choose_setting(config, run.resources.gpus, run.resources.gpu_mem_gb,
                          strategy=given.get("strategy"),
                          checkpointing=given.get("activation_checkpointing"),
                          text_tokens=text_tokens(config.model.preset, config.scale,
                                                  env_path(None, "REPRO_WEIGHTS")))


@lru_cache(maxsize=16)
def text_tokens(preset: str, scale: str, weights: Path | None) -> int:
    """Text tokens per frame of the conditioning a job at `scale` loads (modelsetup)."""
    from maskgwm.train.modelsetup import load_text
    return int(load_text(preset, weights, scale)[0].encoder_hidden_states.shape[1])


def options_of(plan: MemoryPlan) -> dict[str, Any]:
    """TrainOptions fields for a plan (one process: the trainer wraps nothing)."""
    return {"strategy": "fsdp" if plan.strategy == "fsdp" else "ddp",
            "activation_checkpointing": plan.checkpointing}


def chosen_options(runs: list[ResolvedRun], overrides: dict[str, Any] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """{run id: train options of its plan} for every run with one; DoesNotFit naming every
    run that cannot fit."""
    chosen, refused = {}, []
    for run in runs:
        try:
            plan = plan_for(run, overrides)
        except DoesNotFit as err:
            refused.append(f"{run.name} (run {run.run_id}): {err}")
            continue
        if plan is not None:
            chosen[run.run_id] = options_of(plan)
    if refused:
        raise DoesNotFit(f"{len(refused)} training run(s) do not fit the GPUs' memory; "
                         "nothing was submitted:\n  " + "\n  ".join(refused))
    return chosen


def describe(run: ResolvedRun, overrides: dict[str, Any] | None = None) -> str:
    """The dry-run's line for a run: its plan, or why it would be refused."""
    capacity = run.resources.gpu_mem_gb
    try:
        plan = plan_for(run, overrides)
    except DoesNotFit as err:
        return f"{REFUSED} {capacity:g} GB; submit will refuse: {err}"
    if plan is None:
        return "memory per GPU: - (" + ("external run)" if run.external else "CPU run)")
    return plan.describe(capacity)
