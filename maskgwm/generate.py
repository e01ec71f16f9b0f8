"""Generation: a MaskGWM model and the SD3 VAE turn condition frames into clips, one clip or
the views of one scene at a time (used by maskgwm/sample.py and maskgwm/sample_mview.py, which
sample whole video sets).

- `model_velocity`: the conditional and unconditional velocity functions for flow.euler_sample.
  Guidance (docs/DESIGN.md section 9.8): the unconditional pass drops actions (action_keep
  False) and sees zeroed condition latents (euler_sample does that).
- `generate_clip`: one clip, one window of `window` frames (25 by default) or an autoregressive
  rollout whose later rounds condition on the last `rollout_cond` (3) frames.
- `generate_views`: the same for the K views of one scene, generated jointly (latents
  [1, T, K, 16, h, w], one model call per step); `generate_clip` is its K = 1 case.
- `condition_frames`, `clip_seed`, `naming_clip`: a real clip's condition frames at the model
  resolution, the noise seed of a clip (or scene), and errors that name the clip.

Assumed (the paper does not say): condition frames are centre-cropped and LANCZOS-resized to the
model resolution like the training frames; generated clips keep the real condition frames (they
are clean by construction); decoding uses the posterior-mean latents of the condition frames;
on a GPU the model runs under bf16 autocast, as in training, while the Euler state stays in the
model's dtype.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evals.videoset import VideoSet
from maskgwm.data.loader import crop_resize
from maskgwm.model.actions import no_actions
from maskgwm.model.flow import (SD3_SHIFT, VelocityFn, condition_mask, euler_sample,
                                euler_window_generator, rollout)
from maskgwm.model.text import TextConditioning
from maskgwm.model.vae import SD3VAE

DEFAULT_WINDOW = 25        # frames per window (the paper's clip length)
ROLLOUT_COND = 3           # condition frames of later rollout rounds (paper Sec. 4)

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


@contextlib.contextmanager
def naming_clip(real: VideoSet, clip_id: str, checkpoint: str | Path):
    """A ValueError while generating one clip, raised again naming the clip, its real set and
    the checkpoint."""
    try:
        yield
    except ValueError as err:
        raise ValueError(f"{real.root}: clip {clip_id} (checkpoint {checkpoint}): {err}") \
            from err
