"""Fixed text conditioning for the SD3 joint blocks (docs/DESIGN.md section 9).

MaskGWM conditions on fixed prompt embeddings: `encoder_hidden_states` [1, L, joint_dim] and
`pooled_projections` [1, pooled_dim], cached once from SD3's text encoders (the empty prompt or a
scene description) by whoever has them, and saved as a .pt or .safetensors file holding those two
keys. Without SD3's text encoders we use zeros (`TextConditioning.null`, assumed: a stand-in, not
SD3's empty-prompt embedding).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from maskgwm.model.presets import DiTPreset, get_preset

KEYS = ("encoder_hidden_states", "pooled_projections")


class TextConditioningError(ValueError):
    """A text-embedding file that is missing, unreadable or of the wrong shape."""


def _preset(preset: DiTPreset | str) -> DiTPreset:
    return get_preset(preset) if isinstance(preset, str) else preset


@dataclass
class TextConditioning:
    encoder_hidden_states: torch.Tensor   # [1, L, joint_dim]
    pooled_projections: torch.Tensor      # [1, pooled_dim]

    @classmethod
    def null(cls, preset: DiTPreset | str, tokens: int = 8) -> "TextConditioning":
        """Zeros of the preset's shapes (assumed stand-in for SD3's prompt embeddings)."""
        p = _preset(preset)
        return cls(torch.zeros(1, tokens, p.joint_attention_dim),
                   torch.zeros(1, p.pooled_projection_dim))

    @classmethod
    def from_dict(cls, data, where: str = "text conditioning",
                  preset: DiTPreset | str | None = None) -> "TextConditioning":
        missing = [key for key in KEYS if key not in data]
        if missing:
            raise TextConditioningError(f"{where}: missing {', '.join(missing)} (expected the "
                                        f"keys {', '.join(KEYS)})")
        text = cls(*(torch.as_tensor(data[key]).float() for key in KEYS))
        text.check(preset, where)
        return text

    @classmethod
    def load(cls, path: str | Path, preset: DiTPreset | str | None = None) -> "TextConditioning":
        """From a .pt or .safetensors file with the keys encoder_hidden_states [1, L, joint_dim]
        and pooled_projections [1, pooled_dim]; shapes are checked against `preset` if given."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"text embeddings {path} not found (a .pt or .safetensors "
                                    f"file with {', '.join(KEYS)})")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                data = load_file(str(path))
            else:
                data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any reader failure is a bad file
            raise TextConditioningError(f"{path}: not a readable .pt/.safetensors file "
                                        f"({type(err).__name__}: {err})") from None
        if not isinstance(data, dict):
            raise TextConditioningError(f"{path}: expected a dict with {', '.join(KEYS)}, "
                                        f"found {type(data).__name__}")
        return cls.from_dict(data, str(path), preset)

    def check(self, preset: DiTPreset | str | None = None, where: str = "text conditioning"):
        """Shapes [1, L, joint_dim] and [1, pooled_dim] (of `preset` when given)."""
        ehs, pooled = self.encoder_hidden_states, self.pooled_projections
        p = _preset(preset) if preset is not None else None
        joint = p.joint_attention_dim if p else ehs.shape[-1]
        pooled_dim = p.pooled_projection_dim if p else pooled.shape[-1]
        name = f" (preset '{p.name}')" if p else ""
        if ehs.dim() != 3 or ehs.shape[0] != 1 or ehs.shape[2] != joint:
            raise TextConditioningError(f"{where}: encoder_hidden_states must be [1, L, {joint}]"
                                        f"{name}, found {list(ehs.shape)}")
        if tuple(pooled.shape) != (1, pooled_dim):
            raise TextConditioningError(f"{where}: pooled_projections must be [1, {pooled_dim}]"
                                        f"{name}, found {list(pooled.shape)}")
        return self

    def expand(self, batch: int) -> "TextConditioning":
        """The same embeddings for `batch` samples: [B, L, joint_dim] and [B, pooled_dim]."""
        return TextConditioning(self.encoder_hidden_states.expand(batch, -1, -1),
                                self.pooled_projections.expand(batch, -1))

    def to(self, device=None, dtype: torch.dtype | None = None) -> "TextConditioning":
        return TextConditioning(self.encoder_hidden_states.to(device=device, dtype=dtype),
                                self.pooled_projections.to(device=device, dtype=dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"encoder_hidden_states": self.encoder_hidden_states.detach().cpu().contiguous(),
                "pooled_projections": self.pooled_projections.detach().cpu().contiguous()}
