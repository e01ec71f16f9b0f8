"""Our Waymo and OpenDV-YouTube readers and writers against the official format definitions.

The field numbers, column names and JSON keys here are written out by hand from the cited
files, not imported from our code. test_waymo.py and test_opendv.py only check our readers
against our writers, so a wrong number or name shared by both would pass there; here it fails.
"""
from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from maskgwm.data import opendv, waymo
from maskgwm.data.synth import opendv_writer, waymo_writer

# --- Waymo v1: waymo-research/waymo-open-dataset, src/waymo_open_dataset/dataset.proto -------
# at commit 99a4cb3ff07e2fe06c2ce73da001f850f628e45a (2025-04-29). proto2; the fields our writer
# writes and a few the reader must skip: number -> (label, type, name).
MESSAGES = {
    "Frame": {1: ("optional", "Context", "context"), 2: ("optional", "int64", "timestamp_micros"),
              3: ("optional", "Transform", "pose"), 4: ("repeated", "CameraImage", "images")},
    "Context": {1: ("optional", "string", "name")},
    "Transform": {1: ("repeated", "double", "transform")},           # not packed (proto2)
    "CameraImage": {1: ("optional", "CameraName.Name", "name"), 2: ("optional", "bytes", "image"),
                    3: ("optional", "Transform", "pose"), 4: ("optional", "Velocity", "velocity"),
                    5: ("optional", "double", "pose_timestamp")},
    "Velocity": {1: ("optional", "float", "v_x"), 2: ("optional", "float", "v_y"),
                 3: ("optional", "float", "v_z"), 4: ("optional", "double", "w_x"),
                 5: ("optional", "double", "w_y"), 6: ("optional", "double", "w_z")},
}
CAMERA_NAME = {"UNKNOWN": 0, "FRONT": 1, "FRONT_LEFT": 2, "FRONT_RIGHT": 3, "SIDE_LEFT": 4,
               "SIDE_RIGHT": 5}                                     # CameraName.Name
# protobuf wire types (protobuf encoding spec): 0 varint, 1 64-bit, 2 length-delimited, 5 32-bit
WIRE = {"int64": 0, "CameraName.Name": 0, "double": 1, "float": 5, "string": 2, "bytes": 2}

# --- Waymo v2: same repository and commit. src/waymo_open_dataset/v2/perception/camera_image.py
# (CameraImageComponent, Velocity), perception/base.py (SegmentKey, FrameKey, CameraKey),
# column_types.py (Vec3s float32, Vec3d float64), component.py (column naming: "key.<field>",
# "[<Component>].<field>.<field>"); the list is the one in camera_image_test.py
# test_creates_correct_schema. v2/__init__.py stores CameraImageComponent under "camera_image".
V2_TAG = "camera_image"
V2_COLUMNS = {
    "key.segment_context_name": pa.string(),
    "key.frame_timestamp_micros": pa.int64(),
    "key.camera_name": pa.int8(),
    "[CameraImageComponent].image": pa.binary(),
    "[CameraImageComponent].pose.transform": pa.list_(pa.float64(), 16),
    "[CameraImageComponent].velocity.linear_velocity.x": pa.float32(),
    "[CameraImageComponent].velocity.linear_velocity.y": pa.float32(),
    "[CameraImageComponent].velocity.linear_velocity.z": pa.float32(),
    "[CameraImageComponent].velocity.angular_velocity.x": pa.float64(),
    "[CameraImageComponent].velocity.angular_velocity.y": pa.float64(),
    "[CameraImageComponent].velocity.angular_velocity.z": pa.float64(),
    "[CameraImageComponent].pose_timestamp": pa.float64(),
    "[CameraImageComponent].rolling_shutter_params.shutter": pa.float64(),
    "[CameraImageComponent].rolling_shutter_params.camera_trigger_time": pa.float64(),
    "[CameraImageComponent].rolling_shutter_params.camera_readout_done_time": pa.float64(),
}
LINEAR_VELOCITY = tuple(f"[CameraImageComponent].velocity.linear_velocity.{a}" for a in "xyz")


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


# --- a protobuf wire codec written from the encoding spec, driven by MESSAGES ------------------

def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        value, pos, shift = value | (byte & 0x7F) << shift, pos + 1, shift + 7
        if byte < 0x80:
            return value, pos


def parse(buf: bytes, message: str) -> dict[str, list]:
    """name -> values of one message; every field must be in MESSAGES with its wire type."""
    out, pos = {}, 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        assert number in MESSAGES[message], f"{message}: field {number} is not in dataset.proto"
        _, type_, name = MESSAGES[message][number]
        assert wire == WIRE.get(type_, 2), f"{message}.{name} (= {number}): wire type {wire}"
        if wire == 0:
            value, pos = read_varint(buf, pos)
        else:
            size = {1: 8, 5: 4}.get(wire)
            if size is None:
                size, pos = read_varint(buf, pos)
            value, pos = buf[pos:pos + size], pos + size
        if type_ in MESSAGES:
            value = parse(value, type_)
        elif type_ in ("float", "double"):
            value = struct.unpack("<f" if type_ == "float" else "<d", value)[0]
        elif type_ == "string":
            value = value.decode()
        out.setdefault(name, []).append(value)
    return out


def encode(message: str, **values) -> bytes:
    """One message from field names (nested messages given as their bytes)."""
    out = bytearray()
    for number, (label, type_, name) in MESSAGES[message].items():
        for value in (values.get(name, []) if label == "repeated"
                      else [values[name]] if name in values else []):
            wire = WIRE.get(type_, 2)
            out += varint(number << 3 | wire)
            if wire == 0:
                out += varint(value)
            elif wire in (1, 5):
                out += struct.pack("<d" if wire == 1 else "<f", value)
            else:
                data = value.encode() if type_ == "string" else value
                out += varint(len(data)) + data
    return bytes(out)


def tfrecord_payloads(data: bytes) -> list[bytes]:
    """Records of a TFRecord file (uint64 length, 4-byte CRC, data, 4-byte CRC)."""
    out, pos = [], 0
    while pos < len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append(data[pos + 12:pos + 12 + length])
        pos += 16 + length
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    return waymo_writer.write_synthetic_waymo(tmp_path_factory.mktemp("official"), n_segments=1,
                                              width=16, height=16, seconds=0.3)


# --- Waymo v1 -------------------------------------------------------------------------------

def test_camera_name_enum():
    assert waymo.FRONT == CAMERA_NAME["FRONT"]
    assert waymo_writer.FRONT_LEFT == CAMERA_NAME["FRONT_LEFT"]


def test_v1_writer_field_numbers(written):
    segment = written["segments"][0]
    data = (Path(written["v1_root"]) / segment["v1_file"]).read_bytes()
    records = tfrecord_payloads(data)
    assert len(records) == len(segment["timestamps"])
    for i, record in enumerate(records):
        frame = parse(record, "Frame")
        assert frame["context"] == [{"name": [segment["name"]]}]
        assert frame["timestamp_micros"] == [segment["timestamps"][i]]
        assert len(frame["pose"][0]["transform"]) == 16
        images = {image["name"][0]: image for image in frame["images"]}
        assert set(images) == {CAMERA_NAME["FRONT"], CAMERA_NAME["FRONT_LEFT"]}
        front = images[CAMERA_NAME["FRONT"]]
        assert front["image"] == [segment["front_jpegs"][i]]
        velocity = front["velocity"][0]
        assert [velocity[k][0] for k in ("v_x", "v_y", "v_z")] == pytest.approx(
            segment["velocities"][i])


def official_v1_frames(segment: str, timestamps: list[int]) -> list[bytes]:
    """Frames encoded from MESSAGES, FRONT_LEFT before FRONT, with fields a reader skips."""
    pose = encode("Transform", transform=list(np.eye(4).ravel()))
    frames = []
    for i, timestamp in enumerate(timestamps):
        velocity = encode("Velocity", v_x=3.5 + i, v_y=-1.25, v_z=0.5, w_z=0.1)
        images = [encode("CameraImage", name=CAMERA_NAME[name], image=jpeg(value), pose=pose,
                         velocity=velocity, pose_timestamp=timestamp / 1e6)
                  for name, value in (("FRONT_LEFT", 40), ("FRONT", 200 - 50 * i))]
        frames.append(encode("Frame", context=encode("Context", name=segment),
                             timestamp_micros=timestamp, pose=pose, images=images))
    return frames


def test_v1_reader_field_numbers(tmp_path):
    timestamps = [1_550_000_000_000_000, 1_550_000_000_100_000]
    frames = official_v1_frames("seg_official", timestamps)
    assert waymo.decode_frame(frames[0], CAMERA_NAME["FRONT"]) == (
        "seg_official", timestamps[0], jpeg(200), (3.5, -1.25, 0.5))
    assert waymo.decode_frame(frames[0], CAMERA_NAME["FRONT_LEFT"])[2] == jpeg(40)
    root = tmp_path / "v1"
    root.mkdir()
    (root / "segment-seg_official_with_camera_labels.tfrecord").write_bytes(
        b"".join(waymo_writer.tfrecord(frame) for frame in frames))
    (clip,) = waymo.waymo_clips(root, "v1", n_frames=2, reader="python")
    assert clip.scene == "seg_official" and clip.timestamps == timestamps
    assert waymo.load_waymo_frame(root, clip.frames[1][0]).mean() == pytest.approx(150, abs=3)


def protobuf_frame_class():
    """A Frame class made by the protobuf runtime from MESSAGES (the enum as int32)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    field = descriptor_pb2.FieldDescriptorProto
    scalars = {"int64": field.TYPE_INT64, "CameraName.Name": field.TYPE_INT32,
               "string": field.TYPE_STRING, "bytes": field.TYPE_BYTES,
               "float": field.TYPE_FLOAT, "double": field.TYPE_DOUBLE}
    labels = {"optional": field.LABEL_OPTIONAL, "repeated": field.LABEL_REPEATED}
    proto = descriptor_pb2.FileDescriptorProto(name="maskgwm_official_frame.proto",
                                               package="official", syntax="proto2")
    for name, fields in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for number, (label, type_, field_name) in fields.items():
            entry = message.field.add(name=field_name, number=number, label=labels[label])
            if type_ in scalars:
                entry.type = scalars[type_]
            else:
                entry.type, entry.type_name = field.TYPE_MESSAGE, f".official.{type_}"
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(proto.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("official.Frame"))


def test_v1_against_the_protobuf_runtime(written):
    frame_class = protobuf_frame_class()
    segment = written["segments"][0]
    data = (Path(written["v1_root"]) / segment["v1_file"]).read_bytes()
    frame = frame_class.FromString(tfrecord_payloads(data)[0])         # our writer's bytes
    assert frame.context.name == segment["name"]
    assert frame.timestamp_micros == segment["timestamps"][0]
    (front,) = [image for image in frame.images if image.name == CAMERA_NAME["FRONT"]]
    assert front.image == segment["front_jpegs"][0]
    assert (front.velocity.v_x, front.velocity.v_y) == pytest.approx(
        segment["velocities"][0][:2])

    made = frame_class(timestamp_micros=-7)                             # for our reader
    made.context.name = "seg_pb"
    made.pose.transform.extend([0.5] * 16)
    for name in ("FRONT_LEFT", "FRONT"):
        image = made.images.add(name=CAMERA_NAME[name], image=name.encode(), pose_timestamp=2.0)
        image.velocity.v_x, image.velocity.v_y, image.velocity.w_z = len(name), -2.0, 0.25
    assert waymo.decode_frame(made.SerializeToString(), CAMERA_NAME["FRONT"]) == (
        "seg_pb", -7, b"FRONT", (5.0, -2.0, 0.0))


# --- Waymo v2 -------------------------------------------------------------------------------

def test_v2_reader_names():
    assert waymo.V2_DIR == V2_TAG
    assert waymo.V2_KEYS == {"segment": "key.segment_context_name",
                             "timestamp": "key.frame_timestamp_micros",
                             "camera": "key.camera_name"}
    assert waymo.V2_IMAGE == "[CameraImageComponent].image"
    assert waymo.V2_VELOCITY == LINEAR_VELOCITY


def test_v2_writer_columns(written):
    segment = written["segments"][0]
    path = Path(written["v2_root"]) / V2_TAG / f"{segment['name']}.parquet"
    schema = pq.read_schema(path)
    unofficial = [name for name in schema.names if name not in V2_COLUMNS]
    assert not unofficial, f"columns not in CameraImageComponent: {unofficial}"
    for name in schema.names:
        assert schema.field(name).type == V2_COLUMNS[name], name
    assert {"key.segment_context_name", "key.frame_timestamp_micros", "key.camera_name",
            "[CameraImageComponent].image", *LINEAR_VELOCITY} <= set(schema.names)
    rows = pq.read_table(path).to_pylist()
    front = sorted((r for r in rows if r["key.camera_name"] == CAMERA_NAME["FRONT"]),
                   key=lambda r: r["key.frame_timestamp_micros"])
    assert [r["key.frame_timestamp_micros"] for r in front] == segment["timestamps"]
    assert [r["[CameraImageComponent].image"] for r in front] == segment["front_jpegs"]
    assert {r["key.segment_context_name"] for r in rows} == {segment["name"]}


def test_v2_reader_reads_the_official_schema(tmp_path):
    timestamps = [1_550_000_000_000_000, 1_550_000_000_100_000]
    rows = [(ts, camera, jpeg(value)) for ts in timestamps
            for camera, value in ((CAMERA_NAME["FRONT_LEFT"], 40), (CAMERA_NAME["FRONT"], 220))]
    n = len(rows)
    values = {
        "key.segment_context_name": ["seg_v2"] * n,
        "key.frame_timestamp_micros": [r[0] for r in rows],
        "key.camera_name": [r[1] for r in rows],
        "[CameraImageComponent].image": [r[2] for r in rows],
        "[CameraImageComponent].pose.transform": [list(np.eye(4).ravel())] * n,
        LINEAR_VELOCITY[0]: [4.0] * n, LINEAR_VELOCITY[1]: [3.0] * n, LINEAR_VELOCITY[2]: [0.0] * n,
    }
    columns = {name: pa.array(values.get(name, [0.0] * n), type_)
               for name, type_ in V2_COLUMNS.items()}
    path = tmp_path / V2_TAG / "seg_v2.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table(columns), path)
    (clip,) = waymo.waymo_clips(tmp_path, "v2", n_frames=2)
    assert clip.scene == "seg_v2" and clip.timestamps == timestamps
    frames = waymo.waymo_frames(tmp_path, "v2")["seg_v2"]
    assert [f.speed for f in frames] == [5.0, 5.0]
    assert waymo.load_waymo_frame(tmp_path, clip.frames[0][0]).mean() == pytest.approx(220, abs=3)


# --- OpenDV-YouTube: OpenDriveLab/DriveAGI at commit bdf4ee0310393c86f115f91fbe05fe65bbfffa26 ---
# opendv/scripts/meta_preprocess.py: the meta JSON's keys are the sheet's lower-cased column
# names, a few renamed (KEY_MAP), plus "length" (seconds, from the HH:MM:SS "duration"); its
# default output is meta/OpenDV-YouTube.json. The keys the official scripts read (video2img.py,
# youtube_download.py, utils/download.py):
META_KEYS = {"videoid", "youtuber", "link", "duration", "length", "split", "subset",
             "start_discard", "end_discard"}
RENAMED_KEYS = {"split", "subset", "area", "state", "start_discard", "end_discard"}
META_JSON = "meta/OpenDV-YouTube.json"
# configs/video2img.json and video2img.py: frames of video v go to
# <{train: full_images, val: val_images}[split.lower()]>/<youtuber, spaces -> "_">/<videoid>/;
# utils/frame_extraction.py: 10 Hz, str(i).zfill(9) + ".jpg", i from 0 at start_discard s,
# int(10 * (seconds - start_discard - end_discard)) frames.
IMAGE_ROOTS = {"train": "full_images", "val": "val_images"}
# opendv/README.md "Language Annotations" and utils/cmd2caption.py (plain captions):
LANGUAGE_KEYS = {"cmd", "blip", "folder", "first_frame", "last_frame"}
CMD_CAPTIONS = {0: "Go straight.", 1: "Pass the intersection.", 2: "Turn left.",
                3: "Turn right.", 12: "Stop."}


def official_frame_path(meta: dict, index: int) -> str:
    return (f"{IMAGE_ROOTS[meta['split'].lower()]}/{meta['youtuber'].replace(' ', '_')}/"
            f"{meta['videoid']}/{str(index).zfill(9)}.jpg")


def test_opendv_reader_names():
    assert opendv.META_PATH == META_JSON and opendv.IMAGE_DIRS == IMAGE_ROOTS
    assert opendv.FPS == 10.0
    assert set(opendv.SECONDS_KEYS) <= META_KEYS
    meta = {"videoid": "abc", "youtuber": "Some Driver", "split": "Val"}
    assert opendv.video_folder(meta) + "/" + opendv.frame_name(12) == official_frame_path(meta, 12)


def test_opendv_reader_reads_the_official_meta(tmp_path):
    # one entry as meta_preprocess.py writes it (sheet columns lower-cased, KEY_MAP applied)
    entry = {"id": 1, "videoid": "xYz_01", "youtuber": "A Driver", "link": "https://y/xYz_01",
             "duration": "00:05", "length": 5, "split": "Train", "subset": "Mini",
             "area": "N/A", "state": "N/A", "start_discard": 1, "end_discard": 1}
    assert RENAMED_KEYS | META_KEYS <= set(entry)
    (tmp_path / META_JSON).parent.mkdir(parents=True)
    (tmp_path / META_JSON).write_text(json.dumps([entry], indent=4))
    n = int(10 * (entry["length"] - entry["start_discard"] - entry["end_discard"]))
    for index in range(n):
        path = tmp_path / official_frame_path(entry, index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(index))
    clips = opendv.opendv_clips(tmp_path, "Train", n_frames=10)
    assert [c.frames[0][0] for c in clips] == [official_frame_path(entry, i) for i in (0, 10, 20)]
    assert clips[0].timestamps[0] == entry["start_discard"] * 1_000_000

    annotation = {"cmd": 2, "blip": "a road",
                  "folder": official_frame_path(entry, 0).rsplit("/", 1)[0],
                  "first_frame": "000000000.jpg", "last_frame": "000000009.jpg"}
    assert set(annotation) == LANGUAGE_KEYS
    labels = opendv.clip_language([annotation], clips)
    assert labels == {clips[0].clip_id: {"cmd": 2, "blip": "a road"}}


def test_opendv_writer_layout(tmp_path):
    tree = opendv_writer.write_synthetic_opendv(tmp_path, n_videos=2, width=8, height=8,
                                                seconds=3.0)
    entries = json.loads((tmp_path / META_JSON).read_text())
    for entry in entries:
        assert set(entry) <= META_KEYS | RENAMED_KEYS, set(entry) - META_KEYS - RENAMED_KEYS
        assert entry["split"].lower() in IMAGE_ROOTS
        n = int(10 * (entry["length"] - entry["start_discard"] - entry["end_discard"]))
        assert (tmp_path / official_frame_path(entry, n - 1)).is_file()
        assert not (tmp_path / official_frame_path(entry, n)).exists()
    for annotation in json.loads((tmp_path / opendv_writer.LANGUAGE_PATH).read_text()):
        assert set(annotation) == LANGUAGE_KEYS
    assert len(entries) == len(tree["videos"])


def test_opendv_command_classes():
    vista = {"right": 0, "left": 1, "stop": 2, "straight": 3}      # as our module documents it
    meaning = {"Go straight.": "straight", "Pass the intersection.": "straight",
               "Turn left.": "left", "Turn right.": "right", "Stop.": "stop"}
    assert opendv.OPENDV_TO_VISTA_CMD == {index: vista[meaning[caption]]
                                          for index, caption in CMD_CAPTIONS.items()}
