"""Loading clips for training: decode, centre-crop and resize, torch Dataset and DataLoader.

Every random choice (which clip of which dataset, which window inside it) is drawn from a
generator seeded by (seed, epoch, global sample index), so batches are identical for the same
seed whatever the number of workers or processes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset

from .latents import LatentCache, frames_stamp
from .manifest import ClipManifest, ClipRecord

FrameReader = Callable[[Path, str], np.ndarray]


class FrameError(ValueError):
    """A frame that cannot be read; the message names the file."""


def read_image_file(root: Path, ref: str) -> np.ndarray:
    """uint8 [H, W, 3] of an image file `root / ref`."""
    path = Path(root) / ref
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise FrameError(f"{path}: frame missing; re-download or rebuild the manifest") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise FrameError(f"{path}: unreadable or truncated image ({err})") from None


def crop_resize(frame: np.ndarray, width: int, height: int, rule: str = "round") -> np.ndarray:
    """Centre-crop to the target aspect, then LANCZOS-resize (as Vista prepares frames).

    `rule` sizes the crop: "round" (ours) or "vista" (Vista's load_img: int() of
    (width / height) * h or (height / width) * w, one pixel narrower for some shapes)."""
    h, w = frame.shape[:2]
    target = width / height
    if w / h > target:
        new_w = int(width / height * h) if rule == "vista" else round(h * target)
        frame = frame[:, (w - new_w) // 2:(w - new_w) // 2 + new_w]
    elif w / h < target:
        new_h = int(height / width * w) if rule == "vista" else round(w / target)
        frame = frame[(h - new_h) // 2:(h - new_h) // 2 + new_h]
    if frame.shape[:2] == (height, width):
        return np.ascontiguousarray(frame)
    return np.asarray(Image.fromarray(frame).resize((width, height), Image.LANCZOS))


@dataclass(frozen=True)
class Source:
    """One dataset in a mix: its manifest, the root its frame references are relative to,
    how to read a frame, and its share of the samples."""
    manifest: ClipManifest
    root: Path
    weight: float = 1.0
    read_frame: FrameReader = read_image_file


class ClipDataset(Dataset):
    """`length` samples of `n_frames` consecutive frames from a weighted mix of sources.

    Item i: a dict with `frames` (uint8 [T, V, 3, H, W]), `clip_id`, `start`, `source`.
    """

    def __init__(self, sources: Sequence[Source], n_frames: int, width: int, height: int,
                 length: int, seed: int = 0, latent_cache: LatentCache | None = None):
        self.sources, self.n_frames, self.latent_cache = list(sources), n_frames, latent_cache
        self.width, self.height, self.length, self.seed = width, height, length, seed
        self.epoch = 0
        self.eligible = []
        for source in self.sources:
            clips = [c for c in source.manifest.clips if c.length >= n_frames]
            if not clips:
                raise ValueError(f"{source.root}: no clip has {n_frames} frames "
                                 f"(longest: {max((c.length for c in source.manifest.clips), default=0)})")
            self.eligible.append(clips)
        weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        if (weights < 0).any() or weights.sum() <= 0:
            raise ValueError("source weights must be non-negative and not all zero")
        self.weights = weights / weights.sum()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    def choose(self, index: int) -> tuple[int, ClipRecord, int]:
        """(source index, clip, first frame) of sample `index`: a pure function of the seed."""
        rng = np.random.default_rng([self.seed, self.epoch, index])
        source = int(rng.choice(len(self.sources), p=self.weights))
        clip = self.eligible[source][int(rng.integers(len(self.eligible[source])))]
        start = int(rng.integers(clip.length - self.n_frames + 1))
        return source, clip, start

    def __getitem__(self, index: int) -> dict:
        """With a latent cache: `latents` [T, V, C, h, w] instead of `frames`."""
        source_index, clip, start = self.choose(index)
        item = {"clip_id": clip.clip_id, "start": start, "source": source_index}
        cache, source = self.latent_cache, self.sources[source_index]
        steps = clip.frames[start:start + self.n_frames]
        cached = stamp = None
        if cache:
            stamp = frames_stamp(source.root, steps)
            cached = cache.load(clip.clip_id, start, self.n_frames, len(steps[0]), stamp,
                                (self.width, self.height))
        if cached is not None:
            return {**item, "latents": cached}
        frames = np.stack([np.stack([crop_resize(source.read_frame(source.root, ref),
                                                 self.width, self.height) for ref in views])
                           for views in steps])
        frames = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).contiguous()
        if cache:
            return {**item, "latents": cache.store(clip.clip_id, start, frames, stamp)}
        return {**item, "frames": frames}


def make_loader(dataset: ClipDataset, batch_size: int, workers: int = 0,
                drop_last: bool = True) -> DataLoader:
    """Batches in sample order (the randomness lives in `ClipDataset.choose`). Workers are
    started for each epoch, so they see `ClipDataset.set_epoch` (persistent workers would keep
    their copy of the first epoch's dataset)."""
    if drop_last and len(dataset) < batch_size:
        raise ValueError(f"the dataset has {len(dataset)} samples, fewer than one batch of "
                         f"{batch_size}: with drop_last no batch would be made; raise its "
                         "length or lower the batch size")
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                      drop_last=drop_last, pin_memory=torch.cuda.is_available())
