"""The synthetic nuScenes writer: the devkit loads it; poses and CAN bus match the drive."""
from __future__ import annotations

import math

import numpy as np
import pytest
from nuscenes.can_bus.can_bus_api import NuScenesCanBus
from nuscenes.nuscenes import NuScenes
from nuscenes.utils import splits
from PIL import Image
from pyquaternion import Quaternion

from maskgwm.data.synth.nuscenes_writer import CAMERA_YAWS_DEG, TABLES, write_synthetic_nuscenes

SCENES = ["scene-0061", "scene-0103", "scene-0916"]
WIDTH, HEIGHT = 160, 90


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("nuscenes")
    truth = write_synthetic_nuscenes(root, scenes=SCENES, seed=0, seconds=5.0,
                                     missing_sweeps={"scene-0916": 2},
                                     without_can=("scene-0103",))
    return root, truth, NuScenes(version="v1.0-mini", dataroot=str(root), verbose=False)


def front_chain(nusc, scene):
    sample = nusc.get("sample", scene["first_sample_token"])
    records, sd_token = [], sample["data"]["CAM_FRONT"]
    while sd_token:
        records.append(nusc.get("sample_data", sd_token))
        sd_token = records[-1]["next"]
    return records


def test_devkit_loads_all_tables_and_map(dataset):
    root, truth, nusc = dataset
    assert sorted(p.stem for p in (root / "v1.0-mini").glob("*.json")) == sorted(TABLES)
    assert len(TABLES) == 13
    assert nusc.instance == [] and nusc.sample_annotation == []
    assert all(log["map_token"] == nusc.map[0]["token"] for log in nusc.log)
    assert (root / nusc.map[0]["filename"]).exists()
    channels = {s["channel"] for s in nusc.sensor}
    assert channels == set(CAMERA_YAWS_DEG) | {"LIDAR_TOP"}


def test_scene_names_and_splits(dataset):
    _, truth, nusc = dataset
    names = [scene["name"] for scene in nusc.scene]
    assert names == SCENES
    assert [n for n in names if n in splits.mini_val] == ["scene-0103", "scene-0916"]
    assert [n for n in names if n in splits.mini_train] == ["scene-0061"]
    for scene in nusc.scene:
        assert scene["nbr_samples"] == truth[scene["name"]]["n_keyframes"] == 10
        sample = nusc.get("sample", scene["last_sample_token"])
        assert sample["next"] == "" and set(sample["data"]) == set(CAMERA_YAWS_DEG) | {"LIDAR_TOP"}


def test_next_chains_keyframes_and_images(dataset):
    root, truth, nusc = dataset
    for scene in nusc.scene:
        chain = front_chain(nusc, scene)
        assert len(chain) == truth[scene["name"]]["n_camera_frames"]
        assert chain[0]["prev"] == "" and chain[-1]["next"] == ""
        assert all(b["prev"] == a["token"] for a, b in zip(chain, chain[1:]))
        stamps = [r["timestamp"] for r in chain]
        assert stamps == sorted(stamps)
        keys = [r for r in chain if r["is_key_frame"]]
        assert [r["timestamp"] for r in keys] == truth[scene["name"]]["keyframe_timestamps"]
        assert all(r["filename"].startswith("samples/CAM_FRONT/") for r in keys)
        sweeps = [r for r in chain if not r["is_key_frame"]]
        assert all(r["filename"].startswith("sweeps/CAM_FRONT/") for r in sweeps)
        with Image.open(root / chain[3]["filename"]) as image:
            assert image.size == (WIDTH, HEIGHT) == (chain[3]["width"], chain[3]["height"])
    assert truth["scene-0061"]["n_camera_frames"] - truth["scene-0916"]["n_camera_frames"] == 2


def test_intrinsics_scaled_and_front_camera_looks_forward(dataset):
    _, _, nusc = dataset
    sensor = {s["token"]: s["channel"] for s in nusc.sensor}
    calibrated = {sensor[c["sensor_token"]]: c for c in nusc.calibrated_sensor}
    intrinsic = np.array(calibrated["CAM_FRONT"]["camera_intrinsic"])
    assert intrinsic[0, 0] == pytest.approx(1266.417 * WIDTH / 1600)
    optical_axis = Quaternion(calibrated["CAM_FRONT"]["rotation"]).rotate([0, 0, 1])
    np.testing.assert_allclose(optical_axis, [1, 0, 0], atol=1e-9)
    left_axis = Quaternion(calibrated["CAM_FRONT_LEFT"]["rotation"]).rotate([0, 0, 1])
    assert math.degrees(math.atan2(left_axis[1], left_axis[0])) == pytest.approx(55.0)


def test_speed_and_yaw_from_ego_poses_match_ground_truth(dataset):
    _, truth, nusc = dataset
    saw_right_turn = saw_left_turn = False
    for scene in nusc.scene:
        states = truth[scene["name"]]["states"]
        chain = [r for r in front_chain(nusc, scene)]
        poses = [nusc.get("ego_pose", r["ego_pose_token"]) for r in chain]
        for a, b, pa, pb in zip(chain, chain[1:], poses, poses[1:]):
            dt = (b["timestamp"] - a["timestamp"]) / 1e6
            if dt > 0.1:        # a gap left by missing sweeps
                continue
            frame = round((a["timestamp"] - chain[0]["timestamp"]) * 12 / 1e6)
            speed = math.dist(pa["translation"][:2], pb["translation"][:2]) / dt
            assert speed == pytest.approx(states[frame].speed, rel=0.01, abs=0.02)
            yaw = Quaternion(pa["rotation"]).yaw_pitch_roll[0]
            yaw_error = math.remainder(yaw - states[frame].yaw, 2 * math.pi)
            assert yaw_error == pytest.approx(0, abs=1e-9)
            yaw_rate = math.remainder(Quaternion(pb["rotation"]).yaw_pitch_roll[0] - yaw,
                                      2 * math.pi) / dt
            if abs(states[frame].yaw_rate) > 0.05:
                assert np.sign(yaw_rate) == np.sign(states[frame].steering)
                saw_left_turn |= yaw_rate > 0
                saw_right_turn |= yaw_rate < 0
    assert saw_left_turn and saw_right_turn


def test_can_bus_readable_through_devkit(dataset):
    root, truth, nusc = dataset
    can_bus = NuScenesCanBus(dataroot=str(root))
    messages = can_bus.get_messages("scene-0061", "vehicle_monitor")
    assert len(messages) >= truth["scene-0061"]["n_keyframes"]
    assert all({"utime", "vehicle_speed", "steering"} <= set(m) for m in messages)
    start = truth["scene-0061"]["keyframe_timestamps"][0]
    states = truth["scene-0061"]["states"]
    for message in messages:
        frame = round((message["utime"] - start) * 12 / 1e6)
        if frame < len(states):
            assert message["vehicle_speed"] / 3.6 == pytest.approx(states[frame].speed, abs=0.01)
            steering = math.radians(message["steering"])
            assert steering == pytest.approx(states[frame].steering, abs=0.002)
    assert can_bus.get_messages("scene-0061", "pose")[0]["pos"][:2] == [states[0].x, states[0].y]
    with pytest.raises(FileNotFoundError):
        can_bus.get_messages("scene-0103", "vehicle_monitor")


def test_deterministic_and_rejects_bad_names(tmp_path):
    first = write_synthetic_nuscenes(tmp_path / "a", scenes=["scene-0061"], seconds=1.0)
    second = write_synthetic_nuscenes(tmp_path / "b", scenes=["scene-0061"], seconds=1.0)
    assert first["scene-0061"]["states"] == second["scene-0061"]["states"]
    assert ((tmp_path / "a/v1.0-mini/sample_data.json").read_text()
            == (tmp_path / "b/v1.0-mini/sample_data.json").read_text())
    with pytest.raises(ValueError, match="scene-0123"):
        write_synthetic_nuscenes(tmp_path / "c", scenes=["intersection"])
