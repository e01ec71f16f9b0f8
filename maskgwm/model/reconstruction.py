"""Mask reconstruction (paper Eq. 2, training only): D(F(E(z^v) * M + m_tau * (1 - M))).

The encoder E (all but the last `mask.decoder_layers` DiT layers) runs on the visible tokens
only, packed to the same count per row; the dropped positions are filled with the mask token
m_tau; F repairs them; the decoder D (the last layers) runs on all tokens.

Branches (each sample of a batch draws one, see objective.py; `mixed_forward` runs a batch
with its branches mixed, `masked_forward` one branch):
  spatial   M_spatial (one mask for all frames), packed as one row of gh * gw tokens (with
            `view_rows`: a row-wise tube mask, packed row by row, so that cross-view KW
            attention runs over rows, (T H)[K (1 - r) W]); packed positions line up across
            frames, so temporal attention needs no mask. F = F_s.
  temporal  M_time (`row` false: per frame, packed as one row) or row-wise M_time-hat
            (`row` true). With `shift` the encoder's temporal attention pairs the j-th packed
            token of every frame (no attention mask, paper Fig. 4 right); without it the
            tokens are scattered back to their grid positions and temporal attention runs
            over all positions with a boolean mask (Fig. 4 middle). F = F_t.
With `recon_shared`, both branches use one F (assumed: F_s and F_t in `mask.recon_order`, F_s
first by default, the same weights for both mask kinds; the paper does not define the shared
block, and spatial-first repairs each image before the repaired tokens meet across time).

Visible tokens outside the packing (the extra tokens of unmasked condition frames, see
`encoder_pack`) bypass the encoder and keep their input embedding (assumed).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from maskgwm.model.dit import DiTState, MaskGWMDiT
from maskgwm.model.masks import gather_rows, masked_attention_mask, packing_mask, scatter_rows

MR_BRANCHES = ("spatial", "temporal")


def encoder_pack(keep: torch.Tensor, branch: str) -> torch.Tensor:
    """The tokens the encoder sees, from keep [N, T, rows, width]: the same count in every row.

    Spatial branch: the mask shared by the masked frames (the AND over frames), so condition
    frames contribute the same positions and temporal attention stays aligned. Temporal branch:
    `masks.packing_mask` (condition frames contribute evenly spaced columns)."""
    if branch == "spatial":
        return keep.all(dim=1, keepdim=True).expand_as(keep)
    return packing_mask(keep)


def check_branch(model: MaskGWMDiT, branch: str) -> None:
    mask = model.mask_config
    if not mask.enabled:
        raise ValueError("masked_forward needs an enabled MaskConfig (ratio > 0, a branch)")
    if branch not in MR_BRANCHES or not getattr(mask, branch):
        enabled = [b for b in MR_BRANCHES if getattr(mask, b)]
        raise ValueError(f"branch must be one of the enabled branches {tuple(enabled)}, "
                         f"got '{branch}'")


def fold(x: torch.Tensor) -> torch.Tensor:
    """[b, T, K, ...] -> [b K, T, ...] (one row of images per view)."""
    return x.transpose(1, 2).reshape(-1, x.shape[1], *x.shape[3:])


def unfold(x: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of `fold`: [b K, T, ...] -> [b, T, K, ...]."""
    return x.reshape(batch, -1, *x.shape[1:]).transpose(1, 2)


@dataclass
class BranchPack:
    """One MR branch's samples packed for the encoder: `tokens` [b, T, K, rows, Wk, C] are the
    visible ones; the rest is what `unpack_branch` needs to put them back on the grid."""
    branch: str
    index: list[int]                 # the samples' positions in the batch
    tokens: torch.Tensor
    pack: torch.Tensor               # [b K, T, rows, W] bool: the packed positions
    row_keep: torch.Tensor           # [b K, T, rows, W] bool: the visible positions
    full: torch.Tensor               # [b K, T, rows, W, C]: every token before the encoder
    grid: tuple[int, int]
    time_pack: torch.Tensor | None = None    # masked temporal attention (no shift) only
    time_mask: torch.Tensor | None = None


def pack_branch(model: MaskGWMDiT, tokens: torch.Tensor, keep: torch.Tensor, branch: str,
                index: list[int]) -> BranchPack:
    """Pack the visible tokens [b, T, K, gh, gw, C] of samples taking `branch` (module doc)."""
    mask = model.mask_config
    batch, frames, views, grid_h, grid_w, _ = tokens.shape
    one_row = not (mask.view_rows if branch == "spatial" else mask.row)
    rows, width = (1, grid_h * grid_w) if one_row else (grid_h, grid_w)

    def as_rows(x: torch.Tensor) -> torch.Tensor:  # [b K, T, gh, gw, ...] -> packable rows
        return x.reshape(x.shape[0], frames, rows, width, *x.shape[4:])

    row_keep = as_rows(fold(keep.to(tokens.device)))
    pack = encoder_pack(row_keep, branch)
    full = as_rows(fold(tokens))
    found = BranchPack(branch, index, unfold(gather_rows(full, pack), batch), pack, row_keep,
                       full, (grid_h, grid_w))
    if branch == "temporal" and not mask.shift:
        found.time_pack = unfold(pack, batch)
        found.time_mask = masked_attention_mask(
            found.time_pack.reshape(batch, frames, views * rows, width))
    return found


def unpack_branch(model: MaskGWMDiT, packed: BranchPack, encoded: torch.Tensor,
                  eps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """Encoder output [b, T, K, rows, Wk, C] back on the grid, the dropped positions filled
    with m_tau and repaired by F: [b, T, K, gh, gw, C]."""
    filler = packed.full
    if model.mask_config.token != "z_tau":
        masked = fold(mask_tokens(model, eps, tau, *packed.grid)).reshape(packed.full.shape)
        masked = masked.to(packed.full.dtype)   # one dtype per stream (autocast: bf16)
        filler = torch.where(packed.row_keep[..., None], packed.full, masked)
    tokens = unfold(scatter_rows(fold(encoded), packed.pack, base=filler), len(packed.index))
    tokens = tokens.reshape(*tokens.shape[:3], *packed.grid, tokens.shape[-1])
    return reconstruct(model, tokens, tau, packed.branch)


def encoder_groups(model: MaskGWMDiT, packs: list[BranchPack]) -> list[list[BranchPack]]:
    """Branches whose packed tokens can share one encoder pass: the same tokens per image, no
    temporal attention mask, and (with view blocks, which attend along rows) the same rows."""
    if len(packs) == 2 and all(p.time_mask is None for p in packs):
        a, b = (p.tokens.shape[3:5] for p in packs)
        if a == b or (a[0] * a[1] == b[0] * b[1] and not model.model_config.view_blocks):
            return [packs]
    return [[p] for p in packs]


def select(state: DiTState, index: list[int], tokens: torch.Tensor) -> DiTState:
    """The state of the samples `index` (images are sample-major), holding `tokens`."""
    per_sample = state.temb.shape[0] // state.tokens.shape[0]
    rows = torch.tensor(index, device=state.temb.device)
    images = (rows[:, None] * per_sample + torch.arange(per_sample, device=rows.device))
    images = images.reshape(-1)
    return DiTState(tokens, state.context[images], state.temb[images], state.tau[rows])


def mixed_forward(model: MaskGWMDiT, latents: torch.Tensor, timesteps: torch.Tensor,
                  encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                  eps: torch.Tensor, keep: torch.Tensor, branches: list[str | None],
                  cond_frames: torch.Tensor | None = None,
                  actions: torch.Tensor | None = None,
                  action_keep: torch.Tensor | None = None,
                  return_features: bool = False):
    """Training-time G for a batch [B, T, K, C, h, w] whose sample i takes `branches[i]`:
    None (all tokens, as `forward`), "spatial" or "temporal" (Eq. 2, masked by keep[i], [T, K,
    gh, gw] bool, True = visible; ignored for None). One embedding, one encoder pass per token
    layout (the plain samples; the MR branches, one pass when `encoder_groups` allows), then one
    decoder pass and head over the whole batch, so a step launches about as many kernels as a
    plain one. With `return_features`, also the encoder output of the MR samples mean-pooled
    over their visible tokens, [n_MR, C], in batch order (for the contrastive loss)."""
    if len(branches) != latents.shape[0]:
        raise ValueError(f"one branch per sample: {len(branches)} for {latents.shape[0]}")
    for branch in set(branches) - {None}:
        check_branch(model, branch)
    if tuple(eps.shape) != tuple(latents.shape):
        raise ValueError(f"eps must have the latents' shape {list(latents.shape)}, "
                         f"got {list(eps.shape)}")
    state = model.embed(latents, timesteps, encoder_hidden_states, pooled_projections,
                        cond_frames)
    batch, frames, views, grid_h, grid_w, dim = state.tokens.shape
    if tuple(keep.shape) != (batch, frames, views, grid_h, grid_w):
        raise ValueError(f"keep must be [{batch}, {frames}, {views}, {grid_h}, {grid_w}], "
                         f"got {list(keep.shape)}")
    encoder_layers = model.preset.num_layers - model.mask_config.decoder_layers

    def encode(index: list[int], tokens: torch.Tensor, time_pack=None, time_mask=None):
        sub = select(state, index, tokens)
        sub.time_pack, sub.time_mask = time_pack, time_mask
        return model.run_layers(sub, 0, encoder_layers,
                                None if actions is None else actions[index],
                                None if action_keep is None else action_keep[index])

    order, tokens, contexts, features = [], [], [], []   # per encoder pass, then reordered
    plain = [i for i, b in enumerate(branches) if b is None]
    if plain:
        encoded = encode(plain, state.tokens[plain])
        order, tokens, contexts = [plain], [encoded.tokens], [encoded.context]
    packs = [pack_branch(model, state.tokens[index], keep[index], branch, index)
             for branch in ("spatial", "temporal")
             if (index := [i for i, b in enumerate(branches) if b == branch])]
    for group in encoder_groups(model, packs):
        same = len({p.tokens.shape[3:5] for p in group}) == 1
        encoded = encode([i for p in group for i in p.index],
                         torch.cat([p.tokens if same else p.tokens.flatten(3, 4)[:, :, :, None]
                                    for p in group]),
                         group[0].time_pack, group[0].time_mask)
        parts = encoded.tokens.split([len(p.index) for p in group])
        for p, part in zip(group, parts):
            part = part.reshape(p.tokens.shape)
            rows = torch.tensor(p.index, device=eps.device)
            tokens.append(unpack_branch(model, p, part, eps[rows], state.tau[rows]))
            features.append(part.mean(dim=(1, 2, 3, 4)))
            order.append(p.index)
        contexts.append(encoded.context)
    flat = [i for index in order for i in index]
    back = torch.tensor(flat, device=eps.device).argsort()
    context = torch.cat(contexts).unflatten(0, (batch, -1))[back].flatten(0, 1)
    tokens = torch.cat(tokens)[back]
    decoded = model.run_layers(DiTState(tokens, context, state.temb, state.tau),
                               encoder_layers, model.preset.num_layers, actions, action_keep)
    output = model.head(decoded)
    if return_features:
        masked = flat[len(plain):]
        pooled = torch.cat(features) if features else output.new_zeros(0, dim)
        return output, pooled[torch.tensor(masked, device=eps.device).argsort()]
    return output


def masked_forward(model: MaskGWMDiT, latents: torch.Tensor, timesteps: torch.Tensor,
                   encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                   eps: torch.Tensor, keep: torch.Tensor, branch: str,
                   cond_frames: torch.Tensor | None = None,
                   actions: torch.Tensor | None = None,
                   action_keep: torch.Tensor | None = None,
                   return_features: bool = False):
    """Training-time G (Eq. 2), [B, T, K, C, h, w], every sample on `branch`; keep [B, T, K,
    gh, gw] bool (True = visible). With `return_features`, also the encoder output mean-pooled
    over the visible tokens, [B, C] (for the contrastive loss)."""
    check_branch(model, branch)
    return mixed_forward(model, latents, timesteps, encoder_hidden_states, pooled_projections,
                         eps, keep, [branch] * latents.shape[0], cond_frames, actions,
                         action_keep, return_features)


def mask_tokens(model: MaskGWMDiT, eps: torch.Tensor, tau: torch.Tensor, grid_h: int,
                grid_w: int) -> torch.Tensor:
    """m_tau (+ the positional embedding) at every position: [B, T, K, gh, gw, C]."""
    batch, frames, views, channels, height, width = eps.shape
    image_tau = tau[:, :, None].expand(batch, frames, views).reshape(-1)
    tokens = model.mask_token(eps.reshape(-1, channels, height, width), image_tau)
    position = model.pos_embed.cropped_pos_embed(height, width).view(1, grid_h, grid_w, -1)
    return (tokens + position.to(tokens.dtype)).view(batch, frames, views, grid_h, grid_w, -1)


def reconstruct(model: MaskGWMDiT, tokens: torch.Tensor, tau: torch.Tensor,
                branch: str) -> torch.Tensor:
    """F_s over each image's tokens and/or F_t over time per token position."""
    batch, frames, views, grid_h, grid_w, dim = tokens.shape
    mask = model.mask_config
    kinds = (branch,)
    if mask.recon_shared:
        kinds = MR_BRANCHES if mask.recon_order == "spatial_first" else MR_BRANCHES[::-1]
    for kind in kinds:
        for block in getattr(model, f"recon_{kind}"):
            if kind == "spatial":
                tokens = block(tokens.reshape(-1, grid_h * grid_w, dim))
            else:
                tokens = block(tokens.reshape(batch, frames, -1, dim), tau)
            tokens = tokens.reshape(batch, frames, views, grid_h, grid_w, dim)
    return tokens


def encoder_features(model: MaskGWMDiT, latents: torch.Tensor, timesteps: torch.Tensor,
                     encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                     cond_frames: torch.Tensor | None = None,
                     actions: torch.Tensor | None = None,
                     action_keep: torch.Tensor | None = None) -> torch.Tensor:
    """The encoder output on all tokens (no mask), mean-pooled: [B, C]."""
    state = model.embed(latents, timesteps, encoder_hidden_states, pooled_projections,
                        cond_frames)
    encoder_layers = model.preset.num_layers - model.mask_config.decoder_layers
    encoded = model.run_layers(state, 0, encoder_layers, actions, action_keep)
    return encoded.tokens.mean(dim=(1, 2, 3, 4))
