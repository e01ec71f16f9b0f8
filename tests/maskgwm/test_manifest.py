"""The clip manifest: JSON and Parquet round trips, validation."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from maskgwm.data.manifest import Actions, ClipManifest, ClipRecord, ManifestError


def record(i: int, actions: Actions | None = None) -> ClipRecord:
    return ClipRecord(clip_id=f"c{i}", dataset="nuscenes", split="val", scene="scene-0103",
                      views=["CAM_FRONT"], frames=[[f"samples/CAM_FRONT/{i}_{t}.jpg"]
                                                   for t in range(3)],
                      timestamps=[t * 100_000 for t in range(3)], fps=10.0, actions=actions,
                      source=f"token{i}")


@pytest.mark.parametrize("suffix", [".json", ".parquet"])
def test_round_trip(tmp_path, suffix):
    manifest = ClipManifest("nuscenes", "/data/nuscenes",
                            [record(0, Actions(traj=[0.1] * 8, cmd=3, speed=[5.0] * 4)),
                             record(1)])
    loaded = ClipManifest.load(manifest.save(tmp_path / f"m{suffix}"))
    assert loaded == manifest
    assert loaded.clips[0].actions.cmd == 3 and loaded.clips[1].actions is None


def test_validation(tmp_path):
    with pytest.raises(ManifestError, match="3 frames but 2 timestamps"):
        ClipRecord("c", "x", "val", "s", ["CAM_FRONT"], [["a"], ["b"], ["c"]], [0, 1], 10.0)
    with pytest.raises(ManifestError, match="one frame per view"):
        ClipRecord("c", "x", "val", "s", ["A", "B"], [["a"]], [0], 10.0)
    (tmp_path / "bad.json").write_text('{"schema_version": 7, "clips": []}')
    with pytest.raises(ManifestError, match="schema_version 7"):
        ClipManifest.load(tmp_path / "bad.json")
    with pytest.raises(ManifestError, match="not found"):
        ClipManifest.load(tmp_path / "none.json")


@pytest.mark.parametrize("content,message", [
    ('{"schema_version": 1, "root": "/x", "clips": []}', r"header lacks \['dataset'\]"),
    ("[]", "a list, not a manifest object"),
    ('{"schema_version": 1, "dataset": "x", "root": "/x", "clips": [["c"]]}',
     "clip 0: malformed"),
])
def test_malformed_json_names_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ManifestError, match=rf"bad\.json: {message}"):
        ClipManifest.load(path)


def test_malformed_parquet_names_file_and_clip(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pq.read_table(ClipManifest("x", "/x", [record(0), record(1)]).save(
        tmp_path / "m.parquet"))
    pq.write_table(table.drop_columns(["timestamps"]), tmp_path / "no_column.parquet")
    with pytest.raises(ManifestError, match=r"no_column\.parquet: columns \['timestamps'\]"):
        ClipManifest.load(tmp_path / "no_column.parquet")
    column = table.schema.get_field_index("frames")
    cells = pa.array([table["frames"][0].as_py(), '[["a.jpg"], ["b.j'])
    pq.write_table(table.set_column(column, "frames", cells), tmp_path / "cell.parquet")
    with pytest.raises(ManifestError, match=r"cell\.parquet: clip 1 \(c1\): column 'frames' "
                                            "is not valid JSON"):
        ClipManifest.load(tmp_path / "cell.parquet")
    (tmp_path / "cut.parquet").write_bytes((tmp_path / "m.parquet").read_bytes()[:100])
    with pytest.raises(ManifestError, match=r"cut\.parquet: not a readable Parquet file"):
        ClipManifest.load(tmp_path / "cut.parquet")


@pytest.mark.parametrize("change,message", [
    ({"actions": {"speed": [1.0, math.nan]}}, r"actions\.speed \[1\.0, nan\] is not a list of "
                                              "finite numbers"),
    ({"actions": {"traj": [0.0, "1"]}}, r"actions\.traj \[0\.0, '1'\] is not a list of finite"),
    ({"actions": {"z": math.inf}}, r"actions\.z inf is not a finite number"),
    ({"actions": {"cmd": 7}}, r"actions\.cmd 7 is not None, 0, 1, 2 or 3"),
    ({"fps": math.nan}, r"fps nan is not a positive finite number"),
])
def test_non_finite_or_mistyped_values_name_file_and_clip(tmp_path, change, message):
    """A NaN action would reach the model as a NaN loss; a string, as an error far away."""
    path = ClipManifest("x", "/x", [record(0), record(1)]).save(tmp_path / "m.json")
    data = json.loads(path.read_text())
    clip = data["clips"][1]
    clip.update({**change, "actions": {**dataclasses.asdict(Actions()), **change["actions"]}}
                if "actions" in change else change)
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=rf"m\.json: clip 1: malformed \(clip c1: {message}"):
        ClipManifest.load(path)
