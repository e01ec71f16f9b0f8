"""Measured memory of one training step: what the memory plan (memory.py) is fitted to and
checked against.

    measure_step(case, device) -> Measured(forward, peak, grads, parameters, trainable)

One step is `zero_grad(set_to_none=True)`, the objective's forward under bf16 autocast, and
backward (the optimizer step adds nothing on the GPU: fused AdamW updates in place). `forward`
is the memory the forward leaves for backward (saved activations, bf16 weight copies, the
loss), `peak` the step's peak above what was allocated before it, gradients included. On CUDA
both come from the caching allocator's counters; on the CPU from the allocation events of
torch.profiler (`profile_memory=True`), summed in time order, which counts every CPU tensor
the step allocates and frees: the CPU analogue of `max_memory_allocated`. CPU autocast uses
bfloat16 and torch's CPU flash-attention kernel, which saves what the CUDA kernel saves
(q, k, v, output and log-sum-exp), so the CPU measures the GPU's activation bytes up to
kernel-specific workspaces.
"""
from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass
from typing import Callable

import torch

from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.objective import ObjectiveSettings, training_loss
from maskgwm.model.presets import DiTPreset, get_preset
from maskgwm.train import modelsetup

BRANCH_MASKS = {
    "plain": MaskConfig(),
    "spatial": MaskConfig(ratio=0.25, spatial=True),
    "temporal": MaskConfig(ratio=0.25, temporal=True, row=True, shift=True),
}
"""The path every sample of a measured step takes (MR r = 0.25 as in the paper's runs)."""


FORWARD = "maskgwm.memory_probe.forward"


@dataclass(frozen=True)
class Case:
    """One measured step: model size and blocks, what is trained, and the local batch's shape."""
    preset: str = "small"
    layers: int | None = None          # None: the preset's
    temporal: bool = True
    views: int = 1                     # > 1 adds view blocks
    mr: bool = False                   # the model has MR blocks (needed by the MR branches)
    branch: str = "plain"              # plain | spatial | temporal
    trainable: tuple[str, ...] = ("all",)
    batch: int = 1
    frames: int = 2
    latent: tuple[int, int] = (8, 16)
    context: int = 8                   # text tokens
    checkpointing: bool = False

    def dit_preset(self) -> DiTPreset:
        preset = get_preset(self.preset)
        return dataclasses.replace(preset, num_layers=self.layers or preset.num_layers)

    def model_config(self) -> ModelConfig:
        return ModelConfig(preset=self.preset, temporal_blocks=self.temporal,
                           view_blocks=self.views > 1, cameras=max(self.views, 6))

    def mask_config(self) -> MaskConfig:
        mask = BRANCH_MASKS[self.branch]
        if self.mr and self.branch == "plain":   # MR blocks built, every sample on the plain path
            return dataclasses.replace(BRANCH_MASKS["spatial"], tau_min=1.0, tau_max=1.0)
        return mask

    def label(self) -> str:
        parts = [self.preset, f"L{self.dit_preset().num_layers}",
                 "T" if self.temporal else "no-T", f"K{self.views}", self.branch,
                 "+".join(self.trainable), f"B{self.batch}", f"F{self.frames}",
                 f"{self.latent[0]}x{self.latent[1]}", f"ctx{self.context}"]
        return " ".join(parts + (["ckpt"] if self.checkpointing else []))


@dataclass(frozen=True)
class Measured:
    forward: int        # bytes the forward leaves for backward
    peak: int           # the step's peak above the memory before it
    grads: int          # bytes of the gradients the step leaves
    parameters: int
    trainable: int


def build_model(model_config: ModelConfig, preset: DiTPreset, mask: MaskConfig,
                trainable: list[str] | tuple[str, ...], checkpointing: bool,
                device: torch.device) -> MaskGWMDiT:
    """A seeded model on `device` with the stage's trainable groups (and checkpointing)."""
    torch.manual_seed(0)
    with torch.device(device):
        model = MaskGWMDiT(model_config, preset, mask)
    modelsetup.set_trainable(model, modelsetup.trainable_names(model, list(trainable),
                                                               mask.enabled))
    if checkpointing:
        modelsetup.enable_activation_checkpointing(model)
    return model


def build(case: Case, device: torch.device) -> MaskGWMDiT:
    return build_model(case.model_config(), case.dit_preset(), case.mask_config(),
                       case.trainable, case.checkpointing, device)


def inputs(case: Case, model: MaskGWMDiT, device: torch.device) -> dict:
    p = model.preset
    generator = torch.Generator().manual_seed(0)
    shape = (case.batch, case.frames, case.views, p.in_channels, *case.latent)
    return {"z0": torch.randn(shape, generator=generator).to(device),
            "encoder_hidden_states": torch.randn(case.batch, case.context, p.joint_attention_dim,
                                                 generator=generator).to(device),
            "pooled": torch.randn(case.batch, p.pooled_projection_dim,
                                  generator=generator).to(device),
            "sample_index": torch.arange(case.batch)}


class CpuAllocations:
    """The running sum of CPU allocations (torch.profiler memory events), in time order.
    Python's cyclic garbage collector is run before and paused inside: collecting earlier
    garbage during the step would count its frees against the step."""

    def __enter__(self):
        from torch.profiler import ProfilerActivity, profile
        gc.collect()
        gc.disable()
        self.profile = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self.profile.__enter__()
        return self

    def __exit__(self, *exc):
        self.profile.__exit__(*exc)
        gc.enable()
        events = self.profile.profiler.kineto_results.events()
        self.events = sorted((e.start_ns(), e.nbytes()) for e in events
                             if e.name() == "[memory]")
        self.ends = {e.name(): e.end_ns() for e in events if e.name() != "[memory]"}

    def level_after(self, region: str) -> int:
        """The level when the `record_function(region)` range ended."""
        return sum(n for t, n in self.events if t <= self.ends[region])

    def peak(self) -> int:
        level = top = 0
        for _, nbytes in self.events:
            level += nbytes
            top = max(top, level)
        return top


def measure(forward: Callable[[], torch.Tensor], backward: Callable[[torch.Tensor], None],
            params: list[torch.Tensor], device: torch.device) -> tuple[int | None, int, int]:
    """(memory allocated before the step: on CUDA, None on the CPU; bytes `forward()` leaves
    for `backward(loss)`; the step's peak above the memory before it), after a warm-up step
    (lazily built state is not the step's memory). Gradients are None before each step."""
    def clear() -> None:
        for p in params:
            p.grad = None
    clear()
    backward(forward())
    clear()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        loss = forward()
        torch.cuda.synchronize(device)
        kept = torch.cuda.memory_allocated(device) - before
        backward(loss)
        del loss
        torch.cuda.synchronize(device)
        return before, kept, torch.cuda.max_memory_allocated(device) - before
    with CpuAllocations() as allocations:
        with torch.profiler.record_function(FORWARD):
            loss = forward()
        backward(loss)
        del loss
    return None, allocations.level_after(FORWARD), allocations.peak()


def measure_step(case: Case, device: torch.device | str = "cpu") -> Measured:
    """One step of `case` on `device` (module docstring)."""
    device = torch.device(device)
    model = build(case, device)
    batch = inputs(case, model, device)
    settings = ObjectiveSettings(case.mask_config(), max_cond_frames=1)
    params = [p for p in model.parameters() if p.requires_grad]

    def forward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return training_loss(model, batch["z0"], batch["encoder_hidden_states"],
                                 batch["pooled"], batch["sample_index"], 0, settings).loss

    _, kept, peak = measure(forward, lambda loss: loss.backward(), params, device)
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    return Measured(forward=int(kept), peak=int(peak), grads=int(grads),
                    parameters=sum(p.numel() for p in model.parameters()),
                    trainable=sum(p.numel() for p in params))
