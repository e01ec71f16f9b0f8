"""Writes procedural drives as a real nuScenes dataset that `nuscenes-devkit` loads unchanged.

Layout under `out`: `<version>/` with the 13 JSON tables, `maps/<token>.png`, six cameras'
JPEGs in `samples/<CAM>/` (keyframes, 2 Hz) and `sweeps/<CAM>/` (the 12 Hz frames between),
an empty LIDAR_TOP point cloud per keyframe, and the CAN-bus expansion in `can_bus/`
(`<scene>_vehicle_monitor.json` at 2 Hz with `vehicle_speed` in km/h and `steering` in degrees,
and `<scene>_pose.json` at the camera rate). Scenes use the real v1.0-mini names so
`nuscenes.utils.splits.mini_train` / `mini_val` select them.

Synthetic simplifications: all cameras share one mount point (the renderer's) and fire at the
same instants; LIDAR_TOP exists at keyframes only; no annotations (the devkit accepts empty
`instance` and `sample_annotation` tables).
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
from PIL import Image
from pyquaternion import Quaternion

from maskgwm.data.synth.world import (
    CAMERA_HEIGHT_M, EgoState, camera_intrinsic, render_frames, simulate_drive)

MINI_SCENES = ("scene-0061", "scene-0103", "scene-0553", "scene-0655", "scene-0757",
               "scene-0796", "scene-0916", "scene-1077", "scene-1094", "scene-1100")
CAMERA_YAWS_DEG = {"CAM_FRONT": 0.0, "CAM_FRONT_LEFT": 55.0, "CAM_FRONT_RIGHT": -55.0,
                   "CAM_BACK": 180.0, "CAM_BACK_LEFT": 110.0, "CAM_BACK_RIGHT": -110.0}
LIDAR = "LIDAR_TOP"
CAMERA_FPS = 12.0
FRAMES_PER_KEYFRAME = 6                       # 12 Hz camera, 2 Hz keyframes
CAN_TAIL_FRAMES = 12                          # CAN logs run a little past the last keyframe
VEHICLE_MONITOR_OFFSET_FRAMES = 1             # 2 Hz messages, not aligned with keyframes
LIDAR_TRANSLATION = [0.943713, 0.0, 1.84023]  # the real LIDAR_TOP mount, yawed -90 degrees
LIDAR_ROTATION = [math.cos(-math.pi / 4), 0.0, 0.0, math.sin(-math.pi / 4)]
CAMERA_FROM_EGO_AXES = Quaternion(0.5, -0.5, 0.5, -0.5)  # x right, y down, z forward
FIRST_TIMESTAMP_US = 1_531_883_530_000_000
LOCATION = "singapore-onenorth"
TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")
CATEGORIES = ("vehicle.car", "vehicle.truck", "human.pedestrian.adult", "movable_object.barrier")
ATTRIBUTES = ("vehicle.moving", "vehicle.stopped", "vehicle.parked", "pedestrian.moving")
VISIBILITY_LEVELS = ("v0-40", "v40-60", "v60-80", "v80-100")


def token(*parts: object) -> str:
    """A deterministic 32-hex-digit token, shaped like nuScenes' own."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def yaw_quaternion(yaw: float) -> list[float]:
    """(w, x, y, z) of a rotation by `yaw` about the up axis."""
    return [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)]


def _static_tables(tables: dict[str, list], width: int, height: int) -> dict[str, str]:
    """Sensors, calibrations and vocabularies; returns calibrated_sensor tokens by channel."""
    tables["category"] = [{"token": token("category", n), "name": n, "description": n}
                          for n in CATEGORIES]
    tables["attribute"] = [{"token": token("attribute", n), "name": n, "description": n}
                           for n in ATTRIBUTES]
    tables["visibility"] = [{"token": str(i + 1), "level": level, "description": level}
                            for i, level in enumerate(VISIBILITY_LEVELS)]
    calibrated = {}
    for channel, yaw_deg in CAMERA_YAWS_DEG.items():
        rotation = Quaternion(axis=[0, 0, 1], angle=math.radians(yaw_deg)) * CAMERA_FROM_EGO_AXES
        calibrated[channel] = _add_sensor(tables, channel, "camera", [0.0, 0.0, CAMERA_HEIGHT_M],
                                          list(rotation.elements),
                                          camera_intrinsic(width, height))
    calibrated[LIDAR] = _add_sensor(tables, LIDAR, "lidar", LIDAR_TRANSLATION, LIDAR_ROTATION, [])
    return calibrated


def _add_sensor(tables, channel, modality, translation, rotation, intrinsic) -> str:
    sensor_token = token("sensor", channel)
    tables["sensor"].append({"token": sensor_token, "channel": channel, "modality": modality})
    calibrated_token = token("calibrated_sensor", channel)
    tables["calibrated_sensor"].append({
        "token": calibrated_token, "sensor_token": sensor_token, "translation": translation,
        "rotation": rotation, "camera_intrinsic": intrinsic})
    return calibrated_token


def _to_global(states: list[EgoState], origin: tuple[float, float],
               heading: float) -> list[EgoState]:
    """The drive placed on the map: rotated by `heading` and moved to `origin`."""
    c, s = math.cos(heading), math.sin(heading)
    return [EgoState(st.t, origin[0] + c * st.x - s * st.y, origin[1] + s * st.x + c * st.y,
                     math.remainder(st.yaw + heading, 2 * math.pi), st.speed, st.steering)
            for st in states]


def _kept_frames(n_frames: int, missing_sweeps: int) -> list[int]:
    """Camera frame indices written; `missing_sweeps` sweeps vanish before the last keyframe."""
    last_key = n_frames - 1
    if missing_sweeps >= FRAMES_PER_KEYFRAME:
        raise ValueError(f"missing_sweeps must be < {FRAMES_PER_KEYFRAME}, got {missing_sweeps}")
    dropped = set(range(last_key - missing_sweeps, last_key))
    return [k for k in range(n_frames) if k not in dropped]


class _SceneWriter:
    """Writes one scene's log, samples, sample_data, ego poses, images and CAN bus."""

    def __init__(self, out: Path, tables: dict[str, list], calibrated: dict[str, str],
                 name: str, seed: int, width: int, height: int, seconds: float):
        self.out, self.tables, self.calibrated, self.name = out, tables, calibrated, name
        self.seed = seed * 10_000 + int(name[-4:])
        self.width, self.height = width, height
        self.n_keyframes = max(1, int(round(seconds * 2)))
        self.n_frames = FRAMES_PER_KEYFRAME * (self.n_keyframes - 1) + 1
        rng = np.random.default_rng([self.seed, 2])
        local = simulate_drive(self.seed, self.n_frames + CAN_TAIL_FRAMES, CAMERA_FPS)
        self.local_states = local[:self.n_frames]
        origin = (float(rng.uniform(300, 1500)), float(rng.uniform(300, 1500)))
        self.states = _to_global(local, origin, float(rng.uniform(-math.pi, math.pi)))
        self.first_us = FIRST_TIMESTAMP_US + int(name[-4:]) * 100_000_000
        self.log_token = token("log", name)
        number = int(name[-4:])
        self.logfile = f"n015-2018-07-{10 + number % 19:02d}-11-{number % 60:02d}-00+0800"

    def timestamp(self, frame: int) -> int:
        return self.first_us + int(round(frame * 1e6 / CAMERA_FPS))

    def write(self, missing_sweeps: int, with_can: bool) -> dict:
        self.tables["log"].append({"token": self.log_token, "logfile": self.logfile,
                                   "vehicle": "n015", "date_captured": self.logfile[5:15],
                                   "location": LOCATION})
        scene_token = token("scene", self.name)
        sample_tokens = [token(self.name, "sample", j) for j in range(self.n_keyframes)]
        for j, sample_token in enumerate(sample_tokens):
            self.tables["sample"].append({
                "token": sample_token, "timestamp": self.timestamp(j * FRAMES_PER_KEYFRAME),
                "prev": sample_tokens[j - 1] if j else "",
                "next": sample_tokens[j + 1] if j + 1 < self.n_keyframes else "",
                "scene_token": scene_token})
        self.tables["scene"].append({
            "token": scene_token, "log_token": self.log_token, "nbr_samples": self.n_keyframes,
            "first_sample_token": sample_tokens[0], "last_sample_token": sample_tokens[-1],
            "name": self.name, "description": f"synthetic procedural drive (seed {self.seed})"})
        kept = _kept_frames(self.n_frames, missing_sweeps)
        for channel, yaw_deg in CAMERA_YAWS_DEG.items():
            frames = render_frames(self.seed, [self.local_states[k] for k in kept],
                                   self.width, self.height, math.radians(yaw_deg))
            self._write_channel(channel, kept, sample_tokens, frames)
        self._write_channel(LIDAR, list(range(0, self.n_frames, FRAMES_PER_KEYFRAME)),
                            sample_tokens, None)
        can = self._write_can_bus() if with_can else None
        return self._ground_truth(scene_token, kept, missing_sweeps, can)

    def _write_channel(self, channel: str, frames: list[int], sample_tokens: list[str],
                       images: np.ndarray | None) -> None:
        tokens = [token(self.name, channel, k) for k in frames]
        for i, (frame, sd_token) in enumerate(zip(frames, tokens)):
            is_key = frame % FRAMES_PER_KEYFRAME == 0
            timestamp = self.timestamp(frame)
            folder = "samples" if is_key else "sweeps"
            suffix = "jpg" if images is not None else "pcd.bin"
            filename = f"{folder}/{channel}/{self.logfile}__{channel}__{timestamp}.{suffix}"
            path = self.out / filename
            path.parent.mkdir(parents=True, exist_ok=True)
            if images is not None:
                Image.fromarray(images[i]).save(path, quality=92)
            else:
                path.write_bytes(b"")
            state = self.states[frame]
            self.tables["ego_pose"].append({
                "token": sd_token, "timestamp": timestamp,
                "rotation": yaw_quaternion(state.yaw), "translation": [state.x, state.y, 0.0]})
            self.tables["sample_data"].append({
                "token": sd_token,
                "sample_token": sample_tokens[-(-frame // FRAMES_PER_KEYFRAME)],
                "ego_pose_token": sd_token, "calibrated_sensor_token": self.calibrated[channel],
                "timestamp": timestamp, "fileformat": "jpg" if images is not None else "pcd",
                "is_key_frame": is_key,
                "height": self.height if images is not None else 0,
                "width": self.width if images is not None else 0,
                "filename": filename, "prev": tokens[i - 1] if i else "",
                "next": tokens[i + 1] if i + 1 < len(tokens) else ""})

    def _write_can_bus(self) -> list[dict]:
        folder = self.out / "can_bus"
        folder.mkdir(parents=True, exist_ok=True)
        monitor = [self._vehicle_monitor(k) for k in range(
            VEHICLE_MONITOR_OFFSET_FRAMES, len(self.states), FRAMES_PER_KEYFRAME)]
        pose = [{"utime": self.timestamp(k), "pos": [s.x, s.y, 0.0],
                 "orientation": yaw_quaternion(s.yaw), "vel": [s.speed, 0.0, 0.0],
                 "accel": [0.0, 0.0, 9.81], "rotation_rate": [0.0, 0.0, s.yaw_rate]}
                for k, s in enumerate(self.states)]
        (folder / f"{self.name}_vehicle_monitor.json").write_text(json.dumps(monitor))
        (folder / f"{self.name}_pose.json").write_text(json.dumps(pose))
        return monitor

    def _vehicle_monitor(self, frame: int) -> dict:
        state = self.states[frame]
        wheel_rpm = state.speed / (2 * math.pi * 0.3) * 60
        return {"utime": self.timestamp(frame), "vehicle_speed": round(state.speed * 3.6, 2),
                "steering": round(math.degrees(state.steering), 1),
                "yaw_rate": round(math.degrees(state.yaw_rate), 1), "steering_speed": 0.0,
                "available_distance": 120, "battery_level": 80, "brake": 0, "brake_switch": 1,
                "gear_position": 7, "left_signal": 0, "right_signal": 0,
                "rear_left_rpm": wheel_rpm, "rear_right_rpm": wheel_rpm,
                "throttle": 0 if state.speed == 0 else 150}

    def _ground_truth(self, scene_token, kept, missing_sweeps, can) -> dict:
        keyframes = list(range(0, self.n_frames, FRAMES_PER_KEYFRAME))
        truth = {"token": scene_token, "seed": self.seed, "n_keyframes": self.n_keyframes,
                 "n_camera_frames": len(kept), "missing_sweeps": missing_sweeps,
                 "keyframe_timestamps": [self.timestamp(k) for k in keyframes],
                 "states": self.states[:self.n_frames], "keyframe_frames": keyframes,
                 "has_can": can is not None, "can_speed_kmh": [], "can_steering_deg": []}
        if can is not None:
            times = np.array([m["utime"] for m in can])
            for k in keyframes:
                nearest = can[int(np.argmin(np.abs(times - self.timestamp(k))))]
                truth["can_speed_kmh"].append(nearest["vehicle_speed"])
                truth["can_steering_deg"].append(nearest["steering"])
        return truth


def write_synthetic_nuscenes(out: Path, scenes: list[str] | None = None, n_scenes: int = 2,
                             seed: int = 0, width: int = 160, height: int = 90,
                             seconds: float = 8.0, version: str = "v1.0-mini",
                             missing_sweeps: dict[str, int] | None = None,
                             without_can: tuple[str, ...] = ()) -> dict:
    """Write a nuScenes-format dataset; returns ground truth per scene name.

    `scenes` defaults to the first `n_scenes` real mini scene names. `missing_sweeps` maps a
    scene to how many camera sweeps vanish just before its last keyframe (as in real logs,
    where a few CAM_FRONT chains are short); scenes in `without_can` get no CAN-bus files.
    """
    out = Path(out)
    scenes = list(scenes) if scenes is not None else list(MINI_SCENES[:n_scenes])
    bad = [s for s in scenes if not s.startswith("scene-") or not s[6:].isdigit() or len(s) != 10]
    if bad or not scenes:
        raise ValueError(f"scene names must look like scene-0123 (got {bad or 'none'})")
    missing_sweeps = missing_sweeps or {}
    tables: dict[str, list] = {name: [] for name in TABLES}
    calibrated = _static_tables(tables, width, height)
    truth = {}
    for name in scenes:
        writer = _SceneWriter(out, tables, calibrated, name, seed, width, height, seconds)
        truth[name] = writer.write(missing_sweeps.get(name, 0), name not in without_can)
    map_token = token("map", LOCATION)
    map_file = f"maps/{map_token}.png"
    (out / "maps").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(out / map_file)
    tables["map"] = [{"token": map_token, "category": "semantic_prior", "filename": map_file,
                      "log_tokens": [log["token"] for log in tables["log"]]}]
    table_dir = out / version
    table_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (table_dir / f"{name}.json").write_text(json.dumps(rows, indent=0))
    return truth
