"""I3D (Inception-v1 inflated to 3-D), Kinetics-400, in the layout of `i3d_pretrained_400.pt`.

That file is TF-Hub's i3d-kinetics-400 converted by TATS / VideoGPT (`pytorch_i3d.py`, the same
file in LVDM); this module's parameter names and shapes equal it, so it loads unchanged. Like
the TF graph, convolutions and max pools use TF "same" padding computed from each input size.
The output is TF's `Mean:0`: the 400 Kinetics logits averaged over the remaining time steps.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .inputs import check_value_range

INPUT_SIZE = 224
NUM_CLASSES = 400
MIN_FRAMES = 9  # three stride-2 time reductions must leave >= 2 steps for the [2, 7, 7] pool
LOGITS_IN_CHANNELS = 384 + 384 + 128 + 128


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "same" padding along one axis as (front, back); the odd pixel goes to the back."""
    if size % stride == 0:
        total = max(kernel - stride, 0)
    else:
        total = max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def pad_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    """Zero-pad [N, C, T, H, W] so a valid conv / pool gives ceil(size / stride) outputs."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride))):  # F.pad wants W first
        pads.extend(same_padding(size, k, s))
    return F.pad(x, pads)


def max_pool_same(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    # Zero padding as in TATS; the inputs are post-ReLU, so it equals TF's -inf padding.
    return F.max_pool3d(pad_same(x, kernel, stride), kernel, stride)


class Unit3D(nn.Module):
    """Conv3d with "same" padding -> optional batch norm (eps 1e-5) -> optional ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel=(1, 1, 1), stride=(1, 1, 1),
                 batch_norm: bool = True, relu: bool = True, bias: bool = False):
        super().__init__()
        self.kernel = tuple(kernel)
        self.stride = tuple(stride)
        self.relu = relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, stride=self.stride,
                                padding=0, bias=bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=1e-5, momentum=0.001) if batch_norm else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    """Four branches: 1x1; 1x1 -> 3x3x3; 1x1 -> 3x3x3; 3x3x3 max pool -> 1x1."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int, int]):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = widths
        self.b0 = Unit3D(in_channels, b0)
        self.b1a = Unit3D(in_channels, b1a)
        self.b1b = Unit3D(b1a, b1b, kernel=(3, 3, 3))
        self.b2a = Unit3D(in_channels, b2a)
        self.b2b = Unit3D(b2a, b2b, kernel=(3, 3, 3))
        self.b3b = Unit3D(in_channels, b3b)
        self.out_channels = b0 + b1b + b2b + b3b

    def forward(self, x: Tensor) -> Tensor:
        pooled = max_pool_same(x, (3, 3, 3), (1, 1, 1))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)),
                          self.b3b(pooled)], dim=1)


# (name, input channels, branch widths b0, b1a, b1b, b2a, b2b, b3b), in graph order.
MIXED_BLOCKS = (
    ("Mixed_3b", 192, (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", 256, (128, 128, 192, 32, 96, 64)),
    ("Mixed_4b", 480, (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", 512, (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", 512, (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", 512, (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", 528, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5b", 832, (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", 832, (384, 192, 384, 48, 128, 128)),
)
# Max pools (kernel, stride) that run before these blocks.
POOL_BEFORE = {
    "Mixed_3b": ((1, 3, 3), (1, 2, 2)),   # MaxPool3d_3a_3x3
    "Mixed_4b": ((3, 3, 3), (2, 2, 2)),   # MaxPool3d_4a_3x3
    "Mixed_5b": ((2, 2, 2), (2, 2, 2)),   # MaxPool3d_5a_2x2
}


class InceptionI3d(nn.Module):
    """I3D: float [N, 3, T, 224, 224] in [-1, 1], T >= 9 -> time-averaged logits [N, 400]."""

    def __init__(self):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, kernel=(7, 7, 7), stride=(2, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, kernel=(3, 3, 3))
        for name, in_channels, widths in MIXED_BLOCKS:
            self.add_module(name, InceptionModule(in_channels, widths))
        self.logits = Unit3D(LOGITS_IN_CHANNELS, NUM_CLASSES, batch_norm=False, relu=False,
                             bias=True)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x)
        x = self.Conv3d_1a_7x7(x)
        x = max_pool_same(x, (1, 3, 3), (1, 2, 2))  # MaxPool3d_2a_3x3
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        for name, _, _ in MIXED_BLOCKS:
            if name in POOL_BEFORE:
                x = max_pool_same(x, *POOL_BEFORE[name])
            x = getattr(self, name)(x)
        x = F.avg_pool3d(x, kernel_size=(2, 7, 7), stride=1)  # [N, 1024, T', 1, 1]
        logits = self.logits(x).squeeze(4).squeeze(3)  # dropout sits here; it is off in eval
        return logits.mean(dim=2)


def check_input(x: Tensor) -> None:
    """ValueError unless x is float [N, 3, T >= 9, 224, 224] with values in [-1, 1]."""
    if not torch.is_floating_point(x):
        raise ValueError(f"InceptionI3d takes float input in [-1, 1], got dtype {x.dtype} "
                         "(preprocess uint8 clips with evals.resize.preprocess_clips)")
    if x.dim() != 5 or x.shape[1] != 3 or tuple(x.shape[3:]) != (INPUT_SIZE, INPUT_SIZE):
        raise ValueError(f"InceptionI3d takes [N, 3, T, {INPUT_SIZE}, {INPUT_SIZE}], "
                         f"got {list(x.shape)}")
    if x.shape[2] < MIN_FRAMES:
        raise ValueError(f"InceptionI3d needs at least {MIN_FRAMES} frames per clip, got "
                         f"{x.shape[2]}: the [2, 7, 7] head pool needs 2 time steps after three "
                         "stride-2 reductions; the protocol must pad or use longer clips")
    check_value_range(x, "InceptionI3d")
