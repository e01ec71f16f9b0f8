"""Vista's output PNGs -> our video set, under our clip ids.

Vista writes `<save>/virtual/images/NUSCENES_{index:06d}_{frame:04d}.png` (index = position in
the staging manifest; checked against sample_utils.perform_save_locally at VISTA_COMMIT). A
clip is ingested only when all its frames are there and readable; it is centre-cropped and
LANCZOS-resized to the protocol's frame size (as the real frames were), cut to the real clip's
length, and written atomically with VideoSetWriter, so nothing is half-written and a rerun
skips clips already ingested. Frame 0 stays as Vista writes it (its VAE reconstruction of the
condition frame). Assumed: downsizing Vista's 1024x576 frames to the protocol's size with the
same centre crop + LANCZOS as the real frames (the protocols compare frames at one size).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from repro.vista.checkout import VistaError

VIRTUAL = Path("virtual") / "images"


def frame_file(out: Path, index: int, frame: int) -> Path:
    return Path(out) / VIRTUAL / f"NUSCENES_{index:06d}_{frame:04d}.png"


@dataclass
class Ingested:
    added: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    incomplete: dict[str, list[str]] = field(default_factory=dict)   # clip id -> missing files

    def describe(self, limit: int = 5) -> str:
        lines = [f"{clip}: missing {', '.join(files[:3])}" + (" ..." if len(files) > 3 else "")
                 for clip, files in list(self.incomplete.items())[:limit]]
        more = len(self.incomplete) - limit
        return "\n  ".join(lines + ([f"... and {more} more clips"] if more > 0 else []))


def _read_clip(out: Path, index: int, frames: int) -> tuple[list[np.ndarray], list[str]]:
    images, missing = [], []
    for t in range(frames):
        path = frame_file(out, index, t)
        try:
            with Image.open(path) as image:
                images.append(np.asarray(image.convert("RGB")))
        except FileNotFoundError:
            missing.append(str(path))
        except (UnidentifiedImageError, OSError, SyntaxError):
            missing.append(f"{path} (unreadable)")
    return images, missing


def ingest(out: Path, clip_ids: list[str], real, target: Path, vista_frames: int,
           size: tuple[int, int]) -> Ingested:
    """Ingest the complete clips of one Vista output folder `out` (manifest index i is
    `clip_ids[i]`) into the video set `target`; `real` is our real VideoSet (lengths, fps,
    condition frames). Incomplete clips are reported, not written."""
    from evals.videoset import VideoSetWriter
    from maskgwm.data.loader import crop_resize
    report = Ingested()
    with VideoSetWriter(target, flush_every=1) as writer:
        for index, clip_id in enumerate(clip_ids):
            if clip_id in writer:
                report.skipped.append(clip_id)
                continue
            entry = real.clip(clip_id)
            if entry.frames > vista_frames:
                raise VistaError(f"clip {clip_id}: {entry.frames} frames needed, Vista writes "
                                 f"{vista_frames} per clip (raise --n_rounds)")
            images, missing = _read_clip(out, index, entry.frames)
            if missing:
                report.incomplete[clip_id] = missing
                continue
            frames = np.stack([crop_resize(image, *size) for image in images])
            writer.add(clip_id, frames, entry.fps, entry.source_clip, entry.cond_frames)
            report.added.append(clip_id)
    return report


def check_complete(report: Ingested, out: Path) -> None:
    """VistaError naming every incomplete clip and its missing frame files."""
    if report.incomplete:
        raise VistaError(f"Vista's output {out} is incomplete for {len(report.incomplete)} "
                         f"clips (they were not ingested; rerun the shard to redo them):\n  "
                         + report.describe())
