"""Small synthetic Waymo segments in both formats (see `maskgwm.data.waymo` for the layouts).

Each segment is one simulated drive at 10 Hz with a FRONT and a FRONT_LEFT camera (so readers
must pick the front one). v2 rows are written in shuffled order (readers must sort); v1
records carry an extra pose field the reader must skip. The protobuf fields and the TFRecord
framing (masked CRC32C) are encoded here, with no Waymo or TF code.
"""
from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from ..waymo import FPS, FRONT, V2_DIR, V2_IMAGE, V2_KEYS, V2_VELOCITY, encode_varint, masked_crc32c

FRONT_LEFT = 2
FRONT_LEFT_YAW = 0.8                    # rad, to the left
START_MICROS = 1_550_000_000_000_000


def drive_views(seed: int, n_frames: int, width: int, height: int):
    """(states, front frames, front-left frames) of one simulated drive."""
    from .world import render_frames, simulate_drive
    states = simulate_drive(seed, n_frames, FPS)
    return (states, render_frames(seed, states, width, height),
            render_frames(seed, states, width, height, yaw_offset=FRONT_LEFT_YAW))


# --- protobuf and TFRecord encoding ----------------------------------------------------------

def field_varint(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


def field_bytes(number: int, data: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(data)) + data


def field_float(number: int, value: float) -> bytes:
    return encode_varint(number << 3 | 5) + struct.pack("<f", value)


def field_double(number: int, value: float) -> bytes:
    return encode_varint(number << 3 | 1) + struct.pack("<d", value)


def encode_camera_image(camera: int, jpeg: bytes, velocity: tuple[float, float, float]) -> bytes:
    vel = b"".join(field_float(n, v) for n, v in zip((1, 2, 3), velocity))
    return field_varint(1, camera) + field_bytes(2, jpeg) + field_bytes(4, vel)


def encode_frame(segment: str, timestamp: int, images: list[bytes]) -> bytes:
    """Frame{context{name}, timestamp_micros, pose (skipped by readers), images}."""
    pose = b"".join(field_double(1, float(v)) for v in np.eye(4).ravel())
    return (field_bytes(1, field_bytes(1, segment.encode())) + field_varint(2, timestamp)
            + field_bytes(3, pose) + b"".join(field_bytes(4, image) for image in images))


def tfrecord(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# --- writers ---------------------------------------------------------------------------------

def jpeg_bytes(frame: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def segment_name(seed: int, index: int) -> str:
    return f"{seed:05d}{index:05d}_000_000_synthetic"


def write_synthetic_waymo(out: str | Path, n_segments: int = 3, seed: int = 0, width: int = 64,
                          height: int = 40, seconds: float = 2.0,
                          versions: tuple[str, ...] = ("v2", "v1")) -> dict:
    """Write `n_segments` segments as v2 (`out/v2`) and/or v1 (`out/v1`).

    Returns {v2_root, v1_root, segments: [{name, timestamps, front_jpegs, velocities,
    v1_file}]}, the front camera in time order, for comparison with the readers.
    """
    out = Path(out)
    n_frames = int(round(seconds * FPS))
    rng = np.random.default_rng(seed)
    segments = []
    for index in range(n_segments):
        name = segment_name(seed, index)
        states, front, left = drive_views(seed * 1000 + index, n_frames, width, height)
        jitter = rng.integers(-500, 500, size=n_frames)
        start = START_MICROS + index * 60_000_000
        timestamps = [int(start + i * 100_000 + jitter[i]) for i in range(n_frames)]
        velocities = [(float(np.float32(s.speed * np.cos(s.yaw))),
                       float(np.float32(s.speed * np.sin(s.yaw))), 0.0) for s in states]
        segment = {"name": name, "timestamps": timestamps, "velocities": velocities,
                   "front_jpegs": [jpeg_bytes(frame) for frame in front],
                   "left_jpegs": [jpeg_bytes(frame) for frame in left]}
        if "v2" in versions:
            write_v2_segment(out / "v2", segment, rng)
        if "v1" in versions:
            segment["v1_file"] = write_v1_segment(out / "v1", segment)
        del segment["left_jpegs"]
        segments.append(segment)
    return {"v2_root": str(out / "v2"), "v1_root": str(out / "v1"), "segments": segments}


def write_v2_segment(root: Path, segment: dict, rng: np.random.Generator) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    rows = []
    for i, timestamp in enumerate(segment["timestamps"]):
        vel = segment["velocities"][i]
        rows.append((FRONT, timestamp, segment["front_jpegs"][i], vel))
        rows.append((FRONT_LEFT, timestamp, segment["left_jpegs"][i], vel))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    columns = {
        V2_KEYS["segment"]: pa.array([segment["name"]] * len(rows), pa.string()),
        V2_KEYS["timestamp"]: pa.array([r[1] for r in rows], pa.int64()),
        V2_KEYS["camera"]: pa.array([r[0] for r in rows], pa.int8()),
        V2_IMAGE: pa.array([r[2] for r in rows], pa.binary()),
    }
    for axis, column in enumerate(V2_VELOCITY):
        columns[column] = pa.array([r[3][axis] for r in rows], pa.float32())
    columns["[CameraImageComponent].pose_timestamp"] = pa.array(
        [r[1] / 1e6 for r in rows], pa.float64())
    path = root / V2_DIR / f"{segment['name']}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=8)
    return path


def write_v1_segment(root: Path, segment: dict) -> str:
    root.mkdir(parents=True, exist_ok=True)
    file = f"segment-{segment['name']}_with_camera_labels.tfrecord"
    with open(root / file, "wb") as handle:
        for i, timestamp in enumerate(segment["timestamps"]):
            vel = segment["velocities"][i]
            images = [encode_camera_image(FRONT_LEFT, segment["left_jpegs"][i], vel),
                      encode_camera_image(FRONT, segment["front_jpegs"][i], vel)]
            handle.write(tfrecord(encode_frame(segment["name"], timestamp, images)))
    return file
