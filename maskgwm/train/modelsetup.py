"""Model construction for a stage: random init (ci/smoke), SD3 inflation (stage 1a at
paper/lite scale), or the parent stage's checkpoint; trainable groups; VAE and text.

Parent checkpoints (docs/DESIGN.md section 2: each stage starts from the previous one's) may lack
the blocks a stage adds: temporal blocks (1b), MR blocks (1c), action projections (2), view
blocks (3). Those keys keep their zero initialisation; every other key must be present with
the same shape, or loading fails naming the keys. MR blocks in the parent that this stage does
not use (MR off) are dropped with a note; any other unexpected key is an error.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from maskgwm.config.scales import get_scale
from maskgwm.config.schema import RunConfig
from maskgwm.model.dit import NEW_BLOCK_PREFIXES, MaskGWMDiT
from maskgwm.model.presets import get_preset
from maskgwm.model.text import TextConditioning

SD3_FOLDER = "stable-diffusion-3-medium-diffusers"
TEXT_FILE = "text_embeddings.pt"
MR_PREFIXES = ("mask_token.", "recon_spatial.", "recon_temporal.")


class ModelSetupError(RuntimeError):
    """A model that cannot be built or loaded for this stage; the message says why."""


def _group(key: str) -> str:
    """The module a key belongs to, at the granularity at which blocks are added: a temporal
    block's sub-module (its action projections arrive in stage 2), else the top-level name."""
    parts = key.split(".")
    if parts[0] == "temporal_blocks" and len(parts) > 2:
        return ".".join(parts[:3])
    return parts[0]


def load_parent(model: MaskGWMDiT, path: Path, log: Callable[[str], None] = print) -> dict:
    """Load the parent stage's weights into `model` (rules in the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ModelSetupError(f"parent checkpoint {path} not found (train the previous stage "
                              f"first, or pass its model.pt / checkpoints/step-*.pt)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad file
        raise ModelSetupError(f"parent checkpoint {path}: not readable ({type(err).__name__}: "
                              f"{err})") from None
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]
    if not isinstance(data, dict) or not isinstance(data.get("state_dict"), dict):
        raise ModelSetupError(f"parent checkpoint {path}: no model state_dict (expected a "
                              f"model.pt or a trainer checkpoint)")
    if data.get("preset") != model.preset.name:
        raise ModelSetupError(f"parent checkpoint {path}: preset '{data.get('preset')}', this "
                              f"stage uses preset '{model.preset.name}'")
    state, own = dict(data["state_dict"]), model.state_dict()
    dropped = sorted(k for k in set(state) - set(own)
                     if k.startswith(MR_PREFIXES) and not model.mask_config.enabled)
    for key in dropped:
        state.pop(key)
    parent_groups = {_group(k) for k in state}
    missing = sorted(set(own) - set(state))
    not_new = [k for k in missing if not k.startswith(NEW_BLOCK_PREFIXES)
               or _group(k) in parent_groups]
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k}: parent {tuple(v.shape)}, model {tuple(own[k].shape)}"
             for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    problems = [(label, keys) for label, keys in
                (("missing keys that are not newly added blocks", not_new),
                 ("unexpected keys", unexpected), ("wrong shapes", wrong)) if keys]
    if problems:
        raise ModelSetupError(f"parent checkpoint {path} does not fit this stage's model: " +
                              "; ".join(f"{label} ({len(keys)}): {', '.join(keys[:6])}"
                                        f"{' ...' if len(keys) > 6 else ''}"
                                        for label, keys in problems))
    model.load_state_dict(state, strict=False)
    new_groups = sorted({re.sub(r"\.\d+", ".*", _group(k)) for k in missing})
    log(f"parent {path}: loaded {len(state)} tensors; new zero-initialised blocks: "
        f"{', '.join(new_groups) or 'none'}" + (f"; dropped unused MR blocks ({len(dropped)} "
                                                 f"tensors)" if dropped else ""))
    return {"parent": str(path), "new_blocks": new_groups, "dropped": len(dropped)}


def build_model(config: RunConfig, parent: Path | None, weights_root: Path | None,
                log: Callable[[str], None] = print) -> tuple[MaskGWMDiT, dict]:
    """The stage's starting model (on the CPU) and a provenance note of where it came from."""
    preset = get_preset(config.model.preset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        if parent is None and config.stage.name == "1a" and \
                not get_scale(config.scale).synthetic:
            if weights_root is None:
                raise ModelSetupError(f"stage 1a at scale '{config.scale}' inflates SD3: pass "
                                      f"--weights (or REPRO_WEIGHTS) pointing at a folder with "
                                      f"{SD3_FOLDER}/ (stabilityai/stable-diffusion-3-medium-"
                                      f"diffusers)")
            source = Path(weights_root) / SD3_FOLDER
            try:
                model = MaskGWMDiT.from_sd3(source, config.model, config.mask)
            except FileNotFoundError as err:
                raise ModelSetupError(f"{err}: put stabilityai/stable-diffusion-3-medium-"
                                      f"diffusers at {source}") from None
            return model, {"init": f"SD3 transformer {source}"}
        model = MaskGWMDiT(config.model, preset, config.mask)
    if parent is not None:
        return model, {"init": "parent", **load_parent(model, parent, log)}
    if config.stage.name != "1a" and not get_scale(config.scale).synthetic:
        raise ModelSetupError(f"stage {config.stage.name} starts from the previous stage's "
                              f"checkpoint: pass --parent (scale '{config.scale}')")
    note = f"random init (seed {config.seed}, preset {preset.name}, scale {config.scale})"
    if config.stage.name != "1a":
        log(f"warning: stage {config.stage.name} without a parent checkpoint: {note}")
    return model, {"init": note}


def trainable_names(model: MaskGWMDiT, groups: list[str], mr_enabled: bool) -> list[str]:
    """Parameter names trained in a stage: 'spatial' = the SD3 backbone, 'temporal' = the
    temporal blocks (with their action projections), 'view' = view blocks, 'all'; MR blocks
    whenever MR is on."""
    known = {"spatial", "temporal", "view", "all"}
    bad = sorted(set(groups) - known)
    if bad:
        raise ModelSetupError(f"stage.trainable: unknown groups {bad} (known: "
                              f"{', '.join(sorted(known))})")
    names = []
    for name, _ in model.named_parameters():
        take = "all" in groups
        take |= "spatial" in groups and not name.startswith(NEW_BLOCK_PREFIXES)
        take |= "temporal" in groups and name.startswith("temporal_blocks.")
        take |= "view" in groups and name.startswith("view_blocks.")
        take |= mr_enabled and name.startswith(MR_PREFIXES)
        if take:
            names.append(name)
    if not names:
        raise ModelSetupError(f"stage.trainable = {groups}: no parameter of this model is in "
                              f"those groups")
    return names


def set_trainable(model: MaskGWMDiT, names: list[str]) -> None:
    wanted = set(names)
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(name in wanted)


def load_text(preset: str, weights_root: Path | None,
              scale: str = "paper") -> tuple[TextConditioning, str]:
    """TextConditioning.load(<weights>/text_embeddings.pt) if present, else zeros; zeros at
    the ci and smoke scales (their presets do not take SD3's embedding sizes)."""
    if not get_scale(scale).synthetic and weights_root is not None and \
            (Path(weights_root) / TEXT_FILE).is_file():
        path = Path(weights_root) / TEXT_FILE
        return TextConditioning.load(path, preset), str(path)
    return TextConditioning.null(preset), "null (zeros; assumed stand-in)"


def load_vae(config: RunConfig, weights_root: Path | None, device: torch.device):
    """(SD3VAE, provenance label): random at ci/smoke scale, SD3's otherwise."""
    from maskgwm.model.vae import SD3VAE
    if get_scale(config.scale).synthetic:
        return SD3VAE.random(config.seed, device), (
            f"random VAE (SD3VAE.random(seed={config.seed}); frames meaningless, "
            f"{config.scale} scale only)")
    if weights_root is None:
        raise ModelSetupError(f"scale '{config.scale}' encodes frames with SD3's VAE: pass "
                              f"--weights (or REPRO_WEIGHTS) pointing at a folder with "
                              f"{SD3_FOLDER}/")
    try:
        vae = SD3VAE.from_pretrained(Path(weights_root) / SD3_FOLDER, device=device)
    except FileNotFoundError as err:
        raise ModelSetupError(str(err)) from None
    return vae, f"SD3 VAE {Path(weights_root) / SD3_FOLDER}"


def enable_activation_checkpointing(model: MaskGWMDiT) -> int:
    """Recompute each DiT layer's blocks in backward (torch.utils.checkpoint); returns count."""
    from torch.utils.checkpoint import checkpoint

    count = 0
    for name in ("transformer_blocks", "temporal_blocks", "view_blocks"):
        for block in getattr(model, name, []):
            inner = block.forward

            def wrapped(*args, _inner=inner, **kwargs):
                return checkpoint(_inner, *args, use_reentrant=False, **kwargs)
            block.forward = wrapped
            count += 1
    return count
