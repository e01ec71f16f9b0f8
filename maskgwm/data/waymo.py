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
  `waymo-open-dataset` package (which pins old TF / numpy) is not needed.
  TFRecord framing: uint64 length, uint32 masked CRC32C(length), data, uint32 masked
  CRC32C(data); mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32).

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
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .manifest import ClipRecord, ManifestError

FPS = 10.0
MAX_GAP_PERIODS = 1.5
FRONT = 1
V2_DIR = "camera_image"
V2_KEYS = {"segment": "key.segment_context_name", "timestamp": "key.frame_timestamp_micros",
           "camera": "key.camera_name"}
V2_IMAGE = "[CameraImageComponent].image"
V2_VELOCITY = tuple(f"[CameraImageComponent].velocity.linear_velocity.{axis}" for axis in "xyz")
CRC_MASK_DELTA = 0xA282EAD8


class WaymoError(ManifestError):
    """Malformed Waymo data; the message names the file (and record or column)."""


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


# --- CRC32C and TFRecord framing -------------------------------------------------------------

def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), pure Python: fine for headers and small records."""
    crc, table = 0xFFFFFFFF, CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + CRC_MASK_DELTA) & 0xFFFFFFFF


def iter_tfrecord(path: str | Path, verify_data_crc: bool = True,
                  stop_after: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """(index, data) of each record; length CRCs always checked, data CRCs if asked.

    Records before `stop_after` are skipped by seeking (data None) when it is given.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        index = 0
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise WaymoError(f"{path}: record {index}: truncated header")
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                raise WaymoError(f"{path}: record {index}: bad length CRC")
            if stop_after is not None and index < stop_after:
                handle.seek(length + 4, io.SEEK_CUR)
                index += 1
                continue
            data, footer = handle.read(length), handle.read(4)
            if len(data) < length or len(footer) < 4:
                raise WaymoError(f"{path}: record {index}: truncated data")
            if verify_data_crc and masked_crc32c(data) != struct.unpack("<I", footer)[0]:
                raise WaymoError(f"{path}: record {index}: bad data CRC")
            yield index, data
            if stop_after is not None:
                return
            index += 1


def read_tfrecord(path: str | Path, index: int, verify_data_crc: bool = True) -> bytes:
    """One record by index (seeks over the earlier ones)."""
    for _, data in iter_tfrecord(path, verify_data_crc, stop_after=index):
        return data
    raise WaymoError(f"{path}: record {index}: not in file")


def iter_tfrecord_tf(path: str | Path) -> Iterator[tuple[int, bytes]]:
    """(index, data) through `tf.data.TFRecordDataset` (C++ CRC checks); TF imported here."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    records = iter(tf.data.TFRecordDataset(str(path)))
    index = 0
    while True:
        try:
            record = next(records)
        except StopIteration:
            return
        except tf.errors.DataLossError as err:
            raise WaymoError(f"{path}: record {index}: corrupt TFRecord ({err.message})") from None
        yield index, record.numpy()
        index += 1


# --- protobuf wire format --------------------------------------------------------------------

def read_varint(buf, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1                 # negative int64: ten-byte two's complement
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def iter_fields(buf) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): int for varints, memoryview for the others."""
    buf = memoryview(buf)
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire} (field {number})")
        if pos > len(buf):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire, value


def to_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def decode_frame(data: bytes, camera: int = FRONT) -> tuple[str, int, bytes | None, tuple | None]:
    """(context name, timestamp_micros, JPEG of `camera` or None, its velocity or None)."""
    name, timestamp, image, velocity = "", 0, None, None
    for number, wire, value in iter_fields(data):
        if number == 1 and wire == 2:
            for sub, sub_wire, sub_value in iter_fields(value):
                if sub == 1 and sub_wire == 2:
                    name = bytes(sub_value).decode()
        elif number == 2 and wire == 0:
            timestamp = to_int64(value)
        elif number == 4 and wire == 2:
            cam, jpeg, vel = _decode_camera_image(value)
            if cam == camera:
                image, velocity = jpeg, vel
    return name, timestamp, image, velocity


def _decode_camera_image(buf) -> tuple[int, bytes | None, tuple | None]:
    cam, jpeg, velocity = 0, None, None
    for number, wire, value in iter_fields(buf):
        if number == 1 and wire == 0:
            cam = value
        elif number == 2 and wire == 2:
            jpeg = bytes(value)
        elif number == 4 and wire == 2:
            axes = {n: struct.unpack("<f", v)[0] for n, w, v in iter_fields(value) if w == 5}
            velocity = tuple(axes.get(n, 0.0) for n in (1, 2, 3))
    return cam, jpeg, velocity


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
    """segment -> its front frames, in file order (options: camera, with_images, reader)."""
    read = v2_segment_frames if version == "v2" else v1_segment_frames
    result = {}
    for path in segment_files(root, version):
        frames = read(root, path, **options)
        if frames:
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
        try:
            name, _, jpeg, _ = decode_frame(read_tfrecord(path, int(key)), camera)
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
    table = pq.read_table(path, columns=[*keys, V2_IMAGE],
                          filters=(pc.field(keys[0]) == timestamp) & (pc.field(keys[1]) == camera))
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
