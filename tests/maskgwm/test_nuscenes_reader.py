"""nuScenes readers on the synthetic nuScenes: Vista's clips and actions, six-view clips, Vista's
JSON format, and errors that say what is wrong."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from nuscenes.nuscenes import NuScenes

from maskgwm.data.manifest import ClipManifest, ManifestError
from maskgwm.data.nuscenes import (
    CAMERAS, VISTA_KEYS, ClipReport, NuScenesDataError, export_vista_manifest,
    import_vista_manifest, mview_clips, open_nuscenes, vista_clips)
from maskgwm.data.synth.nuscenes_writer import LIDAR_TRANSLATION, write_synthetic_nuscenes
from maskgwm.model.actions import embed_actions

SCENES = ["scene-0061", "scene-0103", "scene-0553", "scene-0916"]
SHORT_CHAIN_SCENE, NO_CAN_SCENE = "scene-0916", "scene-0103"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuscenes")
    truth = write_synthetic_nuscenes(root, scenes=SCENES, seed=0, seconds=8.0,
                                     missing_sweeps={SHORT_CHAIN_SCENE: 2},
                                     without_can=(NO_CAN_SCENE,))
    nusc = open_nuscenes(root, "v1.0-mini")
    assert isinstance(nusc, NuScenes)
    report = ClipReport()
    return root, truth, nusc, vista_clips(nusc, SCENES, report=report), report


def start_keyframe(clip, truth) -> int:
    return truth[clip.scene]["keyframe_timestamps"].index(clip.timestamps[0])


def lidar_displacement(states, first: int, last: int) -> tuple[float, float]:
    """(forward, left) of the LIDAR_TOP mount at state `last`, in its frame at state `first`."""
    a, b = states[first], states[last]
    arm = LIDAR_TRANSLATION[0]
    dx = b.x + arm * math.cos(b.yaw) - a.x - arm * math.cos(a.yaw)
    dy = b.y + arm * math.sin(b.yaw) - a.y - arm * math.sin(a.yaw)
    return (math.cos(a.yaw) * dx + math.sin(a.yaw) * dy,
            -math.sin(a.yaw) * dx + math.cos(a.yaw) * dy)


def test_clip_count_follows_vista_formula(dataset):
    _, truth, _, clips, report = dataset
    starts = sum(truth[s]["n_keyframes"] - 4 for s in SCENES)
    assert report.start_keyframes == starts
    assert len(report.dropped_short_chain) == 1          # the 2 missing sweeps cut one chain
    assert len(clips) == report.clips == starts - 1
    assert report.skipped == [] and report.scenes_without_can == [NO_CAN_SCENE]
    tokens = {scene["name"]: scene["token"] for scene in dataset[2].scene}
    order = [tokens[clip.scene] for clip in clips]
    assert order == sorted(order)                       # Vista's (scene token, time) order


def test_frames_follow_the_front_camera_chain(dataset):
    root, truth, _, clips, _ = dataset
    for clip in clips:
        assert clip.length == 25 and clip.views == ["CAM_FRONT"] and clip.fps == 12.0
        assert clip.frames[0][0].startswith("samples/CAM_FRONT/")
        assert clip.timestamps == sorted(clip.timestamps)
        assert (root / clip.frames[-1][0]).is_file()
        if clip.scene != SHORT_CHAIN_SCENE:              # a keyframe every 6 frames
            assert all(clip.frames[t][0].startswith("samples/") == (t % 6 == 0) for t in range(25))


def test_cmd_and_traj_match_the_generated_drive(dataset):
    _, truth, _, clips, _ = dataset
    seen = set()
    for clip in clips:
        j = start_keyframe(clip, truth)
        forward, left = lidar_displacement(truth[clip.scene]["states"], 6 * j, 6 * (j + 4))
        traj = clip.actions.traj
        assert len(traj) == 8
        assert (traj[-2], traj[-1]) == pytest.approx((left, forward), abs=1e-6)
        expected = (1 if left > 2.5 else 0 if left < -2.5 else
                    3 if abs(left) < 1.5 and forward > 2.5 else
                    2 if abs(left) < 1.5 and forward < 1.5 else None)
        if expected is not None:
            assert clip.actions.cmd == expected, (clip.clip_id, forward, left)
            seen.add(expected)
    assert {0, 1, 3} <= seen


def test_speed_and_angle_from_can_bus(dataset):
    _, truth, _, clips, _ = dataset
    checked = 0
    for clip in clips:
        scene = truth[clip.scene]
        j = start_keyframe(clip, truth)
        if not scene["has_can"]:
            assert clip.actions.speed == [] and clip.actions.angle == []
            continue
        assert not clip.actions.proxy
        for i in range(4):
            assert clip.actions.speed[i] == pytest.approx(scene["can_speed_kmh"][j + 1 + i] / 3.6)
            steering_deg = scene["can_steering_deg"][j + 1 + i]
            assert clip.actions.angle[i] == pytest.approx(steering_deg / 780)
            state = scene["states"][6 * (j + 1 + i)]
            assert clip.actions.speed[i] == pytest.approx(state.speed, abs=0.3)
            checked += 1
    assert checked > 0


def test_ego_pose_proxy_where_no_can(dataset):
    _, truth, nusc, _, _ = dataset
    clips = vista_clips(nusc, [NO_CAN_SCENE], proxy_speed=True)
    states = truth[NO_CAN_SCENE]["states"]
    for clip in clips:
        j = start_keyframe(clip, truth)
        assert clip.actions.proxy and len(clip.actions.speed) == len(clip.actions.angle) == 4
        for i in range(4):
            interval = states[6 * (j + i):6 * (j + i + 1)]
            mean_speed = sum(s.speed for s in interval) / len(interval)
            assert clip.actions.speed[i] == pytest.approx(mean_speed, rel=0.02, abs=0.05)


def test_goal_projects_the_last_waypoint(dataset):
    _, _, _, clips, _ = dataset
    straight = [c for c in clips if c.actions.cmd == 3 and abs(c.actions.traj[-2]) < 0.5]
    assert straight
    for clip in straight:
        u, v = clip.actions.goal
        assert u == pytest.approx(0.5, abs=0.05) and 0.42 < v < 1.0
        assert clip.actions.z == pytest.approx(clip.actions.traj[-1], abs=0.2)
    assert all(c.actions.goal == [] or (0 < c.actions.goal[0] < 1 and c.actions.z > 0)
               for c in clips)


def test_vista_manifest_round_trip(dataset, tmp_path):
    _, _, _, clips, _ = dataset
    path = export_vista_manifest(clips, tmp_path / "nuScenes_val.json")
    raw = json.loads(path.read_text())
    assert len(raw) == len(clips) and all(tuple(entry) == VISTA_KEYS for entry in raw)
    entry = raw[0]
    assert len(entry["frames"]) == 25 and len(entry["traj"]) == 10 and entry["traj"][:2] == [0, 0]
    assert len(entry["speed"]) in (0, 5) and entry["cmd"] in (0, 1, 2, 3)
    back = import_vista_manifest(path)
    for original, loaded in zip(clips, back, strict=True):
        assert loaded.frames == original.frames and loaded.timestamps == original.timestamps
        ours, theirs = original.actions, loaded.actions
        assert theirs.traj == ours.traj and theirs.cmd == ours.cmd and theirs.z == ours.z
        assert theirs.speed == pytest.approx(ours.speed)
        assert theirs.angle == pytest.approx(ours.angle)
        assert theirs.goal == pytest.approx(ours.goal)
    # what the model's action projections receive is the same after the round trip
    torch.testing.assert_close(embed_actions([c.actions for c in back]),
                               embed_actions([c.actions for c in clips]))
    ClipManifest("nuscenes", "/data", back).save(tmp_path / "m.json")


def test_mview_clips_use_synchronised_keyframes(dataset):
    _, truth, nusc, _, _ = dataset
    clips = mview_clips(nusc, SCENES, n_frames=8)
    assert len(clips) == sum(truth[s]["n_keyframes"] // 8 for s in SCENES)
    for clip in clips:
        assert clip.views == list(CAMERAS) and clip.length == 8 and clip.fps == 2.0
        for t, row in enumerate(clip.frames):
            assert all(f.startswith(f"samples/{cam}/") for f, cam in zip(row, CAMERAS))
            assert all(f.endswith(f"__{clip.timestamps[t]}.jpg") for f in row)


@pytest.fixture
def small(tmp_path):
    write_synthetic_nuscenes(tmp_path, scenes=["scene-0061"], seconds=4.0)
    return tmp_path


def test_error_for_missing_table(small):
    (small / "v1.0-mini" / "sample_data.json").unlink()
    with pytest.raises(NuScenesDataError, match=r"sample_data\.json.*re-extract"):
        open_nuscenes(small, "v1.0-mini")
    with pytest.raises(NuScenesDataError, match="no such directory"):
        open_nuscenes(small, "v1.0-trainval")


@pytest.mark.parametrize("table", ["sample_data", "map"])
def test_error_for_truncated_table(small, table):
    path = small / "v1.0-mini" / f"{table}.json"
    path.write_text(path.read_text()[:-20])
    with pytest.raises(NuScenesDataError, match=rf"{table}\.json: not valid JSON.*re-extract"):
        open_nuscenes(small, "v1.0-mini")


def test_error_for_sample_without_front_keyframe(small):
    tables = small / "v1.0-mini"
    read = lambda name: json.loads((tables / f"{name}.json").read_text())    # noqa: E731
    channel = {s["token"]: s["channel"] for s in read("sensor")}
    sensor = {c["token"]: channel[c["sensor_token"]] for c in read("calibrated_sensor")}
    sample = sorted(read("sample"), key=lambda s: s["timestamp"])[2]["token"]
    records = read("sample_data")
    for r in records:
        if r["sample_token"] == sample and sensor[r["calibrated_sensor_token"]] == "CAM_FRONT":
            r["is_key_frame"] = False
    (tables / "sample_data.json").write_text(json.dumps(records))
    nusc = open_nuscenes(small, "v1.0-mini")
    with pytest.raises(NuScenesDataError, match=f"sample {sample} has no CAM_FRONT keyframe"):
        vista_clips(nusc, ["scene-0061"])
    report = ClipReport()
    clips = vista_clips(nusc, ["scene-0061"], report=report, skip_bad=True)
    assert len(report.skipped) == 3 and all("CAM_FRONT" in s for s in report.skipped)
    assert len(clips) + len(report.skipped) + len(report.dropped_short_chain) == \
        report.start_keyframes


def test_error_for_broken_chain(small):
    table = small / "v1.0-mini" / "sample_data.json"
    records = json.loads(table.read_text())
    broken = next(r for r in records if "sweeps/CAM_FRONT/" in r["filename"])
    broken["next"] = "f" * 32
    table.write_text(json.dumps(records))
    nusc = open_nuscenes(small, "v1.0-mini")
    with pytest.raises(NuScenesDataError, match=f"{'f' * 32}.*{broken['token']}"):
        vista_clips(nusc, ["scene-0061"])
    report = ClipReport()
    clips = vista_clips(nusc, ["scene-0061"], report=report, skip_bad=True)
    assert report.skipped and len(clips) + len(report.skipped) == report.start_keyframes


def test_error_for_missing_image_and_unknown_scene(small):
    nusc = open_nuscenes(small, "v1.0-mini")
    clips = vista_clips(nusc, ["scene-0061"])
    (small / clips[-1].frames[-1][0]).unlink()
    with pytest.raises(NuScenesDataError, match=r"image is missing.*'samples' blobs"):
        vista_clips(nusc, ["scene-0061"])
    report = ClipReport()
    assert len(vista_clips(nusc, ["scene-0061"], report=report, skip_bad=True)) < len(clips)
    assert len(report.skipped) == 1
    with pytest.raises(NuScenesDataError, match="scene-9999.*not in"):
        vista_clips(nusc, ["scene-9999"])
    report = ClipReport()
    assert vista_clips(nusc, ["scene-9999"], report=report, skip_bad=True) == []
    assert report.skipped == ["scene-9999: not in v1.0-mini"]


def test_dataset_without_can_bus_expansion(small):
    shutil.rmtree(small / "can_bus")
    nusc = open_nuscenes(small, "v1.0-mini")
    report = ClipReport()
    clips = vista_clips(nusc, ["scene-0061"], report=report)
    assert clips and report.scenes_without_can == ["scene-0061"]
    assert all(c.actions.speed == [] and c.actions.angle == [] for c in clips)


@pytest.mark.parametrize("change,message", [
    ({"frames": "samples/a.jpg"}, "'frames' is 'samples/a.jpg', not a non-empty list"),
    ({"z": None}, "'z' is None, not a number"),
    ({"speed": [1, "2"]}, r"'speed' is \[1, '2'\], not a list of numbers"),
    ({"cmd": 7}, "'cmd' is 7, not 0, 1, 2 or 3"),
    ({"speed": [1.0, math.nan]}, r"'speed' is \[1\.0, nan\], which is not finite \(NaN or Inf\)"),
    ({"z": math.inf}, r"'z' is inf, which is not finite"),
])
def test_vista_manifest_types_checked(tmp_path, change, message):
    good = {"frames": ["samples/CAM_FRONT/x__CAM_FRONT__1533151603512404.jpg"] * 2,
            "traj": [0.0] * 10, "cmd": 3, "speed": [1.0] * 5, "angle": [0.0] * 5, "z": 5.0,
            "goal": [800.0, 450.0]}
    path = tmp_path / "nuScenes_val.json"
    path.write_text(json.dumps([good, {**good, **change}]))
    with pytest.raises(ManifestError, match=rf"nuScenes_val\.json: clip 1 {message}"):
        import_vista_manifest(path)
    path.write_text(json.dumps([good, [1, 2]]))
    with pytest.raises(ManifestError, match=r"nuScenes_val\.json: clip 1 lacks"):
        import_vista_manifest(path)


def _edit_table(small, name, edit):
    path = small / "v1.0-mini" / f"{name}.json"
    records = json.loads(path.read_text())
    path.write_text(json.dumps(edit(records)))
    return records


def _drop_first(records):
    return records[1:]


def _unlink_logs(records):
    return [{**record, "log_tokens": []} for record in records]


def _without_token(records):
    records[3] = {k: v for k, v in records[3].items() if k != "token"}
    return records


@pytest.mark.parametrize("table,edit,message", [
    ("calibrated_sensor", _drop_first,
     r"sample_data\.json: record \d+ \(token \w+\): calibrated_sensor_token '\w+' is not in "
     r"calibrated_sensor\.json"),
    ("map", _unlink_logs, r"log\.json: log \w+ is in no map's log_tokens \(map\.json\)"),
    ("sensor", lambda records: {"sensors": records}, r"sensor\.json: a dict, not a list"),
    ("ego_pose", _without_token, r"ego_pose\.json: record 3 lacks 'token'"),
    ("map", lambda records: [], r"map\.json: no records"),
])
def test_error_for_broken_table_references(small, table, edit, message):
    """Valid JSON whose records do not fit together: the devkit's bare KeyError / TypeError /
    IndexError become a NuScenesDataError naming the table, the record and the fix."""
    _edit_table(small, table, edit)
    with pytest.raises(NuScenesDataError, match=rf"{message}.*re-extract"):
        open_nuscenes(small, "v1.0-mini")


@pytest.mark.parametrize("damage,message", [
    (lambda text: text[:-30], r"not valid JSON"),
    (lambda text: json.dumps([{**m, "vehicle_speed": None} for m in json.loads(text)]),
     r"message 0 has vehicle_speed None, not a finite number"),
    (lambda text: text.replace('"steering": ', '"steering": NaN, "x": ', 1),
     r"message 0 has steering nan, not a finite number"),
])
def test_error_for_corrupt_can_bus_file(small, damage, message):
    """A damaged CAN-bus file is an error naming it, not a scene silently without actions."""
    path = small / "can_bus" / "scene-0061_vehicle_monitor.json"
    path.write_text(damage(path.read_text()))
    nusc = open_nuscenes(small, "v1.0-mini")
    with pytest.raises(NuScenesDataError, match=rf"scene-0061_vehicle_monitor\.json: {message}"
                                                r".*re-extract the nuScenes CAN bus"):
        vista_clips(nusc, ["scene-0061"])
    report = ClipReport()
    assert vista_clips(nusc, ["scene-0061"], report=report, skip_bad=True) == []
    assert len(report.skipped) == 1 and report.skipped[0].startswith("scene-0061: ")
    assert report.scenes_without_can == []
