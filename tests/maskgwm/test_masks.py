"""Token masks (spatial, temporal, row-wise) and shifted vs masked temporal attention."""
import math

import pytest
import torch

from maskgwm.model.masks import (gather_rows, kept_count, masked_temporal_attention,
                                 packing_mask, row_mask, scatter_rows, shifted_temporal_attention,
                                 spatial_mask, temporal_mask)

B, T, H, W = 2, 5, 4, 8
MASKS = (spatial_mask, temporal_mask, row_mask)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def qkv(keep: torch.Tensor, heads: int = 2, dim: int = 4, seed: int = 1):
    g = seeded(seed)
    shape = (*keep.shape, heads, dim)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(3)]


def attend(q, k, v):
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)
    return weights @ v


def test_kept_count_rounds_half_up_and_rejects_bad_ratios():
    assert kept_count(32, 0.25) == 24
    assert kept_count(6, 0.25) == 5
    assert kept_count(8, 0.0) == 8
    for ratio in (-0.1, 1.0):
        with pytest.raises(ValueError):
            kept_count(8, ratio)


def test_spatial_mask_is_shared_by_all_frames_and_counts():
    keep = spatial_mask(B, T, H, W, 0.25, seeded())
    assert keep.shape == (B, T, H, W) and keep.dtype == torch.bool
    assert torch.equal(keep, keep[:, :1].expand_as(keep))
    assert (keep.sum(dim=(2, 3)) == kept_count(H * W, 0.25)).all()
    assert not torch.equal(keep[0], keep[1])


def test_temporal_mask_counts_per_frame_and_differs_between_frames():
    keep = temporal_mask(B, T, H, W, 0.25, seeded())
    assert (keep.sum(dim=(2, 3)) == kept_count(H * W, 0.25)).all()
    assert not torch.equal(keep[:, 0], keep[:, 1])


def test_row_mask_keeps_exact_count_in_every_row_of_every_frame():
    keep = row_mask(B, T, H, 32, 0.25, seeded())
    assert (keep.sum(dim=-1) == round(0.75 * 32)).all()
    assert not torch.equal(keep[:, :, 0], keep[:, :, 1])
    assert not torch.equal(keep[:, 0], keep[:, 1])


@pytest.mark.parametrize("make", MASKS)
def test_zero_ratio_keeps_everything(make):
    assert make(B, T, H, W, 0.0, seeded()).all()


@pytest.mark.parametrize("make", MASKS)
def test_condition_frames_are_never_masked(make):
    counts = torch.tensor([1, 3])
    keep = make(B, T, H, W, 0.5, seeded(), cond_frames=counts)
    assert keep[0, :1].all() and keep[1, :3].all()
    assert not keep[0, 1:].all() and not keep[1, 3:].all()
    flags = torch.zeros(B, T, dtype=torch.bool)
    flags[0, 2] = flags[1, 4] = True
    keep = make(B, T, H, W, 0.5, seeded(), cond_frames=flags)
    assert keep[0, 2].all() and keep[1, 4].all() and not keep[0, 0].all()


@pytest.mark.parametrize("make", MASKS)
def test_masks_are_determined_by_the_generator_seed(make):
    first = make(B, T, H, W, 0.25, seeded(7))
    assert torch.equal(first, make(B, T, H, W, 0.25, seeded(7)))
    assert not torch.equal(first, make(B, T, H, W, 0.25, seeded(8)))


def test_gather_scatter_round_trip_keeps_row_order():
    keep = row_mask(B, T, H, W, 0.25, seeded())
    x = torch.randn(B, T, H, W, 3, generator=seeded(2))
    packed = gather_rows(x, keep)
    assert packed.shape == (B, T, H, kept_count(W, 0.25), 3)
    b, t, h = 1, 2, 3
    assert torch.equal(packed[b, t, h], x[b, t, h][keep[b, t, h]])
    restored = scatter_rows(packed, keep)
    assert torch.equal(restored, x * keep[..., None])
    assert torch.equal(scatter_rows(packed, keep, base=x), x)


def test_packing_with_condition_frames_uses_evenly_spaced_columns():
    keep = row_mask(B, T, H, W, 0.25, seeded(), cond_frames=torch.tensor([2, 0]))
    pack = packing_mask(keep)
    packed_width = kept_count(W, 0.25)
    assert (pack.sum(dim=-1) == packed_width).all()
    assert torch.equal(pack[0, 2:], keep[0, 2:]) and torch.equal(pack[1], keep[1])
    columns = torch.nonzero(pack[0, 0, 0]).flatten().tolist()
    assert columns[0] == 0 and columns[-1] == W - 1 and len(columns) == packed_width
    with pytest.raises(ValueError):
        gather_rows(torch.zeros(B, T, H, W), keep)
    with pytest.raises(ValueError):
        packing_mask(temporal_mask(B, T, H, W, 0.25, seeded()))


@pytest.mark.parametrize("cond", [None, torch.tensor([1, 2])])
def test_shifted_attention_matches_a_loop_over_packed_tokens(cond):
    keep = row_mask(B, T, H, W, 0.25, seeded(3), cond_frames=cond)
    q, k, v = qkv(keep)
    out = shifted_temporal_attention(q, k, v, keep)
    pack = packing_mask(keep)
    expected = v.clone()  # tokens outside the packed layout attend to themselves only
    for b in range(B):
        for h in range(H):
            columns = [torch.nonzero(pack[b, t, h]).flatten() for t in range(T)]
            for j in range(kept_count(W, 0.25)):
                seq = [(t, int(columns[t][j])) for t in range(T)]
                pick = lambda x: torch.stack([x[b, t, h, w] for t, w in seq], dim=1)
                result = attend(pick(q), pick(k), pick(v))  # [heads, T, d]
                for i, (t, w) in enumerate(seq):
                    expected[b, t, h, w] = result[:, i]
    torch.testing.assert_close(out, expected)


def test_masked_attention_hides_dropped_tokens_and_keeps_them_as_values():
    keep = temporal_mask(B, T, H, W, 0.5, seeded(4))
    q, k, v = qkv(keep)
    out = masked_temporal_attention(q, k, v, keep)
    b, h, w = 1, 2, 5
    visible = keep[b, :, h, w]
    frames = torch.nonzero(visible).flatten()
    pick = lambda x: x[b, frames, h, w].transpose(0, 1)
    torch.testing.assert_close(out[b, frames, h, w], attend(pick(q), pick(k), pick(v))
                               .transpose(0, 1))
    dropped = torch.nonzero(~keep).T
    torch.testing.assert_close(out[tuple(dropped)], v[tuple(dropped)])


def test_shared_row_mask_makes_shifted_masked_and_dropped_attention_agree():
    one_frame = row_mask(B, 1, H, W, 0.25, seeded(5))
    keep = one_frame.expand(B, T, H, W).clone()
    q, k, v = qkv(keep)
    shifted = shifted_temporal_attention(q, k, v, keep)
    masked = masked_temporal_attention(q, k, v, keep)
    for b in range(B):
        # dropped attention: delete the invisible (h, w) positions, then plain attention over T
        columns = one_frame[b, 0]
        pick = lambda x: x[b][:, columns].permute(1, 2, 0, 3)  # [positions, heads, T, d]
        dropped = attend(pick(q), pick(k), pick(v)).permute(2, 0, 1, 3)  # [T, positions, ...]
        torch.testing.assert_close(shifted[b][:, columns], dropped)
        torch.testing.assert_close(masked[b][:, columns], dropped)
    torch.testing.assert_close(shifted, masked)  # invisible positions: both return v


def test_attention_benchmark_writes_its_json(tmp_path):
    import json

    from maskgwm.model.bench_attention import main
    out = tmp_path / "attention.json"
    result = main(["--out", str(out), "--batch", "1", "--frames", "3", "--height", "2",
                   "--width", "8", "--heads", "2", "--head-dim", "4", "--warmup", "1",
                   "--repeats", "2", "--rounds", "2", "--threads", "1"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["row_shift_vs_masked_attention_speedup"] > 0
    assert result["target"] == 1.5 and result["met"] == (
        result["row_shift_vs_masked_attention_speedup"] >= 1.5)
    run = result["runs"][0]
    assert run["shapes"]["row_shift_qkv"] == [2 * 6, 2, 3, 4]
    assert run["shapes"]["masked_attn_mask"] == [2 * 8, 1, 3, 3] and run["threads"] == 1
    assert len(run["speedup"]["rounds"]) == 2
    assert "end_to_end_masked_vs_row_shift" in run["secondary"]
    for key in ("machine", "git_commit", "dtype", "threads"):
        assert key in result


def test_attention_benchmark_takes_heads_from_the_small_preset():
    from maskgwm.model.bench_attention import preset_attention_shape
    from maskgwm.model.presets import get_preset
    preset = get_preset("small")
    heads, head_dim = preset_attention_shape("small")
    assert heads == preset.new_block_heads and heads * head_dim == preset.hidden_size
    assert (heads, head_dim) == (4, 64)


def test_shifted_attention_output_layout_and_backend_argument():
    keep = row_mask(B, T, H, W, 0.25, seeded(6), cond_frames=torch.tensor([1, 0]))
    q, k, v = qkv(keep)
    out = shifted_temporal_attention(q, k, v, keep, backend="sdpa")
    assert out.shape == v.shape and out.is_contiguous()
    torch.testing.assert_close(out, shifted_temporal_attention(q, k, v, keep))
    with pytest.raises((RuntimeError, ValueError)):
        shifted_temporal_attention(q, k, v, keep, backend="flash")  # CPU float64
