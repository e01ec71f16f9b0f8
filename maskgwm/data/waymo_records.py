"""Waymo v1's containers, decoded without the `waymo-open-dataset` package: TFRecord framing
with its masked CRC32C, and the few `Frame` proto fields the readers need (protobuf wire
format). Layout and field numbers: see `maskgwm.data.waymo`.

TFRecord framing: uint64 length, uint32 masked CRC32C(length), data, uint32 masked
CRC32C(data); mask(crc) = ((crc >> 15) | (crc << 17)) + 0xa282ead8 (mod 2^32).
"""
from __future__ import annotations

import io
import os
import struct
from pathlib import Path
from typing import Iterator

from .manifest import ManifestError

FRONT = 1
CRC_MASK_DELTA = 0xA282EAD8


class WaymoError(ManifestError):
    """Malformed Waymo data; the message names the file (and record or column)."""


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
