"""Training data: synthetic dataset cache, real dataset roots, clip sources, latents, batches.

Sample `index` (the global sample index, step * global_batch + rank * local_batch + i) is a
pure function of (seed, index): its frame count comes from the step (`frames_for_step`, seeded
by (seed, step), uniform over data.frames, assumed), its dataset, clip and window from
`ClipDataset.choose` (seeded by (seed, 0, index)). So batches do not depend on the number of
processes or workers, and resuming at step s only means starting the sampler at s.

Latents: with the latent cache (CPU runs), each clip's frames are encoded once by the VAE in a
DataLoader worker and cached as float32 `<cache>/latents/<encoder id>/<clip id>/0-<L>.npy`;
a window is a slice of that. Without it (CUDA runs), workers return uint8 frames and the
trainer encodes them on the GPU.

Actions (stage 2 and 3, `model.actions`): each clip's 19 action values
(`maskgwm.model.actions.action_values`: Vista's command, trajectory, speed, angle and goal; NaN
where the clip lacks a field), the same for every frame. Clips without any (most of OpenDV-2K,
the multi-view clips) are all NaN, and the model gives them the dropped-action path
(`model.missing_actions`).
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from maskgwm.config.schema import DataConfig, content_hash
from maskgwm.data.latents import LatentCache, frames_stamp, vae_encoder_id
from maskgwm.data.loader import ClipDataset, Source, crop_resize
from maskgwm.data.manifest import ClipManifest, ClipRecord
from maskgwm.data.registry import (DATASETS, DataRootError, dataset_root, get_dataset,
                                   read_clips)
from maskgwm.model.actions import action_values

TRAIN_DATASETS = tuple(d.name for d in DATASETS.values() if d.train_split is not None)
SYNTH_VERSION = 1
SYNTH_NUSCENES_SCENES = ("scene-0061", "scene-0553", "scene-0655")   # nuScenes mini_train
class DataSetupError(RuntimeError):
    """Training data that cannot be found or built; the message says what to put where."""


def frames_for_step(frames: list[int], seed: int, step: int) -> int:
    """The clip length of step `step`: uniform over `frames`, seeded by (seed, step)."""
    if len(frames) == 1:
        return int(frames[0])
    rng = np.random.default_rng([seed, step, 0x66726d])   # tag: "frm"
    return int(frames[int(rng.integers(len(frames)))])


# ---------------------------------------------------------------------- synthetic data
def synthetic_spec(name: str, data: DataConfig, seed: int) -> dict:
    """The writer parameters of the synthetic dataset behind `name` (nuscenes_mview reads
    the nuscenes folder)."""
    longest = max(data.frames)
    if name == "opendv":
        return {"dataset": "opendv", "n_videos": 4, "seed": seed, "width": data.width,
                "height": data.height, "seconds": float(max(6, math.ceil(longest / 10) + 3)),
                "version": SYNTH_VERSION}
    seconds = max(8, math.ceil(longest / 12) + 4, math.ceil(longest / 2) + 2)
    return {"dataset": "nuscenes", "scenes": list(SYNTH_NUSCENES_SCENES), "seed": seed,
            "width": data.width, "height": data.height, "seconds": float(seconds),
            "version": SYNTH_VERSION}


def ensure_synthetic(name: str, data: DataConfig, seed: int, cache_root: Path,
                     log: Callable[[str], None] = print) -> Path:
    """The synthetic dataset's folder under `cache_root/synthetic`, written once: into a
    temporary folder, then renamed, so concurrent or interrupted runs never see half of one."""
    spec = synthetic_spec(name, data, seed)
    target = Path(cache_root) / "synthetic" / f"{spec['dataset']}-{content_hash(spec)}"
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        if spec["dataset"] == "opendv":
            from maskgwm.data.synth.opendv_writer import write_synthetic_opendv
            write_synthetic_opendv(staging, n_videos=spec["n_videos"], seed=seed,
                                   width=spec["width"], height=spec["height"],
                                   seconds=spec["seconds"])
        else:
            from maskgwm.data.synth.nuscenes_writer import write_synthetic_nuscenes
            write_synthetic_nuscenes(staging, scenes=spec["scenes"], seed=seed,
                                     width=spec["width"], height=spec["height"],
                                     seconds=spec["seconds"])
        try:
            os.rename(staging, target)
            log(f"synthetic {spec['dataset']} written to {target}")
        except OSError:
            if not target.is_dir():     # a concurrent run won the race: use its copy
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ---------------------------------------------------------------------- sources
def real_root(name: str, data_root: Path | None) -> Path:
    try:
        return dataset_root(name, data_root, "data.source = 'real'")
    except DataRootError as err:
        raise DataSetupError(f"{err}; or train with data.source = 'synthetic'") from None


def build_sources(data: DataConfig, seed: int, data_root: Path | None, cache_root: Path,
                  log: Callable[[str], None] = print) -> list[Source]:
    """One Source per dataset of data.mix with a positive weight, through the real readers."""
    unknown = sorted(set(data.mix) - set(TRAIN_DATASETS))
    if unknown:
        raise DataSetupError(f"data.mix names unknown datasets {unknown} (known: "
                             f"{', '.join(TRAIN_DATASETS)})")
    sources = []
    for name, weight in data.mix.items():
        if weight <= 0:
            continue
        longest = max(data.frames)
        if data.source == "synthetic":
            root = ensure_synthetic(name, data, seed, cache_root, log)
            split = "Train" if name == "opendv" else "mini_train"
            version = "v1" if name == "opendv" else "v1.0-mini"
        else:
            root = real_root(name, data_root)
            split, version = get_dataset(name).train_split, get_dataset(name).train_version
        if data.source == "synthetic" and name != "opendv":   # only the scenes written
            clips = synthetic_nuscenes_clips(name, root, longest)
        else:
            clips = real_clips(name, root, split, longest, version, cache_root, log)
        views = {len(c.views) for c in clips}
        if clips and views != {data.views}:
            raise DataSetupError(f"{name} at {root}: clips have {sorted(views)} views, the "
                                 f"config asks for data.views = {data.views}")
        if not clips:
            raise DataSetupError(f"{name} at {root} ({split}): no clip of {longest} frames")
        manifest = ClipManifest(name, str(root), clips)
        sources.append(Source(manifest, root, float(weight)))
    if not sources:
        raise DataSetupError("data.mix has no dataset with a positive weight")
    return sources


def real_clips(name: str, root: Path, split: str, n_frames: int, version: str,
               cache_root: Path, log: Callable[[str], None]) -> list[ClipRecord]:
    """The reader's clips, scanned once and kept as a manifest under
    `<cache>/manifests/` (keyed by dataset, root, split, frames and version): scanning the
    full OpenDV-2K tree on every start would take long. Delete the file after the data
    changes."""
    key = content_hash([name, str(Path(root).resolve()), split, n_frames, version])
    path = Path(cache_root) / "manifests" / f"{name}-{split}-{n_frames}-{key}.json"
    if path.is_file():
        return ClipManifest.load(path).clips
    clips = read_clips(name, root, split, n_frames, version)
    ClipManifest(name, str(root), clips).save(path)
    log(f"{len(clips)} clips of {name} ({root}, {split}) listed in {path}")
    return clips


def synthetic_nuscenes_clips(name: str, root: Path, n_frames: int) -> list[ClipRecord]:
    """The synthetic nuScenes scenes through the real readers (single- or multi-view)."""
    from maskgwm.data.nuscenes import mview_clips, open_nuscenes, vista_clips
    nusc = open_nuscenes(root, "v1.0-mini")
    reader = vista_clips if name == "nuscenes" else mview_clips
    return reader(nusc, list(SYNTH_NUSCENES_SCENES), n_frames=n_frames, split="mini_train")


def read_window(source: Source, clip: ClipRecord, start: int, n_frames: int, width: int,
                height: int) -> torch.Tensor:
    """uint8 frames [T, V, 3, H, W] of clip[start:start + n_frames]."""
    steps = clip.frames[start:start + n_frames]
    frames = np.stack([np.stack([crop_resize(source.read_frame(source.root, ref), width, height)
                                 for ref in views]) for views in steps])
    return torch.from_numpy(frames).permute(0, 1, 4, 2, 3).contiguous()


# ---------------------------------------------------------------------- dataset and batches
class TrainingSamples(Dataset):
    """Item `index` (a global sample index): {"index", "latents" [T, V, C, h, w] or "frames"
    [T, V, 3, H, W] uint8, "actions" [19] (NaN where missing)}."""

    def __init__(self, sources: list[Source], data: DataConfig, seed: int, global_batch: int,
                 steps: int, latent_cache: LatentCache | None = None):
        self.frames, self.seed, self.global_batch = list(data.frames), seed, global_batch
        self.width, self.height, self.cache = data.width, data.height, latent_cache
        self.datasets = {t: ClipDataset(sources, t, data.width, data.height,
                                        steps * global_batch, seed) for t in set(self.frames)}

    def __len__(self) -> int:
        return next(iter(self.datasets.values())).length

    def frames_at(self, step: int) -> int:
        return frames_for_step(self.frames, self.seed, step)

    def clip_of(self, index: int) -> tuple[Source, ClipRecord, int, int]:
        n_frames = self.frames_at(index // self.global_batch)
        dataset = self.datasets[n_frames]
        source_index, clip, start = dataset.choose(index)
        return dataset.sources[source_index], clip, start, n_frames

    def __getitem__(self, index: int) -> dict:
        source, clip, start, n_frames = self.clip_of(index)
        item = {"index": index, "actions": torch.tensor(action_values(clip.actions))}
        if self.cache is None:
            return {**item, "frames": read_window(source, clip, start, n_frames, self.width,
                                                  self.height)}
        stamp = frames_stamp(source.root, clip.frames)
        latents = self.cache.load(clip.clip_id, 0, clip.length, len(clip.frames[0]), stamp,
                                  (self.width, self.height))
        if latents is None:
            frames = read_window(source, clip, 0, clip.length, self.width, self.height)
            latents = self.cache.store(clip.clip_id, 0, frames, stamp)
        return {**item, "latents": latents[start:start + n_frames].clone()}


class StepBatches(Sampler):
    """This rank's sample indices for steps start..steps-1: s * G + rank * L + i."""

    def __init__(self, start_step: int, steps: int, global_batch: int, rank: int, local: int):
        self.start, self.steps, self.global_batch = start_step, steps, global_batch
        self.rank, self.local = rank, local

    def __iter__(self):
        for step in range(self.start, self.steps):
            base = step * self.global_batch + self.rank * self.local
            yield list(range(base, base + self.local))

    def __len__(self) -> int:
        return max(0, self.steps - self.start)


def collate(items: list[dict]) -> dict:
    batch = {"index": torch.tensor([item["index"] for item in items]),
             "actions": torch.stack([item["actions"] for item in items])}
    for key in ("latents", "frames"):
        if key in items[0]:
            batch[key] = torch.stack([item[key] for item in items])
    return batch


def make_batches(samples: TrainingSamples, start_step: int, steps: int, rank: int, local: int,
                 workers: int, pin_memory: bool = False) -> DataLoader:
    sampler = StepBatches(start_step, steps, samples.global_batch, rank, local)
    return DataLoader(samples, batch_sampler=sampler, num_workers=workers, collate_fn=collate,
                      pin_memory=pin_memory, prefetch_factor=4 if workers else None)


def make_latent_cache(vae, data: DataConfig, sources: list[Source], cache_root: Path,
                      device: torch.device, wanted: bool,
                      log: Callable[[str], None]) -> LatentCache | None:
    """The latent cache of the CPU path (posterior means), or None: not wanted, on CUDA (frames
    are encoded on the GPU every step), or with data.vae_latent = "sample" (a fresh posterior
    sample per step cannot be cached)."""
    if not wanted:
        return None
    if device.type != "cpu":
        log("note: the latent cache is used on the CPU path only; on CUDA frames are encoded "
            "by the VAE on the GPU every step")
        return None
    if data.vae_latent != "mean":
        log("note: data.vae_latent = 'sample': frames are encoded every step (the latent "
            "cache holds posterior means only)")
        return None
    roots = sorted(str(s.root) for s in sources)
    encoder = vae_encoder_id(vae.vae, vae.scaling, vae.shift,
                             f"{data.width}x{data.height}|{roots}")
    return LatentCache(cache_root / "latents", encoder, vae.encode, dtype="float32")


def posterior_generator(seed: int, index: int) -> torch.Generator:
    """The CPU generator of sample `index`'s VAE posterior noise (data.vae_latent = "sample")."""
    word = np.random.SeedSequence([seed, index, 0x766165]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(word))


@dataclass
class BatchLatents:
    """Turns a collated batch into model inputs on `device`: cached latents as they are, or
    frames encoded by the VAE to the posterior mean, or with `sample_posterior` to a posterior
    sample whose noise is seeded by (seed, sample index), so it does not depend on batching."""
    vae: object | None                   # SD3VAE for batches of frames
    device: torch.device
    sample_posterior: bool = False
    seed: int = 0

    def __call__(self, batch: dict) -> torch.Tensor:
        """z0 [B, T, V, C, h, w] float32 on the device."""
        if "latents" in batch:
            return batch["latents"].to(self.device, non_blocking=True).float()
        frames = batch["frames"]
        b, t, v = frames.shape[:3]
        mean, std = self.vae.encode_posterior(
            frames.reshape(b * t * v, *frames.shape[3:]).to(self.device),
            with_std=self.sample_posterior)
        latents = mean.reshape(b, t, v, *mean.shape[1:]).to(self.device).float()
        if not self.sample_posterior:
            return latents
        noise = torch.stack([torch.randn(latents.shape[1:], generator=posterior_generator(
            self.seed, int(index))) for index in batch["index"]]).to(self.device)
        return latents + std.reshape(latents.shape).to(self.device).float() * noise
