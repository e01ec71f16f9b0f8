"""Named resize methods: uint8 frames or clips -> float detector input in [-1, 1].

Each method fixes both the interpolation and the value normalisation of the peers that use it,
because FID/FVD move with either:

- `torch_bilinear`: torch's bilinear (align_corners=False, no antialias), source coordinate
  (i + 0.5) * in / out - 0.5.
  Frames (pytorch-fid's Inception): x / 255 in [0, 1], resize, then 2x - 1.
  Clips (TATS / LVDM I3D): resize the [0, 255] values, then 2x / 255 - 1.
- `tf_bilinear`: TensorFlow 1 `resize_bilinear` (align_corners=False, no half-pixel centres),
  source coordinate i * in / out, in float32 on the [0, 255] values.
  Frames (torch-fidelity / torchmetrics Inception): then (x - 128) / 128.
  Clips (the original TF FVD): then 2x / 255 - 1.

Both ignore aspect ratio; cropping is the protocol's job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Size = int | tuple[int, int]


def tf1_resize_bilinear(images: Tensor, size: tuple[int, int]) -> Tensor:
    """TF1 `resize_bilinear(align_corners=False)` of [N, C, H, W] (uint8 or float), in float32."""
    rows_lo, rows_hi, rows_frac = tf1_sample_points(images.shape[-2], size[0], images.device)
    cols_lo, cols_hi, cols_frac = tf1_sample_points(images.shape[-1], size[1], images.device)
    # Interpolate along x for every source row once, then pick the two rows per output row:
    # the same float32 operations as TF's top/bottom lerps, on fewer elements.
    left = images.index_select(-1, cols_lo).float()
    across = left + (images.index_select(-1, cols_hi).float() - left) * cols_frac
    top = across.index_select(-2, rows_lo)
    return top + (across.index_select(-2, rows_hi) - top) * rows_frac[:, None]


def tf1_sample_points(in_size: int, out_size: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Per output index: lower and upper source index and the weight of the upper one."""
    scale = torch.tensor(in_size, dtype=torch.float32) / torch.tensor(out_size,
                                                                      dtype=torch.float32)
    source = torch.arange(out_size, dtype=torch.float32) * scale
    lower = source.floor()
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower.long().to(device), upper.long().to(device), (source - lower).to(device)


def torch_bilinear(images: Tensor, size: tuple[int, int]) -> Tensor:
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                         antialias=False)


def torch_bilinear_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    return 2 * torch_bilinear(frames.float() / 255, size) - 1


def torch_bilinear_clip_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    return 2 * torch_bilinear(frames.float(), size) / 255 - 1


def tf_bilinear_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    return (tf1_resize_bilinear(frames, size) - 128) / 128


def tf_bilinear_clip_frames(frames: Tensor, size: tuple[int, int]) -> Tensor:
    return 2 * tf1_resize_bilinear(frames, size) / 255 - 1


@dataclass(frozen=True)
class ResizeMethod:
    name: str
    frames: Callable[[Tensor, tuple[int, int]], Tensor]       # uint8 NCHW -> Inception input
    clip_frames: Callable[[Tensor, tuple[int, int]], Tensor]  # uint8 NCHW -> I3D input
    normalisation: str


RESIZE_METHODS = {m.name: m for m in (
    ResizeMethod("torch_bilinear", torch_bilinear_frames, torch_bilinear_clip_frames,
                 "frames: x/255, resize, 2x-1 (pytorch-fid); clips: resize, 2x/255-1 (TATS)"),
    ResizeMethod("tf_bilinear", tf_bilinear_frames, tf_bilinear_clip_frames,
                 "frames: resize, (x-128)/128 (torch-fidelity); clips: resize, 2x/255-1 (TF FVD)"),
)}


def get_resize_method(name: str) -> ResizeMethod:
    try:
        return RESIZE_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown resize method '{name}' "
                         f"(known: {', '.join(RESIZE_METHODS)})") from None


def resize_frames(frames_uint8, size: Size, method: str) -> Tensor:
    """uint8 frames [N, H, W, 3] -> float32 [N, 3, h, w] in [-1, 1], normalised per `method`."""
    resize = get_resize_method(method)
    frames = as_uint8_tensor(frames_uint8, "frames", "[N, H, W, 3]")
    return resize.frames(frames.permute(0, 3, 1, 2).contiguous(), as_hw(size))


def preprocess_clips(clips_uint8, size: Size = 224, *, method: str) -> Tensor:
    """uint8 clips [N, T, H, W, 3] -> float32 [N, 3, T, h, w] in [-1, 1] for I3D.

    Every frame is resized on its own, ignoring aspect ratio, as TATS / LVDM do.
    """
    resize = get_resize_method(method)
    clips = as_uint8_tensor(clips_uint8, "clips", "[N, T, H, W, 3]")
    n, t, h, w, c = clips.shape
    out_h, out_w = as_hw(size)
    frames = clips.reshape(n * t, h, w, c).permute(0, 3, 1, 2).contiguous()
    resized = resize.clip_frames(frames, (out_h, out_w))
    return resized.reshape(n, t, c, out_h, out_w).transpose(1, 2).contiguous()


def as_hw(size: Size) -> tuple[int, int]:
    out = (size, size) if isinstance(size, int) else tuple(size)
    if len(out) != 2 or not all(isinstance(s, int) and s > 0 for s in out):
        raise ValueError(f"size must be a positive int or (height, width), got {size!r}")
    return out


def as_uint8_tensor(array, what: str, layout: str) -> Tensor:
    """`array` as a torch uint8 tensor, or ValueError saying how it is off from `layout`."""
    tensor = torch.as_tensor(array)
    if tensor.dtype != torch.uint8:
        raise ValueError(f"{what} must be uint8 {layout}, got dtype {tensor.dtype}"
                         f"{dtype_hint(tensor)}")
    dims = layout.count(",") + 1
    if tensor.dim() != dims or tensor.shape[-1] != 3:
        hint = ""
        if tensor.dim() == dims and 3 in tuple(tensor.shape[1:-1]):
            hint = " (channels must be last: permute channels-first input)"
        raise ValueError(f"{what} must be uint8 {layout} with 3 channels last, got shape "
                         f"{list(tensor.shape)}{hint}")
    if tensor.numel() == 0:
        raise ValueError(f"{what} are empty: shape {list(tensor.shape)}")
    return tensor


def dtype_hint(tensor: Tensor) -> str:
    """Why a non-uint8 input is likely wrong, and the conversion that fixes it."""
    if not torch.is_floating_point(tensor) or tensor.numel() == 0:
        return ""
    low, high = tensor.min().item(), tensor.max().item()
    if low >= 0 and high <= 1:
        return (f": its values lie in [{low:g}, {high:g}], which looks like [0, 1] floats; "
                "convert with (x * 255).round().clamp(0, 255).to(torch.uint8)")
    if low >= 0 and high <= 255:
        return (f": its values lie in [{low:g}, {high:g}], which looks like [0, 255] floats; "
                "convert with x.round().clamp(0, 255).to(torch.uint8)")
    return f": its values lie in [{low:g}, {high:g}], not an image range"
