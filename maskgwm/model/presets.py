"""DiT sizes: `tiny` (CPU tests), `small` (CPU smoke runs), `sd3-medium` (the paper's backbone).

Field names follow diffusers' `SD3Transformer2DModel` config so a checkpoint's config can be
compared field by field with a preset (`mismatched_fields`). `sd3-medium` is the published
stabilityai/stable-diffusion-3-medium transformer config (docs/DESIGN.md section 1). `tiny` and
`small` keep SD3's 16 latent channels and patch 2 so the same VAE latents and data pipeline feed them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class DiTPreset:
    name: str
    num_layers: int
    num_attention_heads: int
    attention_head_dim: int
    joint_attention_dim: int
    caption_projection_dim: int
    pooled_projection_dim: int
    pos_embed_max_size: int
    sample_size: int
    patch_size: int = 2
    in_channels: int = 16
    out_channels: int = 16
    latent_height: int = 8             # default latents (h, w) for tests and shape checks; runs
    latent_width: int = 16             # take theirs from data.height / 8, data.width / 8
    temporal_heads: int | None = None  # heads of the new temporal / view blocks (None: as spatial)
    mlp_ratio: float = 4.0             # feed-forward width of the new blocks (assumed, as SD3's)
    max_frames: int = 32               # longest window the temporal blocks take (paper: 25)

    @property
    def hidden_size(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def new_block_heads(self) -> int:
        return self.temporal_heads or self.num_attention_heads

    def sd3_config(self) -> dict[str, Any]:
        """Keyword arguments for `SD3Transformer2DModel` with this preset's spatial backbone."""
        return {name: getattr(self, name) for name in SD3_CONFIG_FIELDS}


SD3_CONFIG_FIELDS = ("sample_size", "patch_size", "in_channels", "num_layers",
                     "attention_head_dim", "num_attention_heads", "joint_attention_dim",
                     "caption_projection_dim", "pooled_projection_dim", "out_channels",
                     "pos_embed_max_size")
"""Config fields that fix the shapes of an SD3 transformer's weights."""

SHAPE_FIELDS = tuple(f for f in SD3_CONFIG_FIELDS if f != "sample_size")
"""`sample_size` does not change any weight when pos_embed_max_size is set, so it may differ."""

PRESETS: dict[str, DiTPreset] = {
    "tiny": DiTPreset(
        name="tiny", num_layers=3, num_attention_heads=2, attention_head_dim=32,
        joint_attention_dim=32, caption_projection_dim=64, pooled_projection_dim=32,
        pos_embed_max_size=16, sample_size=16, latent_height=8, latent_width=16),
    "small": DiTPreset(
        name="small", num_layers=12, num_attention_heads=4, attention_head_dim=64,
        joint_attention_dim=128, caption_projection_dim=256, pooled_projection_dim=128,
        pos_embed_max_size=64, sample_size=32, latent_height=8, latent_width=16),
    "sd3-medium": DiTPreset(
        name="sd3-medium", num_layers=24, num_attention_heads=24, attention_head_dim=64,
        joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048,
        pos_embed_max_size=192, sample_size=128, latent_height=36, latent_width=64),
}


def get_preset(name: str) -> DiTPreset:
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset '{name}' (known: {', '.join(PRESETS)})")
    return PRESETS[name]


def mismatched_fields(preset: DiTPreset, config: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (expected by preset, found in config)} for the weight-shaping fields that differ
    (a field absent from `config` is reported as found None)."""
    expected = dataclasses.asdict(preset)
    return {name: (expected[name], config.get(name)) for name in SHAPE_FIELDS
            if config.get(name) != expected[name]}
