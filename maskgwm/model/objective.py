"""The training objective: rectified flow (Eq. 1) with mask reconstruction (Eq. 2) per sample.

Every random choice of a sample comes from a generator seeded by (run seed, global sample
index), drawn in a fixed order, so a sample's loss does not depend on the batch it is in or on
the number of processes:
  1. condition frames n ~ U{0 .. min(max_cond_frames, T - 1)}   (0-3 in the paper; uniform assumed)
  2. tau ~ shifted logit-normal (SD3's training distribution, config.flow)
  3. noise eps [T, K, C, h, w]
  4. condition dropout, action dropout (guidance; each with its probability) and the branch draw
  5. the mask, when the sample takes an MR branch: one mask shared by the sample's K views, so
     packed token j of every view is the same grid position (cross-view attention on packed
     tokens pairs like positions).
The branch (docs/DESIGN.md section 9): none when MR is off or tau is outside [tau_min, tau_max]
(the tau-range gate; such samples take the plain path in the same step); otherwise M_spatial
with probability `spatial_prob` when both branches are on, else the one that is on. Condition
frames are never masked and are not in the loss; a dropped condition keeps its frames as
condition frames with zeroed latents (what the unconditional sampling pass sees). A sample whose
clip has no action values (all NaN, actions.py) is handled by the model as
`model.missing_actions` says, in training and sampling alike (blocks.TemporalBlock).

The loss is the per-sample mean squared error to (z_0 - eps) over non-condition frames,
averaged over the batch (flow.flow_loss with per_sample). With `mask.contrastive` (Table 3a's
z_tau row, SD-DiT reading, assumed): an InfoNCE loss between the mean-pooled encoder output of
each masked sample and the same encoder on the sample's unmasked tokens (no gradient), weighted
by `mask.contrastive_weight`. The negatives are the other masked samples' teachers: of every
rank (`mask.contrastive_negatives = "global"`, gathered; with 2 samples per GPU a local batch
gives one negative at most) or of this rank only ("local").
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from maskgwm.config.schema import FlowConfig, MaskConfig, RunConfig
from maskgwm.model.flow import (condition_mask, flow_loss, frame_timesteps, impose_condition,
                                noisy_latents, sample_tau)
from maskgwm.model.masks import row_mask, spatial_mask, temporal_mask
from maskgwm.model.reconstruction import encoder_features, mixed_forward


@dataclass(frozen=True)
class ObjectiveSettings:
    """What the objective needs from a run config (see `from_config`)."""
    mask: MaskConfig = field(default_factory=MaskConfig)
    max_cond_frames: int = 3
    cond_dropout: float = 0.1
    action_dropout: float = 0.1
    flow: FlowConfig = field(default_factory=FlowConfig)

    @classmethod
    def from_config(cls, config: RunConfig) -> "ObjectiveSettings":
        stage = config.stage
        return cls(config.mask, stage.max_cond_frames, stage.cond_dropout, stage.action_dropout,
                   config.flow)


@dataclass
class SampleDraw:
    """One sample's random choices; keep is [T, K, gh, gw] (True = visible) or None."""
    cond: int
    tau: torch.Tensor
    eps: torch.Tensor
    drop_cond: bool
    drop_action: bool
    branch: str | None
    keep: torch.Tensor | None


@dataclass
class LossTerms:
    loss: torch.Tensor
    flow: torch.Tensor
    contrastive: torch.Tensor | None
    branches: dict[str, int]          # samples per path: plain, spatial, temporal


def sample_generator(seed: int, index: int) -> torch.Generator:
    """A CPU generator for sample `index` of a run with `seed` (well mixed, collision-free)."""
    words = np.random.SeedSequence([seed, index]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(words[0]) << 32 | int(words[1]))


def choose_branch(mask: MaskConfig, tau: float, u: float) -> str | None:
    if not (mask.enabled and (mask.spatial or mask.temporal)):
        return None
    if not mask.tau_min <= tau <= mask.tau_max:
        return None
    if mask.spatial and mask.temporal:
        return "spatial" if u < mask.spatial_prob else "temporal"
    return "spatial" if mask.spatial else "temporal"


def draw_keep(mask: MaskConfig, branch: str, frames: int, views: int, grid: tuple[int, int],
              cond: int, generator: torch.Generator) -> torch.Tensor:
    """[T, K, gh, gw] keep: one mask shared by the K views; condition frames unmasked."""
    cond_frames = torch.tensor([cond])
    if branch == "spatial":
        keep = spatial_mask(1, frames, *grid, mask.ratio, generator, cond_frames,
                            rows=mask.view_rows)
    else:
        make = row_mask if mask.row else temporal_mask
        keep = make(1, frames, *grid, mask.ratio, generator, cond_frames=cond_frames)
    return keep[0, :, None].expand(frames, views, *grid)


def draw_sample(generator: torch.Generator, frame_shape: tuple[int, ...],
                grid: tuple[int, int], settings: ObjectiveSettings) -> SampleDraw:
    """The random choices for one sample with latents of `frame_shape` [T, K, C, h, w]."""
    frames, views = frame_shape[:2]
    max_cond = min(settings.max_cond_frames, frames - 1)
    cond = int(torch.randint(0, max_cond + 1, (1,), generator=generator))
    flow = settings.flow
    tau = sample_tau(1, generator, flow.logit_mean, flow.logit_std, flow.shift)[0]
    eps = torch.randn(frame_shape, generator=generator)
    u_cond, u_action, u_branch = torch.rand(3, generator=generator).tolist()
    branch = choose_branch(settings.mask, float(tau), u_branch)
    keep = (draw_keep(settings.mask, branch, frames, views, grid, cond, generator)
            if branch else None)
    return SampleDraw(cond, tau, eps, cond > 0 and u_cond < settings.cond_dropout,
                      u_action < settings.action_dropout, branch, keep)


def info_nce(student: torch.Tensor, teacher: torch.Tensor, temperature: float,
             offset: int = 0) -> torch.Tensor:
    """Student row i should match teacher row offset + i among all teacher rows."""
    logits = F.normalize(student, dim=-1) @ F.normalize(teacher, dim=-1).T / temperature
    target = torch.arange(len(student), device=student.device) + offset
    return F.cross_entropy(logits, target)


def gather_rows_of_ranks(local: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(every rank's rows [n_r, C] concatenated in rank order, where this rank's rows start);
    the local rows alone outside a process group. Every rank must call it (a collective), also
    with no rows. No gradient flows through it (for teacher features)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local, 0
    world, rank = dist.get_world_size(), dist.get_rank()
    count = torch.tensor([len(local)], device=local.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = local.new_zeros(max(sizes), local.shape[-1])
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sum(sizes[:rank])


def training_loss(model, z0: torch.Tensor, encoder_hidden_states: torch.Tensor,
                  pooled_projections: torch.Tensor, sample_index, seed: int,
                  settings: ObjectiveSettings, actions: torch.Tensor | None = None) -> LossTerms:
    """The loss of a batch of clean latents z0 [B, T, K, C, h, w]; `sample_index` [B] holds
    each sample's global index (it seeds the sample's draws); `actions` [B, (T,) 19] action
    values (actions.py, NaN = missing) or None."""
    batch, frames, views = z0.shape[:3]
    patch = model.preset.patch_size
    grid = (z0.shape[-2] // patch, z0.shape[-1] // patch)
    draws = [draw_sample(sample_generator(seed, int(i)), tuple(z0.shape[1:]), grid, settings)
             for i in sample_index]
    device, dtype = z0.device, z0.dtype
    eps = torch.stack([d.eps for d in draws]).to(device, dtype)
    tau = torch.stack([d.tau for d in draws]).to(device, dtype)
    cond = condition_mask(batch, frames, torch.tensor([d.cond for d in draws]), device=device)
    drop_cond = torch.tensor([d.drop_cond for d in draws], device=device)
    action_keep = ~torch.tensor([d.drop_action for d in draws], device=device)
    clean = torch.where(drop_cond.view(-1, *[1] * (z0.dim() - 1)), torch.zeros_like(z0), z0)
    z_tau = impose_condition(noisy_latents(z0, eps, tau), clean, cond)
    timesteps = frame_timesteps(tau, cond)

    branch_of = [d.branch for d in draws]
    branches = {name or "plain": branch_of.count(name) for name in (None, "spatial", "temporal")}
    extra = dict(cond_frames=cond, actions=actions, action_keep=action_keep)
    contrastive_on = settings.mask.contrastive
    student = None
    if branches["plain"] == batch:
        prediction = model(z_tau, timesteps, encoder_hidden_states, pooled_projections, **extra)
    else:
        grid_keep = torch.ones(batch, frames, views, *grid, dtype=torch.bool)
        for i, d in enumerate(draws):
            if d.keep is not None:
                grid_keep[i] = d.keep
        prediction = mixed_forward(model, z_tau, timesteps, encoder_hidden_states,
                                   pooled_projections, eps, grid_keep.to(device), branch_of,
                                   **extra, return_features=contrastive_on)
        if contrastive_on:
            prediction, student = prediction
    flow = flow_loss(prediction, z0, eps, ~cond, per_sample=True)
    if not contrastive_on:
        return LossTerms(flow, flow, None, branches)
    masked = [i for i, b in enumerate(branch_of) if b]
    teacher = teacher_features(model, masked, z_tau, timesteps, encoder_hidden_states,
                               pooled_projections, **extra)
    offset = 0
    if settings.mask.contrastive_negatives == "global":
        teacher, offset = gather_rows_of_ranks(teacher)   # every rank, also with no MR sample
    contrastive = None
    loss = flow
    if student is not None and len(student):
        contrastive = info_nce(student, teacher, settings.mask.contrastive_temperature, offset)
        loss = flow + settings.mask.contrastive_weight * contrastive
    return LossTerms(loss, flow, contrastive, branches)


@torch.no_grad()
def teacher_features(model, masked: list[int], z_tau: torch.Tensor, timesteps: torch.Tensor,
                     encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                     cond_frames: torch.Tensor, actions: torch.Tensor | None,
                     action_keep: torch.Tensor) -> torch.Tensor:
    """The unmasked encoder's pooled output [n, C] for the MR samples `masked` (no gradient);
    [0, C] when there are none."""
    if not masked:
        return z_tau.new_zeros(0, model.preset.hidden_size, dtype=torch.float32)
    rows = torch.tensor(masked, device=z_tau.device)
    return encoder_features(model, z_tau[rows], timesteps[rows], encoder_hidden_states[rows],
                            pooled_projections[rows], cond_frames=cond_frames[rows],
                            actions=None if actions is None else actions[rows],
                            action_keep=action_keep[rows]).float()
