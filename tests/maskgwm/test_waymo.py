"""Waymo v2 Parquet and v1 TFRecord readers on synthetic segments; framing, errors, sampling."""
from __future__ import annotations

import io
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from maskgwm.data import waymo
from maskgwm.data.synth.waymo_writer import encode_frame, tfrecord, write_synthetic_waymo
from maskgwm.data.waymo import (WaymoError, crc32c, decode_frame, iter_tfrecord,
                                load_waymo_frame, waymo_clips, waymo_eval_sample, waymo_frames)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_waymo(tmp_path_factory.mktemp("waymo"), n_segments=3, seed=0,
                                 width=48, height=32, seconds=2.0)


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def test_crc32c_known_answers():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA          # RFC 3720 B.4


def test_framing_matches_tensorflow(tmp_path):
    import tensorflow as tf     # a test dependency (pyproject's `test` extra); slow to import
    records = [b"", b"a", bytes(range(256)) * 3]
    path = tmp_path / "tf.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)
    assert path.read_bytes() == b"".join(tfrecord(r) for r in records)
    assert [data for _, data in iter_tfrecord(path)] == records


def test_wire_format_round_trip():
    frame = encode_frame("seg", 1_550_000_000_123_456, [])
    assert decode_frame(frame) == ("seg", 1_550_000_000_123_456, None, None)
    assert decode_frame(encode_frame("neg", -5, []))[1] == -5
    with pytest.raises(ValueError, match="truncated|past the end"):
        decode_frame(frame[:-3])


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_reader_agrees_with_writer(data, version):
    frames = waymo_frames(data[f"{version}_root"], version, with_images=True)
    assert list(frames) == [s["name"] for s in data["segments"]]
    for segment in data["segments"]:
        got = frames[segment["name"]]
        assert [f.timestamp for f in got] == segment["timestamps"]
        assert [f.image for f in got] == segment["front_jpegs"]        # exact bytes, FRONT
        np.testing.assert_allclose([f.velocity for f in got], segment["velocities"], rtol=1e-6)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_clips_and_frame_refs(data, version):
    root = data[f"{version}_root"]
    clips = waymo_clips(root, version, n_frames=6, stride=4)
    per_segment = (20 - 6) // 4 + 1
    assert len(clips) == 3 * per_segment
    first = data["segments"][0]
    assert clips[0].timestamps == first["timestamps"][:6]
    assert clips[1].timestamps == first["timestamps"][4:10]
    assert all(c.fps == 10.0 and c.views == ["front"] and c.actions is None for c in clips)
    ref = clips[1].frames[2][0]
    expected = decode_jpeg(first["front_jpegs"][6])
    np.testing.assert_array_equal(load_waymo_frame(root, ref), expected)
    suffix = "#" + str(first["timestamps"][6]) if version == "v2" else "#6"
    assert ref.endswith(suffix)
    assert waymo_clips(root, version, n_frames=21) == []            # segments are 20 frames


def test_v1_python_reader_matches_tf(data):
    tf_frames = waymo_frames(data["v1_root"], "v1", reader="tf")
    py_frames = waymo_frames(data["v1_root"], "v1", reader="python")
    assert tf_frames == py_frames


def corrupt_record(data, tmp_path, record: int) -> tuple:
    root = tmp_path / "v1"
    shutil.copytree(data["v1_root"], root)
    path = root / data["segments"][1]["v1_file"]
    blob = bytearray(path.read_bytes())
    offset = 0
    for _ in range(record):
        length = struct.unpack("<Q", blob[offset:offset + 8])[0]
        offset += 12 + length + 4
    blob[offset + 12 + 40] ^= 0xFF                                   # inside the data
    path.write_bytes(bytes(blob))
    return root, path


@pytest.mark.parametrize("reader", ["tf", "python"])
def test_bad_crc_names_file_and_record(data, tmp_path, reader):
    root, path = corrupt_record(data, tmp_path, record=7)
    with pytest.raises(WaymoError, match=rf"{path.name}: record 7: .*(CRC|corrupt)"):
        waymo_clips(root, "v1", 5, reader=reader)


def test_truncated_tfrecord(data, tmp_path):
    root = tmp_path / "v1"
    shutil.copytree(data["v1_root"], root)
    path = root / data["segments"][0]["v1_file"]
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(WaymoError, match=rf"{path.name}: record 19: truncated"):
        waymo_clips(root, "v1", 5, reader="python")
    with pytest.raises(WaymoError, match=rf"{path.name}: record 19"):
        waymo_clips(root, "v1", 5, reader="tf")


def test_missing_parquet_column(data, tmp_path):
    import pyarrow.parquet as pq
    root = tmp_path / "v2"
    shutil.copytree(data["v2_root"], root)
    path = root / "camera_image" / f"{data['segments'][2]['name']}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.drop_columns(["key.camera_name"]), path)
    with pytest.raises(WaymoError, match=rf"{path.name}: column 'key.camera_name' missing"):
        waymo_clips(root, "v2", 5)


def drop_front_frame(root, segment, index: int) -> None:
    """Remove one front frame of `segment`, as a partial download would."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    if (root / "camera_image").is_dir():
        path = root / "camera_image" / f"{segment['name']}.parquet"
        table = pq.read_table(path)
        hit = pc.and_(pc.equal(table["key.camera_name"], waymo.FRONT),
                      pc.equal(table["key.frame_timestamp_micros"], segment["timestamps"][index]))
        pq.write_table(table.filter(pc.invert(hit)), path)
    else:
        path = root / segment["v1_file"]
        records = [tfrecord(d) for i, d in iter_tfrecord(path) if i != index]
        path.write_bytes(b"".join(records))


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_dropped_frame_names_file_and_gap(data, tmp_path, version):
    root = tmp_path / version
    shutil.copytree(data[f"{version}_root"], root)
    segment = data["segments"][1]
    drop_front_frame(root, segment, 5)
    before, after = segment["timestamps"][4], segment["timestamps"][6]
    with pytest.raises(WaymoError, match=rf"{segment['name']}.*between timestamps "
                                         rf"{before} and {after}; re-download"):
        waymo_clips(root, version, 5)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_two_segments_in_one_file(data, tmp_path, version):
    import pyarrow as pa
    import pyarrow.parquet as pq
    root = tmp_path / version
    shutil.copytree(data[f"{version}_root"], root)
    files = waymo.segment_files(root, version)
    if version == "v2":
        pq.write_table(pa.concat_tables([pq.read_table(f) for f in files[:2]]), files[0])
    else:
        files[0].write_bytes(files[0].read_bytes() + files[1].read_bytes())
    files[1].unlink()
    names = [s["name"] for s in data["segments"][:2]]
    with pytest.raises(WaymoError, match=rf"{files[0].name}: frames from 2 segments "
                                         rf"\({names[0]}, {names[1]}\)"):
        waymo_clips(root, version, 5)


def test_velocity_columns_optional(data, tmp_path):
    import pyarrow.parquet as pq
    root = tmp_path / "v2"
    shutil.copytree(data["v2_root"], root)
    for path in (root / "camera_image").glob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(list(waymo.V2_VELOCITY)), path)
    frames = waymo_frames(root, "v2")
    assert all(f.velocity is None and f.speed is None for fs in frames.values() for f in fs)


def test_missing_files_and_bad_refs(data, tmp_path):
    with pytest.raises(WaymoError, match="no Waymo v2 segment files"):
        waymo_clips(tmp_path, "v2", 5)
    with pytest.raises(WaymoError, match="not a Waymo frame reference"):
        load_waymo_frame(data["v2_root"], "camera_image/x.parquet")
    with pytest.raises(WaymoError, match="0 rows for timestamp 12"):
        name = data["segments"][0]["name"]
        load_waymo_frame(data["v2_root"], f"camera_image/{name}.parquet#12")
    with pytest.raises(WaymoError, match="record 99: not in file"):
        load_waymo_frame(data["v1_root"], f"{data['segments'][0]['v1_file']}#99")


def test_eval_sample_deterministic(data):
    clips = waymo_clips(data["v2_root"], "v2", n_frames=5, stride=1)    # 3 x 16 clips
    sample = waymo_eval_sample(clips, n=20, seed=0)
    assert len(sample) == 20 and len({c.clip_id for c in sample}) == 20
    assert sample == waymo_eval_sample(list(reversed(clips)), n=20, seed=0)
    assert sample != waymo_eval_sample(clips, n=20, seed=1)
    names = [s["name"] for s in data["segments"]]
    assert waymo_eval_sample(names, n=2, seed=3) == waymo_eval_sample(names[::-1], n=2, seed=3)
    assert len(waymo_eval_sample(clips, n=len(clips))) == len(clips)
    with pytest.raises(ValueError, match="only 48 exist"):
        waymo_eval_sample(clips, n=600)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_segment_file_without_front_frames(data, tmp_path, version):
    """A file that yields no front frame is an error naming it, not a segment left out."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    root = tmp_path / version
    shutil.copytree(data[f"{version}_root"], root)
    path = waymo.segment_files(root, version)[1]
    if version == "v2":
        table = pq.read_table(path)
        pq.write_table(table.filter(pc.not_equal(table["key.camera_name"], waymo.FRONT)), path)
    else:
        path.write_bytes(b"")                                       # an interrupted download
    with pytest.raises(WaymoError, match=rf"{path.name}: no frames from camera 1.*re-download"):
        waymo_clips(root, version, 5, **({"reader": "python"} if version == "v1" else {}))


def test_frame_load_errors_say_what_is_wrong(data, tmp_path):
    import re
    root, path = corrupt_record(data, tmp_path, record=7)
    with pytest.raises(WaymoError, match=rf"^{re.escape(str(path))}: record 7: bad data CRC"):
        load_waymo_frame(root, f"{path.name}#7")
    v2 = tmp_path / "v2"
    shutil.copytree(data["v2_root"], v2)
    segment = data["segments"][0]
    ref = f"camera_image/{segment['name']}.parquet#{segment['timestamps'][0]}"
    (v2 / ref.partition("#")[0]).write_bytes(b"PAR1 cut short")
    with pytest.raises(WaymoError, match=rf"{segment['name']}\.parquet: not a readable Parquet "
                                         "file.*re-download"):
        load_waymo_frame(v2, ref)
