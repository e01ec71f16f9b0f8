"""Detector modules: official parameter layout, graph details, forward contracts, TorchScript."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from evals.detectors import FIDInceptionV3, InceptionI3d, TorchScriptI3D
from evals.detectors.i3d import same_padding
from evals.detectors.inception import pool_3x3_same
from evals.weights import load_detector, random_detector

# Names and shapes as in pytorch-fid's src/pytorch_fid/inception.py (torchvision Inception3,
# num_classes 1008, no aux logits) and the file pt_inception-2015-12-05-6726825d.pth.
INCEPTION_KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.weight": (32,),
    "Conv2d_1a_3x3.bn.running_var": (32,),
    "Conv2d_2b_3x3.conv.weight": (64, 32, 3, 3),
    "Conv2d_4a_3x3.conv.weight": (192, 80, 3, 3),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch3x3dbl_3.conv.weight": (96, 96, 3, 3),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_2.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2a.conv.weight": (384, 384, 1, 3),
    "Mixed_7b.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}
INCEPTION_KEYS = 472            # 94 conv+bn units x 5 tensors, plus fc weight and bias
INCEPTION_PARAMETERS = 23_850_960

# Names and shapes as in TATS tats/fvd/pytorch_i3d.py and i3d_pretrained_400.pt.
I3D_KNOWN_SHAPES = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.bias": (64,),
    "Conv3d_2b_1x1.conv3d.weight": (64, 64, 1, 1, 1),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b0.conv3d.weight": (64, 192, 1, 1, 1),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_4b.b0.conv3d.weight": (192, 480, 1, 1, 1),
    "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
    "Mixed_5b.b2a.conv3d.weight": (32, 832, 1, 1, 1),
    "Mixed_5c.b0.conv3d.weight": (384, 832, 1, 1, 1),
    "Mixed_5c.b1b.conv3d.weight": (384, 192, 3, 3, 3),
    "Mixed_5c.b2b.conv3d.weight": (128, 48, 3, 3, 3),
    "Mixed_5c.b3b.conv3d.weight": (128, 832, 1, 1, 1),
    "Mixed_5c.b3b.bn.running_mean": (128,),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}
I3D_KEYS = 287                  # 57 conv+bn units x 5 tensors, plus logits weight and bias
I3D_PARAMETERS = 12_697_264


def official_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()
            if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def inception_batch() -> Tensor:
    return torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.fixture(scope="module")
def i3d_batch() -> Tensor:
    return torch.rand(2, 3, 9, 224, 224, generator=torch.Generator().manual_seed(1)) * 2 - 1


@pytest.fixture(scope="module")
def random_inception(inception_batch) -> FIDInceptionV3:
    return random_detector("inception-2015-12-05", seed=0, calibration_input=inception_batch)


@pytest.fixture(scope="module")
def random_i3d(i3d_batch) -> InceptionI3d:
    return random_detector("i3d-400", seed=0, calibration_input=i3d_batch)


def test_inception_parameter_layout_matches_the_official_file():
    module = FIDInceptionV3()
    shapes = official_shapes(module)
    for key, shape in INCEPTION_KNOWN_SHAPES.items():
        assert shapes[key] == shape, key
    assert len(shapes) == INCEPTION_KEYS
    assert sum(p.numel() for p in module.parameters()) == INCEPTION_PARAMETERS
    assert not any("AuxLogits" in k for k in shapes)
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(conv.bias is None for conv in convs)
    assert all(bn.eps == 0.001 for bn in module.modules() if isinstance(bn, nn.BatchNorm2d))


def test_inception_pools_follow_the_tf_graph():
    module = FIDInceptionV3()
    assert module.Mixed_7b.pool_kind == "avg" and module.Mixed_7c.pool_kind == "max"
    ones = torch.ones(1, 1, 4, 4)
    # TF's average ignores padded zeros: a constant stays constant at the borders.
    assert torch.equal(pool_3x3_same(ones, "avg"), ones)
    ramp = torch.arange(16.0).reshape(1, 1, 4, 4)
    assert pool_3x3_same(ramp, "max")[0, 0, 0, 0] == 5.0


def test_i3d_parameter_layout_matches_the_official_file():
    module = InceptionI3d()
    shapes = official_shapes(module)
    for key, shape in I3D_KNOWN_SHAPES.items():
        assert shapes[key] == shape, key
    assert len(shapes) == I3D_KEYS
    assert sum(p.numel() for p in module.parameters()) == I3D_PARAMETERS
    assert "logits.bn.weight" not in shapes
    biased = [k for k in shapes if k.endswith("conv3d.bias")]
    assert biased == ["logits.conv3d.bias"]
    assert module.Mixed_5c.out_channels == 384 + 384 + 128 + 128
    assert all(bn.eps == 1e-5 for bn in module.modules() if isinstance(bn, nn.BatchNorm3d))


@pytest.mark.parametrize("size, kernel, stride, expected", [
    (224, 7, 2, (2, 3)),   # even size: pad kernel - stride, the odd pixel at the back
    (9, 7, 2, (3, 3)),     # odd size: pad kernel - size % stride
    (10, 3, 1, (1, 1)),
    (4, 2, 2, (0, 0)),
    (3, 2, 2, (0, 1)),
    (10, 1, 1, (0, 0)),
])
def test_i3d_same_padding_matches_tf(size, kernel, stride, expected):
    assert same_padding(size, kernel, stride) == expected


def test_random_inception_gives_finite_varied_pool3_features(random_inception, inception_batch):
    with torch.no_grad():
        features = random_inception(inception_batch)
    assert features.shape == (2, 2048)
    assert torch.isfinite(features).all() and (features >= 0).all()  # post-ReLU averages
    assert features.std(dim=0).max() > 0
    assert not random_inception.training


def test_random_inception_is_seeded_and_batch_independent(random_inception, inception_batch):
    again = random_detector("inception-2015-12-05", seed=0, calibration_input=inception_batch)
    for key, value in random_inception.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    with torch.no_grad():
        alone = random_inception(inception_batch[:1])
        batched = random_inception(inception_batch)
    torch.testing.assert_close(alone[0], batched[0], rtol=1e-4, atol=1e-5)


def test_random_i3d_gives_finite_varied_logits(random_i3d, i3d_batch):
    with torch.no_grad():
        logits = random_i3d(i3d_batch)  # T = 9, the shortest clip it takes
    assert logits.shape == (2, 400)
    assert torch.isfinite(logits).all()
    assert logits.std(dim=0).max() > 0
    assert not random_i3d.training


@pytest.mark.parametrize("shape, dtype, match", [
    ((2, 3, 8, 224, 224), torch.float32, "at least 9 frames"),
    ((2, 3, 16, 112, 112), torch.float32, r"\[N, 3, T, 224, 224\]"),
    ((2, 16, 224, 224, 3), torch.float32, r"\[N, 3, T, 224, 224\]"),
    ((2, 3, 16, 224, 224), torch.uint8, "float input"),
])
def test_i3d_rejects_wrong_input(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        InceptionI3d()(torch.zeros(shape, dtype=dtype))


def test_detectors_reject_unnormalised_values():
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        InceptionI3d()(torch.full((1, 3, 9, 224, 224), 255.0))
    with pytest.raises(ValueError, match=r"values in \[-1, 1\]"):
        FIDInceptionV3()(torch.full((1, 3, 299, 299), 255.0))


@pytest.mark.parametrize("shape, dtype, match", [
    ((2, 3, 256, 256), torch.float32, r"\[N, 3, 299, 299\]"),
    ((2, 299, 299, 3), torch.float32, r"\[N, 3, 299, 299\]"),
    ((2, 3, 299, 299), torch.uint8, "float input"),
])
def test_inception_rejects_wrong_input(shape, dtype, match):
    with pytest.raises(ValueError, match=match):
        FIDInceptionV3()(torch.zeros(shape, dtype=dtype))


class FakeTorchScriptI3D(nn.Module):
    """Test double for i3d_torchscript.pt: StyleGAN-V's call signature, toy features.

    Feature j is the mean of channel j % 3, plus j / 1000, so a wrong permutation shows.
    """

    def forward(self, x: Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> Tensor:
        assert x.dtype == torch.uint8, "the real detector takes uint8"
        assert rescale and resize and return_features, "StyleGAN-V passes all three as True"
        channel_means = x.float().mean(dim=(2, 3, 4))
        offsets = torch.arange(400, dtype=torch.float32) / 1000
        return channel_means[:, torch.arange(400) % 3] + offsets


@pytest.fixture
def fake_torchscript_dir(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
        scripted = torch.jit.script(FakeTorchScriptI3D())
        torch.jit.save(scripted, str(tmp_path / "i3d_torchscript.pt"))
    return tmp_path


def test_torchscript_wrapper_calls_like_stylegan_v(fake_torchscript_dir):
    clips = np.random.default_rng(0).integers(0, 256, (2, 4, 8, 10, 3), dtype=np.uint8)
    detector = TorchScriptI3D.from_file(fake_torchscript_dir / "i3d_torchscript.pt")
    features = detector.features(clips)
    assert features.dtype == np.float64 and features.shape == (2, 400)
    channel_means = clips.astype(np.float64).mean(axis=(1, 2, 3))
    expected = channel_means[:, np.arange(400) % 3] + np.arange(400) / 1000
    np.testing.assert_allclose(features, expected, rtol=1e-5)


def test_load_detector_returns_torchscript_wrapper(fake_torchscript_dir):
    detector = load_detector("i3d-torchscript", fake_torchscript_dir, verify=False)
    assert isinstance(detector, TorchScriptI3D)
    clips = torch.zeros(1, 2, 4, 4, 3, dtype=torch.uint8)
    np.testing.assert_allclose(detector.features(clips)[0], np.arange(400) / 1000, rtol=1e-5)


@pytest.mark.parametrize("clips, match", [
    (torch.zeros(1, 2, 4, 4, 3), "uint8"),
    (torch.zeros(1, 3, 2, 4, 4, dtype=torch.uint8), r"\[N, T, H, W, 3\]"),
])
def test_torchscript_wrapper_rejects_wrong_input(fake_torchscript_dir, clips, match):
    detector = TorchScriptI3D.from_file(fake_torchscript_dir / "i3d_torchscript.pt")
    with pytest.raises(ValueError, match=match):
        detector.features(clips)

