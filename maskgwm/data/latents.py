"""A disk cache of VAE latents for training clips, so each window is encoded once.

Latents live at `<dir>/<encoder_id>/<clip_id>/<start>-<frames>-<W>x<H>-<stamp>.npy` (float16
or float32), each written atomically; `encoder_id` must change whenever the VAE or its
preprocessing does (use `vae_encoder_id`), `<W>x<H>` is the size the frames were resized to
before encoding, and `stamp` (`frames_stamp`) changes whenever a source frame file is
rewritten, so replaced frames are re-encoded, not served stale.
`sd3_vae_encoder` wraps a diffusers `AutoencoderKL` with SD3's scaling and shift; it caches
the posterior mean (assumed: deterministic latents, as many video pipelines cache them), not
a sample.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from evals.atomic import atomic_open
from maskgwm.model.vae import SD3_SCALING, SD3_SHIFT, frames_to_unit, to_latents

__all__ = ["SD3_SCALING", "SD3_SHIFT", "Encoder", "LatentCache", "frames_stamp",
           "sd3_vae_encoder", "vae_encoder_id"]
Encoder = Callable[[torch.Tensor], torch.Tensor]  # uint8 [N, 3, H, W] -> latents [N, C, h, w]


def vae_encoder_id(vae, scaling: float, shift: float, extra: str = "") -> str:
    """A short id from the VAE's config, its weights (values and dtype: a VAE run in bfloat16
    encodes other latents than the same values in float32) and the latent transform."""
    digest = hashlib.sha256(json.dumps({k: str(v) for k, v in dict(vae.config).items()},
                                       sort_keys=True).encode())
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().float().numpy().tobytes())
    digest.update(f"{scaling}|{shift}|{extra}".encode())
    return digest.hexdigest()[:16]


def sd3_vae_encoder(vae, scaling: float = SD3_SCALING, shift: float = SD3_SHIFT) -> Encoder:
    """uint8 frames -> (mean latent - shift) * scaling, SD3's convention (the transform of
    `maskgwm.model.vae.SD3VAE`, which adds batching and checks)."""
    def encode(frames: torch.Tensor) -> torch.Tensor:
        x = frames_to_unit(frames, vae.dtype, vae.device)
        with torch.no_grad():
            mean = vae.encode(x).latent_dist.mean
        return to_latents(mean, scaling, shift)
    return encode


def frames_stamp(root: str | Path, refs: list[list[str]]) -> str:
    """A cheap fingerprint of frames[t][v] under `root`: each ref with its file's size and
    modification time (stat only, like `evals.pipeline.set_fingerprint`). A ref
    `<file>#<key>` (a frame inside a container, e.g. Waymo's) stamps `<file>`."""
    digest = hashlib.sha256()
    for ref in (ref for views in refs for ref in views):
        path = os.path.join(root, ref)
        if "#" in ref and not os.path.exists(path):
            path = os.path.join(root, ref.rpartition("#")[0])
        try:
            stat = os.stat(path)
            digest.update(f"{ref}:{stat.st_size}:{stat.st_mtime_ns};".encode())
        except FileNotFoundError:   # never cached: reading the frame raises, naming it
            digest.update(f"{ref}:missing;".encode())
    return digest.hexdigest()[:16]


class LatentCache:
    def __init__(self, directory: str | Path, encoder_id: str, encode: Encoder,
                 dtype: np.dtype = np.float16):
        self.root = Path(directory) / encoder_id
        self.encode, self.dtype = encode, dtype

    def path(self, clip_id: str, start: int, n_frames: int, stamp: str,
             size: tuple[int, int]) -> Path:
        """The entry of frames [start, start + n_frames) resized to size = (width, height)."""
        width, height = size
        return self.root / clip_id / f"{start}-{n_frames}-{width}x{height}-{stamp}.npy"

    def load(self, clip_id: str, start: int, n_frames: int, n_views: int, stamp: str,
             size: tuple[int, int]) -> torch.Tensor | None:
        """Latents [n_frames, n_views, C, h, w] of frames resized to size = (width, height),
        or None when missing, damaged (unreadable, truncated, wrongly shaped or non-finite) or
        stored in another dtype than this cache's: re-encoded and overwritten, never trusted."""
        try:
            array = np.load(self.path(clip_id, start, n_frames, stamp, size))
        except (ValueError, OSError, EOFError):
            return None
        if (array.dtype != np.dtype(self.dtype) or array.ndim != 5
                or array.shape[:2] != (n_frames, n_views) or not np.isfinite(array).all()):
            return None
        return torch.from_numpy(array).float()

    def store(self, clip_id: str, start: int, frames: torch.Tensor, stamp: str) -> torch.Tensor:
        """Encode uint8 frames [T, V, 3, H, W] and cache latents [T, V, C, h, w]."""
        t, v = frames.shape[:2]
        latents = self.encode(frames.reshape(t * v, *frames.shape[2:]))
        array = latents.reshape(t, v, *latents.shape[1:]).float().cpu().numpy()
        with np.errstate(over="ignore"):   # overflow is reported below, naming the entry
            array = array.astype(self.dtype)   # returned as stored: a later hit gives the same
        path = self.path(clip_id, start, t, stamp, (frames.shape[-1], frames.shape[-2]))
        if not np.isfinite(array).all():
            raise ValueError(f"{path}: non-finite latents from the encoder (NaN, or beyond "
                             f"the range of {np.dtype(self.dtype).name}); not cached")
        with atomic_open(path, "wb") as handle:
            np.save(handle, array)
        return torch.from_numpy(array).float()
