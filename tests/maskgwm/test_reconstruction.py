"""Mask reconstruction (Eq. 2): the encoder sees only visible tokens, shifted vs masked
temporal attention, the mask tokens, shared and two-branch F, and errors."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.masks import row_mask, spatial_mask, temporal_mask
from maskgwm.model.presets import get_preset
from maskgwm.model.reconstruction import encoder_pack, masked_forward, mixed_forward

TINY = get_preset("tiny")
MR = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)  # 2 decoder layers


def view_keep(kind, batch, frames, views, cond, seed=0, **options):
    """[B, T, K, gh, gw] keep from masks.py, an independent mask per view; kind is spatial,
    temporal (row-wise) or time (per frame, not row-wise); `options` go to the mask maker."""
    make = {"spatial": spatial_mask, "temporal": row_mask, "time": temporal_mask}[kind]
    grid_h, grid_w = TINY.latent_height // 2, TINY.latent_width // 2
    keep = make(batch * views, frames, grid_h, grid_w, 0.25, torch.Generator().manual_seed(seed),
                cond_frames=torch.full((batch * views,), cond), **options)
    return keep.view(batch, views, frames, grid_h, grid_w).transpose(1, 2)


def pixels(keep):
    return keep.repeat_interleave(2, -2).repeat_interleave(2, -1)[:, :, :, None]


def trained_looking(tiny_sd3, mask_config, **model_fields):
    """A tiny MR model whose new blocks have random non-zero weights (every path carries
    signal); the same seed gives the same weights for every mask config."""
    model = MaskGWMDiT.from_sd3(tiny_sd3, ModelConfig(**{"preset": "tiny", "view_blocks": True,
                                                         **model_fields}),
                                mask_config=mask_config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("temporal_blocks", "view_blocks", "recon_", "mask_token")):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


@pytest.fixture(scope="module")
def mr_model(tiny_sd3):
    return trained_looking(tiny_sd3, MR)


@pytest.mark.parametrize("branch", ["spatial", "temporal"])
def test_masked_forward_without_masking_equals_forward(tiny_sd3, branch, inputs):
    model = MaskGWMDiT.from_sd3(tiny_sd3, ModelConfig(preset="tiny", view_blocks=True),
                                mask_config=MR).eval()
    latents, tau, text, pooled = inputs(TINY)
    keep = torch.ones(1, 2, 2, 4, 8, dtype=torch.bool)
    with torch.no_grad():
        masked = masked_forward(model, latents, tau, text, pooled, torch.randn_like(latents),
                                keep, branch)
        torch.testing.assert_close(masked, model(latents, tau, text, pooled))


@pytest.mark.parametrize("branch", ["spatial", "temporal"])
def test_dropped_tokens_never_reach_the_model(mr_model, branch, inputs):
    latents, tau, text, pooled = inputs(TINY, frames=3)
    cond = torch.tensor([[True, False, False]])
    keep = view_keep(branch, 1, 3, 2, cond=1)
    assert bool(keep[:, 0].all()) and not bool(keep[:, 1:].all())
    eps = torch.randn_like(latents)
    changed = latents + 5.0 * (~pixels(keep)).float()
    with torch.no_grad():
        out = masked_forward(mr_model, latents, tau, text, pooled, eps, keep, branch, cond)
        out_changed = masked_forward(mr_model, changed, tau, text, pooled, eps, keep, branch,
                                     cond)
        out_eps = masked_forward(mr_model, latents, tau, text, pooled, torch.randn_like(eps),
                                 keep, branch, cond)
        visible = pixels(keep).clone()
        visible[:, 0] = False                               # leave the condition frame as is
        visible_changed = latents + 5.0 * visible.float()
        out_visible = masked_forward(mr_model, visible_changed, tau, text, pooled, eps, keep,
                                     branch, cond)
    assert out.shape == latents.shape
    torch.testing.assert_close(out_changed, out)          # dropped content is invisible
    assert not torch.allclose(out_visible, out)          # visible content is seen
    assert not torch.allclose(out_eps, out)              # mask tokens carry f_m(eps)


def test_mask_token_gets_gradients(mr_model, inputs):
    latents, tau, text, pooled = inputs(TINY)
    keep = view_keep("temporal", 1, 2, 2, cond=0)
    mr_model.zero_grad()
    masked_forward(mr_model, latents, tau, text, pooled, torch.randn_like(latents), keep,
                   "temporal").square().mean().backward()
    assert mr_model.mask_token.p.grad.abs().sum() > 0
    assert mr_model.mask_token.f_m.weight.grad.abs().sum() > 0
    assert mr_model.recon_temporal[0].attn.to_out.weight.grad.abs().sum() > 0
    assert mr_model.recon_spatial[0].attn.to_out.weight.grad is None


def test_masked_forward_errors(mr_model, inputs):
    latents, tau, text, pooled = inputs(TINY)
    keep = torch.ones(1, 2, 2, 4, 8, dtype=torch.bool)
    eps = torch.randn_like(latents)
    with pytest.raises(ValueError, match="branch must be one of"):
        masked_forward(mr_model, latents, tau, text, pooled, eps, keep, "view")
    with pytest.raises(ValueError, match=r"keep must be \[1, 2, 2, 4, 8\]"):
        masked_forward(mr_model, latents, tau, text, pooled, eps, keep[..., :4], "spatial")
    with pytest.raises(ValueError, match="masked_forward needs an enabled MaskConfig"):
        masked_forward(MaskGWMDiT(ModelConfig(preset="tiny")), latents, tau, text, pooled, eps,
                       keep, "spatial")


def test_encoder_pack_aligns_condition_frames():
    keep = view_keep("spatial", 1, 3, 2, cond=1).transpose(1, 2).reshape(2, 3, 1, 32)
    pack = encoder_pack(keep, "spatial")
    assert torch.equal(pack[:, 0], keep[:, 1]) and torch.equal(pack[:, 2], keep[:, 1])
    rows = view_keep("temporal", 1, 3, 2, cond=1).transpose(1, 2).reshape(2, 3, 4, 8)
    assert (encoder_pack(rows, "temporal").sum(-1) == 6).all()


MASKED_TIME = dataclasses.replace(MR, spatial=False, spatial_prob=0.0, shift=False)


@pytest.mark.parametrize("row", [True, False])
def test_masked_temporal_attention_hides_dropped_tokens(tiny_sd3, inputs, row):
    model = trained_looking(tiny_sd3, dataclasses.replace(MASKED_TIME, row=row))
    latents, tau, text, pooled = inputs(TINY, frames=3)
    cond = torch.tensor([[True, False, False]])
    keep = view_keep("temporal" if row else "time", 1, 3, 2, cond=1)
    eps = torch.randn_like(latents)
    changed = latents + 5.0 * (~pixels(keep)).float()
    with torch.no_grad():
        out = masked_forward(model, latents, tau, text, pooled, eps, keep, "temporal", cond)
        out_changed = masked_forward(model, changed, tau, text, pooled, eps, keep, "temporal",
                                     cond)
    torch.testing.assert_close(out_changed, out)


def test_shifted_equals_masked_when_frames_share_the_row_mask(tiny_sd3, inputs):
    """With one row mask for every frame, the j-th packed token of each frame is the same grid
    position, so the shifted (packed, no mask) and masked temporal attention agree."""
    shifted = trained_looking(tiny_sd3, dataclasses.replace(MASKED_TIME, shift=True))
    masked = trained_looking(tiny_sd3, MASKED_TIME)
    masked.load_state_dict(shifted.state_dict())
    latents, tau, text, pooled = inputs(TINY, frames=3)
    one = view_keep("temporal", 1, 1, 2, cond=0)
    keep = one.expand(1, 3, *one.shape[2:]).clone()
    eps = torch.randn_like(latents)
    with torch.no_grad():
        a = masked_forward(shifted, latents, tau, text, pooled, eps, keep, "temporal")
        b = masked_forward(masked, latents, tau, text, pooled, eps, keep, "temporal")
        differs = view_keep("temporal", 1, 3, 2, cond=0, seed=3)
        c = masked_forward(shifted, latents, tau, text, pooled, eps, differs, "temporal")
        d = masked_forward(masked, latents, tau, text, pooled, eps, differs, "temporal")
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(c, d, atol=1e-4)     # with per-frame masks the two differ


def test_shared_reconstruction_block_serves_both_branches(tiny_sd3, inputs):
    shared = trained_looking(tiny_sd3, dataclasses.replace(MR, recon_shared=True))
    latents, tau, text, pooled = inputs(TINY)
    for branch in ("spatial", "temporal"):
        shared.zero_grad()
        keep = view_keep(branch, 1, 2, 2, cond=0)
        masked_forward(shared, latents, tau, text, pooled, torch.randn_like(latents), keep,
                       branch).square().mean().backward()
        assert shared.recon_spatial[0].attn.to_out.weight.grad.abs().sum() > 0
        assert shared.recon_temporal[0].attn.to_out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("order, expected", [("spatial_first", ["spatial", "temporal"]),
                                             ("temporal_first", ["temporal", "spatial"])])
def test_shared_reconstruction_block_runs_its_layers_in_recon_order(tiny_sd3, inputs, order,
                                                                    expected):
    shared = trained_looking(tiny_sd3, dataclasses.replace(MR, recon_shared=True,
                                                           recon_order=order))
    latents, tau, text, pooled = inputs(TINY)
    calls = []
    for kind in ("spatial", "temporal"):
        getattr(shared, f"recon_{kind}")[0].register_forward_hook(
            lambda module, args, out, kind=kind: calls.append(kind))
    for branch in ("spatial", "temporal"):
        calls.clear()
        with torch.no_grad():
            masked_forward(shared, latents, tau, text, pooled, torch.randn_like(latents),
                           view_keep(branch, 1, 2, 2, cond=0), branch)
        assert calls == expected


def test_z_tau_token_and_encoder_features(tiny_sd3, inputs):
    model = trained_looking(tiny_sd3, dataclasses.replace(MR, token="z_tau", contrastive=True))
    assert not hasattr(model, "mask_token")
    latents, tau, text, pooled = inputs(TINY, batch=2)
    keep = view_keep("spatial", 2, 2, 2, cond=0)
    out, features = masked_forward(model, latents, tau, text, pooled, torch.randn_like(latents),
                                   keep, "spatial", return_features=True)
    assert out.shape == latents.shape and features.shape == (2, TINY.hidden_size)


def test_view_rows_packs_spatial_masks_by_row(tiny_sd3, inputs):
    """With view_rows, the encoder's KW view attention sees rows of (1 - r) W tokens: tokens
    of one row never mix with another row's in the view block."""
    model = trained_looking(tiny_sd3, dataclasses.replace(MR, view_rows=True))
    latents, tau, text, pooled = inputs(TINY, frames=2)
    grid_h, grid_w = TINY.latent_height // 2, TINY.latent_width // 2
    keep = spatial_mask(2, 2, grid_h, grid_w, 0.25, torch.Generator().manual_seed(0),
                        rows=True).view(1, 2, 2, grid_h, grid_w).transpose(1, 2)
    assert (keep.sum(-1) == 6).all()
    eps = torch.randn_like(latents)
    changed = latents + 5.0 * (~pixels(keep)).float()
    with torch.no_grad():
        out = masked_forward(model, latents, tau, text, pooled, eps, keep, "spatial")
        out_changed = masked_forward(model, changed, tau, text, pooled, eps, keep, "spatial")
    torch.testing.assert_close(out_changed, out)


@pytest.mark.parametrize("mask_fields, view_blocks, encoder_passes", [
    ({}, True, 3),                        # view blocks attend along rows: 1 row vs 4 rows
    ({"view_rows": True}, True, 2),       # both branches packed row by row: one pass
    ({}, False, 2),                       # no view blocks: one pass over flattened tokens
    ({"shift": False}, False, 3),         # masked temporal attention needs its own mask
    ({"token": "z_tau"}, False, 2),
])
def test_mixed_forward_equals_each_sample_on_its_own(tiny_sd3, inputs, mask_fields, view_blocks,
                                                     encoder_passes, monkeypatch):
    """A batch mixing plain, spatial and temporal samples gives each sample's own output and
    encoder features, in one encoder pass per layout and one decoder pass."""
    config = dataclasses.replace(MR, **mask_fields)
    model = trained_looking(tiny_sd3, config, view_blocks=view_blocks)
    latents, tau, text, pooled = inputs(TINY, batch=4, frames=3)
    cond = torch.tensor([[True, False, False]] * 4)
    branches = [None, "spatial", "temporal", "spatial"]
    keep = torch.ones(4, 3, 2, 4, 8, dtype=torch.bool)
    rows = {"rows": True} if config.view_rows else {}
    keep[1], keep[3] = view_keep("spatial", 2, 3, 2, cond=1, seed=3, **rows)
    keep[2] = view_keep("temporal" if config.row else "time", 1, 3, 2, cond=1, seed=4)[0]
    eps = torch.randn_like(latents)
    calls = []
    run_layers = model.run_layers
    monkeypatch.setattr(model, "run_layers",
                        lambda *a, **k: calls.append(1) or run_layers(*a, **k))
    with torch.no_grad():
        mixed, features = mixed_forward(model, latents, tau, text, pooled, eps, keep, branches,
                                        cond, return_features=True)
        assert len(calls) == encoder_passes + 1
        for i, branch in enumerate(branches):
            one = slice(i, i + 1)
            args = (latents[one], tau[one], text[one], pooled[one])
            if branch is None:
                torch.testing.assert_close(mixed[one], model(*args, cond[one]))
                continue
            alone, feature = masked_forward(model, *args, eps[one], keep[one], branch,
                                            cond[one], return_features=True)
            torch.testing.assert_close(mixed[one], alone, atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(features[[1, 2, 3].index(i)], feature[0], atol=2e-5,
                                       rtol=1e-4)
