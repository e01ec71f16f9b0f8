"""Temporal and view blocks: zero-init identity, Eq. 5 condition frames, view layouts, actions."""
from __future__ import annotations

import pytest
import torch

from maskgwm.model.actions import ACTION_VALUES, no_actions
from maskgwm.model.blocks import TemporalBlock, ViewBlock, from_view_sequences, to_view_sequences

DIM, HEADS, A = 32, 2, ACTION_VALUES


@pytest.fixture(autouse=True)
def seeded():
    """Every test draws the same random tensors, so closeness checks are reproducible."""
    torch.manual_seed(0)


def randomise_(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter (zero-initialised ones included) non-zero random values."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    return module


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randn(2, 4, 6, DIM, generator=torch.Generator().manual_seed(1))


def test_fresh_temporal_block_is_identity(tokens):
    block = TemporalBlock(DIM, HEADS, actions=True)
    tau = torch.rand(2, 4)
    actions = torch.randn(2, 4, A)
    assert torch.equal(block(tokens, tau, actions=actions), tokens)


def test_fresh_view_block_is_identity():
    x = torch.randn(2, 3, 2, 2, 4, DIM)
    for mode in ("K", "KW", "KHW"):
        assert torch.equal(ViewBlock(DIM, HEADS, mode)(x), x)


def test_condition_frames_see_timestep_zero(tokens):
    block = randomise_(TemporalBlock(DIM, HEADS))
    cond = torch.tensor([[True, False, False, False], [True, True, False, False]])
    tau = torch.full((2, 4), 0.7)
    modulated = block.modulate(tokens, tau, cond)
    at_zero = block.modulate(tokens, torch.zeros(2, 4))
    assert torch.allclose(modulated[cond], at_zero[cond])
    assert not torch.allclose(modulated[~cond], at_zero[~cond])
    # changing tau on condition frames changes nothing; on the other frames it does
    tau_cond_changed = tau.clone()
    tau_cond_changed[cond] = 0.1
    out = block(tokens, tau, cond)
    assert torch.allclose(block(tokens, tau_cond_changed, cond), out)
    tau_free_changed = tau.clone()
    tau_free_changed[~cond] = 0.1
    assert not torch.allclose(block(tokens, tau_free_changed, cond), out)


def test_modulation_only_moves_the_frames_whose_tau_changes():
    block = randomise_(TemporalBlock(DIM, HEADS))
    x = torch.randn(1, 3, 5, DIM)
    tau = torch.tensor([[0.2, 0.5, 0.9]])
    changed = tau.clone()
    changed[0, 2] = 0.4
    before, after = block.modulate(x, tau), block.modulate(x, changed)
    assert torch.equal(before[:, :2], after[:, :2])
    assert not torch.allclose(before[:, 2], after[:, 2])


def test_temporal_attention_is_per_token_position():
    block = randomise_(TemporalBlock(DIM, HEADS))
    x = torch.randn(1, 3, 5, DIM)
    tau = torch.rand(1, 3)
    perturbed = x.clone()
    perturbed[:, :, 2] += 1.0
    changed = (block(perturbed, tau) - block(x, tau)).abs().amax(dim=(0, 1, 3))
    assert changed[2] > 0 and torch.all(changed[[0, 1, 3, 4]] == 0)


def test_actions_act_only_through_their_projections(tokens):
    block = randomise_(TemporalBlock(DIM, HEADS, actions=True))
    for projection in (block.action_to_k, block.action_to_v):
        torch.nn.init.zeros_(projection.weight)
        torch.nn.init.zeros_(projection.bias)
    tau = torch.rand(2, 4)
    a, b = torch.randn(2, 4, A), torch.randn(2, 4, A)
    assert torch.allclose(block(tokens, tau, actions=a), block(tokens, tau, actions=b))
    randomise_(block.action_to_k, seed=5)
    assert not torch.allclose(block(tokens, tau, actions=a), block(tokens, tau, actions=b))
    # per-clip actions broadcast over frames; action_keep drops a sample's actions
    clip = torch.randn(2, A)
    assert torch.allclose(block(tokens, tau, actions=clip),
                          block(tokens, tau, actions=clip[:, None].expand(2, 4, A)))
    keep = torch.tensor([False, True])
    dropped_a = block(tokens, tau, actions=a, action_keep=keep)
    dropped_b = block(tokens, tau, actions=b, action_keep=keep)
    assert torch.allclose(dropped_a[0], dropped_b[0])
    assert not torch.allclose(dropped_a[1], dropped_b[1])


def test_wrong_action_width_is_named(tokens):
    block = TemporalBlock(DIM, HEADS, actions=True)
    with pytest.raises(ValueError, match="19 values"):
        block(tokens, torch.rand(2, 4), actions=torch.randn(2, 4, 5))


@pytest.mark.parametrize("missing", ["drop", "zeros"])
def test_a_sample_without_actions_takes_the_path_its_reading_names(tokens, missing):
    """missing_actions "drop": a clip without action values is the dropped-action input, the
    same as guidance dropout and action-free sampling; "zeros": all-zero features, kept."""
    block = randomise_(TemporalBlock(DIM, HEADS, actions=True, missing_actions=missing))
    tau = torch.rand(2, 4)
    none = no_actions(2)
    dropped = block(tokens, tau, actions=torch.randn(2, A),
                    action_keep=torch.tensor([False, False]))
    without = block(tokens, tau, actions=none)
    assert torch.allclose(without, dropped) == (missing == "drop")
    assert torch.allclose(block(tokens, tau, actions=none, action_keep=torch.tensor([False] * 2)),
                          dropped)
    partly = none.clone()
    partly[:, 0] = 3.0        # a command only (OpenDV's language clips): the actions are kept
    assert not torch.allclose(block(tokens, tau, actions=partly), dropped)


@pytest.mark.parametrize("mode, sequence_shape", [
    ("K", (2 * 3 * 2 * 4, 2, DIM)),
    ("KW", (2 * 3 * 2, 2 * 4, DIM)),
    ("KHW", (2 * 3, 2 * 2 * 4, DIM)),
])
def test_view_sequences(mode, sequence_shape):
    x = torch.randn(2, 3, 2, 2, 4, DIM)   # B, T, K, H, W, C
    sequences = to_view_sequences(x, mode)
    assert sequences.shape == sequence_shape
    assert torch.equal(from_view_sequences(sequences, mode, x.shape), x)
    assert randomise_(ViewBlock(DIM, HEADS, mode))(x).shape == x.shape


def test_kw_rows_hold_one_row_of_every_view():
    x = torch.randn(1, 1, 3, 2, 4, DIM)
    sequences = to_view_sequences(x, "KW")
    assert torch.equal(sequences[1], x[0, 0, :, 1].reshape(3 * 4, DIM))


@pytest.mark.parametrize("mode, leaks_across_rows", [("KW", False), ("KHW", True)])
def test_view_attention_extent(mode, leaks_across_rows):
    block = randomise_(ViewBlock(DIM, HEADS, mode))
    x = torch.randn(1, 1, 2, 2, 4, DIM, generator=torch.Generator().manual_seed(3))
    perturbed = x.clone()
    perturbed[0, 0, 1, 0, 3] += 10.0      # view 1, row 0
    changed = (block(perturbed) - block(x)).abs().amax(dim=-1)[0, 0]
    assert changed[0, 0].amax() > 0      # view 0, same row: cross-view exchange
    assert bool(changed[:, 1].amax() > 0) == leaks_across_rows


@pytest.mark.parametrize("mode", ["KW", "KHW"])
def test_camera_embedding_tells_the_views_apart(mode):
    """Two views with identical tokens get identical outputs without a camera embedding (SD3's
    positional embedding repeats in each view); with a trained one they differ. A fresh one is
    zero, so a fresh block is still the identity."""
    x = torch.randn(1, 2, 1, 2, 4, DIM).expand(1, 2, 3, 2, 4, DIM).contiguous()
    fresh = ViewBlock(DIM, HEADS, mode, cameras=6)
    assert torch.equal(fresh.camera_embed, torch.zeros(6, DIM)) and torch.equal(fresh(x), x)
    blind = randomise_(ViewBlock(DIM, HEADS, mode))
    out = blind(x)
    assert torch.allclose(out[:, :, 0], out[:, :, 1], atol=1e-6)
    seeing = randomise_(ViewBlock(DIM, HEADS, mode, cameras=6))
    out = seeing(x)
    assert not torch.allclose(out[:, :, 0], out[:, :, 1], atol=1e-3)
    with pytest.raises(ValueError, match="7 views.*6 cameras"):
        seeing(torch.randn(1, 1, 7, 2, 4, DIM))


def test_unknown_view_mode():
    with pytest.raises(ValueError, match="K, KW|'K'"):
        ViewBlock(DIM, HEADS, "HW")


def test_mask_token_mixes_noise_and_learned_token_by_tau():
    from maskgwm.model.blocks import MaskToken

    token = randomise_(MaskToken(16, DIM, patch_size=2, kind="mix"))
    eps = torch.randn(3, 16, 8, 16)
    tau = torch.tensor([0.0, 0.5, 1.0])
    out = token(eps, tau)
    noise = token.f_m(eps).permute(0, 2, 3, 1)
    assert out.shape == (3, 4, 8, DIM)
    torch.testing.assert_close(out[0], noise[0])
    torch.testing.assert_close(out[2], token.p.expand(4, 8, DIM))
    torch.testing.assert_close(out[1], 0.5 * noise[1] + 0.5 * token.p)
    with pytest.raises(ValueError, match="mask token kind"):
        MaskToken(16, DIM, 2, kind="z_tau")


def test_temporal_block_knows_frame_order(tokens):
    """Without a frame-position embedding attention over time would be permutation-equivariant."""
    block = randomise_(TemporalBlock(DIM, HEADS))
    tau = torch.full((2, 4), 0.5)
    order = torch.tensor([2, 0, 3, 1])
    with torch.no_grad():
        permuted_then_block = block(tokens[:, order], tau)
        block_then_permuted = block(tokens, tau)[:, order]
    assert not torch.allclose(permuted_then_block, block_then_permuted, atol=1e-4)
