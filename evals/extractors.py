"""Feature extractors for a protocol: uint8 frames or clips in, float64 features out.

With a weights directory the official detectors are loaded and their files' SHA-256 recorded;
without one, seeded random-initialised detectors stand in, and every number they produce is
labelled as not comparable with published numbers (docs/DESIGN.md section 8).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .detectors.torchscript import TorchScriptI3D
from .protocols import Protocol
from .resize import preprocess_clips, resize_frames
from .weights import get_entry, load_detector, random_detector, verify_weights

RANDOM_WEIGHTS_LABEL = "random-weights detector: not comparable with published numbers"
CALIBRATION_SEED = 1234


@dataclass(frozen=True)
class DetectorInfo:
    """One detector as results record it. `weights_file` is provenance only: identity checks
    and cache keys compare `evals.pipeline.detector_identity` (no path)."""
    role: str                       # fid | fvd
    name: str
    weights_file: str | None
    weights_sha256: str | None
    random_weights: bool
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def center_crop(frames: np.ndarray, crop: str) -> np.ndarray:
    """Frames or clips [..., H, W, 3], centre-cropped to a square when crop == 'center'."""
    if crop == "none":
        return frames
    h, w = frames.shape[-3:-1]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return frames[..., top:top + side, left:left + side, :]


class FrameExtractor:
    """Inception pool3 features of frames [N, H, W, 3] in batches."""

    def __init__(self, module, resize: str, size: int, device: torch.device, batch_size: int,
                 crop: str = "none"):
        self.module, self.resize, self.size, self.crop = module, resize, size, crop
        self.device, self.batch_size = device, batch_size

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        frames = center_crop(frames, self.crop)
        out = []
        with torch.no_grad():
            for start in range(0, len(frames), self.batch_size):
                batch = resize_frames(frames[start:start + self.batch_size], self.size,
                                      self.resize).to(self.device)
                out.append(self.module(batch).double().cpu().numpy())
        return np.concatenate(out)


class ClipExtractor:
    """I3D features of clips [N, T, H, W, 3] in batches (TorchScript detectors resize inside)."""

    def __init__(self, module, resize: str, size: int, device: torch.device, batch_size: int,
                 crop: str = "none"):
        self.module, self.resize, self.size, self.crop = module, resize, size, crop
        self.device, self.batch_size = device, batch_size

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        clips = center_crop(clips, self.crop)
        out = []
        with torch.no_grad():
            for start in range(0, len(clips), self.batch_size):
                chunk = clips[start:start + self.batch_size]
                if isinstance(self.module, TorchScriptI3D):
                    out.append(self.module.features(chunk))
                    continue
                batch = preprocess_clips(chunk, self.size, method=self.resize).to(self.device)
                out.append(self.module(batch).double().cpu().numpy())
        return np.concatenate(out)


def _calibration_frames(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Smooth seeded random uint8 images: the same on every shard and machine."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=shape[:-3] + (8, 8, 3)).astype(np.float32)
    reps = (1,) * (len(shape) - 3) + (shape[-3] // 8, shape[-2] // 8, 1)
    return np.kron(coarse, np.ones(reps, dtype=np.float32)).astype(np.uint8)


def _detector(name: str, role: str, weights_dir: Path | None, device: torch.device,
              seed: int, calibration: torch.Tensor) -> tuple[Any, DetectorInfo]:
    if weights_dir is None:
        module = random_detector(name, seed, calibration).to(device)
        return module, DetectorInfo(role, name, None, None, True, seed)
    path = Path(weights_dir) / get_entry(name).file_name
    sha256 = verify_weights(path, name)
    module = load_detector(name, weights_dir, device, verify=False)
    return module, DetectorInfo(role, name, str(path), sha256, False)


def build_extractors(protocol: Protocol, weights_dir: str | Path | None = None,
                     device: str = "cpu", seed: int = 0, frame_batch: int = 32,
                     clip_batch: int = 4) -> tuple[FrameExtractor, ClipExtractor,
                                                   list[DetectorInfo]]:
    """The protocol's FID and FVD extractors; random stand-ins when `weights_dir` is None."""
    dev = torch.device(device)
    weights = Path(weights_dir) if weights_dir is not None else None
    frames = resize_frames(_calibration_frames((8, 64, 64, 3), CALIBRATION_SEED),
                           protocol.fid.size, protocol.fid.resize)
    inception, fid_info = _detector(protocol.fid.detector, "fid", weights, dev, seed, frames)
    clips = torch.empty(0)
    if weights is None:
        clips = preprocess_clips(_calibration_frames((2, protocol.fvd.min_frames, 64, 64, 3),
                                                     CALIBRATION_SEED + 1),
                                 protocol.fvd.size, method=protocol.fvd.resize)
    i3d, fvd_info = _detector(protocol.fvd.detector, "fvd", weights, dev, seed, clips)
    return (FrameExtractor(inception, protocol.fid.resize, protocol.fid.size, dev, frame_batch,
                           protocol.fid.crop),
            ClipExtractor(i3d, protocol.fvd.resize, protocol.fvd.size, dev, clip_batch,
                          protocol.fvd.crop),
            [fid_info, fvd_info])


def rebind(extractors: tuple[FrameExtractor, ClipExtractor, list[DetectorInfo]],
           protocol: Protocol) -> tuple[FrameExtractor, ClipExtractor, list[DetectorInfo]]:
    """The same detector modules with `protocol`'s resize and crop (protocol variants)."""
    fid_x, fvd_x, infos = extractors
    if [protocol.fid.detector, protocol.fvd.detector] != [info.name for info in infos]:
        raise ValueError("rebind keeps the detectors; build new extractors to change them")
    return (FrameExtractor(fid_x.module, protocol.fid.resize, protocol.fid.size, fid_x.device,
                           fid_x.batch_size, protocol.fid.crop),
            ClipExtractor(fvd_x.module, protocol.fvd.resize, protocol.fvd.size, fvd_x.device,
                          fvd_x.batch_size, protocol.fvd.crop),
            infos)
