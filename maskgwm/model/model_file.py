"""Model checkpoints for sampling: the DiT's configs and weights plus its fixed text conditioning.

A checkpoint is a torch file (written atomically) holding

    {"format": "maskgwm-model/1", "preset": name, "model_config": {...}, "mask_config": {...},
     "action_dim": int | None, "state_dict": {...},
     "text": {"encoder_hidden_states": [1, L, joint_dim], "pooled_projections": [1, pooled_dim]},
     "extra": {...}}        # e.g. resolution [width, height], window, run id, step

A trainer checkpoint holding this dict under the key "model" is read the same way.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from evals.atomic import atomic_open
from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.actions import ACTION_VALUES
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.presets import get_preset
from maskgwm.model.text import TextConditioning

FORMAT = "maskgwm-model/1"


class CheckpointError(ValueError):
    """A model checkpoint that cannot be used; the message names the file, what was expected
    and what was found."""


def model_checkpoint(model: MaskGWMDiT, text: TextConditioning,
                     extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The checkpoint dict of `model` (what `save_model` writes; a trainer nests it as "model")."""
    text.check(model.preset, "text conditioning")
    return {"format": FORMAT, "preset": model.preset.name,
            "model_config": dataclasses.asdict(model.model_config),
            "mask_config": dataclasses.asdict(model.mask_config),
            "action_dim": model.action_dim,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "text": text.state_dict(), "extra": dict(extra or {})}


def save_model(path: str | Path, model: MaskGWMDiT, text: TextConditioning,
               extra: dict[str, Any] | None = None) -> Path:
    """Write the checkpoint atomically (a reader never sees half a file)."""
    path = Path(path)
    with atomic_open(path, "wb") as handle:
        torch.save(model_checkpoint(model, text, extra), handle)
    return path


def _read(path: Path, map_location) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {path} not found (write one with "
                                f"maskgwm.model.model_file.save_model, or train a run)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(f"{path}: not a readable torch checkpoint "
                              f"({type(err).__name__}: {err}); expected format {FORMAT}") from None
    if isinstance(data, dict) and "format" not in data and isinstance(data.get("model"), dict):
        data = data["model"]   # a trainer checkpoint
    found = data.get("format") if isinstance(data, dict) else type(data).__name__
    if found != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format {found!r}, expected {FORMAT!r} "
                              f"(or a trainer checkpoint with it under 'model')")
    return data


def _configs(data: dict[str, Any], path: Path) -> tuple[ModelConfig, MaskConfig]:
    try:
        return ModelConfig(**data["model_config"]), MaskConfig(**data["mask_config"])
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: model_config / mask_config do not match this code's "
                              f"ModelConfig / MaskConfig ({err})") from None


def _check_state_dict(model: MaskGWMDiT, state: dict[str, torch.Tensor], path: Path) -> None:
    own = model.state_dict()
    wrong = [f"{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
             for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
    problems = [("missing keys", sorted(set(own) - set(state))),
                ("unexpected keys", sorted(set(state) - set(own))), ("wrong shapes", wrong)]
    parts = [f"{label} ({len(keys)}): {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
             for label, keys in problems if keys]
    if parts:
        raise CheckpointError(f"{path}: weights do not fit the model its configs describe "
                              f"(preset '{model.preset.name}'): " + "; ".join(parts))


def load_model(path: str | Path, preset: str | None = None, map_location: Any = "cpu"
               ) -> tuple[MaskGWMDiT, TextConditioning, dict[str, Any]]:
    """(model in eval mode, its text conditioning, extra) from a `save_model` file or a trainer
    checkpoint; `preset`, when given, must be the checkpoint's."""
    path = Path(path)
    data = _read(path, map_location)
    name = data.get("preset")
    if preset is not None and name != preset:
        raise CheckpointError(f"{path}: a checkpoint of preset '{name}', expected preset "
                              f"'{preset}'")
    try:
        dit_preset = get_preset(name)
    except ValueError as err:
        raise CheckpointError(f"{path}: {err}") from None
    model_config, mask_config = _configs(data, path)
    if model_config.preset != name:
        raise CheckpointError(f"{path}: model_config.preset '{model_config.preset}' differs "
                              f"from the checkpoint's preset '{name}'")
    model = MaskGWMDiT(model_config, dit_preset, mask_config)
    if data.get("action_dim") != model.action_dim:
        raise CheckpointError(f"{path}: made with {data.get('action_dim')} action values per "
                              f"clip; this code's action models take {ACTION_VALUES} (Vista's "
                              f"layout, maskgwm/model/actions.py): train the action stages "
                              f"(2 and 3) again with this code")
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state_dict in the checkpoint")
    _check_state_dict(model, state, path)
    model.load_state_dict(state)
    if not isinstance(data.get("text"), dict):
        raise CheckpointError(f"{path}: no text conditioning ('text') in the checkpoint")
    text = TextConditioning.from_dict(data["text"], f"{path} (text)", dit_preset)
    device = map_location if isinstance(map_location, (str, torch.device)) else "cpu"
    return model.to(device).eval(), text.to(device), dict(data.get("extra") or {})
