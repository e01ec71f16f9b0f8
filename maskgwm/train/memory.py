"""The per-GPU memory plan of a training stage, and the cheapest setting that fits.

    plan = memory_plan(config, gpus=32, strategy="fsdp", checkpointing=True)
    plan.total, plan.parts, plan.describe(capacity)
    choose_setting(config, gpus, capacity_gb) -> MemoryPlan        # or DoesNotFit

What a GPU holds at the step's peak (docs/DESIGN.md section 2.6), as the trainer keeps it:
fp32 parameters; for trainable ones fp32 gradients, AdamW's two fp32 moments and the fp32 EMA;
under DDP the reducer's gradient buckets (a second fp32 copy); under FSDP (one unit, see
distributed.py) a 1/world shard of all of these plus, during the step, every parameter gathered
in bf16, its bf16 gradient and the fp32 reduce-scatter input. The step adds what the forward
keeps for backward: bf16 copies of the block weights (autocast; FSDP's gathered bf16
parameters need none), and the activations, linear in the tokens of each block. Backward frees
activations layer by layer while it allocates gradients, so the peak is the largest of: its
start (everything the forward kept, and checkpointed, the last layer recomputed); its end (every
gradient but the first layer's, and that layer's activations); and the gradients after it. One
layer's transient (the gradients of its activations) comes on top. The activation coefficients
(bytes per token per hidden unit, bf16 autocast) are fitted to measured steps by `python -m
maskgwm.train.bench_memory` (results/bench/memory.json, which holds the measurements, the fit
and the check of every prediction against them).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import torch

from maskgwm.config.schema import MaskConfig, RunConfig
from maskgwm.model.presets import get_preset

GB = 1e9
HEADROOM = 0.10                 # a plan fits when its total is within 90% of the GPU's memory
TEXT_TOKENS = 333               # SD3's prompt embedding: 77 CLIP + 256 T5 tokens (per frame)
VAE_FACTOR = 8

COEFFICIENTS = {                # bytes per token per hidden unit; results/bench/memory.json
    "joint": 43.341, "context": 39.423, "context_once": 27.96, "temporal": 35.949,
    "view": 27.759, "recon": 38.918, "outside": 14.519, "checkpoint_block": 1.505,
    "checkpoint_context": 7.806, "checkpoint_context_once": 2.516,
    "checkpoint_outside": 16.302, "transient": 0.17}
"""Fitted by maskgwm.train.bench_memory; tests/maskgwm/train/test_memory.py checks they are the
record's. `transient` is in units of one layer's activations: what a layer's backward
allocates beyond them (the gradients of its activations)."""

CUDA_ACTIVATION_SCALE = 1.267
"""GPU activation bytes per CPU-measured byte: calibrated on the H200 step measurements
(results/bench/memory.json "calibration"), until a GPU fit replaces the CPU coefficients."""


def gpu_coefficients() -> dict[str, float]:
    """COEFFICIENTS as a CUDA step keeps them (the token terms scaled)."""
    return {k: v if k == "transient" else v * CUDA_ACTIVATION_SCALE
            for k, v in COEFFICIENTS.items()}


SETTINGS = (("ddp", False), ("fsdp", False), ("fsdp", True))
"""Tried in this order (cheapest first); the first that fits is chosen."""


class DoesNotFit(ValueError):
    """No setting of the strategy / checkpointing asked for fits the GPUs' memory."""


@dataclass(frozen=True)
class ParamCounts:
    total: int                  # every parameter
    trainable: int
    in_layers: int              # parameters of the DiT layers and MR blocks (bf16 copies saved)
    largest_layer: int          # trainable parameters of the largest layer (its gradients)


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    """A model's counts, trainable = requires_grad (set_trainable)."""
    from maskgwm.model.dit import NEW_BLOCK_PREFIXES
    layered = ("transformer_blocks.",) + NEW_BLOCK_PREFIXES
    per_layer: dict[str, int] = {}
    total = train = in_layers = 0
    for name, p in model.named_parameters():
        total += p.numel()
        in_layers += p.numel() if name.startswith(layered) else 0
        if p.requires_grad:
            train += p.numel()
            index = name.split(".")[1]
            if name.startswith(layered) and index.isdigit():  # a layer's spatial, temporal, view
                per_layer[index] = per_layer.get(index, 0) + p.numel()
    return ParamCounts(total, train, in_layers, max(per_layer.values(), default=0))


@lru_cache(maxsize=64)
def _counts(preset: str, temporal: bool, view: bool, actions: bool,
            mask_fields: tuple[tuple[str, object], ...], trainable: tuple[str, ...]
            ) -> ParamCounts:
    from maskgwm.config.schema import ModelConfig
    from maskgwm.model.dit import MaskGWMDiT
    from maskgwm.train.modelsetup import set_trainable, trainable_names
    mask = MaskConfig(**dict(mask_fields))
    with torch.device("meta"):
        model = MaskGWMDiT(ModelConfig(preset=preset, temporal_blocks=temporal,
                                       view_blocks=view, actions=actions), mask_config=mask)
    set_trainable(model, trainable_names(model, list(trainable), mask.enabled))
    return count_parameters(model)


def param_counts(config: RunConfig) -> ParamCounts:
    """Exact counts for the run's model (built on the meta device: no memory, no time)."""
    model = config.model
    return _counts(model.preset, model.temporal_blocks, model.view_blocks, model.actions,
                   tuple(dataclasses.asdict(config.mask).items()), tuple(config.stage.trainable))


@dataclass(frozen=True)
class StepShape:
    """What one GPU's step processes (the most any batch of the stage can hold)."""
    samples: int                # per GPU
    frames: int                 # the stage's longest clip
    views: int
    tokens_per_frame: int       # image tokens of one frame and view
    text_tokens: int
    layers: int
    hidden: int
    temporal: bool
    view: bool
    mask: MaskConfig

    @classmethod
    def of(cls, config: RunConfig, gpus: int, text_tokens: int = TEXT_TOKENS) -> "StepShape":
        preset, data = get_preset(config.model.preset), config.data
        grid = (data.height // VAE_FACTOR // preset.patch_size,
                data.width // VAE_FACTOR // preset.patch_size)
        return cls(samples=-(-config.stage.batch_size // max(gpus, 1)), frames=max(data.frames),
                   views=data.views, tokens_per_frame=grid[0] * grid[1],
                   text_tokens=text_tokens, layers=preset.num_layers,
                   hidden=preset.hidden_size, temporal=config.model.temporal_blocks,
                   view=config.model.view_blocks, mask=config.mask)

    @property
    def images(self) -> int:
        return self.samples * self.frames * self.views


def activation_terms(shape: StepShape, path: str, checkpointing: bool) -> dict[str, float]:
    """The step's token counts (times the hidden size) that multiply each coefficient, for
    every sample on `path` (plain | spatial | temporal): sum(COEFFICIENTS[k] * terms[k]) is
    what the forward keeps for backward, weight copies aside. A frozen SD3 backbone (stage
    1b) keeps less (its linear layers keep no inputs, its first block nothing): the plan
    takes it as trained, so it over-predicts there (results/bench/memory.json)."""
    n = shape.images * shape.tokens_per_frame * shape.hidden
    context = shape.images * shape.text_tokens * shape.hidden
    layers = float(shape.layers)
    recon = 0.0
    if path != "plain":       # encoder on the kept tokens, decoder and F on all of them
        mask = shape.mask
        layers = (shape.layers - mask.decoder_layers) * (1 - mask.ratio) + mask.decoder_layers
        recon = mask.recon_layers * (2 if mask.recon_shared else 1)
    if checkpointing:         # each block keeps its input: the previous block's output
        blocks = 1 + shape.temporal + shape.view
        return {"checkpoint_block": blocks * layers * n,
                "checkpoint_context": shape.layers * context,
                "checkpoint_outside": n, "checkpoint_context_once": context,
                "recon": recon * n}
    return {"joint": layers * n,       # SD3's last block takes the text without its MLP,
            "context": (shape.layers - 1) * context,  # so it counts with the embedding once
            "context_once": context,
            "temporal": layers * n if shape.temporal else 0.0,
            "view": layers * n if shape.view else 0.0, "recon": recon * n, "outside": n}


def paths(mask: MaskConfig) -> tuple[str, ...]:
    """The paths a sample can take: plain always (MR off, or tau outside the gate)."""
    return ("plain",) + tuple(b for b in ("spatial", "temporal") if mask.enabled and
                              getattr(mask, b))


def kept_bytes(shape: StepShape, checkpointing: bool, path: str | None = None,
               coefficients: dict[str, float] | None = None) -> float:
    """Activations the forward keeps with every sample on `path` (None: the worst path)."""
    c = coefficients or COEFFICIENTS
    return max(sum(c[k] * v for k, v in activation_terms(shape, one, checkpointing).items())
               for one in ((path,) if path else paths(shape.mask)))


def layer_bytes(shape: StepShape, coefficients: dict[str, float] | None = None) -> float:
    """One more DiT layer's activations (all its blocks, all tokens, kept without
    checkpointing): what checkpointing recomputes, and what a layer's backward frees."""
    def kept(layers: int) -> float:
        return kept_bytes(dataclasses.replace(shape, layers=layers), False, "plain",
                          coefficients)
    return kept(2) - kept(1)


def step_parts(shape: StepShape, counts: ParamCounts, shard: int, checkpointing: bool,
               path: str | None = None,
               coefficients: dict[str, float] | None = None) -> dict[str, float]:
    """What the step adds at its peak, {"activations", "gradients"} in bytes: the largest of
    backward's start (all the forward kept, plus the last layer recomputed), its end (every
    gradient but the first layer's, that layer's activations) and the gradients after it;
    plus one layer's transient. `shard` > 1: FSDP over that many GPUs (bf16 gathered
    weights, so no autocast copies; bf16 gradients in backward, then an fp32 copy of them
    and this GPU's reduced shard)."""
    c = coefficients or COEFFICIENTS
    train = counts.trainable
    if shard > 1:
        backward_grads, final_grads = 2 * train, 6 * train + 4 * train / shard
        copies = 0.0
    else:
        backward_grads = final_grads = 4 * train
        copies = 0.0 if checkpointing else 2 * counts.in_layers
    kept = kept_bytes(shape, checkpointing, path, c) + copies
    layer = layer_bytes(shape, c)
    layer_grads = backward_grads * counts.largest_layer / max(train, 1)
    ends = [{"activations": kept + (layer if checkpointing else 0.0), "gradients": 0.0},
            {"activations": layer, "gradients": backward_grads - layer_grads},
            {"activations": 0.0, "gradients": final_grads}]
    peak = max(ends, key=lambda parts: sum(parts.values()))
    return {**peak, "transient": c["transient"] * layer}


@dataclass(frozen=True)
class MemoryPlan:
    strategy: str               # single | ddp | fsdp
    checkpointing: bool
    gpus: int
    parts: dict[str, float]     # bytes per GPU at the step's peak; they add up to total
    text_tokens: int = TEXT_TOKENS

    @property
    def total(self) -> float:
        return sum(self.parts.values())

    def fits(self, capacity_gb: float, headroom: float = HEADROOM) -> bool:
        return self.total <= (1 - headroom) * capacity_gb * GB

    def setting(self) -> str:
        return f"{self.strategy}{', activation checkpointing' if self.checkpointing else ''}"

    def describe(self, capacity_gb: float) -> str:
        parts = ", ".join(f"{k.replace('_', ' ')} {v / GB:.1f}" for k, v in self.parts.items()
                          if v)
        return (f"memory per GPU: {self.total / GB:.1f} GB of {capacity_gb:g} GB "
                f"({self.setting()}; {parts}; {self.text_tokens} text tokens per frame)")


def memory_plan(config: RunConfig, gpus: int, strategy: str, checkpointing: bool,
                text_tokens: int = TEXT_TOKENS,
                coefficients: dict[str, float] | None = None) -> MemoryPlan:
    """Bytes per GPU at the step's peak (module docstring) for bf16 training on `gpus` GPUs."""
    counts = param_counts(config)
    world = max(gpus, 1)
    strategy = "single" if world == 1 else strategy
    shard = world if strategy == "fsdp" else 1
    total, train = counts.total, counts.trainable
    ema = 4 * train if config.optim.ema_decay > 0 else 0
    parts = {"parameters": 4 * total / shard, "optimizer": 8 * train / shard,
             "ema": ema / shard, "ddp_buckets": 4 * train if strategy == "ddp" else 0}
    if strategy == "fsdp":
        parts["gathered_parameters"] = 2 * total
    parts.update(step_parts(StepShape.of(config, gpus, text_tokens), counts, shard,
                            checkpointing, coefficients=coefficients or gpu_coefficients()))
    return MemoryPlan(strategy, checkpointing, world, parts, text_tokens)


def choose_setting(config: RunConfig, gpus: int, capacity_gb: float,
                   strategy: str | None = None, checkpointing: bool | None = None,
                   headroom: float = HEADROOM, text_tokens: int = TEXT_TOKENS) -> MemoryPlan:
    """The first of SETTINGS (restricted to `strategy` / `checkpointing` when given) whose plan
    fits `capacity_gb` with `headroom`; DoesNotFit, with the numbers, when none does."""
    tried = [memory_plan(config, gpus, s, c, text_tokens) for s, c in SETTINGS
             if strategy in (None, s) and checkpointing in (None, c)]
    if not tried:
        raise DoesNotFit(f"no setting is strategy {strategy!r} with activation checkpointing "
                         f"{checkpointing} (settings: {SETTINGS})")
    for plan in tried:
        if plan.fits(capacity_gb, headroom):
            return plan
    usable = (1 - headroom) * capacity_gb
    lines = "; ".join(f"{plan.setting()}: {plan.total / GB:.1f} GB" for plan in tried)
    raise DoesNotFit(f"stage {config.stage.name} ({config.model.preset}, "
                     f"{StepShape.of(config, gpus, text_tokens).samples} samples of "
                     f"{max(config.data.frames)} frames x {config.data.views} views per GPU "
                     f"on {gpus} GPUs) needs more than the {usable:.0f} GB usable of "
                     f"{capacity_gb:g} GB per GPU ({headroom:.0%} headroom): {lines}. Use "
                     f"GPUs with more memory (gpu_mem_gb in the job file's resources), more "
                     f"GPUs, or a smaller stage.batch_size")


def largest_local_batch(config: RunConfig, gpus: int, capacity_gb: float, strategy: str,
                        checkpointing: bool, text_tokens: int = TEXT_TOKENS,
                        limit: int = 64) -> int:
    """The most samples per GPU whose plan in this setting fits `capacity_gb` (0: none),
    e.g. for throughput with more samples per step than the paper's."""
    fitting = 0
    for samples in range(1, limit + 1):
        stage = dataclasses.replace(config.stage, batch_size=samples * max(gpus, 1))
        plan = memory_plan(dataclasses.replace(config, stage=stage), gpus, strategy,
                           checkpointing, text_tokens)
        if not plan.fits(capacity_gb):
            break
        fitting = samples
    return fitting
