"""Evaluation sets: the real clips a protocol scores at one scale, built once and shared.

`ensure_evalset(protocol, scale, workdir)` returns an `EvalSet`: the protocol adjusted for the
scale, the real video set (the reference, and the condition frames sampling starts from) and
the clip list with its hash. It is built once per (protocol, scale) under
`<workdir>/evalsets/<protocol>-<scale>/`, in a temporary folder that is renamed into place, so
concurrent jobs never see half of one (the loser of a race uses the winner's copy).

- ci / smoke: the built-in synthetic world, written with the synthetic dataset writers into
  `<workdir>/cache/evalsynth/` and read back through the real readers
  (`maskgwm.data.registry.read_clips`), so the same code path as real data picks the clips.
- lite / paper: the protocol's own clips from `REPRO_DATA_ROOT` (or `data_root`); a missing
  dataset folder is an error naming it.

Sizes per scale are the Scale record's `evalset` (maskgwm/config/scales.toml; assumed: this
suite's choices, not the paper's).

Multi-view sets (drivewm_mview) hold one clip per (scene, camera), `<scene clip id>/<CAM>`
(evals/multiview.py), and record their camera names in `evalset.json` (`EvalSet.views`), so
sampling generates the six views of a scene jointly and the evaluator scores each view as one
video (Drive-WM's 150 scenes x 6 views = 900 videos). Assumed: one clip per scene, its first
`frames_per_clip` keyframes (Drive-WM does not say which keyframes); `n_clips` counts videos,
so it is scenes x 6 (ci: 2 scenes, smoke: 3).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from evals.protocols import Protocol, get_protocol
from maskgwm.config import get_scale
from maskgwm.data.registry import DataRootError, dataset_root, get_dataset, read_clips

# protocol -> (dataset, split, clip length, condition frames)
EVALSET_SOURCES = {
    "vista_nuscenes": ("nuscenes", "val", 25, 1),
    "drivewm_mview": ("nuscenes_mview", "val", 8, 1),
    "waymo_zeroshot": ("waymo", "validation", 25, 1),
    "opendv_ablation": ("opendv", "Val", 25, 1),
    "opendv_long": ("opendv", "Val", 157, 3),
}

SYNTH_SEED = 7919            # the evaluation world differs from the training world (seed 0..)
SET_FILE = "evalset.json"


class EvalSetError(RuntimeError):
    """An evaluation set that cannot be built; the message says what is missing."""


@dataclass(frozen=True)
class EvalSet:
    protocol: Protocol          # adjusted for the scale
    scale: str
    root: Path                  # <workdir>/evalsets/<protocol>-<scale>
    real_dir: Path              # the real video set
    clip_list: Path
    clip_list_hash: str
    views: tuple[str, ...] | None = None    # multi-view sets: the cameras of every scene

    @property
    def frames(self) -> int:
        """Frames per clip (the long-horizon protocols roll out to this length)."""
        from evals.frames import frames_needed
        return frames_needed(self.protocol)


def scaled_protocol(name: str, scale: str) -> Protocol:
    """The protocol `name` as scored at `scale` (unchanged at lite and paper)."""
    protocol = get_protocol(name)
    sizes = get_scale(scale).evalset
    if sizes is None:
        return protocol
    changes: dict[str, Any] = {"n_clips": sizes.n_clips, "width": sizes.width,
                               "height": sizes.height, "bootstrap.n_boot": sizes.n_boot,
                               "bootstrap.blocks": sizes.blocks,
                               "kid.subset_size": sizes.kid_subset,
                               "fid.frames_per_clip": sizes.fid_frames,
                               "fvd.num_frames": min(sizes.fvd_frames,
                                                     protocol.frames_per_clip)}
    if get_dataset(protocol.dataset).multi_view:
        changes["n_clips"] = sizes.mview_scenes * len(mview_cameras())
    if protocol.long_horizon is not None:
        spec = protocol.long_horizon
        frames = spec.window + (sizes.long_rounds - 1) * (spec.window - spec.cond_frames)
        changes["long_horizon.horizon_s"] = frames / protocol.fps
    scaled = protocol.replace(**changes)
    scaled.validate()
    return scaled


def mview_cameras() -> tuple[str, ...]:
    """The cameras of a multi-view (nuScenes) scene, in the reader's order."""
    from maskgwm.data.nuscenes import CAMERAS
    return tuple(CAMERAS)


def evalset_dir(workdir: Path, protocol: str, scale: str) -> Path:
    return Path(workdir) / "evalsets" / f"{protocol}-{scale}"


def load_evalset(root: Path, protocol: Protocol, scale: str) -> EvalSet:
    record = json.loads((root / SET_FILE).read_text())
    if record["protocol_hash"] != protocol.hash:
        raise EvalSetError(f"{root} was built for another version of protocol {protocol.name} "
                           f"(hash {record['protocol_hash']}, now {protocol.hash}); delete it "
                           "and submit again")
    views = tuple(record["views"]) if record.get("views") else None
    return EvalSet(protocol, scale, root, root / "real", root / "clips.json",
                   record["clip_list_hash"], views)


def ensure_evalset(protocol_name: str, scale: str, workdir: Path,
                   data_root: Path | None = None, log: Callable[[str], Any] = print) -> EvalSet:
    """The evaluation set of (protocol, scale), built now unless it exists."""
    get_scale(scale)                     # ConfigError naming the known scales
    protocol = scaled_protocol(protocol_name, scale)
    root = evalset_dir(workdir, protocol.name, scale)
    if (root / SET_FILE).is_file():
        return load_evalset(root, protocol, scale)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        clips, dataroot = picked_clips(protocol, scale, workdir, data_root)
        n_videos = _write_set(staging, protocol, scale, clips, dataroot)
        try:
            os.rename(staging, root)
            log(f"evaluation set {protocol.name} ({scale}, {n_videos} clips) at {root}")
        except OSError:
            if not (root / SET_FILE).is_file():   # a concurrent job won the race: use its set
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_evalset(root, protocol, scale)


def _source(protocol: Protocol) -> tuple[str, str, int]:
    dataset, split, _, cond = EVALSET_SOURCES[protocol.name]
    if cond != protocol.cond_frames:
        raise EvalSetError(f"protocol {protocol.name}: {protocol.cond_frames} condition frames, "
                           f"the evaluation source says {cond}")
    from evals.frames import frames_needed
    return dataset, split, frames_needed(protocol)


def pick_clips(clips: list, protocol: Protocol) -> list:
    """`protocol.n_clips` clips: a seeded sample, kept in reader order (as `repro evalset`).
    Multi-view protocols pick scenes: the first clip of each scene, n_clips / 6 of them."""
    wanted = protocol.n_clips
    if get_dataset(protocol.dataset).multi_view:
        first: dict[str, Any] = {}
        for clip in clips:
            first.setdefault(clip.scene, clip)
        clips, wanted = list(first.values()), protocol.n_clips // len(mview_cameras())
    if len(clips) > wanted:
        keep = np.sort(np.random.default_rng(protocol.seed).choice(len(clips), wanted, False))
        clips = [clips[i] for i in keep]
    return clips


def video_count(clips: list, protocol: Protocol) -> int:
    """Videos the picked clips make (6 per multi-view clip)."""
    return len(clips) * (len(mview_cameras()) if get_dataset(protocol.dataset).multi_view else 1)


def picked_clips(protocol: Protocol, scale: str, workdir: Path,
                 data_root: Path | None = None) -> tuple[list, Path]:
    """The clips the evaluation set of (protocol, scale) is made of, and their data root:
    synthetic ones written under <workdir>/cache at the synthetic scales, else real ones under
    `data_root` (default REPRO_DATA_ROOT). The same clips in the same order every time."""
    if get_scale(scale).synthetic:
        return _synthetic_clips(protocol, scale, Path(workdir) / "cache")
    return _real_clips(protocol, data_root)


def _real_clips(protocol: Protocol, data_root: Path | None) -> tuple[list, Path]:
    dataset, split, n_frames = _source(protocol)
    data_root = data_root or (Path(os.environ["REPRO_DATA_ROOT"])
                              if os.environ.get("REPRO_DATA_ROOT") else None)
    try:
        root = dataset_root(dataset, data_root, f"protocol {protocol.name} ({split} split)")
    except DataRootError as err:
        raise EvalSetError(str(err)) from None
    clips = pick_clips(read_clips(dataset, root, split, n_frames,
                                  get_dataset(dataset).eval_version), protocol)
    videos = video_count(clips, protocol)
    if videos < protocol.n_clips:
        raise EvalSetError(f"{root}: {videos} videos of {n_frames} frames in {split}, "
                           f"protocol {protocol.name} needs {protocol.n_clips}")
    return clips, root


def _synthetic_clips(protocol: Protocol, scale: str, cache: Path) -> tuple[list, Path]:
    """Clips of a synthetic dataset written for this (protocol, scale) (repro/jobs/evalsynth.py),
    read back through the real reader."""
    from repro.jobs.evalsynth import write_synthetic
    dataset, _, n_frames = _source(protocol)
    root, split, version = write_synthetic(protocol, dataset, n_frames, cache, SYNTH_SEED)
    clips = pick_clips(read_clips(dataset, root, split, n_frames, version), protocol)
    if video_count(clips, protocol) < protocol.n_clips:
        raise EvalSetError(f"{root}: {video_count(clips, protocol)} synthetic videos, need "
                           f"{protocol.n_clips}")
    return clips, root


def _read_frames(root: Path, clip, width: int, height: int, view: int = 0) -> np.ndarray:
    """Frames of one view of a clip record, centre-cropped and resized to width x height."""
    from maskgwm.data.loader import crop_resize, read_image_file
    read = read_image_file
    if clip.dataset == "waymo":
        from maskgwm.data.waymo import load_waymo_frame
        read = load_waymo_frame
    return np.stack([crop_resize(read(root, row[view]), width, height) for row in clip.frames])


def _videos(protocol: Protocol, clip) -> list[tuple[str, str, int]]:
    """(clip id, source clip, view index) of the videos a clip record makes: one, or one per
    camera `<clip id>/<CAM>` for multi-view protocols (evals/multiview.py)."""
    if not get_dataset(protocol.dataset).multi_view:
        return [(clip.clip_id, clip.source or clip.clip_id, 0)]
    from evals.multiview import view_clip_id
    if tuple(clip.views) != mview_cameras():
        raise EvalSetError(f"clip {clip.clip_id}: views {clip.views}, expected "
                           f"{list(mview_cameras())}")
    return [(view_clip_id(clip.clip_id, view), clip.clip_id, index)
            for index, view in enumerate(clip.views)]


def _write_set(folder: Path, protocol: Protocol, scale: str, clips: list, dataroot: Path) -> int:
    """Write the real video set, its clip list and evalset.json; returns the video count."""
    from evals.cliplist import write_clip_list
    from evals.videoset import VideoSetWriter
    entries = []
    with VideoSetWriter(folder / "real", flush_every=16) as writer:
        for clip in clips:
            for clip_id, source, view in _videos(protocol, clip):
                frames = _read_frames(dataroot, clip, protocol.width, protocol.height, view)
                writer.add(clip_id, frames, clip.fps, source, protocol.cond_frames)
                entries.append({"clip_id": clip_id, "source_clip": source,
                                "frames": len(frames), "cond_frames": protocol.cond_frames,
                                "fps": clip.fps})
    digest = write_clip_list(folder / "clips.json", protocol.name, entries)
    views = list(mview_cameras()) if get_dataset(protocol.dataset).multi_view else None
    (folder / SET_FILE).write_text(json.dumps(
        {"protocol": protocol.name, "scale": scale, "protocol_hash": protocol.hash,
         "protocol_spec": protocol.to_dict(), "clip_list_hash": digest,
         "n_clips": len(entries), "data_root": str(dataroot), "views": views},
        indent=2, sort_keys=True) + "\n")
    return len(entries)
