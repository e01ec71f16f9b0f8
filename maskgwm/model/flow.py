"""Rectified flow (paper Eq. 1), condition frames (Eq. 5), Euler sampling with CFG, long rollouts.

Sign convention (the paper's): z_tau = (1 - tau) z_0 + tau eps, tau in [0, 1], tau = 0 is clean
data, tau = 1 pure noise; the model G predicts the velocity target (z_0 - eps). Along a path,
dz_tau/dtau = eps - z_0 = -G, so integrating from tau = 1 down to tau = 0 is
z_next = z + (tau - tau_next) * G.

diffusers' SD3 scheduler (`FlowMatchEulerDiscreteScheduler`) uses the same interpolation with
sigma = tau, but its model predicts (eps - z_0) = -G and it steps z + (sigma_next - sigma) * v.
Both give the same update: feed diffusers `-G`. Its `timesteps` are sigma * 1000; our velocity
functions receive tau in [0, 1] (a model wrapper scales it for SD3's timestep embedding).

Latent layout: frames on axis 1 ([B, T, ...], e.g. [B, T, V, C, h, w]); per-frame tensors
(timesteps, condition and loss masks) are [B, T] and broadcast over the trailing axes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(latents [B, T, ...], per-frame tau [B, T]) -> velocity (z_0 - eps) with the latents' shape."""

SD3_SHIFT = 3.0
"""SD3-medium's scheduler shift; our sampling default (assumed: the paper names no schedule)."""
SD3_TRAIN_TIMESTEPS = 1000


def per_frame(mask_or_tau: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Append singleton axes to a [B] or [B, T] tensor so it broadcasts against `like`."""
    extra = like.dim() - mask_or_tau.dim()
    return mask_or_tau.reshape(*mask_or_tau.shape, *([1] * extra))


def sample_tau(batch: int, generator: torch.Generator | None = None, mean: float = 0.0,
               std: float = 1.0, shift: float = 1.0,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Training tau, [batch]: SD3's logit-normal u = sigmoid(N(mean, std^2)), time-shifted,
    shift_tau(u, shift), clamped strictly inside (0, 1). shift 1 is the plain logit-normal;
    the trainer uses config.flow (shift 3.0, as diffusers' SD3 training draws it)."""
    device = device or (generator.device if generator is not None else "cpu")
    normal = torch.randn(batch, generator=generator, device=device)
    tau = shift_tau(torch.sigmoid(mean + std * normal), shift)
    return tau.clamp(1e-6, 1.0 - 1e-6)


def noisy_latents(z0: torch.Tensor, eps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """z_tau = (1 - tau) z_0 + tau eps; tau is [B] (per sample) or [B, T] (per frame)."""
    tau = per_frame(tau.to(z0.dtype), z0)
    return (1.0 - tau) * z0 + tau * eps


def velocity_target(z0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The paper's regression target (z_0 - eps)."""
    return z0 - eps


def flow_loss(prediction: torch.Tensor, z0: torch.Tensor, eps: torch.Tensor,
              weight_mask: torch.Tensor | None = None, per_sample: bool = False) -> torch.Tensor:
    """MSE of `prediction` to (z_0 - eps), averaged over the elements where `weight_mask` holds.

    `weight_mask` is boolean, per frame [B, T] (False on condition frames, which are not in the
    loss) or any shape that broadcasts after appending trailing axes. With `per_sample`, each
    sample's mean comes first and the batch mean of those follows, so the loss of a batch is
    the mean of its samples' losses whatever their condition-frame counts (data-parallel ranks
    then average to the global batch's loss). With no selected element the loss is a zero that
    still depends on `prediction` (so backward works).
    """
    squared_error = (prediction - velocity_target(z0, eps)).pow(2)
    if weight_mask is None:
        weights = torch.ones_like(squared_error)
    else:
        weights = per_frame(weight_mask, squared_error).to(squared_error.dtype)
        weights = weights.expand_as(squared_error)
    if not per_sample:
        return (squared_error * weights).sum() / weights.sum().clamp_min(1.0)
    dims = tuple(range(1, squared_error.dim()))
    per = (squared_error * weights).sum(dim=dims) / weights.sum(dim=dims).clamp_min(1.0)
    return per.mean()


# ---- condition frames (Eq. 5) ----

def condition_mask(batch: int, frames: int, cond_frames: int | torch.Tensor,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean [B, T], True on the leading condition frames; `cond_frames` is an int or [B]."""
    counts = torch.as_tensor(cond_frames, device=device).reshape(-1).expand(batch)
    frame_index = torch.arange(frames, device=device)
    return frame_index[None, :] < counts[:, None]


def frame_timesteps(tau: torch.Tensor, cond_mask: torch.Tensor) -> torch.Tensor:
    """Per-frame timestep m_c * tau [B, T]: tau [B] (or [B, T]) with 0 on condition frames."""
    tau = tau if tau.dim() == 2 else tau[:, None].expand(cond_mask.shape)
    return torch.where(cond_mask, torch.zeros_like(tau), tau)


def impose_condition(latents: torch.Tensor, clean: torch.Tensor,
                     cond_mask: torch.Tensor) -> torch.Tensor:
    """`latents` with the condition frames replaced by the clean latents (same shape)."""
    return torch.where(per_frame(cond_mask, latents), clean, latents)


def conditioned_inputs(z0: torch.Tensor, eps: torch.Tensor, tau: torch.Tensor,
                       cond_frames: int | torch.Tensor):
    """Training inputs with condition frames: (z_tau, per-frame tau [B, T], loss mask [B, T]).

    Condition frames hold clean z_0 and timestep 0; the loss mask is False on them.
    """
    cond_mask = condition_mask(z0.shape[0], z0.shape[1], cond_frames, device=z0.device)
    z_tau = impose_condition(noisy_latents(z0, eps, tau), z0, cond_mask)
    return z_tau, frame_timesteps(tau, cond_mask), ~cond_mask


# ---- sampling ----

def shift_tau(tau, shift: float):
    """SD3's time shift: shift * tau / (1 + (shift - 1) * tau); identity for shift = 1."""
    return shift * tau / (1.0 + (shift - 1.0) * tau)


def tau_schedule(steps: int = 30, shift: float = SD3_SHIFT,
                 train_timesteps: int = SD3_TRAIN_TIMESTEPS) -> torch.Tensor:
    """The steps + 1 taus from 1 to 0 that diffusers' FlowMatchEulerDiscreteScheduler uses.

    Like diffusers (no dynamic shifting): `steps` points linear from 1 to the scheduler's
    smallest training sigma, shift(1 / train_timesteps), then shifted, then a terminal 0.
    """
    tau_min = shift_tau(1.0 / train_timesteps, shift)
    base = np.linspace(1.0, tau_min, steps, dtype=np.float64).astype(np.float32)
    shifted = shift_tau(base, shift)
    return torch.cat([torch.from_numpy(shifted), torch.zeros(1)])


def guided_velocity(v_cond: torch.Tensor, v_uncond: torch.Tensor | None,
                    guidance: float) -> torch.Tensor:
    """Classifier-free guidance v_u + g (v_c - v_u); exactly v_c when g = 1 or v_u is None."""
    if guidance == 1.0 or v_uncond is None:
        return v_cond
    return v_uncond + guidance * (v_cond - v_uncond)


@torch.no_grad()
def euler_sample(velocity_fn: VelocityFn, shape, steps: int = 30, guidance: float = 4.0,
                 cond_latents: torch.Tensor | None = None, cond_frames: int = 0,
                 generator: torch.Generator | None = None, uncond_fn: VelocityFn | None = None,
                 shift: float = SD3_SHIFT, dtype: torch.dtype = torch.float32,
                 device: torch.device | str | None = None) -> torch.Tensor:
    """Integrate dz/dtau = -G from tau = 1 (noise) to tau = 0 with Euler steps; latents `shape`.

    - Schedule: `tau_schedule(steps, shift)` (diffusers' SD3 schedule; shift 3.0 by default).
    - Condition frames: the first `cond_frames` frames are the clean `cond_latents`
      ([B, >= cond_frames, ...]; cond_frames = 0 with latents given means all their frames).
      They have timestep 0 and are re-imposed after every step, so they stay exactly equal.
    - Guidance (docs/DESIGN.md section 9.8): the unconditional pass sees the condition-frame latents
      zeroed and is `uncond_fn` (which should also drop actions) or, if None, `velocity_fn`.
      With guidance 1.0 no unconditional pass is made.
    - Noise is drawn once from `generator` (CPU if it is None or on CPU), so a seed fixes it.
    """
    if cond_latents is not None and cond_frames == 0:
        cond_frames = cond_latents.shape[1]
    noise_device = generator.device if generator is not None else "cpu"
    latents = torch.randn(tuple(shape), generator=generator, device=noise_device, dtype=dtype)
    device = device or (cond_latents.device if cond_latents is not None else latents.device)
    latents = latents.to(device)
    cond_mask = condition_mask(latents.shape[0], latents.shape[1], cond_frames, device=device)
    clean = torch.zeros_like(latents)
    if cond_frames > 0:
        if cond_latents is None or cond_latents.shape[1] < cond_frames:
            raise ValueError(f"cond_frames={cond_frames} needs cond_latents with that many frames")
        clean[:, :cond_frames] = cond_latents[:, :cond_frames].to(device, dtype)
    latents = impose_condition(latents, clean, cond_mask)
    taus = tau_schedule(steps, shift).to(device=device, dtype=dtype)
    for tau, tau_next in zip(taus[:-1], taus[1:]):
        per_frame_tau = frame_timesteps(tau.expand(latents.shape[0]), cond_mask)
        v_cond = velocity_fn(latents, per_frame_tau)
        v_uncond = None
        if guidance != 1.0:
            unconditional_latents = impose_condition(latents, torch.zeros_like(latents), cond_mask)
            v_uncond = (uncond_fn or velocity_fn)(unconditional_latents, per_frame_tau)
        velocity = guided_velocity(v_cond, v_uncond, guidance)
        latents = impose_condition(latents + (tau - tau_next) * velocity, clean, cond_mask)
    return latents


# ---- long rollouts ----

WindowFn = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
"""(condition latents [B, n, ...], generator) -> a window [B, window, ...] whose first n frames
are the condition frames."""


def rollout_length(rounds: int, window: int = 25, cond: int = 3) -> int:
    """Frames after `rounds` rounds: window + (window - cond) (rounds - 1)."""
    return window + (window - cond) * (rounds - 1)


def rollout_rounds(total_frames: int, window: int = 25, cond: int = 3) -> int:
    """The fewest rounds that reach `total_frames`."""
    if total_frames <= window:
        return 1
    return 1 + -(-(total_frames - window) // (window - cond))


def rollout(generate_window: WindowFn, first_frames: torch.Tensor, total_frames: int,
            window: int = 25, cond: int = 3, seed: int = 0) -> torch.Tensor:
    """Autoregressive long rollout to exactly `total_frames` frames (frames on axis 1).

    Round 1 is conditioned on `first_frames` ([B, n, ...], n <= window) and yields `window`
    frames; each later round is conditioned on the last `cond` frames so far and adds
    `window - cond`, i.e. 25 + 22 (k - 1) frames after k rounds; the last round is cut to
    `total_frames`. Given frames are kept as given (only the new frames of each window are
    appended). One generator seeded with `seed` drives every round, so a seed fixes the result.
    """
    if not 0 < cond < window:
        raise ValueError(f"need 0 < cond < window, got cond={cond}, window={window}")
    if first_frames.shape[1] > window:
        raise ValueError(f"{first_frames.shape[1]} first frames do not fit a {window}-frame window")
    generator = torch.Generator(device=first_frames.device).manual_seed(seed)
    pieces = [first_frames]
    frames_so_far = first_frames.shape[1]
    condition = first_frames
    while frames_so_far < total_frames:
        generated = generate_window(condition, generator)
        if generated.shape[1] != window:
            raise ValueError(f"generate_window returned {generated.shape[1]} frames, not {window}")
        new_frames = generated[:, condition.shape[1]:]
        pieces.append(new_frames)
        frames_so_far += new_frames.shape[1]
        condition = torch.cat(pieces, dim=1)[:, -cond:]
    return torch.cat(pieces, dim=1)[:, :total_frames]


def euler_window_generator(velocity_fn: VelocityFn, frame_shape, window: int = 25,
                           steps: int = 30, guidance: float = 4.0,
                           uncond_fn: VelocityFn | None = None,
                           shift: float = SD3_SHIFT) -> WindowFn:
    """A `generate_window` for `rollout` that runs `euler_sample` on [B, window, *frame_shape]."""
    def generate_window(cond_latents: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        shape = (cond_latents.shape[0], window, *frame_shape)
        return euler_sample(velocity_fn, shape, steps=steps, guidance=guidance,
                            cond_latents=cond_latents, cond_frames=cond_latents.shape[1],
                            generator=generator, uncond_fn=uncond_fn, shift=shift,
                            dtype=cond_latents.dtype, device=cond_latents.device)
    return generate_window
