"""Resize methods: TF1 semantics by hand, torch equivalence, normalisation, input validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.resize import (RESIZE_METHODS, preprocess_clips, resize_frames,
                          tf1_resize_bilinear)


def as_frame(values) -> torch.Tensor:
    """A grey [1, H, W, 3] uint8 frame from a 2-D list."""
    return torch.tensor(values, dtype=torch.uint8)[None, :, :, None].expand(-1, -1, -1, 3)


def test_registry_names_both_methods():
    assert set(RESIZE_METHODS) == {"torch_bilinear", "tf_bilinear"}
    assert all(method.normalisation for method in RESIZE_METHODS.values())


def test_tf1_upsample_2x2_to_4x4_by_hand():
    # Source coordinate i * 2/4 = 0, 0.5, 1, 1.5; the index past the edge clamps to the edge.
    image = torch.tensor([[0.0, 100.0], [200.0, 40.0]])[None, None]
    expected = torch.tensor([
        [0.0, 50.0, 100.0, 100.0],
        [100.0, 85.0, 70.0, 70.0],
        [200.0, 120.0, 40.0, 40.0],
        [200.0, 120.0, 40.0, 40.0],
    ])
    assert torch.equal(tf1_resize_bilinear(image, (4, 4))[0, 0], expected)


def test_tf1_downsample_samples_without_half_pixel_offset():
    row = torch.tensor([[10.0, 20.0, 30.0, 40.0]])[None, None]
    # TF1 reads source pixels 0 and 2; torch's half-pixel centres average pairs.
    assert tf1_resize_bilinear(row, (1, 2))[0, 0, 0].tolist() == [10.0, 30.0]
    torch_row = F.interpolate(row, size=(1, 2), mode="bilinear", align_corners=False)
    assert torch_row[0, 0, 0].tolist() == [15.0, 35.0]
    # 3 -> 2: source coordinates 0 and 1.5.
    three = torch.tensor([[0.0, 60.0, 100.0]])[None, None]
    assert tf1_resize_bilinear(three, (1, 2))[0, 0, 0].tolist() == [0.0, 80.0]


def test_tf_bilinear_frames_normalise_like_torch_fidelity():
    frame = as_frame([[0, 100], [200, 40]])
    out = resize_frames(frame, 4, "tf_bilinear")
    assert out.shape == (1, 3, 4, 4) and out.dtype == torch.float32
    expected_row = (torch.tensor([100.0, 85.0, 70.0, 70.0]) - 128) / 128
    assert torch.equal(out[0, 1, 1], expected_row)
    extremes = resize_frames(as_frame([[0, 255]]), (1, 2), "tf_bilinear")
    assert extremes[0, 0, 0].tolist() == [-1.0, 127 / 128]  # (x - 128) / 128 never reaches 1


def test_torch_bilinear_frames_equal_pytorch_fid_steps():
    frames = torch.randint(0, 256, (2, 37, 53, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    out = resize_frames(frames, (29, 41), "torch_bilinear")
    in_unit_range = frames.permute(0, 3, 1, 2).contiguous().float() / 255  # as ToTensor gives
    expected = 2 * F.interpolate(in_unit_range, size=(29, 41), mode="bilinear",
                                 align_corners=False) - 1
    assert torch.equal(out, expected)
    extremes = resize_frames(as_frame([[0, 255]]), (1, 2), "torch_bilinear")
    assert extremes[0, 0, 0].tolist() == [-1.0, 1.0]


@pytest.mark.parametrize("method, normalise", [
    ("torch_bilinear", lambda x: 2 * (x / 255) - 1),
    ("tf_bilinear", lambda x: (x - 128) / 128),
])
def test_same_size_is_identity_up_to_normalisation(method, normalise):
    frames = torch.randint(0, 256, (2, 6, 5, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    out = resize_frames(frames, (6, 5), method)
    torch.testing.assert_close(out, normalise(frames.permute(0, 3, 1, 2).float()),
                               rtol=0, atol=1e-6)


def test_preprocess_clips_matches_tats_per_frame():
    clips = np.random.default_rng(0).integers(0, 256, (2, 3, 20, 30, 3), dtype=np.uint8)
    out = preprocess_clips(clips, 16, method="torch_bilinear")
    assert out.shape == (2, 3, 3, 16, 16) and out.dtype == torch.float32
    frame = torch.from_numpy(clips[1, 2]).permute(2, 0, 1)[None].float()
    expected = 2 * F.interpolate(frame, size=(16, 16), mode="bilinear",
                                 align_corners=False) / 255 - 1
    assert torch.equal(out[1, :, 2], expected[0])


def test_preprocess_clips_tf_variant_scales_like_tf_fvd():
    clips = torch.randint(0, 256, (1, 2, 4, 4, 3), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(2))
    out = preprocess_clips(clips, 4, method="tf_bilinear")
    expected = 2 * clips.permute(0, 4, 1, 2, 3).float() / 255 - 1
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("frames, match", [
    (torch.rand(2, 8, 8, 3), r"\[0, 1\] floats"),
    (torch.rand(2, 8, 8, 3) * 200 + 10, r"\[0, 255\] floats"),
    (torch.zeros(2, 8, 8, 3, dtype=torch.int64), "dtype torch.int64"),
    (torch.zeros(2, 3, 8, 8, dtype=torch.uint8), "channels must be last"),
    (torch.zeros(8, 8, 3, dtype=torch.uint8), r"\[N, H, W, 3\]"),
    (torch.zeros(2, 8, 8, 4, dtype=torch.uint8), "3 channels"),
    (torch.zeros(0, 8, 8, 3, dtype=torch.uint8), "empty"),
])
def test_resize_frames_rejects_bad_input(frames, match):
    with pytest.raises(ValueError, match=match):
        resize_frames(frames, 4, "torch_bilinear")


def test_preprocess_clips_rejects_frames_and_floats():
    with pytest.raises(ValueError, match=r"\[N, T, H, W, 3\]"):
        preprocess_clips(torch.zeros(2, 8, 8, 3, dtype=torch.uint8), method="torch_bilinear")
    with pytest.raises(ValueError, match=r"\[0, 1\] floats"):
        preprocess_clips(np.random.rand(1, 2, 8, 8, 3), method="torch_bilinear")


def test_unknown_method_and_bad_size_are_named():
    frame = as_frame([[0, 1], [2, 3]])
    with pytest.raises(ValueError, match="unknown resize method 'lanczos'.*tf_bilinear"):
        resize_frames(frame, 4, "lanczos")
    with pytest.raises(ValueError, match="size must be"):
        resize_frames(frame, (4, 0), "tf_bilinear")
