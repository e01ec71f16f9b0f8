"""The training objective: per-sample draws seeded by the global index, branches and the tau
gate, condition frames never masked nor in the loss, and the overfit proof of the sign."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from maskgwm.config.schema import FlowConfig, MaskConfig, ModelConfig
from maskgwm.model import reconstruction
from maskgwm.model.actions import ACTION_VALUES, no_actions
from maskgwm.model.bench_model import alternating_branches
from maskgwm.model.blocks import to_view_sequences
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.flow import euler_sample, shift_tau
from maskgwm.model.masks import kept_count
from maskgwm.model.objective import (ObjectiveSettings, draw_sample, sample_generator,
                                     training_loss)
from maskgwm.model.presets import get_preset
from maskgwm.model.reconstruction import pack_branch

TINY = get_preset("tiny")
GRID = (TINY.latent_height // 2, TINY.latent_width // 2)
OURS = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)
FRAME_SHAPE = (4, 2, 16, TINY.latent_height, TINY.latent_width)    # [T, K, C, h, w]


def draws(mask, n=200, frames=4, **settings):
    settings = ObjectiveSettings(mask, **settings)
    shape = (frames, *FRAME_SHAPE[1:])
    return [draw_sample(sample_generator(0, i), shape, GRID, settings) for i in range(n)]


def test_draws_depend_only_on_seed_and_index():
    a = draw_sample(sample_generator(7, 123), FRAME_SHAPE, GRID, ObjectiveSettings(OURS))
    b = draw_sample(sample_generator(7, 123), FRAME_SHAPE, GRID, ObjectiveSettings(OURS))
    c = draw_sample(sample_generator(7, 124), FRAME_SHAPE, GRID, ObjectiveSettings(OURS))
    assert torch.equal(a.eps, b.eps) and a.tau == b.tau and a.branch == b.branch
    assert torch.equal(a.keep, b.keep)
    assert not torch.equal(a.eps, c.eps)


def test_condition_counts_branches_and_masks():
    samples = draws(OURS)
    assert {d.cond for d in samples} == {0, 1, 2, 3}
    assert all(d.keep[:d.cond].all() for d in samples)          # condition frames unmasked
    spatial = [d for d in samples if d.branch == "spatial"]
    temporal = [d for d in samples if d.branch == "temporal"]
    assert 60 < len(spatial) < 140 and len(spatial) + len(temporal) == len(samples)
    for d in spatial:                                            # one mask for every frame
        masked = d.keep[d.cond:]
        assert (masked == masked[:1]).all()
        assert int(masked[0, 0].sum()) == kept_count(GRID[0] * GRID[1], 0.25)
    for d in temporal:                                           # round((1 - r) W) per row
        assert (d.keep[d.cond:].sum(-1) == kept_count(GRID[1], 0.25)).all()
    assert draws(OURS, frames=1)[0].cond == 0                    # images: no condition frame


@pytest.mark.parametrize("mask, expected", [
    (dataclasses.replace(OURS, spatial_prob=1.0), {"spatial"}),
    (dataclasses.replace(OURS, spatial_prob=0.0), {"temporal"}),
    (dataclasses.replace(OURS, spatial=False), {"temporal"}),
    (dataclasses.replace(OURS, ratio=0.0), {None}),              # r = 0 is MR off
    (MaskConfig(), {None}),
])
def test_branch_choice(mask, expected):
    assert {d.branch for d in draws(mask, n=50)} == expected


def test_tau_gate_sends_other_samples_to_the_plain_path():
    samples = draws(dataclasses.replace(OURS, tau_min=0.5))
    assert any(d.branch is None for d in samples)
    assert all((d.branch is None) == (float(d.tau) < 0.5) for d in samples)


def test_dropout_rates():
    samples = draws(OURS, n=400, cond_dropout=0.5, action_dropout=0.0)
    with_cond = [d for d in samples if d.cond > 0]
    assert 0.35 < sum(d.drop_cond for d in with_cond) / len(with_cond) < 0.65
    assert not any(d.drop_cond for d in samples if d.cond == 0)
    assert not any(d.drop_action for d in samples)


@pytest.fixture(scope="module")
def mr_model():
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny", view_blocks=True, actions=True),
                       mask_config=dataclasses.replace(OURS, token="z_tau", contrastive=True))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def batch(n, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z0 = torch.randn(n, *FRAME_SHAPE, generator=generator)
    text = torch.randn(n, 3, TINY.joint_attention_dim, generator=generator)
    pooled = torch.randn(n, TINY.pooled_projection_dim, generator=generator)
    actions = torch.randn(n, ACTION_VALUES, generator=generator)
    return z0, text, pooled, actions


def test_loss_of_a_batch_is_the_mean_of_its_samples(mr_model):
    """Splitting a batch (as data-parallel ranks do) changes nothing: per-sample draws and
    per-sample loss means (the contrastive term, over the local batch, is left out here)."""
    settings = ObjectiveSettings(dataclasses.replace(mr_model.mask_config, contrastive=False))
    z0, text, pooled, actions = batch(4)
    with torch.no_grad():
        whole = training_loss(mr_model, z0, text, pooled, [10, 11, 12, 13], 3, settings,
                              actions)
        halves = [training_loss(mr_model, z0[i:i + 2], text[i:i + 2], pooled[i:i + 2],
                                [10 + i, 11 + i], 3, settings, actions[i:i + 2])
                  for i in (0, 2)]
    torch.testing.assert_close(whole.flow, (halves[0].flow + halves[1].flow) / 2)
    assert sum(whole.branches.values()) == 4


def test_contrastive_term_and_gradients(mr_model):
    settings = ObjectiveSettings(mr_model.mask_config)
    z0, text, pooled, actions = batch(4)
    mr_model.zero_grad()
    terms = training_loss(mr_model, z0, text, pooled, range(4), 0, settings, actions)
    assert terms.contrastive is not None and torch.isfinite(terms.contrastive)
    torch.testing.assert_close(terms.loss, terms.flow + 0.1 * terms.contrastive)
    terms.loss.backward()
    assert mr_model.transformer_blocks[0].attn.to_q.weight.grad.abs().sum() > 0


def test_condition_frames_are_not_in_the_loss(mr_model):
    settings = ObjectiveSettings(MaskConfig(), max_cond_frames=3, cond_dropout=0.0)
    model = MaskGWMDiT(ModelConfig(preset="tiny"))
    z0, text, pooled, _ = batch(2)
    index = [i for i in range(100)
             if draw_sample(sample_generator(0, i), FRAME_SHAPE, GRID, settings).cond == 3][:2]
    changed = z0.clone()
    changed[:, :3] += 10.0        # the condition frames' content changes the inputs only
    with torch.no_grad():
        base = training_loss(model, z0, text, pooled, index, 0, settings).flow
        # the same model output on non-condition frames needs the same inputs there, so
        # compare a model that ignores its inputs: the zero-initialised head of a fresh model
        torch.nn.init.zeros_(model.proj_out.weight)
        torch.nn.init.zeros_(model.proj_out.bias)
        a = training_loss(model, z0, text, pooled, index, 0, settings).flow
        b = training_loss(model, changed, text, pooled, index, 0, settings).flow
    assert torch.isfinite(base)
    torch.testing.assert_close(a, b)


def test_inference_never_masks(mr_model, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("masked_forward called at inference")
    monkeypatch.setattr(reconstruction, "masked_forward", refuse)
    monkeypatch.setattr(reconstruction, "mixed_forward", refuse)
    z0, text, pooled, _ = batch(1)
    out = euler_sample(lambda z, t: mr_model(z, t, text, pooled), z0.shape, steps=2,
                       guidance=1.0, generator=torch.Generator().manual_seed(0))
    assert out.shape == z0.shape


def test_tiny_model_overfit_on_one_clip_regenerates_it(one_thread):
    """The sign conventions end to end: train the full tiny MaskGWMDiT with MR on one clip
    (flow loss towards z_0 - eps), then sample with the Euler sampler from noise with the first
    frame as condition: the clip comes back; the same model with its sign flipped diverges."""
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny"), mask_config=OURS)
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 16, 4, 8, generator=generator)
    frame = torch.nn.functional.interpolate(coarse, size=(8, 16), mode="bilinear")
    clip = torch.stack([torch.roll(frame, t, dims=-1) for t in range(3)], 1)[:, :, None]
    text = torch.zeros(1, 4, TINY.joint_attention_dim)
    pooled = torch.zeros(1, TINY.pooled_projection_dim)
    settings = ObjectiveSettings(OURS, max_cond_frames=1, cond_dropout=0.0, action_dropout=0.0)
    optimiser = torch.optim.AdamW(model.parameters(), lr=5e-3)
    size = 8
    for step in range(300):
        terms = training_loss(model, clip.expand(size, -1, -1, -1, -1, -1),
                              text.expand(size, -1, -1), pooled.expand(size, -1),
                              range(step * size, (step + 1) * size), 0, settings)
        optimiser.zero_grad()
        terms.loss.backward()
        optimiser.step()
    model.eval()

    def velocity(z, tau):
        return model(z, tau, text, pooled, cond_frames=tau == 0)

    def relative_error(sign):
        sample = euler_sample(lambda z, t: sign * velocity(z, t), clip.shape, steps=20,
                              guidance=1.0, cond_latents=clip, cond_frames=1,
                              generator=torch.Generator().manual_seed(5))
        return ((sample[:, 1:] - clip[:, 1:]).pow(2).mean() / clip.var()).item()
    assert relative_error(1) < 0.6
    assert relative_error(-1) > 5.0


def test_view_rows_spatial_masks_are_row_wise_tubes():
    samples = draws(dataclasses.replace(OURS, view_rows=True, spatial_prob=1.0), n=20)
    for d in samples:
        masked = d.keep[d.cond:]
        assert (masked == masked[:1]).all()
        assert (masked.sum(-1) == kept_count(GRID[1], 0.25)).all()


@pytest.mark.parametrize("token", ["p", "f_m", "mix", "z_tau"])
def test_mr_step_runs_under_bf16_autocast(token, block_inputs):
    """The GPU training precision (bf16 autocast, fp32 weights) on CPU: packed rows come back
    in bf16 and are scattered into a filler (mask tokens) of the same dtype, so every block,
    decoder and F blocks too, takes contiguous bf16 tokens (one compiled variant, no fp32
    stretch of the stream)."""
    torch.manual_seed(0)
    mr_model = MaskGWMDiT(ModelConfig(preset="tiny", view_blocks=True, actions=True),
                          mask_config=dataclasses.replace(OURS, token=token))
    settings = ObjectiveSettings(mr_model.mask_config)
    indices = alternating_branches(settings, FRAME_SHAPE, GRID, seed=0)
    z0, text, pooled, actions = batch(2)
    mr_model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16), block_inputs(mr_model) as seen:
        terms = training_loss(mr_model, z0, text, pooled, indices, 0, settings, actions)
    terms.loss.backward()
    assert {kind for kind, _, _ in seen} == {"transformer_blocks", "temporal_blocks",
                                             "view_blocks", "recon_spatial", "recon_temporal"}
    assert {(dtype, contiguous) for _, dtype, contiguous in seen} == {(torch.bfloat16, True)}
    assert torch.isfinite(terms.loss)
    assert terms.branches.get("spatial") == 1 and terms.branches.get("temporal") == 1
    assert all(torch.isfinite(p.grad).all() for p in mr_model.parameters() if p.grad is not None)


# ---- issue 19: training noise, multi-view masks, action-free clips ----

@pytest.mark.parametrize("flow", [FlowConfig(), FlowConfig(shift=1.0),
                                  FlowConfig(logit_mean=0.5, logit_std=0.8, shift=2.0)])
def test_training_tau_is_the_shifted_logit_normal(flow):
    """tau = shift u / (1 + (shift - 1) u), u = sigmoid(N(m, s^2)): its quantile q is the
    formula at the normal's quantile q (shift 3.0 by default: median 0.75, not 0.5)."""
    samples = draws(MaskConfig(), n=4000, flow=flow)
    tau = torch.tensor([float(d.tau) for d in samples])
    for q in (0.1, 0.5, 0.9):
        normal = torch.distributions.Normal(flow.logit_mean, flow.logit_std).icdf(torch.tensor(q))
        expected = shift_tau(torch.sigmoid(normal), flow.shift)
        assert abs(torch.quantile(tau, q) - expected) < 0.02, q
    if flow == FlowConfig():
        assert abs(tau.median() - 0.75) < 0.02


def test_views_of_a_sample_share_one_mask():
    for d in draws(OURS, n=60):
        assert d.keep is not None and torch.equal(d.keep[:, 0], d.keep[:, 1])


@pytest.mark.parametrize("branch_mask", [
    dataclasses.replace(OURS, view_rows=True, spatial_prob=1.0),
    dataclasses.replace(OURS, spatial_prob=0.0)])
def test_k_view_attention_pairs_the_same_grid_position_in_every_view(branch_mask):
    """Packed tokens enter the view blocks; in K mode, sequence n holds packed token n of every
    view. With one mask per sample they are all the same (row, column)."""
    views = 3
    model = MaskGWMDiT(ModelConfig(preset="tiny", view_blocks=True, view_attention="K"),
                       mask_config=branch_mask)
    shape = (4, views, *FRAME_SHAPE[2:])
    settings = ObjectiveSettings(branch_mask)
    for index in range(10):
        d = draw_sample(sample_generator(0, index), shape, GRID, settings)
        rows, cols = torch.meshgrid(torch.arange(GRID[0]), torch.arange(GRID[1]), indexing="ij")
        position = torch.stack([rows, cols], -1).float()            # [gh, gw, 2]
        tokens = position.expand(1, 4, views, *GRID, 2)
        packed = pack_branch(model, tokens, d.keep[None], d.branch, [0]).tokens
        sequences = to_view_sequences(packed, "K")                  # [N, K, 2]
        assert torch.equal(sequences, sequences[:, :1].expand_as(sequences)), d.branch


def test_clips_without_actions_train_on_the_dropped_path(mr_model):
    """model.missing_actions "drop": a batch of clips without action values has the loss of
    the same batch with every action dropped (what action-free sampling feeds, test_sample)."""
    settings = ObjectiveSettings(dataclasses.replace(mr_model.mask_config, contrastive=False),
                                 action_dropout=0.0)
    dropped = dataclasses.replace(settings, action_dropout=1.0)
    z0, text, pooled, actions = batch(2)
    with torch.no_grad():
        without = training_loss(mr_model, z0, text, pooled, [4, 5], 0, settings, no_actions(2))
        all_dropped = training_loss(mr_model, z0, text, pooled, [4, 5], 0, dropped, actions)
        with_actions = training_loss(mr_model, z0, text, pooled, [4, 5], 0, settings, actions)
    torch.testing.assert_close(without.flow, all_dropped.flow)
    assert not torch.allclose(without.flow, with_actions.flow)
