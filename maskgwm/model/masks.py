"""Token masks for mask reconstruction (paper Sec. 3.3) and temporal attention over them.

Token grids are [B, T, H, W]; a mask is a bool `keep` of that shape (True = visible). Masks:
  spatial_mask   M_spatial: one random mask per sample, shared by all frames;
  temporal_mask  M_time: an independent random mask per frame;
  row_mask       row-wise M_time-hat: every row of every frame keeps exactly round((1 - r) W).
Condition frames are never masked (docs/DESIGN.md section 9): `cond_frames` is either a [B] int
tensor (the first n frames of each sample condition) or a [B, T] bool tensor.

Decisions the paper leaves open (marked "assumed" in docs):
  - round() rounds halves up: kept = floor((1 - r) n + 0.5).
  - Packed layout for shifted temporal attention. Masked frames keep Wk tokens per row, but
    condition frames keep all W, so their rows do not fit a [B, T, H, Wk] grid. `packing_mask`
    picks Wk evenly spaced columns of every full row to take part in the packed (shifted)
    sequences; the remaining W - Wk tokens of a condition-frame row are still visible (they are
    in spatial attention and the loss mask) but, in shifted temporal attention, attend to
    themselves only. Condition frames therefore stay unmasked and the attention needs no mask.
  - Tokens outside the attention (dropped tokens in the masked baseline, and the extra
    condition-frame tokens above) attend to themselves only: their output is their own value.
    In the model the outputs at dropped positions are never used.
"""
from __future__ import annotations

import math

import torch

from maskgwm.model.attention import attention


def kept_count(total: int, ratio: float) -> int:
    """Tokens kept out of `total` at mask ratio r: round((1 - r) total), halves up."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    kept = int(math.floor((1.0 - ratio) * total + 0.5))
    if kept < 1:
        raise ValueError(f"mask ratio {ratio} keeps no token out of {total}")
    return kept


def condition_frame_flags(cond_frames: torch.Tensor | None, batch: int,
                          frames: int) -> torch.Tensor:
    """[B, T] bool, True on condition frames, from a [B] count of leading frames or [B, T] flags."""
    if cond_frames is None:
        return torch.zeros(batch, frames, dtype=torch.bool)
    if cond_frames.dtype == torch.bool:
        if tuple(cond_frames.shape) != (batch, frames):
            raise ValueError(f"cond_frames flags must be [{batch}, {frames}], "
                             f"got {list(cond_frames.shape)}")
        return cond_frames.cpu()
    if tuple(cond_frames.shape) != (batch,):
        raise ValueError(f"cond_frames counts must be [{batch}], got {list(cond_frames.shape)}")
    return torch.arange(frames)[None, :] < cond_frames.cpu().long()[:, None]


def _random_keep(shape: tuple[int, ...], kept: int, generator: torch.Generator) -> torch.Tensor:
    """Bool of `shape` keeping exactly `kept` random entries along the last axis."""
    noise = torch.rand(shape, generator=generator)
    chosen = noise.argsort(dim=-1)[..., :kept]
    return torch.zeros(shape, dtype=torch.bool).scatter_(-1, chosen, True)


def _unmask_condition_frames(keep: torch.Tensor, cond_frames: torch.Tensor | None) -> torch.Tensor:
    batch, frames = keep.shape[:2]
    flags = condition_frame_flags(cond_frames, batch, frames)
    return keep | flags[:, :, None, None]


def spatial_mask(batch: int, frames: int, height: int, width: int, ratio: float,
                 generator: torch.Generator, cond_frames: torch.Tensor | None = None,
                 rows: bool = False) -> torch.Tensor:
    """M_spatial: [B, T, H, W] keep, one mask per sample for all frames, round((1 - r) H W)
    kept; with `rows`, round((1 - r) W) kept in every row (row-wise tubes)."""
    if rows:
        per_sample = _random_keep((batch, height, width), kept_count(width, ratio), generator)
    else:
        per_sample = _random_keep((batch, height * width), kept_count(height * width, ratio),
                                  generator)
    keep = per_sample.view(batch, 1, height, width).expand(batch, frames, height, width)
    return _unmask_condition_frames(keep.clone(), cond_frames)


def temporal_mask(batch: int, frames: int, height: int, width: int, ratio: float,
                  generator: torch.Generator,
                  cond_frames: torch.Tensor | None = None) -> torch.Tensor:
    """M_time: [B, T, H, W] keep, an independent mask per frame, round((1 - r) H W) kept."""
    kept = kept_count(height * width, ratio)
    keep = _random_keep((batch, frames, height * width), kept, generator)
    return _unmask_condition_frames(keep.view(batch, frames, height, width), cond_frames)


def row_mask(batch: int, frames: int, height: int, width: int, ratio: float,
             generator: torch.Generator,
             cond_frames: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise M_time-hat: [B, T, H, W] keep, every row of every frame keeps round((1 - r) W)."""
    kept = kept_count(width, ratio)
    keep = _random_keep((batch, frames, height, width), kept, generator)
    return _unmask_condition_frames(keep, cond_frames)


def packing_mask(keep: torch.Tensor) -> torch.Tensor:
    """The tokens that enter the packed layout: Wk per row, Wk the smallest per-row count.

    Rows keeping exactly Wk pass through; full rows (condition frames) contribute Wk evenly
    spaced columns (assumed). Any other row count is an error."""
    counts = keep.sum(dim=-1)
    width = keep.shape[-1]
    packed_width = int(counts.min())
    if not bool(((counts == packed_width) | (counts == width)).all()):
        raise ValueError("packing needs a row mask: every row keeps Wk tokens or all W")
    if packed_width == width:
        return keep
    columns = torch.linspace(0, width - 1, packed_width).round().long()
    spaced = torch.zeros(width, dtype=torch.bool, device=keep.device)
    spaced[columns.to(keep.device)] = True
    full_rows = (counts == width)[..., None]
    return torch.where(full_rows, spaced.expand_as(keep), keep)


def _row_indices(pack: torch.Tensor) -> torch.Tensor:
    """[B, T, H, Wk] column indices of the packed tokens of each row, in order."""
    counts = pack.sum(dim=-1)
    packed_width = int(counts.flatten()[0]) if counts.numel() else 0
    if not bool((counts == packed_width).all()):
        raise ValueError("gather_rows needs the same number of kept tokens in every row "
                         "(pass packing_mask(keep) for masks with condition frames)")
    # a stable sort puts the kept columns first, in increasing order
    order = torch.sort((~pack).to(torch.uint8), dim=-1, stable=True).indices
    return order[..., :packed_width]


def gather_rows(x: torch.Tensor, pack: torch.Tensor) -> torch.Tensor:
    """Pack x [B, T, H, W, *C] to [B, T, H, Wk, *C]: the kept tokens of each row, in order.

    `pack` must keep the same count in every row; use packing_mask(keep) when the mask has
    unmasked condition frames."""
    index = _row_indices(pack).to(x.device)
    index = index.view(*index.shape, *([1] * (x.dim() - 4))).expand(*index.shape, *x.shape[4:])
    return torch.gather(x, 3, index)


def scatter_rows(packed: torch.Tensor, pack: torch.Tensor,
                 base: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse of gather_rows: [B, T, H, Wk, *C] back to [B, T, H, W, *C].

    Positions outside `pack` take `base` (zeros when None)."""
    index = _row_indices(pack).to(packed.device)
    index = index.view(*index.shape, *([1] * (packed.dim() - 4)))
    index = index.expand(*index.shape[:4], *packed.shape[4:])
    shape = (*pack.shape, *packed.shape[4:])
    out = packed.new_zeros(shape) if base is None else base.clone()
    return out.scatter(3, index, packed.to(out.dtype))   # autocast: bf16 rows, fp32 base


def to_temporal_sequences(x: torch.Tensor) -> torch.Tensor:
    """[B, T, H, W, heads, d] -> contiguous [B H W, heads, T, d] (SDPA layout over time)."""
    batch, frames, height, width, heads, dim = x.shape
    return x.permute(0, 2, 3, 4, 1, 5).reshape(batch * height * width, heads, frames, dim)


def from_temporal_sequences(x: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """[B H W, heads, T, d] -> [B, T, H, W, heads, d]."""
    _, heads, frames, dim = x.shape
    return x.view(batch, height, width, heads, frames, dim).permute(0, 4, 1, 2, 3, 5)


def packed_temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              backend: str | None = None) -> torch.Tensor:
    """Shifted temporal attention on an already packed layout [B H Wk, heads, T, d]: no mask,
    so `attention` may use FlashAttention (backend None: the module default, see attention.py)."""
    return attention(q, k, v, backend=backend)


def packed_sequence_index(pack: torch.Tensor) -> torch.Tensor:
    """[B H Wk T] flat positions into the [B T H W] token grid of the packed tokens, in the
    order of the packed temporal sequences (sequence (b, h, j) runs over t)."""
    batch, frames, height, width = pack.shape
    columns = _row_indices(pack)  # [B, T, H, Wk]
    rows = torch.arange(batch * frames * height, device=columns.device)
    flat = rows.view(batch, frames, height, 1) * width + columns
    return flat.permute(0, 2, 3, 1).reshape(-1)


def shifted_temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                               keep: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """Row-wise + shift temporal attention (paper Fig. 4, right) on [B, T, H, W, heads, d].

    The j-th packed token of row h attends across frames to the j-th packed tokens of row h of
    the other frames, without an attention mask. Tokens outside the packed layout (dropped
    tokens, extra condition-frame tokens) return their own value.

    The packed sequences are gathered with one row index_select per tensor straight into
    [B H Wk, T, heads, d] (viewed as [B H Wk, heads, T, d] for attention, the layout
    flash_attn takes natively) and the output is written back with one index_copy."""
    pack = packing_mask(keep)
    batch, frames, height, width = keep.shape
    heads, dim = q.shape[-2:]
    index = packed_sequence_index(pack).to(q.device)
    sequences = index.numel() // frames if frames else 0

    def packed(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(batch * frames * height * width, heads, dim).index_select(0, index)
        return rows.view(sequences, frames, heads, dim).transpose(1, 2)

    out = packed_temporal_attention(packed(q), packed(k), packed(v), backend=backend)
    result = v.clone(memory_format=torch.contiguous_format)
    flat = result.view(batch * frames * height * width, heads, dim)
    flat.index_copy_(0, index, out.transpose(1, 2).reshape(index.numel(), heads, dim))
    return result


def masked_attention_mask(keep: torch.Tensor) -> torch.Tensor:
    """[B H W, 1, T, T] bool for the masked baseline: visible queries see visible keys;
    dropped queries see themselves only (so no softmax row is empty)."""
    batch, frames, height, width = keep.shape
    visible = keep.permute(0, 2, 3, 1).reshape(batch * height * width, frames)
    allowed = visible[:, :, None] & visible[:, None, :]
    allowed |= torch.eye(frames, dtype=torch.bool, device=keep.device)
    return allowed[:, None]


def masked_temporal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              keep: torch.Tensor,
                              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Masked temporal attention (paper Fig. 4, middle) over all H W positions of
    [B, T, H, W, heads, d], with a boolean [B H W, 1, T, T] mask hiding dropped tokens.

    Dropped queries attend to themselves only, so their output is their own value."""
    batch, _, height, width = keep.shape
    if attn_mask is None:
        attn_mask = masked_attention_mask(keep)
    sequences = [to_temporal_sequences(t) for t in (q, k, v)]
    out = attention(*sequences, attn_mask=attn_mask)  # with a mask: sdpa under "auto"
    return from_temporal_sequences(out, batch, height, width)
