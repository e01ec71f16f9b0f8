"""A small synthetic OpenDV-2K tree in the official layout (see `maskgwm.data.opendv`).

Frames come from the synthetic driving world (`maskgwm.data.synth.world`). By default the
frames are written as DriveAGI's extractor writes them (discarded seconds already dropped);
`discard_applied=False` writes the whole video instead, for `discard="apply"`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from ..opendv import FPS, META_PATH, frame_name, video_folder

YOUTUBERS = ("Driving Channel", "city_walker", "NightRider")
START_DISCARD_S = 1
END_DISCARD_S = 1
LANGUAGE_PATH = "language/10hz_YouTube_synthetic.json"


def drive_frames(seed: int, n_frames: int, fps: float, width: int, height: int) -> np.ndarray:
    """uint8 [T, H, W, 3] frames of one simulated drive."""
    from .world import render_frames, simulate_drive
    states = simulate_drive(seed, n_frames, fps)
    return render_frames(seed, states, width, height)


def write_synthetic_opendv(out: str | Path, n_videos: int = 4, seed: int = 0, width: int = 160,
                           height: int = 90, seconds: float = 6.0,
                           discard_applied: bool = True) -> dict:
    """Write `n_videos` videos of `seconds` each (the last quarter, at least one, are Val).

    Returns {root, meta, language, videos: [{videoid, youtuber, split, folder, frames,
    first_video_frame, start_discard, end_discard, length}]}.
    """
    root = Path(out)
    length = int(seconds)
    if length - START_DISCARD_S - END_DISCARD_S <= 0:
        raise ValueError(f"seconds={seconds} leaves no frames after the discards")
    n_val = max(1, n_videos // 4) if n_videos > 1 else 0
    entries, videos, annotations = [], [], []
    for index in range(n_videos):
        meta = {"videoid": f"vid{seed:03d}{index:03d}", "youtuber": YOUTUBERS[index % 3],
                "split": "Val" if index >= n_videos - n_val else "Train",
                "subset": "synthetic", "start_discard": START_DISCARD_S,
                "end_discard": END_DISCARD_S, "length": length}
        entries.append(meta)
        total = int(FPS * length)
        frames = drive_frames(seed * 1000 + index, total, FPS, width, height)
        first = START_DISCARD_S * int(FPS) if discard_applied else 0
        last = total - END_DISCARD_S * int(FPS) if discard_applied else total
        folder = root / video_folder(meta)
        folder.mkdir(parents=True, exist_ok=True)
        for disk_index, frame in enumerate(frames[first:last]):
            Image.fromarray(frame).save(folder / frame_name(disk_index), quality=90)
        videos.append({**meta, "folder": video_folder(meta), "frames": last - first,
                       "first_video_frame": first})
        # annotations index the official extraction's frames, whatever is on disk
        n_extracted = total - (START_DISCARD_S + END_DISCARD_S) * int(FPS)
        annotations.append({"cmd": index % 14, "blip": f"a synthetic road, video {index}",
                            "folder": video_folder(meta), "first_frame": frame_name(0),
                            "last_frame": frame_name(n_extracted // 2 - 1)})
    (root / META_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / META_PATH).write_text(json.dumps(entries, indent=2))
    (root / LANGUAGE_PATH).parent.mkdir(parents=True, exist_ok=True)
    (root / LANGUAGE_PATH).write_text(json.dumps(annotations, indent=2))
    return {"root": str(root), "meta": str(root / META_PATH),
            "language": str(root / LANGUAGE_PATH), "videos": videos}
