"""Sampling: a MaskGWM checkpoint and the SD3 VAE turn the condition frames of an evaluation
video set into generated clips, written as a video set (evals/videoset.py) for `repro eval`.

- `model_velocity`: the conditional and unconditional velocity functions for flow.euler_sample.
  Guidance (docs/DESIGN.md section 9.8): the unconditional pass drops actions (action_keep
  False) and sees zeroed condition latents (euler_sample does that).
- `generate_clip`: one clip, one window of `window` frames (25 by default) or an autoregressive
  rollout whose later rounds condition on the last `rollout_cond` (3) frames.
- `generate_views`: the same for the K views of one scene, generated jointly (latents
  [1, T, K, 16, h, w], one model call per step); `generate_clip` is its K = 1 case.
- `sample_videoset`: every clip of a real set (or one shard of them), resumable; each shard writes
  its own set (`shard_dir`), since concurrent writers of one manifest are not safe, and
  `merge_videosets` joins them. A clip's noise depends only on (seed, clip_id), so sharding does
  not change any clip. Multi-view sets (`views`) are handled per scene by
  maskgwm/sample_mview.py.

Assumed (the paper does not say): condition frames are centre-cropped and LANCZOS-resized to the
model resolution like the training frames; generated clips keep the real condition frames (they
are clean by construction); decoding uses the posterior-mean latents of the condition frames;
on a GPU the model runs under bf16 autocast, as in training, while the Euler state stays in the
model's dtype.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from evals.atomic import atomic_write_json
from evals.videoset import VideoSet, VideoSetError, VideoSetWriter
from evals.weights import cached_sha256, sidecar_cache
from maskgwm.data.loader import crop_resize
from maskgwm.model.actions import no_actions
from maskgwm.model.checkpoint import load_model
from maskgwm.model.flow import (SD3_SHIFT, VelocityFn, condition_mask, euler_sample,
                                euler_window_generator, rollout)
from maskgwm.model.text import TextConditioning
from maskgwm.model.vae import SD3VAE

DEFAULT_WINDOW = 25        # frames per window (the paper's clip length)
ROLLOUT_COND = 3           # condition frames of later rollout rounds (paper Sec. 4)
SETTINGS_FILE = "sampling.json"

CondSpec = int | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None


def model_velocity(model: torch.nn.Module, text: TextConditioning, cond: CondSpec = None,
                   actions: torch.Tensor | None = None) -> tuple[VelocityFn, VelocityFn]:
    """(conditional, unconditional) velocity functions (latents [B, T, K, C, h, w], tau [B, T])
    -> G for `euler_sample(..., uncond_fn=...)`.

    `cond` marks the condition frames: an int n (the first n frames), a function (latents,
    tau) -> bool [B, T], or None: the frames whose tau is exactly 0. euler_sample gives condition
    frames tau 0 and, its schedule stopping before 0, every other frame tau > 0, so None also
    serves rollouts whose rounds have different condition counts. `actions` are action values
    [B, (T,) 19] (maskgwm/model/actions.py); the unconditional function drops them (action_keep
    False). Without actions (action-free protocols), a model with an action module gets a clip
    without action values, exactly what training feeds clips without actions (the model's
    `missing_actions` reading decides the path, blocks.TemporalBlock.kept_actions).
    """
    action_dim = getattr(model, "action_dim", None)

    def cond_mask(latents: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        if cond is None:
            return tau == 0
        if callable(cond):
            return cond(latents, tau)
        return condition_mask(latents.shape[0], latents.shape[1], cond, device=latents.device)

    def run(latents: torch.Tensor, tau: torch.Tensor, keep: bool) -> torch.Tensor:
        batch = latents.shape[0]
        t = text.expand(batch).to(latents.device, latents.dtype)
        given, action_keep = actions, None
        if given is None and action_dim:
            given = no_actions(batch, latents.device)
        if given is not None:
            action_keep = torch.full((batch,), keep, dtype=torch.bool, device=latents.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=latents.is_cuda):
            velocity = model(latents, tau.to(latents.dtype), t.encoder_hidden_states,
                             t.pooled_projections, cond_frames=cond_mask(latents, tau),
                             actions=given, action_keep=action_keep)
        return velocity.to(latents.dtype)

    return (lambda latents, tau: run(latents, tau, True),
            lambda latents, tau: run(latents, tau, False))


def _model_device_dtype(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    parameter = next(model.parameters())
    return parameter.device, parameter.dtype


@torch.no_grad()
def generate_clip(model: torch.nn.Module, vae: SD3VAE, text: TextConditioning,
                  cond_frames: torch.Tensor, n_frames: int, seed: int, steps: int = 30,
                  guidance: float = 4.0, window: int | None = None, shift: float = SD3_SHIFT,
                  rollout_cond: int = ROLLOUT_COND, batch_size: int = 8) -> torch.Tensor:
    """uint8 condition frames [n_cond, 3, H, W] -> uint8 clip [n_frames, 3, H, W] whose first
    n_cond frames are the given ones and the rest are generated: `generate_views` with one
    view (latents [1, T, 1, 16, h, w])."""
    return generate_views(model, vae, text, cond_frames[None], n_frames, seed, steps, guidance,
                          window, shift, rollout_cond, batch_size)[0]


@torch.no_grad()
def generate_views(model: torch.nn.Module, vae: SD3VAE, text: TextConditioning,
                   cond_frames: torch.Tensor, n_frames: int, seed: int, steps: int = 30,
                   guidance: float = 4.0, window: int | None = None, shift: float = SD3_SHIFT,
                   rollout_cond: int = ROLLOUT_COND, batch_size: int = 8) -> torch.Tensor:
    """uint8 condition frames [K, n_cond, 3, H, W] of K views -> uint8 clips
    [K, n_frames, 3, H, W]: the K views are generated jointly, as latents [1, T, K, 16, h, w]
    in one model call per step (so the view blocks see every view).

    One window when n_frames <= window (default 25), else flow.rollout: each later round
    conditions on the last `rollout_cond` frames. The noise comes from a generator on the
    model's device seeded with `seed`, so a seed fixes the clip on a given device (CPU and CUDA
    draw different noise). `batch_size` bounds the VAE's batches.
    """
    window = window or DEFAULT_WINDOW
    views, n_cond = cond_frames.shape[:2]
    if window > model.preset.max_frames:
        raise ValueError(f"window {window} exceeds preset '{model.preset.name}''s "
                         f"{model.preset.max_frames} frames")
    if not 0 <= n_cond < n_frames or n_cond > window:
        raise ValueError(f"{n_cond} condition frames for {n_frames} frames in {window}-frame "
                         f"windows: need n_cond < n_frames and n_cond <= window")
    device, dtype = _model_device_dtype(model)
    height, width = cond_frames.shape[-2:]
    frame_shape = (views, vae.vae.config.latent_channels, height // vae.downsample,
                   width // vae.downsample)
    latents = vae.encode(cond_frames.reshape(views * n_cond, 3, height, width), batch_size)
    latents = latents.reshape(views, n_cond, *frame_shape[1:]).transpose(0, 1)[None]
    latents = latents.to(device, dtype)
    velocity, unconditional = model_velocity(model, text)
    if n_frames <= window:
        generator = torch.Generator(device=device).manual_seed(seed)
        out = euler_sample(velocity, (1, n_frames, *frame_shape), steps=steps, guidance=guidance,
                           cond_latents=latents if n_cond else None, cond_frames=n_cond,
                           generator=generator, uncond_fn=unconditional, shift=shift,
                           dtype=dtype, device=device)
    else:
        if n_cond == 0:
            raise ValueError("a rollout needs at least one condition frame")
        generate_window = euler_window_generator(velocity, frame_shape, window, steps, guidance,
                                                 unconditional, shift)
        out = rollout(generate_window, latents, n_frames, window, rollout_cond, seed)
    if not torch.isfinite(out).all():
        raise ValueError("the model produced NaN or Inf latents: check the checkpoint's weights "
                         "(a diverged training run?)")
    new = out[0, n_cond:].transpose(0, 1)                      # [K, T - n_cond, C, h, w]
    generated = vae.decode(new.reshape(-1, *frame_shape[1:]), batch_size)
    generated = generated.reshape(views, n_frames - n_cond, *generated.shape[1:])
    return torch.cat([cond_frames.cpu(), generated], dim=1)


def condition_frames(clip: np.ndarray, n_cond: int,
                     size: tuple[int, int] | None) -> torch.Tensor:
    """The first n_cond frames of a real clip [T, H, W, 3], centre-cropped and resized to
    `size` = (width, height) (the clip's own size if None), as uint8 [n_cond, 3, h, w]."""
    w, h = size or (clip.shape[2], clip.shape[1])
    cond = np.stack([crop_resize(frame, w, h) for frame in clip[:n_cond]]) if n_cond \
        else np.zeros((0, h, w, 3), np.uint8)
    return torch.from_numpy(cond).permute(0, 3, 1, 2)


def clip_seed(seed: int, clip_id: str) -> int:
    """A stable per-clip seed from (seed, clip_id) (SHA-256; independent of shards and order)."""
    digest = hashlib.sha256(f"{seed}\n{clip_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def shard_dir(out_dir: str | Path, shard: int, num_shards: int) -> Path:
    """Where a shard writes: `out_dir` itself for one shard, else out_dir/shard-III-of-NNN."""
    out_dir = Path(out_dir)
    return out_dir if num_shards == 1 else out_dir / f"shard-{shard:03d}-of-{num_shards:03d}"


def real_set_digest(real: VideoSet) -> str:
    """What identifies a real set for resuming: its manifest entries and its files' sizes
    (the clip ids alone repeat between sets, e.g. Vista-layout sets)."""
    digest = hashlib.sha256(json.dumps(
        [asdict(entry) for entry in real.clips], sort_keys=True).encode())
    for path in sorted(real.root.rglob("*")):
        if path.is_file() and path.name not in ("manifest.json", SETTINGS_FILE):
            digest.update(f"{path.relative_to(real.root)}:{path.stat().st_size};".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def naming_clip(real: VideoSet, clip_id: str, checkpoint: str | Path):
    """A ValueError while generating one clip, raised again naming the clip, its real set and
    the checkpoint."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{real.root}: clip {clip_id} (checkpoint {checkpoint}): {err}") \
            from err


def record_settings(folder: Path, settings: dict[str, Any], checkpoint: str) -> None:
    """Write sampling.json; a folder already holding clips of other settings is an error."""
    path = folder / SETTINGS_FILE
    if path.exists():
        old = json.loads(path.read_text()).get("settings")
        if old != settings:
            changed = sorted(k for k in set(old or {}) | set(settings)
                             if (old or {}).get(k) != settings.get(k))
            raise ValueError(f"{folder} holds clips sampled with other settings (differs in "
                             f"{', '.join(changed)}); use another --out or the same settings")
        return
    atomic_write_json(path, {"settings": settings, "checkpoint": checkpoint})


def sample_videoset(checkpoint: str | Path, vae: SD3VAE, real_set_dir: str | Path,
                    out_dir: str | Path, shard: int = 0, num_shards: int = 1, steps: int = 30,
                    guidance: float = 4.0, seed: int = 0, frames: int | None = None,
                    width: int | None = None, height: int | None = None,
                    window: int | None = None, device: str | torch.device = "cpu",
                    batch_size: int = 8, log: Callable[[str], Any] = print,
                    views: Sequence[str] | None = None) -> Path:
    """Generate the clips i of the real set with i % num_shards == shard into
    `shard_dir(out_dir, shard, num_shards)` and return that folder.

    Each clip keeps the real entry's clip_id, source_clip, cond_frames and fps; its first
    cond_frames frames are the real ones resized to the model resolution (the checkpoint's
    extra["resolution"] = [width, height] when present, else width/height, else the real size).
    `frames` overrides the real clip length (e.g. long rollouts). Clips already in the output
    are skipped, so a killed run resumes without losing or duplicating clips (the manifest is
    rewritten after every clip). `batch_size` bounds the VAE's batches.

    With `views` (camera names), the real set is multi-view (evals/multiview.py: clip ids
    `<scene>/<view>`): the views of a scene are generated jointly, scenes (not clips) are
    sharded, resumed and seeded (maskgwm.sample_mview).
    """
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} of {num_shards}: need 0 <= shard < num_shards")
    model, text, extra = load_model(checkpoint, map_location=device)
    real = VideoSet.open(real_set_dir)
    size = tuple(extra["resolution"]) if extra.get("resolution") else \
        ((width, height) if width and height else None)
    if extra.get("resolution") and width and height and (width, height) != size:
        log(f"note: using the checkpoint's resolution {size[0]}x{size[1]}, not {width}x{height}")
    window = window or int(extra.get("window") or DEFAULT_WINDOW)
    target = shard_dir(out_dir, shard, num_shards)
    target.mkdir(parents=True, exist_ok=True)
    settings = {"preset": model.preset.name, "steps": steps, "guidance": guidance,
                "seed": seed, "frames": frames, "resolution": list(size) if size else None,
                "window": window, "rollout_cond": ROLLOUT_COND, "shift": SD3_SHIFT,
                "vae": [vae.scaling, vae.shift],
                "run": extra.get("run_config_hash") or extra.get("run_id"),
                "step": extra.get("step"),
                "checkpoint_sha256": cached_sha256(checkpoint, sidecar_cache(checkpoint)),
                "real_set": real_set_digest(real)}
    if views:
        settings["views"] = list(views)
    record_settings(target, settings, str(Path(checkpoint).resolve()))
    options = {"steps": steps, "guidance": guidance, "window": window, "batch_size": batch_size,
               "checkpoint": checkpoint}
    if views:
        from maskgwm.sample_mview import sample_scenes
        return sample_scenes(model, vae, text, real, target, list(views), size, shard,
                             num_shards, seed, frames, options, log)
    done = skipped = 0
    with VideoSetWriter(target, flush_every=1) as writer:
        for index, entry in enumerate(real.clips):
            if index % num_shards != shard:
                continue
            if entry.clip_id in writer:
                skipped += 1
                continue
            clip = real.read(entry)
            n_cond = entry.cond_frames
            if n_cond > len(clip):
                raise VideoSetError(f"{real.root}: clip {entry.clip_id} has {len(clip)} frames "
                                    f"but {n_cond} condition frames")
            with naming_clip(real, entry.clip_id, checkpoint):
                out = generate_clip(model, vae, text, condition_frames(clip, n_cond, size),
                                    frames or entry.frames, clip_seed(seed, entry.clip_id),
                                    steps, guidance, window, batch_size=batch_size)
            writer.add(entry.clip_id, out.permute(0, 2, 3, 1).numpy(), entry.fps,
                       entry.source_clip, n_cond)
            done += 1
            log(f"[{shard}/{num_shards}] {entry.clip_id}: {len(out)} frames ({done} new)")
    log(f"shard {shard}/{num_shards}: {done} clips generated, {skipped} already there; "
        f"set at {target}")
    return target


def merge_videosets(parts: Sequence[str | Path], out: str | Path,
                    reference: str | Path | None = None) -> VideoSet:
    """Join the shard sets `parts` into one set `out` (resumable: clips already in `out` are
    kept). A clip in two parts, or parts sampled with different settings, is an error. With
    `reference` (the real set), clips follow its order and a missing clip is an error."""
    out = Path(out)
    sets = [VideoSet.open(part) for part in parts]
    if any(s.root.resolve() == out.resolve() for s in sets):
        raise ValueError(f"--out {out} is one of the parts; merge into another folder")
    where: dict[str, VideoSet] = {}
    for videoset in sets:
        for entry in videoset.clips:
            if entry.clip_id in where:
                raise VideoSetError(f"clip {entry.clip_id} is in both {where[entry.clip_id].root}"
                                    f" and {videoset.root} (overlapping shards?)")
            where[entry.clip_id] = videoset
    order = list(where)
    if reference is not None:
        wanted = [entry.clip_id for entry in VideoSet.open(reference).clips]
        missing = [clip_id for clip_id in wanted if clip_id not in where]
        if missing:
            raise VideoSetError(f"{len(missing)} clips of {reference} are in no part "
                                f"(e.g. {', '.join(missing[:3])}): a shard is unfinished")
        order = wanted + [clip_id for clip_id in order if clip_id not in set(wanted)]
    settings = _merged_settings(sets)
    out.mkdir(parents=True, exist_ok=True)
    if settings is not None:
        record_settings(out, settings["settings"], settings.get("checkpoint", ""))
    with VideoSetWriter(out, flush_every=16) as writer:
        for clip_id in order:
            if clip_id in writer:
                continue
            videoset = where[clip_id]
            entry = videoset.clip(clip_id)
            writer.add(clip_id, videoset.read(entry), entry.fps, entry.source_clip,
                       entry.cond_frames, as_npy=entry.path.endswith(".npy"))
    return VideoSet.open(out)


def _merged_settings(sets: Sequence[VideoSet]) -> dict[str, Any] | None:
    records = [json.loads((s.root / SETTINGS_FILE).read_text())
               for s in sets if (s.root / SETTINGS_FILE).exists()]
    if not records:
        return None
    if any(r.get("settings") != records[0].get("settings") for r in records):
        raise ValueError("the parts were sampled with different settings (see their "
                         f"{SETTINGS_FILE}); they do not form one generated set")
    return records[0]
