"""Synthetic evaluation datasets for the ci and smoke scales (used by repro/jobs/evalsets.py).

Each protocol's dataset is written once with the synthetic writers of `maskgwm.data.synth`
into `<cache>/evalsynth/<dataset>-<hash of its spec>/`, in the dataset's real on-disk format, so
that the real readers (`maskgwm.data.registry.read_clips`) pick the clips exactly as they do on
real data. `write_synthetic(protocol, n_frames, cache, seed)` returns where to read it:
(root, split, version).

Sizes (assumed: only what the scale's clip count needs, in the protocol's frame size):
- opendv: 4 videos per Val video (the writer makes the last quarter Val), 1-2 Val videos;
- nuScenes: the devkit's split must exist whole, so the synthetic set is a whole mini split
  (`v1.0-mini`; assumed stand-in for val): `mini_val` (2 scenes) when that is enough, else
  `mini_train` (8 scenes), read with that split name;
  - nuscenes (vista_nuscenes): both mini_val scenes, each with 4 keyframes more than the clips
    it must give (a Vista clip starts at a keyframe with 4 more after it);
  - nuscenes_mview (drivewm_mview): n_clips / 6 scenes are needed; every scene has exactly
    `frames_per_clip` keyframes (one multi-view clip per scene);
- waymo (waymo_zeroshot): 2 or 4 v2 segments of whole 25-frame clips.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from evals.protocols import Protocol

MVIEW_CAMERAS = 6                         # nuScenes cameras per multi-view scene
NUSCENES_VERSION = "v1.0-mini"            # synthetic scenes carry real mini scene names
NUSCENES_SPLITS = ("mini_val", "mini_train")  # the first with enough scenes is written whole


def _write_once(root: Path, marker: str, write: Callable[[Path], object]) -> Path:
    """Write a dataset into `root` through a staging folder renamed into place (a concurrent
    writer that wins the race is used as it is)."""
    if (root / marker).exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        write(staging)
        try:
            os.rename(staging, root)
        except OSError:
            if not (root / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _folder(cache: Path, spec: dict) -> Path:
    from maskgwm.config import content_hash
    return cache / "evalsynth" / f"{spec['dataset']}-{content_hash(spec)}"


def _opendv(protocol: Protocol, n_frames: int, cache: Path, seed: int) -> tuple[Path, str, str]:
    from maskgwm.data.synth.opendv_writer import (END_DISCARD_S, START_DISCARD_S,
                                                  write_synthetic_opendv)
    n_val = 1 if protocol.n_clips <= 4 else 2
    per_video = math.ceil(protocol.n_clips / n_val)
    seconds = math.ceil(per_video * n_frames / 10) + START_DISCARD_S + END_DISCARD_S
    spec = {"dataset": "opendv", "videos": 4 * n_val, "seconds": seconds, "seed": seed,
            "width": protocol.width, "height": protocol.height}
    root = _write_once(_folder(cache, spec), "meta", lambda out: write_synthetic_opendv(
        out, n_videos=spec["videos"], seed=seed, width=spec["width"], height=spec["height"],
        seconds=float(seconds)))
    return root, "Val", "v1"


def _nuscenes(protocol: Protocol, n_frames: int, cache: Path, seed: int,
              mview: bool) -> tuple[Path, str, str]:
    from nuscenes.utils.splits import create_splits_scenes

    from maskgwm.data.synth.nuscenes_writer import write_synthetic_nuscenes
    if mview:   # n_frames keyframes at 2 Hz, one clip per scene
        n_scenes, per_scene = math.ceil(protocol.n_clips / MVIEW_CAMERAS), 1
    else:       # 25-frame chains of 12 Hz frames: a clip per keyframe with 4 more after it
        n_scenes, per_scene = 2, math.ceil(protocol.n_clips / 2)
    split = next((name for name in NUSCENES_SPLITS
                  if len(create_splits_scenes()[name]) >= n_scenes), None)
    if split is None:
        raise ValueError(f"{n_scenes} synthetic nuScenes scenes: more than the mini splits hold")
    scenes = sorted(create_splits_scenes()[split])
    keyframes = n_frames if mview else per_scene + math.ceil((n_frames - 1) / 6)
    spec = {"dataset": "nuscenes", "scenes": scenes, "seconds": keyframes / 2, "seed": seed,
            "width": protocol.width, "height": protocol.height, "version": NUSCENES_VERSION}
    root = _write_once(_folder(cache, spec), NUSCENES_VERSION,
                       lambda out: write_synthetic_nuscenes(
                           out, scenes=scenes, seed=seed, width=spec["width"],
                           height=spec["height"], seconds=spec["seconds"],
                           version=NUSCENES_VERSION))
    return root, split, NUSCENES_VERSION


def _waymo(protocol: Protocol, n_frames: int, cache: Path, seed: int) -> tuple[Path, str, str]:
    from maskgwm.data.synth.waymo_writer import FPS, write_synthetic_waymo
    n_segments = 2 if protocol.n_clips <= 4 else 4
    seconds = math.ceil(protocol.n_clips / n_segments) * n_frames / FPS
    spec = {"dataset": "waymo", "segments": n_segments, "seconds": seconds, "seed": seed,
            "width": protocol.width, "height": protocol.height}
    root = _write_once(_folder(cache, spec), "v2", lambda out: write_synthetic_waymo(
        out, n_segments=n_segments, seed=seed, width=spec["width"], height=spec["height"],
        seconds=seconds, versions=("v2",)))
    return root / "v2", "validation", "v2"


def write_synthetic(protocol: Protocol, dataset: str, n_frames: int, cache: Path,
                    seed: int) -> tuple[Path, str, str]:
    """Write (once) the synthetic `dataset` for `protocol`'s clip count and frame size and
    return (root, split, version) for `read_clips`."""
    cache = Path(cache)
    if dataset == "opendv":
        return _opendv(protocol, n_frames, cache, seed)
    if dataset in ("nuscenes", "nuscenes_mview"):
        return _nuscenes(protocol, n_frames, cache, seed, dataset == "nuscenes_mview")
    if dataset == "waymo":
        return _waymo(protocol, n_frames, cache, seed)
    raise ValueError(f"no synthetic writer for dataset '{dataset}'")
