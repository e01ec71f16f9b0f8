"""Waymo Open Dataset front-camera readers: v2 Parquet and v1 TFRecord -> clip records.

Layouts (`root` is one split's directory, e.g. `<waymo>/validation`):
- v2: `root/camera_image/<segment>.parquet`, one row per (frame, camera) with columns
  `key.segment_context_name`, `key.frame_timestamp_micros`, `key.camera_name` (FRONT = 1),
  `[CameraImageComponent].image` (JPEG) and, optional here,
  `[CameraImageComponent].velocity.linear_velocity.{x,y,z}` (m/s, global frame).
- v1: `root/*.tfrecord`, one segment per file, each record a serialized `Frame` proto
  (dataset.proto: Frame.context = 1 {Context.name = 1}, Frame.timestamp_micros = 2,
  Frame.images = 4 {CameraImage.name = 1, image = 2, velocity = 4 {v_x = 1, v_y = 2,
  v_z = 3: float}}). We decode only these fields with a small wire-format decoder, so the
  `waymo-open-dataset` package (which pins old TF / numpy) is not needed: TFRecord framing
  and the wire format are in `maskgwm.data.waymo_records`.

Frame references: the JPEGs live inside those files, so `ClipRecord.frames` holds
`"camera_image/<segment>.parquet#<timestamp_micros>"` (v2) or `"<file>.tfrecord#<record
index>"` (v1), relative to `root`; `load_waymo_frame(root, ref)` returns uint8 [H, W, 3] (it
has the loader's FrameReader signature). Clips: `n_frames` consecutive front frames every
`stride` frames (default non-overlapping), at 10 Hz; segments shorter than a clip give none.
A file must hold one segment with no gap over `MAX_GAP_PERIODS` frame periods (a dropped
frame): either is a WaymoError naming the file, as a missing frame is for OpenDV.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .manifest import ClipRecord
from .waymo_records import (FRONT, WaymoError, crc32c, decode_frame, encode_varint,
                            iter_tfrecord, iter_tfrecord_tf, masked_crc32c, read_tfrecord)

__all__ = ["FPS", "FRONT", "V2_DIR", "V2_IMAGE", "V2_KEYS", "V2_VELOCITY", "WaymoError",
           "WaymoFrame", "crc32c", "decode_frame", "encode_varint", "iter_tfrecord",
           "load_waymo_frame", "masked_crc32c", "segment_files", "v1_segment_frames",
           "v2_segment_frames", "waymo_clips", "waymo_eval_sample", "waymo_frames"]

FPS = 10.0
MAX_GAP_PERIODS = 1.5
V2_DIR = "camera_image"
V2_KEYS = {"segment": "key.segment_context_name", "timestamp": "key.frame_timestamp_micros",
           "camera": "key.camera_name"}
V2_IMAGE = "[CameraImageComponent].image"
V2_VELOCITY = tuple(f"[CameraImageComponent].velocity.linear_velocity.{axis}" for axis in "xyz")


@dataclass
class WaymoFrame:
    segment: str
    timestamp: int                         # microseconds
    ref: str                               # frame reference, relative to the root
    velocity: tuple[float, float, float] | None = None
    image: bytes | None = None             # JPEG, when asked for

    @property
    def speed(self) -> float | None:
        return None if self.velocity is None else float(np.hypot(*self.velocity[:2]))


# --- segment readers -------------------------------------------------------------------------

def v2_segment_frames(root: str | Path, path: str | Path, camera: int = FRONT,
                      with_images: bool = False) -> list[WaymoFrame]:
    """Frames of one v2 camera_image file, one camera, sorted by timestamp."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    path = Path(path)
    try:
        names = pq.read_schema(path).names
    except (OSError, ValueError) as err:
        raise WaymoError(f"{path}: not a readable Parquet file ({err})") from None
    required = [*V2_KEYS.values(), V2_IMAGE]
    for column in required:
        if column not in names:
            raise WaymoError(f"{path}: column {column!r} missing")
    velocity_cols = [c for c in V2_VELOCITY if c in names]
    columns = [*V2_KEYS.values(), *velocity_cols] + ([V2_IMAGE] if with_images else [])
    table = pq.read_table(path, columns=columns)
    table = table.filter(pc.equal(table[V2_KEYS["camera"]], camera))
    rows = table.to_pydict()
    rel = path.relative_to(root).as_posix()
    frames = []
    for i, timestamp in enumerate(rows[V2_KEYS["timestamp"]]):
        velocity = (tuple(float(rows[c][i]) for c in velocity_cols)
                    if len(velocity_cols) == 3 and rows[velocity_cols[0]][i] is not None
                    else None)
        frames.append(WaymoFrame(rows[V2_KEYS["segment"]][i], int(timestamp),
                                 f"{rel}#{int(timestamp)}", velocity,
                                 rows[V2_IMAGE][i] if with_images else None))
    return _sorted_unique(frames, path)


def v1_segment_frames(root: str | Path, path: str | Path, camera: int = FRONT,
                      with_images: bool = False, reader: str = "tf") -> list[WaymoFrame]:
    """Frames of one v1 TFRecord (reader "tf" or "python"), sorted by timestamp."""
    path = Path(path)
    if reader == "tf":
        records = iter_tfrecord_tf(path)
    elif reader == "python":
        records = iter_tfrecord(path)
    else:
        raise ValueError(f"reader must be 'tf' or 'python', not {reader!r}")
    rel = path.relative_to(root).as_posix()
    frames = []
    for index, data in records:
        try:
            name, timestamp, image, velocity = decode_frame(data, camera)
        except ValueError as err:
            raise WaymoError(f"{path}: record {index}: not a Frame proto ({err})") from None
        if image is None:
            raise WaymoError(f"{path}: record {index}: no image from camera {camera}")
        frames.append(WaymoFrame(name, timestamp, f"{rel}#{index}", velocity,
                                 image if with_images else None))
    return _sorted_unique(frames, path)


def _sorted_unique(frames: list[WaymoFrame], path: Path) -> list[WaymoFrame]:
    segments = sorted({frame.segment for frame in frames})
    if len(segments) > 1:
        raise WaymoError(f"{path}: frames from {len(segments)} segments ({', '.join(segments)}); "
                         "a segment file holds one segment: re-download it")
    frames.sort(key=lambda frame: frame.timestamp)
    if len({frame.timestamp for frame in frames}) != len(frames):
        raise WaymoError(f"{path}: repeated timestamps for one camera")
    for before, after in zip(frames, frames[1:]):
        if after.timestamp - before.timestamp > MAX_GAP_PERIODS * 1e6 / FPS:
            raise WaymoError(f"{path}: segment {after.segment}: no frame between timestamps "
                             f"{before.timestamp} and {after.timestamp}; re-download the file")
    return frames


def segment_files(root: str | Path, version: str) -> list[Path]:
    root = Path(root)
    if version == "v2":
        files = sorted((root / V2_DIR).glob("*.parquet"))
    elif version == "v1":
        files = sorted(root.glob("*.tfrecord"))
    else:
        raise ValueError(f"version must be 'v1' or 'v2', not {version!r}")
    if not files:
        where = root / V2_DIR if version == "v2" else root
        raise WaymoError(f"{where}: no Waymo {version} segment files")
    return files


def waymo_frames(root: str | Path, version: str, **options) -> dict[str, list[WaymoFrame]]:
    """segment -> its front frames, in file order (options: camera, with_images, reader).
    A file without a frame of the camera (empty, or cut short) is a WaymoError naming it."""
    read = v2_segment_frames if version == "v2" else v1_segment_frames
    result = {}
    for path in segment_files(root, version):
        frames = read(root, path, **options)
        if not frames:
            raise WaymoError(f"{path}: no frames from camera {options.get('camera', FRONT)}; "
                             "the file is empty or incomplete: re-download it")
        result[frames[0].segment] = frames
    return result


def waymo_clips(root: str | Path, version: str, n_frames: int, stride: int | None = None,
                split: str = "validation", **options) -> list[ClipRecord]:
    """Front-camera clips of every segment (options: camera, reader for v1)."""
    if n_frames < 1:
        raise ValueError("n_frames must be >= 1")
    stride = stride or n_frames
    clips = []
    for segment, frames in waymo_frames(root, version, **options).items():
        for start in range(0, len(frames) - n_frames + 1, stride):
            window = frames[start:start + n_frames]
            clips.append(ClipRecord(
                clip_id=f"waymo/{segment}/{start:04d}", dataset="waymo", split=split,
                scene=segment, views=["front"], frames=[[f.ref] for f in window],
                timestamps=[f.timestamp for f in window], fps=FPS, actions=None,
                source=f"waymo-{version}"))
    return clips


def load_waymo_frame(root: str | Path, ref: str, camera: int = FRONT) -> np.ndarray:
    """uint8 [H, W, 3] of a frame reference made by `waymo_clips`."""
    from PIL import Image
    rel, sep, key = ref.rpartition("#")
    path = Path(root) / rel
    if not sep or not key.lstrip("-").isdigit():
        raise WaymoError(f"{ref!r}: not a Waymo frame reference (<file>#<key>)")
    if not path.is_file():
        raise WaymoError(f"{path}: segment file missing")
    if path.suffix == ".parquet":
        jpeg = _v2_image(path, int(key), camera)
    else:
        record = read_tfrecord(path, int(key))      # a WaymoError names its own problem
        try:
            name, _, jpeg, _ = decode_frame(record, camera)
        except ValueError as err:
            raise WaymoError(f"{path}: record {key}: not a Frame proto ({err})") from None
        if jpeg is None:
            raise WaymoError(f"{path}: record {key}: no image from camera {camera}")
    try:
        with Image.open(io.BytesIO(jpeg)) as image:
            return np.asarray(image.convert("RGB"))
    except OSError as err:
        raise WaymoError(f"{path}#{key}: unreadable JPEG ({err})") from None


def _v2_image(path: Path, timestamp: int, camera: int) -> bytes:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    keys = [V2_KEYS["timestamp"], V2_KEYS["camera"]]
    try:
        table = pq.read_table(path, columns=[*keys, V2_IMAGE], filters=(
            pc.field(keys[0]) == timestamp) & (pc.field(keys[1]) == camera))
    except (OSError, ValueError) as err:            # pyarrow's ArrowInvalid is a ValueError
        raise WaymoError(f"{path}: not a readable Parquet file ({err}); re-download "
                         "it") from None
    if table.num_rows != 1:
        raise WaymoError(f"{path}: {table.num_rows} rows for timestamp {timestamp}, "
                         f"camera {camera}")
    return table[V2_IMAGE][0].as_py()


def waymo_eval_sample(segments: Sequence, n: int = 600, seed: int = 0) -> list:
    """The zero-shot protocol's `n` videos, drawn without replacement, deterministic by seed.

    Items (clips or segment names) are sorted by id first, so the sample does not depend on
    the order they come in; it is returned in that sorted order.
    """
    items = sorted(segments, key=_item_id)
    if len({_item_id(item) for item in items}) != len(items):
        raise ValueError("waymo_eval_sample: repeated ids")
    if n > len(items):
        raise ValueError(f"waymo_eval_sample: asked for {n} videos, only {len(items)} exist")
    chosen = np.random.default_rng(seed).choice(len(items), size=n, replace=False)
    return [items[i] for i in sorted(chosen)]


def _item_id(item) -> str:
    return item.clip_id if isinstance(item, ClipRecord) else str(item)
