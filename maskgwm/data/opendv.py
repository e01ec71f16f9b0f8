"""OpenDV-2K (OpenDV-YouTube) reader: extracted 10 Hz JPEG frames -> clip records.

Layout (DriveAGI `opendv/`: `meta_preprocess.py`, `video2img.py`, `frame_extraction.py`):
- `<root>/meta/OpenDV-YouTube.json`: a list of {videoid, youtuber, split ("Train"/"Val"),
  subset, start_discard, end_discard, length, ...}. `start_discard`, `end_discard` and `length`
  are in seconds (the sheet's columns are "discarded length at the beginning (second)" and a
  HH:MM:SS duration).
- frames: `<root>/full_images/<youtuber>/<videoid>/%09d.jpg` for Train and
  `<root>/val_images/...` for Val, where the folder name is the youtuber with spaces replaced
  by underscores. The official extractor already drops the discarded seconds: frame 0 is at
  `start_discard` s of the video and it writes int(10 * (length - start - end)) frames.
  `discard="extracted"` (default) reads that layout; `discard="apply"` is for frames extracted
  from the whole video, and drops the first and last discard lengths here.
- language annotations (optional): lists of {cmd, blip, folder, first_frame, last_frame}.

Clips are `n_frames` consecutive frames every `stride` frames (default: non-overlapping);
a video of L usable frames gives floor((L - n_frames) / stride) + 1 clips. Timestamps are the
frame's time in the source video, in microseconds. OpenDV has no actions (`actions=None`).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from .manifest import Actions, ClipRecord, ManifestError

FPS = 10.0
META_PATH = "meta/OpenDV-YouTube.json"
IMAGE_DIRS = {"train": "full_images", "val": "val_images"}
FRAME_NAME = re.compile(r"^(\d+)\.jpg$")
LENGTH_SLACK_S = 1.0        # the sheet's duration is rounded to seconds
SECONDS_KEYS = ("start_discard", "end_discard", "length")
# OpenDV's 14 command classes -> Vista's cmd (0 right, 1 left, 2 stop, 3 straight); assumed.
OPENDV_TO_VISTA_CMD = {0: 3, 1: 3, 2: 1, 3: 0, 12: 2}


class OpenDVError(ManifestError):
    """Malformed or incomplete OpenDV data; the message names the file."""


@dataclass
class OpenDVScan:
    clips: list[ClipRecord]
    videos: int = 0
    skipped: dict[str, str] = field(default_factory=dict)   # video folder -> reason


def youtuber_folder(youtuber: str) -> str:
    return youtuber.replace(" ", "_")


def video_folder(meta: dict) -> str:
    """Relative folder of a video's frames, from its meta entry."""
    split = str(meta["split"]).lower()
    if split not in IMAGE_DIRS:
        raise OpenDVError(f"video {meta.get('videoid')}: split {meta['split']!r} is not "
                          "Train or Val")
    return f"{IMAGE_DIRS[split]}/{youtuber_folder(meta['youtuber'])}/{meta['videoid']}"


def load_meta(root: str | Path) -> list[dict]:
    path = Path(root) / META_PATH
    if not path.is_file():
        raise OpenDVError(f"{path}: OpenDV meta file missing (make it with DriveAGI's "
                          "scripts/meta_preprocess.py)")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise OpenDVError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise OpenDVError(f"{path}: a {type(entries).__name__}, not a list of videos")
    required = ("videoid", "youtuber", "split", *SECONDS_KEYS)
    for index, entry in enumerate(entries):
        missing = [key for key in required if key not in entry] if isinstance(entry, dict) \
            else list(required)
        if missing:
            raise OpenDVError(f"{path}: entry {index} lacks {missing}")
        for key in SECONDS_KEYS:
            try:
                float(entry[key])
            except (TypeError, ValueError):
                raise OpenDVError(f"{path}: entry {index} (video {entry['videoid']}): {key} "
                                  f"{entry[key]!r} is not a number of seconds; make the meta "
                                  "with DriveAGI's scripts/meta_preprocess.py") from None
    return entries


def frames_on_disk(folder: Path) -> int:
    """Number of frames 0..n-1 in a video folder; a gap is an error naming the missing file."""
    if not folder.is_dir():
        raise OpenDVError(f"{folder}: video folder missing")
    indices = sorted(int(m.group(1)) for entry in os.scandir(folder)
                     if (m := FRAME_NAME.match(entry.name)))
    for expected, found in enumerate(indices):
        if found != expected:
            raise OpenDVError(f"{folder / frame_name(expected)}: frame missing")
    return len(indices)


def frame_name(index: int) -> str:
    return f"{index:09d}.jpg"


def check_jpeg(path: Path) -> None:
    """Cheap completeness check: a JPEG starts with FFD8 and ends with FFD9."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(2)
            handle.seek(max(size - 2, 0))
            tail = handle.read(2)
    except FileNotFoundError:
        raise OpenDVError(f"{path}: frame missing") from None
    if size < 4 or head != b"\xff\xd8" or tail != b"\xff\xd9":
        raise OpenDVError(f"{path}: truncated or not a JPEG ({size} bytes)")


def usable_range(meta: dict, n_disk: int, discard: str, discard_unit: str,
                 fps: float) -> tuple[int, int, int]:
    """(first, end, offset): usable disk indices [first, end), offset = video frame of index 0."""
    scale = fps if discard_unit == "seconds" else 1.0
    start = int(round(float(meta["start_discard"]) * scale))
    stop = int(round(float(meta["end_discard"]) * scale))
    if discard == "extracted":
        return 0, n_disk, start
    if discard == "apply":
        return start, max(n_disk - stop, start), 0
    raise ValueError(f"discard must be 'extracted' or 'apply', not {discard!r}")


def expected_frames(meta: dict, discard: str, fps: float) -> int:
    """Frames the official extractor writes (seconds units), or the whole video for 'apply'."""
    length = float(meta["length"])
    if discard == "apply":
        return int(fps * length)
    return int(fps * (length - float(meta["start_discard"]) - float(meta["end_discard"])))


def scan_opendv(root: str | Path, split: str, n_frames: int, stride: int | None = None,
                language: str | Path | list | None = None, discard: str = "extracted",
                discard_unit: str = "seconds", skip_bad: bool = False,
                verify_jpeg: bool = True, length_slack_s: float | None = LENGTH_SLACK_S,
                fps: float = FPS) -> OpenDVScan:
    """Clips of one split plus a report of skipped videos (see the module docstring).

    `skip_bad=True` skips a video with a missing folder, a missing or truncated frame, or
    fewer than `n_frames` usable frames, and records why; otherwise each raises OpenDVError.
    `discard_unit` ("seconds" as in the official meta, or "frames") only matters for
    `discard="apply"`. A video with more than `length_slack_s` fewer frames than its meta
    `length` implies is missing its tail (None: trust the frames on disk). `verify_jpeg`
    reads the first and last two bytes of every usable frame (costly on the full Train set).
    """
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    stride = stride or n_frames
    split_key = split.lower()
    if split_key not in IMAGE_DIRS:
        raise ValueError(f"split must be 'Train' or 'Val', not {split!r}")
    if discard_unit not in ("seconds", "frames"):
        raise ValueError(f"discard_unit must be 'seconds' or 'frames', not {discard_unit!r}")
    root = Path(root)
    entries = [m for m in load_meta(root) if str(m["split"]).lower() == split_key]
    entries.sort(key=video_folder)
    annotations = load_language(language) if language is not None else {}
    scan = OpenDVScan(clips=[], videos=len(entries))
    for meta in entries:
        rel = video_folder(meta)
        try:
            scan.clips.extend(video_clips(root, meta, split, n_frames, stride, discard,
                                          discard_unit, verify_jpeg, length_slack_s, fps,
                                          annotations.get(_folder_key(rel), [])))
        except OpenDVError as err:
            if not skip_bad:
                raise
            scan.skipped[rel] = str(err)
    return scan


def opendv_clips(root: str | Path, split: str, n_frames: int, stride: int | None = None,
                 language: str | Path | list | None = None, **options) -> list[ClipRecord]:
    """The clips of `scan_opendv` (options: discard, discard_unit, skip_bad, verify_jpeg,
    length_slack_s); with `skip_bad`, use `scan_opendv` to see what was skipped."""
    return scan_opendv(root, split, n_frames, stride, language, **options).clips


def video_clips(root: Path, meta: dict, split: str, n_frames: int, stride: int, discard: str,
                discard_unit: str, verify_jpeg: bool, length_slack_s: float | None,
                fps: float, annotations: list[dict]) -> list[ClipRecord]:
    rel = video_folder(meta)
    folder = root / rel
    n_disk = frames_on_disk(folder)
    expected = expected_frames(meta, discard, fps)
    if length_slack_s is not None and n_disk < expected - length_slack_s * fps:
        raise OpenDVError(f"{folder / frame_name(n_disk)}: frame missing (meta length "
                          f"implies {expected} frames, found {n_disk})")
    first, end, offset = usable_range(meta, n_disk, discard, discard_unit, fps)
    if end - first < n_frames:
        raise OpenDVError(f"{folder}: {end - first} usable frames, fewer than the "
                          f"{n_frames} asked for")
    if verify_jpeg:
        for index in range(first, end):
            check_jpeg(folder / frame_name(index))
    clips = []
    for start in range(first, end - n_frames + 1, stride):
        indices = range(start, start + n_frames)
        clips.append(ClipRecord(
            clip_id=f"opendv/{meta['videoid']}/{start:09d}",
            dataset="opendv", split=split_name(split), scene=str(meta["videoid"]),
            views=["front"], frames=[[f"{rel}/{frame_name(i)}"] for i in indices],
            timestamps=[round((offset + i) * 1e6 / fps) for i in indices], fps=fps,
            actions=language_actions(annotations, start - first), source=META_PATH))
    return clips


def split_name(split: str) -> str:
    return "Train" if split.lower() == "train" else "Val"


# --- language annotations -------------------------------------------------------------------

def _folder_key(folder: str) -> str:
    """`<youtuber>/<videoid>`: annotation folders may or may not carry the image-dir prefix."""
    return "/".join(folder.strip("/").split("/")[-2:])


def load_language(source: str | Path | list) -> dict[str, list[dict]]:
    """Annotations grouped by `<youtuber>/<videoid>`; `source` is a file, files, or a list."""
    if isinstance(source, (str, Path)):
        sources = [source]
    elif source and isinstance(source[0], dict):
        sources = [source]
    else:
        sources = list(source)
    grouped: dict[str, list[dict]] = {}
    for item in sources:
        where = "language annotations"
        if isinstance(item, (str, Path)):
            where = path = Path(item)
            if not path.is_file():
                raise OpenDVError(f"{path}: language annotation file missing")
            try:
                item = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise OpenDVError(f"{path}: not valid JSON ({err}); the file is truncated or "
                                  "corrupt: download it again") from None
        for index, anno in enumerate(item):
            try:
                span = (_frame_index(anno["first_frame"]), _frame_index(anno["last_frame"]))
                grouped.setdefault(_folder_key(anno["folder"]), []).append(
                    {"cmd": int(anno["cmd"]), "blip": anno.get("blip", ""), "span": span})
            except (KeyError, TypeError, ValueError) as err:
                raise OpenDVError(f"{where}: annotation {index} {anno!r}: malformed "
                                  f"({err})") from None
    for annos in grouped.values():
        annos.sort(key=lambda anno: anno["span"])
    return grouped


def _frame_index(name: str) -> int:
    match = FRAME_NAME.match(Path(str(name)).name)
    if not match:
        raise ValueError(f"frame name {name!r}")
    return int(match.group(1))


def language_actions(annotations: list[dict], start: int) -> Actions | None:
    """Actions with only `cmd`, from the annotation covering the clip's first frame; `start`
    indexes the official extraction's frames, as the annotations do (with discard="apply",
    disk index - first usable index)."""
    for anno in annotations:
        first, last = anno["span"]
        if first <= start <= last:
            return Actions(cmd=OPENDV_TO_VISTA_CMD.get(anno["cmd"]))
    return None


def clip_language(root_annotations: str | Path | list,
                  clips: list[ClipRecord]) -> dict[str, dict]:
    """clip_id -> {cmd (OpenDV's 14 classes), blip} for clips covered by an annotation."""
    grouped = load_language(root_annotations)
    labels = {}
    for clip in clips:
        start = _frame_index(clip.frames[0][0])
        for anno in grouped.get(_folder_key(str(Path(clip.frames[0][0]).parent)), []):
            if anno["span"][0] <= start <= anno["span"][1]:
                labels[clip.clip_id] = {"cmd": anno["cmd"], "blip": anno["blip"]}
                break
    return labels
