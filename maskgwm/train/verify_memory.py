"""Check the memory plan on one GPU: every paper stage's step, at its paper shapes, in the
setting the plan chose, its peak measured against the plan's prediction.

    python -m maskgwm.train.verify_memory --out results/bench/memory_gpu_h100.json   # a GPU

One GPU stands for one of the job's `--gpus` (default 32, the paper's). Its memory is capped at
`--capacity-gb` (default 80, torch.cuda.set_per_process_memory_fraction). What the other GPUs
would hold is left out as FSDP leaves it. The resident part that the setting keeps on this GPU
is allocated at the plan's sizes: under FSDP, 1/gpus of the fp32 parameters, AdamW moments and
EMA; under DDP, the whole of them plus the reducer's buckets. It is checked against the
model's own parameter count. The step itself is run for real and measured:
- the model's weights as the step sees them (FSDP: gathered in bf16; DDP: fp32 with autocast's
  bf16 copies);
- forward and backward under bf16 autocast, with every sample on the plain path (the plan's
  worst case) and the stage's longest clip, checkpointed where the plan says;
- FSDP's gradient reduction: the fp32 copy of the bf16 gradients and this GPU's shard.
The record's `stages` list holds {"stage", "strategy", "activation_checkpointing",
"predicted_gb", "measured_gb"} (goal: within 10%).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from evals.atomic import atomic_write_json
from evals.commit import bench_provenance
from maskgwm.config.resolve import resolve_run_config
from maskgwm.config.schema import RunConfig
from maskgwm.model.actions import ACTION_VALUES
from maskgwm.model.bench_attention import machine_description
from maskgwm.model.objective import ObjectiveSettings, training_loss
from maskgwm.model.presets import get_preset
from maskgwm.train import memory
from maskgwm.train.memory_probe import build_model, measure

STAGES = (("1a", "no-mr"), ("1b", "no-mr"), ("1c", "ours"), ("2", "ours"), ("3", "mview-kw"))
MEASURES = ("maskgwm/train/memory.py", "maskgwm/train/verify_memory.py",
            "maskgwm/train/modelsetup.py", "maskgwm/model/")


def stage_config(stage: str, variant: str, scale: str, preset: str | None) -> RunConfig:
    overrides = {"model.preset": preset} if preset else {}
    return resolve_run_config(stage, scale, variant, overrides)


def resident(plan: memory.MemoryPlan, device: torch.device) -> list[torch.Tensor]:
    """Buffers of the plan's resident sizes that the model itself does not hold: AdamW's
    moments, the EMA, DDP's buckets, and under FSDP the fp32 parameter shard (the model holds
    the gathered bf16 weights; otherwise its own fp32 parameters are the resident ones)."""
    keep = ("parameters", "optimizer", "ema") if plan.strategy == "fsdp" else \
        ("optimizer", "ema", "ddp_buckets")
    return [torch.empty(int(plan.parts[k]), dtype=torch.uint8, device=device)
            for k in keep if plan.parts.get(k)]


def verify_stage(config: RunConfig, gpus: int, capacity_gb: float, text_tokens: int,
                 device: torch.device, strategy: str | None = None,
                 checkpointing: bool | None = None) -> dict:
    """Predicted and measured peak of one step of `config` (module docstring), in the setting
    the plan chooses (within `strategy` / `checkpointing` when given)."""
    plan = memory.choose_setting(config, gpus, capacity_gb, strategy, checkpointing,
                                 text_tokens=text_tokens)
    shape = memory.StepShape.of(config, gpus, text_tokens)
    preset = get_preset(config.model.preset)
    never_mr = dataclasses.replace(config.mask, tau_min=1.0, tau_max=1.0) \
        if config.mask.enabled else config.mask             # MR blocks built, plain path
    fsdp = plan.strategy == "fsdp"
    model = build_model(config.model, preset, config.mask, config.stage.trainable,
                        plan.checkpointing, device)
    if fsdp:
        model.to(torch.bfloat16)            # FSDP's gathered bf16 parameters
    counts = memory.count_parameters(model)
    expected = memory.param_counts(config)
    if (counts.total, counts.trainable) != (expected.total, expected.trainable):
        raise AssertionError(f"stage {config.stage.name}: the model has {counts} parameters, "
                             f"the plan counts {expected}")
    held = resident(plan, device)
    generator = torch.Generator().manual_seed(0)
    grid = (config.data.height // 8, config.data.width // 8)
    z0 = torch.randn(shape.samples, shape.frames, shape.views, preset.in_channels, *grid,
                     generator=generator).to(device)
    text = torch.zeros(shape.samples, text_tokens, preset.joint_attention_dim, device=device)
    pooled = torch.zeros(shape.samples, preset.pooled_projection_dim, device=device)
    actions = torch.zeros(shape.samples, ACTION_VALUES, device=device) \
        if config.model.actions else None
    settings = dataclasses.replace(ObjectiveSettings.from_config(config), mask=never_mr)
    params = [p for p in model.parameters() if p.requires_grad]

    def forward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = training_loss(model, z0, text, pooled, torch.arange(shape.samples), 0,
                                 settings, actions).loss
            if fsdp:      # as the trainer's LossModule.touch_all: every gradient is reduced
                loss = loss + 0.0 * torch.stack([p.reshape(-1)[0] for p in params]).sum()
        return loss

    def backward(loss: torch.Tensor) -> None:
        loss.backward()
        if fsdp:          # reduce-scatter input (fp32 copy) and this GPU's output shard
            flat = torch.empty(sum(p.numel() for p in params), device=device)
            torch.cat([p.grad.reshape(-1) for p in params], out=flat)   # copied in as fp32
            torch.empty(flat.numel() // gpus, device=device).zero_()
            del flat

    started = time.perf_counter()
    before, _, peak = measure(forward, backward, params, device)
    if before is None:    # the CPU keeps no count of what was allocated before the step
        before = sum(t.numel() for t in held) + sum(
            p.numel() * p.element_size() for p in model.parameters())
    measured = before + peak
    return {"stage": config.stage.name, "strategy": plan.strategy,
            "activation_checkpointing": plan.checkpointing, "gpus": gpus,
            "samples_per_gpu": shape.samples, "frames": shape.frames, "views": shape.views,
            "text_tokens": text_tokens, "predicted_gb": round(plan.total / memory.GB, 2),
            "measured_gb": round(measured / memory.GB, 2),
            "ratio": round(plan.total / measured, 4),
            "largest_samples_per_gpu": memory.largest_local_batch(
                config, gpus, capacity_gb, plan.strategy, plan.checkpointing, text_tokens),
            "seconds": round(
                time.perf_counter() - started, 1),
            "plan": {k: round(v / memory.GB, 3) for k, v in plan.parts.items() if v}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=32, help="GPUs of the job (paper: 32)")
    parser.add_argument("--capacity-gb", type=float, default=80.0)
    parser.add_argument("--text-tokens", type=int, default=333,
                        help="text tokens per frame (SD3's prompt embeddings: 333)")
    parser.add_argument("--scale", default="paper")
    parser.add_argument("--preset", help="another preset (CPU tests: tiny)")
    parser.add_argument("--stages", nargs="+", default=[s for s, _ in STAGES])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", help="JSON record (e.g. results/bench/memory_gpu_h100.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, args.capacity_gb * memory.GB / total),
                                                   device)
    rows = []
    for stage, variant in STAGES:
        if stage not in args.stages:
            continue
        config = stage_config(stage, variant, args.scale, args.preset)
        try:
            row = verify_stage(config, args.gpus, args.capacity_gb, args.text_tokens, device)
        except torch.OutOfMemoryError as err:
            row = {"stage": stage, "measured_gb": None, "error": f"out of memory: {err}"[:300]}
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
        rows.append(row)
    ratios = [r["ratio"] for r in rows if r.get("measured_gb")]
    result = {"benchmark": "maskgwm.train.verify_memory",
              **bench_provenance("-m maskgwm.train.verify_memory", MEASURES, argv),
              "model_weights": "random initialisation (torch.manual_seed(0)): memory depends "
                               "on shapes only",
              "machine": machine_description(), "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "capacity_gb": args.capacity_gb, "goal": "predicted within 10% of measured",
              "within_10_percent": bool(ratios) and all(0.9 <= r <= 1.1 for r in ratios)
              and len(ratios) == len(rows),
              "stages": rows}
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
