"""MaskGWMDiT: shapes, inflation from SD3 (the key equality), checkpoint loading and errors."""
from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from maskgwm.config.schema import ModelConfig
from maskgwm.model.dit import CheckpointMismatch, MaskGWMDiT
from maskgwm.model.presets import PRESETS, get_preset

TINY = get_preset("tiny")


@pytest.fixture(autouse=True)
def seeded():
    """Every test draws the same random tensors, so closeness checks are reproducible."""
    torch.manual_seed(0)


def inputs(preset, batch=1, frames=2, views=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, frames, views, preset.in_channels, preset.latent_height,
                          preset.latent_width, generator=generator)
    tau = torch.rand(batch, frames, generator=generator)
    text = torch.randn(batch, 5, preset.joint_attention_dim, generator=generator)
    pooled = torch.randn(batch, preset.pooled_projection_dim, generator=generator)
    return latents, tau, text, pooled


@pytest.fixture(scope="module")
def tiny_sd3() -> SD3Transformer2DModel:
    torch.manual_seed(0)
    model = SD3Transformer2DModel(**TINY.sd3_config()).eval()
    with torch.no_grad():   # SD3 zero-inits nothing, but give proj_out etc. non-trivial values
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


def test_presets():
    assert TINY.patch_size == 2 and TINY.in_channels == 16
    grid_h, grid_w = TINY.latent_height // 2, TINY.latent_width // 2
    assert grid_h != grid_w and grid_w % 4 == 0
    medium = PRESETS["sd3-medium"]
    assert (medium.num_layers, medium.hidden_size, medium.num_attention_heads) == (24, 1536, 24)
    assert (medium.joint_attention_dim, medium.pooled_projection_dim,
            medium.caption_projection_dim, medium.pos_embed_max_size) == (4096, 2048, 1536, 192)
    with pytest.raises(ValueError, match="tiny, small, sd3-medium"):
        get_preset("huge")


@pytest.mark.parametrize("preset_name", ["tiny", "small"])
def test_output_shape(preset_name):
    config = ModelConfig(preset=preset_name, view_blocks=True, actions=True)
    model = MaskGWMDiT(config).eval()
    latents, tau, text, pooled = inputs(model.preset)
    with torch.no_grad():
        out = model(latents, tau, text, pooled, actions=torch.randn(1, 2, 16))
    assert out.shape == latents.shape


@pytest.mark.parametrize("view_attention", ["K", "KW", "KHW"])
def test_inflated_model_equals_image_model(tiny_sd3, view_attention):
    config = ModelConfig(preset="tiny", temporal_blocks=True, view_blocks=True,
                         view_attention=view_attention, actions=True)
    model = MaskGWMDiT.from_sd3(tiny_sd3, config).eval()
    latents, tau, text, pooled = inputs(TINY, batch=2, frames=3, views=2)
    cond = torch.tensor([[True, False, False], [False, False, False]])
    with torch.no_grad():
        video = model(latents, tau, text, pooled, cond_frames=cond,
                      actions=torch.randn(2, 3, 16))
        frame_tau = tau.masked_fill(cond, 0.0)
        for b in range(2):
            for t in range(3):
                image = tiny_sd3(hidden_states=latents[b, t], timestep=frame_tau[b, t:t + 1]
                                 .expand(2) * 1000, encoder_hidden_states=text[b:b + 1]
                                 .expand(2, -1, -1), pooled_projections=pooled[b:b + 1]
                                 .expand(2, -1)).sample
                # the model returns the paper's z_0 - eps: minus SD3's eps - z_0
                torch.testing.assert_close(video[b, t], -image, rtol=1e-4, atol=1e-5)


def test_trained_new_blocks_mix_frames_and_views(tiny_sd3):
    config = ModelConfig(preset="tiny", view_blocks=True)
    model = MaskGWMDiT.from_sd3(tiny_sd3, config).eval()
    latents, tau, text, pooled = inputs(TINY, frames=2, views=2)
    with torch.no_grad():
        base = model(latents, tau, text, pooled)
        for block in [*model.temporal_blocks, *model.view_blocks]:
            for parameter in block.parameters():
                parameter.add_(torch.randn_like(parameter) * 0.05)
        perturbed = latents.clone()
        perturbed[:, 0, 0] += 1.0
        changed = (model(perturbed, tau, text, pooled) - model(latents, tau, text, pooled))
    assert changed[:, 1, 1].abs().amax() > 0   # another frame and view sees the change
    assert not torch.allclose(base, model(latents, tau, text, pooled))


def test_loads_saved_sd3_directory(tiny_sd3, tmp_path):
    tiny_sd3.save_pretrained(tmp_path / "transformer")
    model = MaskGWMDiT.from_sd3(tmp_path, ModelConfig(preset="tiny")).eval()
    for key, value in tiny_sd3.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert any(key.startswith("temporal_blocks.") for key in model.state_dict())


def test_checkpoint_from_another_preset_is_named(tiny_sd3):
    config = dict(TINY.sd3_config(), num_layers=4)
    other = SD3Transformer2DModel(**config)
    with pytest.raises(CheckpointMismatch, match="preset 'tiny': num_layers: expected 3, got 4"):
        MaskGWMDiT.from_sd3(other, ModelConfig(preset="tiny"))


def test_state_dict_with_stray_or_missing_keys_is_named(tiny_sd3):
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    state = dict(tiny_sd3.state_dict())
    state["extra.weight"] = torch.zeros(1)
    del state["proj_out.bias"]
    with pytest.raises(CheckpointMismatch, match=r"unexpected keys \(1\): extra.weight.*"
                                                 r"missing keys \(1\): proj_out.bias"):
        model.load_sd3_state_dict(state)
    state = dict(tiny_sd3.state_dict(), **{"proj_out.bias": torch.zeros(3)})
    with pytest.raises(CheckpointMismatch, match=r"proj_out.bias: expected \(64,\), got \(3,\)"):
        model.load_sd3_state_dict(state)


def test_missing_checkpoint_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        MaskGWMDiT.from_sd3(tmp_path, ModelConfig(preset="tiny"))


@pytest.mark.parametrize("shape", [
    (1, 2, 1, 4, 8, 16),      # 4 channels, not 16
    (1, 2, 16, 8, 16),        # no view axis
    (1, 2, 1, 16, 7, 16),     # height not divisible by the patch
    (1, 1, 1, 16, 8, 48),     # grid wider than pos_embed_max_size
])
def test_wrong_latent_shape_names_what_was_expected(shape):
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    latents = torch.randn(shape)
    tau = torch.rand(shape[0], shape[1])
    with pytest.raises(ValueError, match=r"latents must be \[B, T, K, 16, h, w\].*preset 'tiny'"):
        model(latents, tau, torch.randn(1, 5, 32), torch.randn(1, 32))


def test_wrong_timestep_and_text_shapes():
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    latents, tau, text, pooled = inputs(TINY)
    with pytest.raises(ValueError, match=r"per frame \[1, 2\]"):
        model(latents, tau[:, 0], text, pooled)
    with pytest.raises(ValueError, match=r"\[1, L, 32\]"):
        model(latents, tau, torch.randn(1, 5, 4096), pooled)
    with pytest.raises(ValueError, match=r"pooled_projections must be \[1, 32\]"):
        model(latents, tau, text, torch.randn(1, 2048))


# ---------------------------------------------------------------- mask reconstruction (Eq. 2)
from maskgwm.config.schema import MaskConfig  # noqa: E402
from maskgwm.model.dit import encoder_pack  # noqa: E402
from maskgwm.model.masks import row_mask, spatial_mask  # noqa: E402

MR = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)  # 2 decoder layers


def view_keep(kind, batch, frames, views, cond, seed=0):
    """[B, T, K, gh, gw] keep from masks.py, an independent mask per view."""
    make = {"spatial": spatial_mask, "temporal": row_mask}[kind]
    grid_h, grid_w = TINY.latent_height // 2, TINY.latent_width // 2
    keep = make(batch * views, frames, grid_h, grid_w, 0.25, torch.Generator().manual_seed(seed),
                cond_frames=torch.full((batch * views,), cond))
    return keep.view(batch, views, frames, grid_h, grid_w).transpose(1, 2)


def pixels(keep):
    return keep.repeat_interleave(2, -2).repeat_interleave(2, -1)[:, :, :, None]


@pytest.fixture(scope="module")
def mr_model(tiny_sd3):
    model = MaskGWMDiT.from_sd3(tiny_sd3, ModelConfig(preset="tiny", view_blocks=True),
                                mask_config=MR).eval()
    torch.manual_seed(1)
    with torch.no_grad():   # trained-looking new blocks, so every path carries signal
        for name, parameter in model.named_parameters():
            if name.startswith(("temporal_blocks", "view_blocks", "recon_", "mask_token")):
                parameter.add_(torch.randn_like(parameter) * 0.05)
    return model


@pytest.mark.parametrize("branch", ["spatial", "temporal"])
def test_masked_forward_without_masking_equals_forward(tiny_sd3, branch):
    model = MaskGWMDiT.from_sd3(tiny_sd3, ModelConfig(preset="tiny", view_blocks=True),
                                mask_config=MR).eval()
    latents, tau, text, pooled = inputs(TINY)
    keep = torch.ones(1, 2, 2, 4, 8, dtype=torch.bool)
    with torch.no_grad():
        masked = model.masked_forward(latents, tau, text, pooled, torch.randn_like(latents),
                                      keep, branch)
        torch.testing.assert_close(masked, model(latents, tau, text, pooled))


@pytest.mark.parametrize("branch", ["spatial", "temporal"])
def test_dropped_tokens_never_reach_the_model(mr_model, branch):
    latents, tau, text, pooled = inputs(TINY, frames=3)
    cond = torch.tensor([[True, False, False]])
    keep = view_keep(branch, 1, 3, 2, cond=1)
    assert bool(keep[:, 0].all()) and not bool(keep[:, 1:].all())
    eps = torch.randn_like(latents)
    changed = latents + 5.0 * (~pixels(keep)).float()
    with torch.no_grad():
        out = mr_model.masked_forward(latents, tau, text, pooled, eps, keep, branch, cond)
        out_changed = mr_model.masked_forward(changed, tau, text, pooled, eps, keep, branch,
                                              cond)
        out_eps = mr_model.masked_forward(latents, tau, text, pooled, torch.randn_like(eps),
                                          keep, branch, cond)
        visible = pixels(keep).clone()
        visible[:, 0] = False                               # leave the condition frame as is
        visible_changed = latents + 5.0 * visible.float()
        out_visible = mr_model.masked_forward(visible_changed, tau, text, pooled, eps, keep,
                                              branch, cond)
    assert out.shape == latents.shape
    torch.testing.assert_close(out_changed, out)          # dropped content is invisible
    assert not torch.allclose(out_visible, out)          # visible content is seen
    assert not torch.allclose(out_eps, out)              # mask tokens carry f_m(eps)


def test_mask_token_gets_gradients(mr_model):
    latents, tau, text, pooled = inputs(TINY)
    keep = view_keep("temporal", 1, 2, 2, cond=0)
    mr_model.zero_grad()
    mr_model.masked_forward(latents, tau, text, pooled, torch.randn_like(latents), keep,
                            "temporal").square().mean().backward()
    assert mr_model.mask_token.p.grad.abs().sum() > 0
    assert mr_model.mask_token.f_m.weight.grad.abs().sum() > 0
    assert mr_model.recon_temporal[0].attn.to_out.weight.grad.abs().sum() > 0
    assert mr_model.recon_spatial[0].attn.to_out.weight.grad is None


def test_masked_forward_errors(mr_model):
    latents, tau, text, pooled = inputs(TINY)
    keep = torch.ones(1, 2, 2, 4, 8, dtype=torch.bool)
    eps = torch.randn_like(latents)
    with pytest.raises(ValueError, match="branch must be one of"):
        mr_model.masked_forward(latents, tau, text, pooled, eps, keep, "view")
    with pytest.raises(ValueError, match=r"keep must be \[1, 2, 2, 4, 8\]"):
        mr_model.masked_forward(latents, tau, text, pooled, eps, keep[..., :4], "spatial")
    with pytest.raises(ValueError, match="masked_forward needs an enabled MaskConfig"):
        MaskGWMDiT(ModelConfig(preset="tiny")).masked_forward(latents, tau, text, pooled, eps,
                                                              keep, "spatial")


def test_encoder_pack_aligns_condition_frames():
    keep = view_keep("spatial", 1, 3, 2, cond=1).transpose(1, 2).reshape(2, 3, 1, 32)
    pack = encoder_pack(keep, "spatial")
    assert torch.equal(pack[:, 0], keep[:, 1]) and torch.equal(pack[:, 2], keep[:, 1])
    rows = view_keep("temporal", 1, 3, 2, cond=1).transpose(1, 2).reshape(2, 3, 4, 8)
    assert (encoder_pack(rows, "temporal").sum(-1) == 6).all()
