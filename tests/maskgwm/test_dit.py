"""MaskGWMDiT: shapes, inflation from SD3 (the key equality), checkpoint loading and errors."""
from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from maskgwm.config.schema import ModelConfig
from maskgwm.model.actions import ACTION_VALUES
from maskgwm.model.dit import CheckpointMismatch, MaskGWMDiT
from maskgwm.model.presets import PRESETS, get_preset

TINY = get_preset("tiny")


@pytest.fixture(autouse=True)
def seeded():
    """Every test draws the same random tensors, so closeness checks are reproducible."""
    torch.manual_seed(0)


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
def test_output_shape(preset_name, inputs):
    config = ModelConfig(preset=preset_name, view_blocks=True, actions=True)
    model = MaskGWMDiT(config).eval()
    latents, tau, text, pooled = inputs(model.preset)
    with torch.no_grad():
        out = model(latents, tau, text, pooled, actions=torch.randn(1, 2, ACTION_VALUES))
    assert out.shape == latents.shape


@pytest.mark.parametrize("view_attention", ["K", "KW", "KHW"])
def test_blocks_take_contiguous_tokens_of_one_dtype(view_attention, inputs, block_inputs):
    """Sampling's pass (batch 1, no grad, bf16 autocast) and a training pass (batch 2): every
    block gets contiguous tokens in the compute dtype, whatever the layout the block before
    returned (so compiled blocks see one input layout, and nothing runs on strided copies)."""
    model = MaskGWMDiT(ModelConfig(preset="tiny", view_blocks=True,
                                   view_attention=view_attention))
    for batch, grad in ((1, False), (2, True)):
        latents, tau, text, pooled = inputs(model.preset, batch=batch)
        with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16), \
                block_inputs(model) as seen:
            model(latents, tau, text, pooled)
        assert len(seen) == 3 * model.preset.num_layers
        assert {(dtype, contiguous) for _, dtype, contiguous in seen} == \
            {(torch.bfloat16, True)}


@pytest.mark.parametrize("view_attention", ["K", "KW", "KHW"])
def test_inflated_model_equals_image_model(tiny_sd3, view_attention, inputs):
    config = ModelConfig(preset="tiny", temporal_blocks=True, view_blocks=True,
                         view_attention=view_attention, actions=True)
    model = MaskGWMDiT.from_sd3(tiny_sd3, config).eval()
    latents, tau, text, pooled = inputs(TINY, batch=2, frames=3, views=2)
    cond = torch.tensor([[True, False, False], [False, False, False]])
    with torch.no_grad():
        video = model(latents, tau, text, pooled, cond_frames=cond,
                      actions=torch.randn(2, 3, ACTION_VALUES))
        frame_tau = tau.masked_fill(cond, 0.0)
        for b in range(2):
            for t in range(3):
                image = tiny_sd3(hidden_states=latents[b, t], timestep=frame_tau[b, t:t + 1]
                                 .expand(2) * 1000, encoder_hidden_states=text[b:b + 1]
                                 .expand(2, -1, -1), pooled_projections=pooled[b:b + 1]
                                 .expand(2, -1)).sample
                # the model returns the paper's z_0 - eps: minus SD3's eps - z_0
                torch.testing.assert_close(video[b, t], -image, rtol=1e-4, atol=1e-5)


def test_trained_new_blocks_mix_frames_and_views(tiny_sd3, inputs):
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


def test_new_blocks_never_update_the_text_stream(make_tiny_model, inputs):
    """Paper Sec. 7.1: the text features pass from one joint block to the next untouched; the
    temporal and view blocks between them see image tokens only."""
    model = make_tiny_model(view_blocks=True, actions=True)
    latents, tau, text, pooled = inputs(model.preset, batch=1, frames=2, views=2)
    given, returned = [], []
    for block in model.transformer_blocks:
        block.register_forward_pre_hook(
            lambda m, args, kwargs: given.append(kwargs["encoder_hidden_states"]),
            with_kwargs=True)
        block.register_forward_hook(lambda m, args, out: returned.append(out[0]))
    shapes = {"temporal": [], "view": []}
    for kind in shapes:
        for block in getattr(model, f"{kind}_blocks"):
            block.register_forward_pre_hook(lambda m, args, kind=kind:
                                            shapes[kind].append(tuple(args[0].shape[:-1])))
    with torch.no_grad():
        model(latents, tau, text, pooled, actions=torch.randn(1, ACTION_VALUES))
    assert len(given) == model.preset.num_layers
    assert all(after is before for after, before in zip(given[1:], returned[:-1]))
    grid = (latents.shape[-2] // 2, latents.shape[-1] // 2)        # image tokens only
    assert set(shapes["temporal"]) == {(1, 2, 2 * grid[0] * grid[1])}
    assert set(shapes["view"]) == {(1, 2, 2, *grid)}


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


def test_wrong_timestep_and_text_shapes(inputs):
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    latents, tau, text, pooled = inputs(TINY)
    with pytest.raises(ValueError, match=r"per frame \[1, 2\]"):
        model(latents, tau[:, 0], text, pooled)
    with pytest.raises(ValueError, match=r"\[1, L, 32\]"):
        model(latents, tau, torch.randn(1, 5, 4096), pooled)
    with pytest.raises(ValueError, match=r"pooled_projections must be \[1, 32\]"):
        model(latents, tau, text, torch.randn(1, 2048))


def test_too_many_frames_for_the_preset(inputs):
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    latents, tau, text, pooled = inputs(TINY, frames=TINY.max_frames + 1, views=1)
    with pytest.raises(ValueError, match=f"{TINY.max_frames + 1} frames: preset 'tiny' takes "
                                         f"windows of at most {TINY.max_frames}"):
        model(latents, tau, text, pooled)
