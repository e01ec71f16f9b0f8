"""The run configuration as plain dataclasses, with dotted-key overrides and a content hash.

Defaults are the paper's settings (docs/DESIGN.md sections 1, 2 and 9). Fields the paper leaves
open are marked "assumed" in docs/DESIGN.md section 9 and are ordinary fields, so every choice
is in the hash.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping


class ConfigError(ValueError):
    """A config file or override names an unknown key or gives a value of the wrong type."""


@dataclass
class MaskConfig:
    """Mask reconstruction (MR); training only. ratio 0 or no branch means MR off."""
    ratio: float = 0.0                 # r: share of tokens dropped
    spatial: bool = False              # M_spatial branch (one mask shared by all frames)
    temporal: bool = False             # M_time branch (a mask per frame)
    row: bool = False                  # temporal mask drops round(r W) tokens in every row
    shift: bool = False                # shifted temporal attention (packed rows), else masked
    spatial_prob: float = 0.5          # P(sample draws M_spatial) when both branches are on (assumed)
    token: str = "mix"                 # p | f_m | mix ((1-tau) f_m(eps) + tau p) | z_tau
    tau_min: float = 0.0               # per-sample gate: MR only for tau in [tau_min, tau_max]
    tau_max: float = 1.0
    contrastive: bool = False          # SD-DiT style contrastive loss (with token z_tau)
    contrastive_weight: float = 0.1    # its weight beside the flow loss (assumed)
    contrastive_temperature: float = 0.2  # InfoNCE temperature (assumed)
    contrastive_negatives: str = "global"  # global: the MR samples of every rank (assumed)
                                       # | local: this rank's only (about 2 per GPU)
    recon_shared: bool = False         # one shared F for F_s and F_t (Table 4b "share")
    recon_order: str = "spatial_first"  # the shared F's layers: F_s then F_t (assumed)
                                       # | temporal_first
    recon_layers: int = 1              # layers per reconstruction branch
    decoder_layers: int = 2            # last DiT layers run on the full token set (assumed)
    view_rows: bool = False            # M_spatial row-wise too, so cross-view KW attention runs
                                       # on packed rows for both branches (multi-view, assumed)

    @property
    def enabled(self) -> bool:
        return self.ratio > 0 and (self.spatial or self.temporal)


@dataclass
class ModelConfig:
    preset: str = "sd3-medium"         # tiny | small | sd3-medium
    temporal_blocks: bool = True
    view_blocks: bool = False
    view_attention: str = "KW"         # K | KW | KHW (cross-view row-wise attention extent)
    cameras: int = 6                   # view blocks: learned per-camera embedding slots
                                       # (zero-initialised, assumed); 0: no camera embedding
    actions: bool = False              # action conditioning in the temporal cross-attention
    missing_actions: str = "drop"      # a sample without action values takes the dropped-
                                       # action path, in training and sampling (assumed)
                                       # | zeros: all-zero action features, kept


@dataclass
class DataConfig:
    source: str = "real"               # real | synthetic
    mix: dict[str, float] = field(default_factory=lambda: {"opendv": 1.0})
    width: int = 512
    height: int = 288
    frames: list[int] = field(default_factory=lambda: [1])
    views: int = 1
    vae_latent: str = "mean"           # mean: the VAE posterior mean (assumed) | sample


@dataclass
class OptimConfig:
    name: str = "adamw"                # paper: Adam, citing decoupled weight decay (assumed AdamW)
    lr: float = 5e-5
    warmup_steps: int = 1000
    weight_decay: float = 0.0          # assumed
    grad_clip: float = 1.0             # assumed: diffusers' SD3 fine-tuning default
    ema_decay: float = 0.9999          # EMA of the weights, as Vista trains (assumed); 0: off
    ema_warmup: bool = True            # Vista's EMA warm-up: decay min(d, (1 + n) / (10 + n))


@dataclass
class StageConfig:
    name: str = "1a"
    steps: int = 18000
    batch_size: int = 768
    trainable: list[str] = field(default_factory=lambda: ["all"])
    max_cond_frames: int = 3           # 0..max condition frames drawn per sample
    cond_dropout: float = 0.1          # assumed (guidance)
    action_dropout: float = 0.1        # assumed (guidance)


@dataclass
class FlowConfig:
    """The training noise level tau (Eq. 1): SD3's logit-normal, time-shifted like the sampler.

    diffusers' SD3 training scripts draw u ~ logit-normal and train at the shifted schedule's
    sigma for u (FlowMatchEulerDiscreteScheduler, shift 3.0 in stable-diffusion-3-medium's
    scheduler config, no resolution-dependent shift), so tau = shift u / (1 + (shift - 1) u)."""
    logit_mean: float = 0.0
    logit_std: float = 1.0
    shift: float = 3.0


@dataclass
class RunConfig:
    scale: str = "paper"
    seed: int = 0
    stage: StageConfig = field(default_factory=StageConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)


def _check_type(where: str, key: str, current: Any, value: Any) -> Any:
    if isinstance(current, bool):
        ok = isinstance(value, bool)
    elif isinstance(current, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(current, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, str):
        ok = isinstance(value, str)
    elif isinstance(current, list):
        ok = isinstance(value, list)
    elif isinstance(current, dict):
        ok = isinstance(value, dict)
    else:
        ok = False
    if not ok:
        raise ConfigError(f"{where}: key '{key}' expects {type(current).__name__}, "
                          f"got {value!r}")
    return value


def apply_overrides(config: Any, overrides: Mapping[str, Any], where: str) -> None:
    """Set dotted keys ('mask.ratio', or nested tables) in place; unknown keys raise ConfigError.

    `where` names the file (and table) the overrides come from, for the error message."""
    for key, value in overrides.items():
        target, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            names = {f.name for f in dataclasses.fields(target)}
            if part not in names:
                dotted = ".".join(parts[:depth + 1])
                raise ConfigError(f"{where}: unknown key '{dotted}' "
                                  f"(known here: {', '.join(sorted(names))})")
            current = getattr(target, part)
            if depth == len(parts) - 1:
                if dataclasses.is_dataclass(current):
                    if not isinstance(value, Mapping):
                        raise ConfigError(f"{where}: key '{key}' is a table, got {value!r}")
                    apply_overrides(current, value, f"{where} [{key}]")
                else:
                    setattr(target, part, _check_type(where, key, current, value))
            elif dataclasses.is_dataclass(current):
                target = current
            else:
                raise ConfigError(f"{where}: key '{'.'.join(parts[:depth + 1])}' is a value, "
                                  f"not a table, in '{key}'")


CHOICES = {
    "model.preset": ("tiny", "small", "sd3-medium"),
    "model.view_attention": ("K", "KW", "KHW"),
    "mask.token": ("p", "f_m", "mix", "z_tau"),
    "mask.contrastive_negatives": ("global", "local"),
    "mask.recon_order": ("spatial_first", "temporal_first"),
    "data.source": ("real", "synthetic"),
    "data.vae_latent": ("mean", "sample"),
    "model.missing_actions": ("drop", "zeros"),
    "optim.name": ("adamw",),
}


def validate(config: RunConfig, where: str) -> None:
    """Reject values outside their choices or ranges, naming the key."""
    for key, allowed in CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if value not in allowed:
            raise ConfigError(f"{where}: '{key}' = {value!r} is not one of {', '.join(allowed)}")
    mask = config.mask
    if not 0.0 <= mask.ratio < 1.0:
        raise ConfigError(f"{where}: 'mask.ratio' = {mask.ratio} must be in [0, 1)")
    if not 0.0 <= mask.tau_min <= mask.tau_max <= 1.0:
        raise ConfigError(f"{where}: need 0 <= mask.tau_min <= mask.tau_max <= 1")
    if mask.shift and not mask.row:
        raise ConfigError(f"{where}: 'mask.shift' (shifted temporal attention) needs "
                          f"'mask.row' (row-wise masks keep the same count in every row)")
    if mask.contrastive and mask.token != "z_tau":
        raise ConfigError(f"{where}: 'mask.contrastive' goes with mask.token = 'z_tau' (Table 3a)")
    if mask.recon_layers not in (1, 2):
        raise ConfigError(f"{where}: 'mask.recon_layers' must be 1 or 2")
    if config.stage.steps < 1 or config.stage.batch_size < 1:
        raise ConfigError(f"{where}: 'stage.steps' and 'stage.batch_size' must be positive")
    if not 0.0 <= config.optim.ema_decay < 1.0:
        raise ConfigError(f"{where}: 'optim.ema_decay' = {config.optim.ema_decay} must be in "
                          f"[0, 1) (0: no EMA)")
    if config.flow.logit_std <= 0 or config.flow.shift <= 0:
        raise ConfigError(f"{where}: 'flow.logit_std' and 'flow.shift' must be positive")
    if config.model.cameras < 0 or (config.model.view_blocks and config.model.cameras and
                                    config.model.cameras < config.data.views):
        raise ConfigError(f"{where}: 'model.cameras' = {config.model.cameras} must be 0 (no "
                          f"camera embedding) or at least data.views = {config.data.views}")


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def content_hash(*parts: Any, length: int = 12) -> str:
    """SHA-256 of the canonical JSON of `parts`, truncated to `length` hex digits."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:length]
