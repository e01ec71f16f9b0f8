"""MaskGWMDiT: SD3's MMDiT inflated to multi-view video (paper Sec. 3.1, 3.4 and 7.1).

Spatial blocks are diffusers' `JointTransformerBlock`s over (T K)(H W) C with the text stream;
after each, one TemporalBlock (if `temporal_blocks`) and one ViewBlock (if `view_blocks`), both
zero-initialised, so a fresh model run frame by frame equals the SD3 image model it came from.
Parameter names match `SD3Transformer2DModel` (pos_embed, time_text_embed, context_embedder,
transformer_blocks, norm_out, proj_out); the new blocks live in `temporal_blocks` and
`view_blocks` (and, with mask reconstruction, `mask_token`, `recon_spatial`,
`recon_temporal`), so `from_sd3` loads an SD3 state_dict and only those keys may be missing.

Mask reconstruction (Eq. 2, training only): `build_reconstruction` adds the mask token and F_s /
F_t; reconstruction.py's `masked_forward(model, ...)` runs the encoder (all but the last
`mask.decoder_layers` layers) on the packed visible tokens, fills the dropped positions with the
mask token, repairs them with F_s or F_t, and runs the decoder layers on all tokens;
`mixed_forward(model, ...)` does so for a batch whose samples take different branches (training
steps). `run_layers` runs the masked temporal attention baseline itself (`masked_temporal`).

Sign (assumed, to match flow.py): forward returns the paper's velocity G = z_0 - eps, which is
minus SD3's output (SD3 predicts eps - z_0). Text conditioning is fixed tensors from the caller
(docs/DESIGN.md section 9). Condition frames take timestep 0 in the spatial and temporal blocks.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from diffusers.models.attention import JointTransformerBlock
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings, PatchEmbed
from diffusers.models.normalization import AdaLayerNormContinuous
from torch import nn

from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.actions import ACTION_VALUES
from maskgwm.model.blocks import TIMESTEP_SCALE, MaskToken, SpatialBlock, TemporalBlock, ViewBlock
from maskgwm.model.masks import gather_rows, scatter_rows
from maskgwm.model.presets import DiTPreset, get_preset, mismatched_fields


RECOMPILE_LIMIT = 32  # compiled variants per block kind (see MaskGWMDiT.compile_blocks)

NEW_BLOCK_PREFIXES = ("temporal_blocks.", "view_blocks.", "mask_token.", "recon_spatial.",
                      "recon_temporal.")


@dataclass
class DiTState:
    """Activations between layers: image tokens [B, T, K, gh, gw, C], text tokens per image
    [B T K, L, C] (None after the last layer), per-image conditioning [B T K, C] and m_c tau.
    With masked temporal attention on packed tokens: which grid positions the packed tokens
    hold, [B, T, K, rows, width], and the boolean temporal attention mask."""
    tokens: torch.Tensor
    context: torch.Tensor | None
    temb: torch.Tensor
    tau: torch.Tensor
    time_pack: torch.Tensor | None = None
    time_mask: torch.Tensor | None = None


class CheckpointMismatch(ValueError):
    """An SD3 checkpoint does not fit the preset (wrong sizes, missing or unexpected keys)."""


class MaskGWMDiT(nn.Module):
    """The video DiT: G(z_tau, tau, text, actions) over latents [B, T, K, C, h, w]."""

    def __init__(self, model_config: ModelConfig | None = None, preset: DiTPreset | None = None,
                 mask_config: MaskConfig | None = None):
        super().__init__()
        self.model_config = model_config or ModelConfig()
        self.mask_config = mask_config or MaskConfig()
        self.preset = preset or get_preset(self.model_config.preset)
        p, dim = self.preset, self.preset.hidden_size
        if p.caption_projection_dim != dim:
            raise ValueError(f"preset '{p.name}': caption_projection_dim "
                             f"{p.caption_projection_dim} must equal the hidden size {dim}")
        self.pos_embed = PatchEmbed(height=p.sample_size, width=p.sample_size,
                                    patch_size=p.patch_size, in_channels=p.in_channels,
                                    embed_dim=dim, pos_embed_max_size=p.pos_embed_max_size)
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            embedding_dim=dim, pooled_projection_dim=p.pooled_projection_dim)
        self.context_embedder = nn.Linear(p.joint_attention_dim, p.caption_projection_dim)
        self.transformer_blocks = nn.ModuleList([
            JointTransformerBlock(dim=dim, num_attention_heads=p.num_attention_heads,
                                  attention_head_dim=p.attention_head_dim,
                                  context_pre_only=i == p.num_layers - 1)
            for i in range(p.num_layers)])
        self.action_dim = ACTION_VALUES if self.model_config.actions else None
        if self.model_config.temporal_blocks:
            self.temporal_blocks = nn.ModuleList([
                TemporalBlock(dim, p.new_block_heads, self.model_config.actions, p.mlp_ratio,
                              self.model_config.missing_actions)
                for _ in range(p.num_layers)])
        if self.model_config.view_blocks:
            self.view_blocks = nn.ModuleList([
                ViewBlock(dim, p.new_block_heads, self.model_config.view_attention, p.mlp_ratio,
                          self.model_config.cameras)
                for _ in range(p.num_layers)])
        if self.mask_config.enabled:
            build_reconstruction(self, dim)
        self.norm_out = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(dim, p.patch_size * p.patch_size * p.out_channels, bias=True)

    # ------------------------------------------------------------------ input checks
    def _check_inputs(self, latents: torch.Tensor, timesteps: torch.Tensor,
                      encoder_hidden_states: torch.Tensor, pooled: torch.Tensor) -> None:
        p = self.preset
        expected = (f"[B, T, K, {p.in_channels}, h, w] with h, w divisible by {p.patch_size} "
                    f"and h / {p.patch_size}, w / {p.patch_size} <= {p.pos_embed_max_size} "
                    f"(preset '{p.name}')")
        if latents.dim() != 6 or latents.shape[3] != p.in_channels:
            raise ValueError(f"latents must be {expected}, got {list(latents.shape)}")
        height, width = latents.shape[-2:]
        if height % p.patch_size or width % p.patch_size or \
                max(height, width) // p.patch_size > p.pos_embed_max_size:
            raise ValueError(f"latents must be {expected}, got {list(latents.shape)}")
        batch, frames = latents.shape[:2]
        if frames > p.max_frames:
            raise ValueError(f"{frames} frames: preset '{p.name}' takes windows of at most "
                             f"{p.max_frames} frames (roll out longer videos window by window)")
        if tuple(timesteps.shape) != (batch, frames):
            raise ValueError(f"timesteps must be per frame [{batch}, {frames}], "
                             f"got {list(timesteps.shape)}")
        if encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[0] != batch or \
                encoder_hidden_states.shape[-1] != p.joint_attention_dim:
            raise ValueError(f"encoder_hidden_states must be [{batch}, L, {p.joint_attention_dim}]"
                             f", got {list(encoder_hidden_states.shape)}")
        if tuple(pooled.shape) != (batch, p.pooled_projection_dim):
            raise ValueError(f"pooled_projections must be [{batch}, {p.pooled_projection_dim}], "
                             f"got {list(pooled.shape)}")

    # ------------------------------------------------------------------ forward
    def forward(self, latents: torch.Tensor, timesteps: torch.Tensor,
                encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
                cond_frames: torch.Tensor | None = None, actions: torch.Tensor | None = None,
                action_keep: torch.Tensor | None = None) -> torch.Tensor:
        """latents [B, T, K, C, h, w]; timesteps tau [B, T] in [0, 1]; encoder_hidden_states
        [B, L, joint_dim]; pooled_projections [B, pooled_dim]; cond_frames [B, T] bool (True =
        condition frame, timestep 0); actions [B, (T,) 19] action values (actions.py, NaN =
        missing); action_keep [B] bool (False: the sample's actions are dropped).
        Returns G = z_0 - eps, [B, T, K, C, h, w]."""
        state = self.embed(latents, timesteps, encoder_hidden_states, pooled_projections,
                           cond_frames)
        state = self.run_layers(state, 0, self.preset.num_layers, actions, action_keep)
        return self.head(state)

    def embed(self, latents: torch.Tensor, timesteps: torch.Tensor,
              encoder_hidden_states: torch.Tensor, pooled_projections: torch.Tensor,
              cond_frames: torch.Tensor | None = None) -> DiTState:
        """Patch, timestep and text embeddings: the state before the first layer."""
        self._check_inputs(latents, timesteps, encoder_hidden_states, pooled_projections)
        p = self.preset
        batch, frames, views, channels, height, width = latents.shape
        images = batch * frames * views
        tau = TemporalBlock.frame_timesteps(timesteps, cond_frames)
        hidden = self.pos_embed(latents.reshape(images, channels, height, width)).contiguous()
        image_tau = tau[:, :, None].expand(batch, frames, views).reshape(images)
        image_pooled = pooled_projections.repeat_interleave(frames * views, dim=0)
        temb = self.time_text_embed(image_tau * TIMESTEP_SCALE, image_pooled)
        context = self.context_embedder(encoder_hidden_states)
        grid = (height // p.patch_size, width // p.patch_size)
        return DiTState(tokens=hidden.view(batch, frames, views, *grid, hidden.shape[-1]),
                        context=context.repeat_interleave(frames * views, dim=0),
                        temb=temb, tau=tau)

    def run_layers(self, state: DiTState, start: int, stop: int,
                   actions: torch.Tensor | None = None,
                   action_keep: torch.Tensor | None = None) -> DiTState:
        """Layers start..stop-1 (spatial, then temporal, then view block) on state.tokens
        [B, T, K, gh, gw, C]. The grid may be a packed one (e.g. gw = kept tokens per row), so
        an encoder can run on visible tokens only and a decoder on all of them."""
        batch, frames, views, grid_h, grid_w, dim = state.tokens.shape
        hidden, context = state.tokens.reshape(-1, grid_h * grid_w, dim), state.context
        for index in range(start, stop):
            context, hidden = self.transformer_blocks[index](
                hidden_states=hidden, encoder_hidden_states=context, temb=state.temb)
            if self.model_config.temporal_blocks and state.time_pack is not None:
                hidden = masked_temporal(self.temporal_blocks[index], hidden, state, actions,
                                         action_keep)
            elif self.model_config.temporal_blocks:
                tokens = hidden.reshape(batch, frames, views * grid_h * grid_w, dim)
                hidden = self.temporal_blocks[index](tokens, state.tau, None, actions,
                                                     action_keep)
            if self.model_config.view_blocks:
                tokens = hidden.reshape(batch, frames, views, grid_h, grid_w, dim)
                hidden = self.view_blocks[index](tokens)
            hidden = hidden.reshape(-1, grid_h * grid_w, dim)
        return DiTState(hidden.reshape(state.tokens.shape), context, state.temb, state.tau,
                        state.time_pack, state.time_mask)

    def head(self, state: DiTState) -> torch.Tensor:
        """Final norm, projection and unpatchify: G = z_0 - eps, [B, T, K, C, h, w]."""
        p = self.preset
        batch, frames, views, grid_h, grid_w, dim = state.tokens.shape
        hidden = self.proj_out(self.norm_out(state.tokens.reshape(-1, grid_h * grid_w, dim),
                                             state.temb))
        hidden = hidden.view(-1, grid_h, grid_w, p.patch_size, p.patch_size, p.out_channels)
        output = torch.einsum("nhwpqc->nchpwq", hidden).reshape(
            batch, frames, views, p.out_channels, grid_h * p.patch_size, grid_w * p.patch_size)
        return -output

    # ------------------------------------------------------------------ speed
    def compile_blocks(self) -> int:
        """Regional torch.compile: every DiT block (spatial, temporal, view) and F block
        compiled in place (nn.Module.compile: parameter names and checkpoints stay); returns
        the count. Blocks of one kind share compiled code, so compile time is that of a few
        blocks, and each block's norms, modulation, MLP and attention glue fuse into fewer
        kernels (the GPU step is launch-bound, results/bench/gpu_h200.md). Shapes are dynamic
        from the start (frame counts, packed token counts and batch sizes change from step to
        step), and every block takes contiguous tokens in one dtype (the compute dtype; MR's
        mask tokens are cast to it), so only structural differences recompile (the last joint
        block, batch 1, grad mode on or off, the base shape dynamo tracks for view inputs).
        Those add up to more than dynamo's default 8 variants per block kind, after which a
        block would run eagerly (seen on an H200): the limit is raised to RECOMPILE_LIMIT."""
        dynamo_config = torch._dynamo.config
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
        count = 0
        for name in ("transformer_blocks", "temporal_blocks", "view_blocks", "recon_spatial",
                     "recon_temporal"):
            for block in getattr(self, name, []):
                block.compile(dynamic=True)
                count += 1
        return count

    # ------------------------------------------------------------------ SD3 loading
    def load_sd3_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load an SD3Transformer2DModel state_dict; only new-block keys may be missing."""
        own = self.state_dict()
        wrong_shape = [f"{key}: expected {tuple(own[key].shape)}, got {tuple(value.shape)}"
                       for key, value in state_dict.items()
                       if key in own and tuple(own[key].shape) != tuple(value.shape)]
        unexpected = sorted(set(state_dict) - set(own))
        missing = sorted(key for key in set(own) - set(state_dict)
                         if not key.startswith(NEW_BLOCK_PREFIXES))
        if wrong_shape or unexpected or missing:
            parts = [f"checkpoint does not fit preset '{self.preset.name}'"]
            for label, keys in (("wrong shapes", wrong_shape), ("unexpected keys", unexpected),
                                ("missing keys", missing)):
                if keys:
                    parts.append(f"{label} ({len(keys)}): {', '.join(keys[:8])}"
                                 + (" ..." if len(keys) > 8 else ""))
            raise CheckpointMismatch("; ".join(parts))
        self.load_state_dict(state_dict, strict=False)

    @classmethod
    def from_sd3(cls, source: Any, model_config: ModelConfig | None = None,
                 mask_config: MaskConfig | None = None) -> "MaskGWMDiT":
        """Inflate an SD3 transformer: a `SD3Transformer2DModel`, or a directory saved by its
        `save_pretrained` (the model root, or its `transformer/` sub-folder)."""
        model_config = model_config or ModelConfig()
        preset = get_preset(model_config.preset)
        sd3 = _load_sd3(source)
        mismatch = mismatched_fields(preset, dict(sd3.config))
        if mismatch:
            details = ", ".join(f"{name}: expected {want}, got {got}"
                                for name, (want, got) in mismatch.items())
            raise CheckpointMismatch(f"SD3 checkpoint does not fit preset '{preset.name}': "
                                     f"{details}")
        model = cls(model_config, preset, mask_config)
        model.load_sd3_state_dict(sd3.state_dict())
        return model


def build_reconstruction(model: MaskGWMDiT, dim: int) -> None:
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


def masked_temporal(block: TemporalBlock, tokens: torch.Tensor, state: DiTState,
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


def _load_sd3(source: Any) -> nn.Module:
    from diffusers import SD3Transformer2DModel

    if isinstance(source, SD3Transformer2DModel):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(os.path.join(path, "transformer")):
            path = os.path.join(path, "transformer")
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise FileNotFoundError(f"no SD3 transformer (config.json) under {path}")
        return SD3Transformer2DModel.from_pretrained(path)
    raise TypeError(f"from_sd3 takes an SD3Transformer2DModel or a directory, "
                    f"got {type(source).__name__}")
