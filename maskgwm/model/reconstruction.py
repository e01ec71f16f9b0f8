"""Mask reconstruction (paper Eq. 2, training only): D(F(E(z^v) * M + m_tau * (1 - M))).

The encoder E (all but the last `mask.decoder_layers` DiT layers) runs on the visible tokens
only, packed to the same count per row; the dropped positions are filled with the mask token
m_tau; F repairs them; the decoder D (the last layers) runs on all tokens.

Branches, one per call (each sample of a batch draws one, see objective.py):
  spatial   M_spatial (one mask for all frames), packed as one row of gh * gw tokens (with
            `view_rows`: a row-wise tube mask, packed row by row, so that cross-view KW
            attention runs over rows, (T H)[K (1 - r) W]); packed positions line up across
            frames, so temporal attention needs no mask. F = F_s.
  temporal  M_time (`row` false: per frame, packed as one row) or row-wise M_time-hat
            (`row` true). With `shift` the encoder's temporal attention pairs the j-th packed
            token of every frame (no attention mask, paper Fig. 4 right); without it the
            tokens are scattered back to their grid positions and temporal attention runs
            over all positions with a boolean mask (Fig. 4 middle). F = F_t.
With `recon_shared`, both branches use one F (assumed: F_s then F_t, the same weights for both
mask kinds; the paper does not define the shared block).

Visible tokens outside the packing (the extra tokens of unmasked condition frames, see
`encoder_pack`) bypass the encoder and keep their input embedding (assumed).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from maskgwm.model.blocks import MaskToken, SpatialBlock, TemporalBlock
from maskgwm.model.masks import gather_rows, masked_attention_mask, packing_mask, scatter_rows

if TYPE_CHECKING:
    from maskgwm.model.dit import DiTState, MaskGWMDiT

MR_BRANCHES = ("spatial", "temporal")


def build_reconstruction(model: "MaskGWMDiT", dim: int) -> None:
    """Add the mask token and the reconstruction blocks F_s / F_t to `model`."""
    mask, p = model.mask_config, model.preset
    if not 1 <= mask.decoder_layers < p.num_layers:
        raise ValueError(f"mask.decoder_layers must be in [1, {p.num_layers - 1}], "
                         f"got {mask.decoder_layers}")
    if mask.token != "z_tau":    # z_tau fills masked positions with their input embedding
        model.mask_token = MaskToken(p.in_channels, dim, p.patch_size, mask.token)
    if mask.spatial or mask.recon_shared:
        model.recon_spatial = nn.ModuleList([SpatialBlock(dim, p.new_block_heads, p.mlp_ratio)
                                             for _ in range(mask.recon_layers)])
    if mask.temporal or mask.recon_shared:
        model.recon_temporal = nn.ModuleList([TemporalBlock(dim, p.new_block_heads)
                                              for _ in range(mask.recon_layers)])


def encoder_pack(keep: torch.Tensor, branch: str) -> torch.Tensor:
    """The tokens the encoder sees, from keep [N, T, rows, width]: the same count in every row.

    Spatial branch: the mask shared by the masked frames (the AND over frames), so condition
    frames contribute the same positions and temporal attention stays aligned. Temporal branch:
    `masks.packing_mask` (condition frames contribute evenly spaced columns)."""
    if branch == "spatial":
        return keep.all(dim=1, keepdim=True).expand_as(keep)
    return packing_mask(keep)


def masked_temporal(block: TemporalBlock, tokens: torch.Tensor, state: "DiTState",
                    actions: torch.Tensor | None,
                    action_keep: torch.Tensor | None) -> torch.Tensor:
    """A temporal block with the masked-attention baseline, on packed tokens
    [B, T, K, rows, Wk, C]: scatter to the full grid, attend with the boolean mask, gather."""
    pack = state.time_pack
    batch, frames, views, rows, width = pack.shape
    dim = tokens.shape[-1]
    flat_pack = pack.reshape(batch, frames, views * rows, width)
    packed = tokens.reshape(batch, frames, views * rows, -1, dim)
    full = scatter_rows(packed, flat_pack).reshape(batch, frames, -1, dim)
    out = block(full, state.tau, None, actions, action_keep, attn_mask=state.time_mask)
    return gather_rows(out.reshape(batch, frames, views * rows, width, dim), flat_pack)


def check_branch(model: "MaskGWMDiT", branch: str) -> None:
    mask = model.mask_config
    if not mask.enabled:
        raise ValueError("masked_forward needs an enabled MaskConfig (ratio > 0, a branch)")
    if branch not in MR_BRANCHES or not getattr(mask, branch):
        enabled = [b for b in MR_BRANCHES if getattr(mask, b)]
        raise ValueError(f"branch must be one of the enabled branches {tuple(enabled)}, "
                         f"got '{branch}'")


def masked_forward(model: "MaskGWMDiT", latents: torch.Tensor, timesteps: torch.Tensor,
                   encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                   eps: torch.Tensor, keep: torch.Tensor, branch: str,
                   cond_frames: torch.Tensor | None = None,
                   actions: torch.Tensor | None = None,
                   action_keep: torch.Tensor | None = None,
                   return_features: bool = False):
    """Training-time G (Eq. 2), [B, T, K, C, h, w]; keep [B, T, K, gh, gw] bool (True =
    visible). With `return_features`, also the encoder output mean-pooled over the visible
    tokens, [B, C] (for the contrastive loss)."""
    from maskgwm.model.dit import DiTState

    check_branch(model, branch)
    if tuple(eps.shape) != tuple(latents.shape):
        raise ValueError(f"eps must have the latents' shape {list(latents.shape)}, "
                         f"got {list(eps.shape)}")
    mask = model.mask_config
    state = model.embed(latents, timesteps, encoder_hidden_states, pooled_projections,
                        cond_frames)
    batch, frames, views, grid_h, grid_w, dim = state.tokens.shape
    if tuple(keep.shape) != (batch, frames, views, grid_h, grid_w):
        raise ValueError(f"keep must be [{batch}, {frames}, {views}, {grid_h}, {grid_w}], "
                         f"got {list(keep.shape)}")
    one_row = not (mask.view_rows if branch == "spatial" else mask.row)
    rows, width = (1, grid_h * grid_w) if one_row else (grid_h, grid_w)

    def fold(x: torch.Tensor) -> torch.Tensor:     # [B, T, K, ...] -> [B K, T, ...]
        return x.transpose(1, 2).reshape(batch * views, frames, *x.shape[3:])

    def unfold(x: torch.Tensor) -> torch.Tensor:   # [B K, T, ...] -> [B, T, K, ...]
        return x.reshape(batch, views, frames, *x.shape[2:]).transpose(1, 2)

    def as_rows(x: torch.Tensor) -> torch.Tensor:  # [B K, T, gh, gw, ...] -> packable rows
        return x.reshape(x.shape[0], frames, rows, width, *x.shape[4:])

    row_keep = as_rows(fold(keep.to(state.tokens.device)))
    pack = encoder_pack(row_keep, branch)
    full = as_rows(fold(state.tokens))
    state.tokens = unfold(gather_rows(full, pack))
    if branch == "temporal" and not mask.shift:
        state.time_pack = unfold(pack)
        state.time_mask = masked_attention_mask(
            state.time_pack.reshape(batch, frames, views * rows, width))
    encoder_layers = model.preset.num_layers - mask.decoder_layers
    encoded = model.run_layers(state, 0, encoder_layers, actions, action_keep)
    if mask.token == "z_tau":
        filler = full
    else:
        masked = as_rows(fold(mask_tokens(model, eps, state.tau, grid_h, grid_w)))
        filler = torch.where(row_keep[..., None], full, masked)
    tokens = scatter_rows(fold(encoded.tokens), pack, base=filler)
    tokens = unfold(tokens).reshape(batch, frames, views, grid_h, grid_w, dim)
    tokens = reconstruct(model, tokens, state.tau, branch)
    decoded = model.run_layers(
        DiTState(tokens=tokens, context=encoded.context, temb=state.temb, tau=state.tau),
        encoder_layers, model.preset.num_layers, actions, action_keep)
    output = model.head(decoded)
    if return_features:
        return output, encoded.tokens.mean(dim=(1, 2, 3, 4))
    return output


def mask_tokens(model: "MaskGWMDiT", eps: torch.Tensor, tau: torch.Tensor, grid_h: int,
                grid_w: int) -> torch.Tensor:
    """m_tau (+ the positional embedding) at every position: [B, T, K, gh, gw, C]."""
    batch, frames, views, channels, height, width = eps.shape
    image_tau = tau[:, :, None].expand(batch, frames, views).reshape(-1)
    tokens = model.mask_token(eps.reshape(-1, channels, height, width), image_tau)
    position = model.pos_embed.cropped_pos_embed(height, width).view(1, grid_h, grid_w, -1)
    return (tokens + position.to(tokens.dtype)).view(batch, frames, views, grid_h, grid_w, -1)


def reconstruct(model: "MaskGWMDiT", tokens: torch.Tensor, tau: torch.Tensor,
                branch: str) -> torch.Tensor:
    """F_s over each image's tokens and/or F_t over time per token position."""
    batch, frames, views, grid_h, grid_w, dim = tokens.shape
    kinds = MR_BRANCHES if model.mask_config.recon_shared else (branch,)
    for kind in kinds:
        for block in getattr(model, f"recon_{kind}"):
            if kind == "spatial":
                tokens = block(tokens.reshape(-1, grid_h * grid_w, dim))
            else:
                tokens = block(tokens.reshape(batch, frames, -1, dim), tau)
            tokens = tokens.reshape(batch, frames, views, grid_h, grid_w, dim)
    return tokens


def encoder_features(model: "MaskGWMDiT", latents: torch.Tensor, timesteps: torch.Tensor,
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
