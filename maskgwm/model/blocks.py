"""The blocks MaskGWM adds to SD3: temporal blocks (paper Sec. 3.1, Eq. 5, actions) and
cross-view row-wise blocks (Sec. 3.4). Both work on the image stream only (Sec. 7.1: the new
blocks never update the text stream) and are zero-initialised, so a fresh block is the identity.

TemporalBlock, on tokens [B, T, S, C] (S = K H W tokens per frame), attends over T for every
token position, i.e. the (K H W) T C layout. With m_c = 0 on condition frames (Eq. 5):
    z_out = z_in + f_b(f_scale(m_c tau) * z_in + f_shift(m_c tau))
Our reading (assumed): the modulation is adaLN style, LayerNorm(z_in) * (1 + f_scale) + f_shift,
with f_scale / f_shift linear maps of SD3's sinusoidal timestep embedding of 1000 m_c tau; f_b is
temporal self-attention, then (with actions) a temporal cross-attention whose keys and values
get the projected action features added (actions.py: Vista's 19 values, each sinusoidally
embedded), then a feed-forward; every sub-layer ends in a zero-initialised projection.

ViewBlock, on tokens [B, T, K, H, W, C], attends along K (the same token across views), KW (a
token row across all views, the paper's (T H)[K W] C) or KHW (all tokens of all views).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import Timesteps
from torch import nn

from maskgwm.model.actions import ACTION_FEATURES, actions_present, embed_values
from maskgwm.model.attention import attention

VIEW_ATTENTION_MODES = ("K", "KW", "KHW")
TIMESTEP_SCALE = 1000.0   # tau in [0, 1] -> SD3's timestep range


def zero_(module: nn.Linear) -> nn.Linear:
    nn.init.zeros_(module.weight)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class SelfAttention(nn.Module):
    """Multi-head attention over the sequence axis of [N, L, C] (attention.py picks SDPA or
    flash-attn); zero-initialised output.

    `extra_k` / `extra_v` ([N, L, C], optional) are added to the projected keys and values."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = zero_(nn.Linear(dim, dim))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        n, length, dim = x.shape
        return x.view(n, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, x: torch.Tensor, extra_k: torch.Tensor | None = None,
                extra_v: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`attn_mask`: boolean [N, 1, L, L] (True = may attend), or None."""
        q, k, v = self.to_q(x), self.to_k(x), self.to_v(x)
        if extra_k is not None:
            k = k + extra_k
        if extra_v is not None:
            v = v + extra_v
        out = attention(self._split(q), self._split(k), self._split(v), attn_mask=attn_mask)
        return self.to_out(out.transpose(1, 2).reshape(x.shape))


class FeedForward(nn.Module):
    """GELU (tanh) MLP, as SD3's blocks, with a zero-initialised output projection."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        inner = int(dim * mlp_ratio)
        self.proj_in = nn.Linear(dim, inner)
        self.proj_out = zero_(nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj_out(F.gelu(self.proj_in(x), approximate="tanh"))


class TimestepModulation(nn.Module):
    """f_scale, f_shift of Eq. 5: per-frame m_c tau [B, T] -> (scale, shift), each [B, T, C]."""

    def __init__(self, dim: int):
        super().__init__()
        self.time_proj = Timesteps(num_channels=256, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.linear_1 = nn.Linear(256, dim)
        self.linear_2 = nn.Linear(dim, 2 * dim)

    def forward(self, tau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, frames = tau.shape
        emb = self.time_proj(tau.reshape(-1) * TIMESTEP_SCALE).to(self.linear_1.weight.dtype)
        out = self.linear_2(F.silu(self.linear_1(emb))).view(batch, frames, -1)
        scale, shift = out.chunk(2, dim=-1)
        return scale, shift


class TemporalBlock(nn.Module):
    """Attention over time for every spatial token, conditioned by Eq. 5 and optionally actions.

    The attention input gets a frame-position embedding (a linear map of the sinusoidal
    embedding of the frame index within the window; assumed, as SVD/Vista do), so the block
    knows frame order; it does not change the zero-initialised identity."""

    def __init__(self, dim: int, heads: int, actions: bool = False, mlp_ratio: float = 4.0,
                 missing_actions: str = "drop"):
        super().__init__()
        self.norm_in = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = TimestepModulation(dim)
        self.frame_proj = Timesteps(num_channels=256, flip_sin_to_cos=True,
                                    downscale_freq_shift=0)
        self.frame_embed = nn.Linear(256, dim)
        self.attn = SelfAttention(dim, heads)
        self.actions, self.missing_actions = actions, missing_actions
        if actions:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross_attn = SelfAttention(dim, heads)
            self.action_to_k = zero_(nn.Linear(ACTION_FEATURES, dim))
            self.action_to_v = zero_(nn.Linear(ACTION_FEATURES, dim))
        self.norm_ff = nn.LayerNorm(dim, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio)

    @staticmethod
    def frame_timesteps(tau: torch.Tensor, cond_frames: torch.Tensor | None) -> torch.Tensor:
        """m_c tau: [B, T] with 0 on condition frames ([B, T] bool, True = condition frame)."""
        if cond_frames is None:
            return tau
        return tau * (~cond_frames.to(tau.device, torch.bool)).to(tau.dtype)

    def modulate(self, x: torch.Tensor, tau: torch.Tensor,
                 cond_frames: torch.Tensor | None = None) -> torch.Tensor:
        """f_scale(m_c tau) z_in + f_shift(m_c tau), adaLN style, on [B, T, S, C]."""
        scale, shift = self.modulation(self.frame_timesteps(tau, cond_frames))
        return self.norm_in(x) * (1 + scale[:, :, None]) + shift[:, :, None]

    def _action_kv(self, actions: torch.Tensor, action_keep: torch.Tensor | None,
                   batch: int, frames: int, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-frame K and V additions [B S, T, C] from action values [B, 19] or [B, T, 19]
        (actions.py; NaN = missing)."""
        if actions.dim() == 2:
            actions = actions[:, None].expand(batch, frames, actions.shape[-1])
        embedded = embed_values(actions).to(self.action_to_k.weight.dtype)
        add_k, add_v = self.action_to_k(embedded), self.action_to_v(embedded)
        keep = self.kept_actions(actions, action_keep)
        if keep is not None:
            keep = keep.to(add_k.dtype)[:, None, None]
            add_k, add_v = add_k * keep, add_v * keep

        def per_token(x: torch.Tensor) -> torch.Tensor:
            return x[:, None].expand(batch, tokens, frames, x.shape[-1]).reshape(
                batch * tokens, frames, x.shape[-1])
        return per_token(add_k), per_token(add_v)

    def kept_actions(self, actions: torch.Tensor,
                     action_keep: torch.Tensor | None) -> torch.Tensor | None:
        """[B] bool: the samples whose actions reach the cross-attention (None: all). A sample
        whose action values are all missing takes the dropped path with missing_actions
        "drop" (its clip has no actions: the same input as a dropped or action-free sample)."""
        if self.missing_actions != "drop":
            return action_keep
        present = actions_present(actions)
        return present if action_keep is None else present & action_keep.to(present.device)

    def frame_positions(self, frames: int, device: torch.device,
                        dtype: torch.dtype) -> torch.Tensor:
        """[T, C] embedding of the frame index 0..T-1."""
        index = torch.arange(frames, device=device, dtype=torch.float32)
        return self.frame_embed(self.frame_proj(index).to(dtype))

    def forward(self, x: torch.Tensor, tau: torch.Tensor, cond_frames: torch.Tensor | None = None,
                actions: torch.Tensor | None = None, action_keep: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, T, S, C]; tau [B, T] in [0, 1]; cond_frames [B, T] bool; actions [B, (T,) 19];
        action_keep [B] bool drops a sample's actions (guidance; see kept_actions); attn_mask
        boolean [B S, 1, T, T] for masked temporal attention (None: every frame sees all)."""
        batch, frames, tokens, dim = x.shape
        if tuple(tau.shape) != (batch, frames):
            raise ValueError(f"tau must be [{batch}, {frames}], got {list(tau.shape)}")
        modulated = self.modulate(x, tau, cond_frames)
        modulated = modulated + self.frame_positions(frames, x.device, x.dtype)[:, None]
        z = x.permute(0, 2, 1, 3).reshape(batch * tokens, frames, dim)
        h = modulated.permute(0, 2, 1, 3).reshape(batch * tokens, frames, dim)
        z = z + self.attn(h, attn_mask=attn_mask)
        if self.actions and actions is not None:
            add_k, add_v = self._action_kv(actions, action_keep, batch, frames, tokens)
            z = z + self.cross_attn(self.norm_cross(z), extra_k=add_k, extra_v=add_v,
                                    attn_mask=attn_mask)
        z = z + self.ff(self.norm_ff(z))
        return z.view(batch, tokens, frames, dim).permute(0, 2, 1, 3).contiguous()


def to_view_sequences(x: torch.Tensor, mode: str) -> torch.Tensor:
    """[B, T, K, H, W, C] -> [N, L, C].

    K: (B T H W) K; KW: (B T H) (K W); KHW: (B T) (K H W)."""
    batch, frames, views, height, width, dim = x.shape
    if mode == "K":
        return x.permute(0, 1, 3, 4, 2, 5).reshape(-1, views, dim)
    if mode == "KW":
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, views * width, dim)
    if mode == "KHW":
        return x.reshape(batch * frames, views * height * width, dim)
    raise ValueError(f"view attention must be one of {VIEW_ATTENTION_MODES}, got '{mode}'")


def from_view_sequences(x: torch.Tensor, mode: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of to_view_sequences back to `shape` [B, T, K, H, W, C]."""
    batch, frames, views, height, width, dim = shape
    if mode == "K":
        return x.view(batch, frames, height, width, views, dim).permute(0, 1, 4, 2, 3, 5)
    if mode == "KW":
        return x.view(batch, frames, height, views, width, dim).permute(0, 1, 3, 2, 4, 5)
    return x.view(shape)


class ViewBlock(nn.Module):
    """Cross-view attention (pre-norm self-attention + feed-forward), zero-initialised outputs.

    No timestep modulation (assumed: the paper names none). A learned per-camera embedding
    ([cameras, C], zero-initialised, assumed) is added to the attention input of view k, so the
    KW and KHW modes can tell the cameras apart (SD3's positional embedding repeats in every
    view); `cameras` 0 leaves it out. Views are the K axis in the data's camera order."""

    def __init__(self, dim: int, heads: int, mode: str = "KW", mlp_ratio: float = 4.0,
                 cameras: int = 0):
        super().__init__()
        if mode not in VIEW_ATTENTION_MODES:
            raise ValueError(f"view attention must be one of {VIEW_ATTENTION_MODES}, got '{mode}'")
        self.mode = mode
        self.norm_attn = nn.LayerNorm(dim, eps=1e-6)
        self.camera_embed = nn.Parameter(torch.zeros(cameras, dim)) if cameras else None
        self.attn = SelfAttention(dim, heads)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio)

    def attention_input(self, x: torch.Tensor) -> torch.Tensor:
        """norm(x) plus the camera embedding of each view, [B, T, K, H, W, C]."""
        h = self.norm_attn(x)
        if self.camera_embed is None:
            return h
        views = x.shape[2]
        if views > len(self.camera_embed):
            raise ValueError(f"{views} views, but the view block embeds {len(self.camera_embed)} "
                             f"cameras (model.cameras)")
        return h + self.camera_embed[:views].to(h.dtype)[:, None, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, K, H, W, C] -> the same shape."""
        if x.dim() != 6:
            raise ValueError(f"view block expects [B, T, K, H, W, C], got {list(x.shape)}")
        z = to_view_sequences(x, self.mode)
        z = z + self.attn(to_view_sequences(self.attention_input(x), self.mode))
        z = z + self.ff(self.norm_ff(z))
        return from_view_sequences(z, self.mode, x.shape).contiguous()


class SpatialBlock(nn.Module):
    """F_s, the spatial reconstruction block: self-attention over the tokens of each image
    [N, L, C] and a feed-forward, zero-initialised; it does not see the text (assumed)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.norm_ff = nn.LayerNorm(dim, eps=1e-6)
        self.ff = FeedForward(dim, mlp_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        return x + self.ff(self.norm_ff(x))


class MaskToken(nn.Module):
    """Diffusion-related mask tokens (Eq. 3): m_tau = (1 - tau) f_m(eps) + tau p.

    f_m embeds the noise eps of each image like the patch embedding (a 3x3 convolution with the
    patch stride: OpenDWM's Conv3d (1, 3, 3), stride (1, 2, 2), frame by frame). `kind` picks
    Table 3a's variants: "p" (learnable only), "f_m" (noise only) or "mix"."""

    KINDS = ("p", "f_m", "mix")

    def __init__(self, in_channels: int, dim: int, patch_size: int, kind: str = "mix"):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"mask token kind must be one of {self.KINDS}, got '{kind}'")
        self.kind = kind
        self.p = nn.Parameter(torch.randn(dim) * 0.02)
        self.f_m = nn.Conv2d(in_channels, dim, kernel_size=3, stride=patch_size, padding=1)

    def forward(self, eps: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """eps [N, C, h, w] (one image per row), tau [N] -> mask tokens [N, h/p, w/p, dim]."""
        noise = self.f_m(eps).permute(0, 2, 3, 1)
        learned = self.p.expand_as(noise)
        if self.kind == "p":
            return learned
        if self.kind == "f_m":
            return noise
        tau = tau.to(noise.dtype)[:, None, None, None]
        return (1 - tau) * noise + tau * learned
