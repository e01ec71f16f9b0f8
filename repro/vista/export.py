"""Our evaluation clips as a Vista input bundle: Vista's nuScenes manifest format, action-free.

`export_bundle(evalset, out, ...)` writes a folder laid out as Vista's working directory
expects (paths relative to it, docs/DESIGN.md section 6):

    <out>/annos/nuScenes_val.json   [{frames: [25 paths relative to data/nuscenes], traj: [],
                                      cmd, speed: [], angle: [], z: -1, goal: [-1, -1]}, ...]
    <out>/data/nuscenes/<clip>/     frame files: the condition frames as PNGs at Vista's
                                    resolution, read from the source data; the other frames
                                    symlinks to our real set's frames
    <out>/index_map.json            {"clip_ids": [...]}: manifest index -> our clip id
    <out>/export.json               protocol, scale, resolution, clip-list hash

Waymo and OpenDV clips go in the same nuScenes format (`maskgwm.data.nuscenes.vista_entry`)
with empty actions: action-free `sample.py` (`--action free`) reads only `frames`, but asserts
that all `--n_frames` of them exist and loads them. Assumed: the frames after the condition
frames only feed Vista's "real" output (its generation uses the condition frames alone), so
they are our real set's frames at the protocol's resolution; `cmd` is the writer's default.
The bundle is built once, by the first shard (a lock file; the others wait), in a temporary
folder renamed into place; condition frames are read and written clip by clip (streamed).

    repro vista export PROTOCOL --scale S --out DIR
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from evals.atomic import atomic_write_json


ANNO, DATA = "annos/nuScenes_val.json", "data/nuscenes"
INDEX_MAP, EXPORT_FILE = "index_map.json", "export.json"
VISTA_WINDOW = 25                    # sample.py's --n_frames default: frames per round
VISTA_SIZE = (1024, 576)             # (width, height): sample.py's --width/--height defaults


def vista_size(scale: str, protocol) -> tuple[int, int]:
    """(width, height) Vista generates at: its own 576x1024 at lite/paper; the evaluation
    set's (scaled protocol's) size at ci/smoke (fast CPU tests with the test double)."""
    from maskgwm.config import get_scale
    if get_scale(scale).synthetic:
        return protocol.width, protocol.height
    return VISTA_SIZE


def frames_written(rounds: int, n_frames: int = VISTA_WINDOW) -> int:
    """Frames sample.py writes per clip with --n_rounds `rounds`: each round after the first
    continues from the last 3 frames of the one before."""
    return rounds * (n_frames - 3) + 3


def rounds_for(frames: int, n_frames: int = VISTA_WINDOW) -> int:
    """Vista's --n_rounds k so that its frames_written(k) frames cover `frames`."""
    k = 1
    while frames_written(k, n_frames) < frames:
        k += 1
    return k


def source_clips(evalset):
    """(clip id -> clip record, data root, frame reader): the source clips of the evaluation
    set, picked again through the readers that built it (same clips, same order)."""
    from maskgwm.data.loader import read_image_file

    from maskgwm.config import get_scale

    from repro.jobs.evalsets import picked_clips
    data_root = None
    if not get_scale(evalset.scale).synthetic:
        record = json.loads((evalset.root / "evalset.json").read_text())
        data_root = Path(record["data_root"]).parent
    clips, root = picked_clips(evalset.protocol, evalset.scale, evalset.root.parent.parent,
                               data_root)
    read = read_image_file
    if evalset.protocol.dataset == "waymo":
        from maskgwm.data.waymo import load_waymo_frame
        read = load_waymo_frame
    return {clip.clip_id: clip for clip in clips}, root, read


def cond_frames(clip, root: Path, read, n_conds: int, size: tuple[int, int]) -> list[np.ndarray]:
    """A source clip's first `n_conds` frames at `size`, prepared as Vista's own load_img
    would from the source file (centre crop sized with int(), LANCZOS)."""
    from maskgwm.data.loader import crop_resize
    return [crop_resize(read(root, row[0]), *size, rule="vista") for row in clip.frames[:n_conds]]


def manifest_entry(frame_paths: list[str]) -> dict[str, Any]:
    """One nuScenes_val.json entry with empty actions (the nuScenes writer's format)."""
    from maskgwm.data.manifest import ClipRecord
    from maskgwm.data.nuscenes import vista_entry
    record = ClipRecord(clip_id="export", dataset="nuscenes", split="val", scene="",
                        views=["CAM_FRONT"], frames=[[p] for p in frame_paths],
                        timestamps=[0] * len(frame_paths), fps=10.0)
    return vista_entry(record)


def export_bundle(evalset, out: str | Path, n_conds: int, size: tuple[int, int],
                  n_frames: int = VISTA_WINDOW, log=print) -> Path:
    """Write the bundle (see the module doc) unless it is there; return its folder."""
    from evals.videoset import VideoSet, storage_name
    out = Path(out)
    if (out / EXPORT_FILE).is_file():
        return _checked(out, evalset, n_conds, size, n_frames)
    if evalset.views:
        raise ValueError(f"protocol {evalset.protocol.name} is multi-view: Vista generates "
                         "single front-camera clips only")
    real = VideoSet.open(evalset.real_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(out.with_name(out.name + ".lock"))
    if not lock.acquire(lambda: (out / EXPORT_FILE).is_file(), log):
        return out                                        # another shard built it
    sources, root, read = source_clips(evalset)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        entries, ids = [], []
        for entry in real.clips:
            if entry.frames < n_frames:
                raise ValueError(f"clip {entry.clip_id}: {entry.frames} real frames, Vista "
                                 f"loads {n_frames}")
            lock.touch()
            if entry.clip_id not in sources:
                raise ValueError(f"clip {entry.clip_id} of {evalset.real_dir} is not among the "
                                 "source clips: rebuild the evaluation set")
            name = storage_name(entry.clip_id)
            folder = staging / DATA / name
            folder.mkdir(parents=True)
            paths = []
            conds = cond_frames(sources[entry.clip_id], root, read, n_conds, size)
            for t in range(n_frames):
                file = folder / f"{t:06d}.png"
                if t < n_conds:
                    Image.fromarray(conds[t]).save(file)
                else:
                    os.symlink((real.root / entry.path / f"{t:06d}.png").resolve(), file)
                paths.append(f"{name}/{t:06d}.png")
            entries.append(manifest_entry(paths))
            ids.append(entry.clip_id)
        atomic_write_json(staging / ANNO, entries)
        atomic_write_json(staging / INDEX_MAP, {"clip_ids": ids})
        atomic_write_json(staging / EXPORT_FILE, {
            "protocol": evalset.protocol.name, "protocol_hash": evalset.protocol.hash,
            "scale": evalset.scale, "clip_list_hash": evalset.clip_list_hash,
            "clips": len(ids), "n_conds": n_conds, "n_frames": n_frames,
            "width": size[0], "height": size[1], "actions": "none (action-free)"})
        try:
            os.rename(staging, out)
            log(f"Vista input bundle: {len(ids)} clips at {out}")
        except OSError:
            if not (out / EXPORT_FILE).is_file():   # a concurrent shard won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        lock.release()
    return _checked(out, evalset, n_conds, size, n_frames)


def _checked(out: Path, evalset, n_conds: int, size: tuple[int, int], n_frames: int) -> Path:
    """A bundle made for these clips and settings, or an error saying to delete it."""
    record = json.loads((out / EXPORT_FILE).read_text())
    wanted = {"protocol_hash": evalset.protocol.hash, "clip_list_hash": evalset.clip_list_hash,
              "n_conds": n_conds, "width": size[0], "height": size[1], "n_frames": n_frames}
    changed = sorted(k for k, v in wanted.items() if record.get(k) != v)
    if changed:
        raise ValueError(f"{out} was exported with other {', '.join(changed)}; delete it and "
                         "run again")
    return out


class _Lock:
    """One shard builds the bundle; the others wait for it. The builder touches the lock as
    it goes; a lock untouched for STALE_S (its builder died) is taken over."""
    STALE_S, POLL_S = 900.0, 5.0

    def __init__(self, path: Path):
        self.path, self.held = path, False

    def acquire(self, done, log) -> bool:
        """True: we build; False: `done()` became true while waiting."""
        import time
        said = False
        while not done():
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                self.held = True
                return True
            except FileExistsError:
                try:
                    if time.time() - self.path.stat().st_mtime > self.STALE_S:
                        self.path.unlink(missing_ok=True)     # its builder died
                        continue
                except FileNotFoundError:
                    continue
            if not said:
                log(f"waiting for another shard to export the Vista bundle ({self.path})")
                said = True
            time.sleep(self.POLL_S)
        return False

    def touch(self) -> None:
        if self.held:
            self.path.touch()

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False
