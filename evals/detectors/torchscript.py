"""StyleGAN-V's TorchScript I3D (`i3d_torchscript.pt`), called as StyleGAN-V calls it.

The file carries its own graph and preprocessing: it takes uint8 [N, 3, T, H, W] and, with
rescale=True and resize=True, scales and resizes inside the graph. No module code is needed.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

# The keyword arguments of StyleGAN-V's src/metrics/frechet_video_distance.py.
DETECTOR_KWARGS = dict(rescale=True, resize=True, return_features=True)
FEATURE_DIM = 400


def load_torchscript_detector(path: str | Path, device: str | torch.device = "cpu"):
    """The scripted module in eval mode, on `device`."""
    with warnings.catch_warnings():
        # Recent torch deprecates TorchScript, but the published detector is a TorchScript file.
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location=device).eval()


class TorchScriptI3D:
    """Feature extractor around a scripted I3D with StyleGAN-V's call signature."""

    def __init__(self, detector, device: str | torch.device = "cpu"):
        self.detector = detector
        self.device = torch.device(device)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> TorchScriptI3D:
        return cls(load_torchscript_detector(path, device), device)

    def features(self, clips_uint8) -> np.ndarray:
        """uint8 clips [N, T, H, W, 3] (numpy or torch) -> float64 features [N, 400]."""
        clips = torch.as_tensor(clips_uint8)
        if clips.dtype != torch.uint8:
            raise ValueError(f"TorchScriptI3D takes uint8 clips [N, T, H, W, 3], got dtype "
                             f"{clips.dtype}; the detector rescales uint8 values itself")
        if clips.dim() != 5 or clips.shape[-1] != 3:
            raise ValueError(f"TorchScriptI3D takes uint8 clips [N, T, H, W, 3], got "
                             f"{list(clips.shape)}")
        x = clips.permute(0, 4, 1, 2, 3).contiguous().to(self.device)  # [N, 3, T, H, W]
        with torch.no_grad():
            features = self.detector(x, **DETECTOR_KWARGS)
        features = features.detach().cpu().to(torch.float64).numpy()
        if features.shape != (clips.shape[0], FEATURE_DIM):
            raise RuntimeError(f"the TorchScript detector returned {list(features.shape)}, "
                             f"expected [{clips.shape[0]}, {FEATURE_DIM}]")
        return features
