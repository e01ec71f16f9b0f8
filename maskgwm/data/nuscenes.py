"""nuScenes clip readers through nuscenes-devkit: Vista's single-view clips with their actions,
six-view keyframe clips, and Vista's `nuScenes_val.json` format.

Vista's clips (its maintainer's script, Vista issue #30): samples sorted by (scene token,
timestamp); a clip starts at any keyframe with 4 more keyframes in its scene and follows
CAM_FRONT's `next` for 25 frames, sweeps included; a clip whose chain ends early is dropped
(counted in a `ClipReport`). Actions use the start keyframe and the next 4: `traj` in the first
keyframe's LIDAR_TOP frame with x negated, `cmd` from the last waypoint, `speed` / `angle` from
the nearest CAN-bus `vehicle_monitor` message, `goal` the last waypoint seen by CAM_FRONT.
Manifest units: speed in m/s, angle = steering degrees / 780, goal normalised by image size;
Vista's JSON holds the raw values (km/h, degrees, 1600x900 pixels) and all 5 keyframes.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from maskgwm.data.manifest import KMH_PER_MS, Actions, ClipRecord, ManifestError
from maskgwm.data.nuscenes_files import (SKIP_BAD, TABLES, CanBus, NuScenesDataError,
                                         nearest_message, open_nuscenes)

__all__ = ["CAMERAS", "TABLES", "VISTA_KEYS", "ClipReport", "NuScenesDataError",
           "export_vista_manifest", "import_vista_manifest", "mview_clips", "open_nuscenes",
           "vista_clips", "vista_command", "vista_entry", "vista_trajectory"]

CAMERAS = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT",
           "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")
FUTURE_KEYFRAMES = 4
CAMERA_FPS, KEYFRAME_FPS = 12.0, 2.0
STEERING_SCALE_DEG = 780.0                    # Vista's angle = vehicle_monitor.steering / 780
CMD_RIGHT, CMD_LEFT, CMD_STOP, CMD_STRAIGHT = 0, 1, 2, 3
TURN_THRESHOLD_M = STOP_THRESHOLD_M = 2.0
VISTA_IMAGE_SIZE = (1600, 900)                # Vista's loader normalises goals by these
PROXY_WHEELBASE_M, PROXY_STEERING_RATIO = 2.7, 15.0  # bicycle model for the ego-pose proxy
VISTA_KEYS = ("frames", "traj", "cmd", "speed", "angle", "z", "goal")


@dataclass
class ClipReport:
    """What a reader kept, dropped and skipped; nothing is left out silently."""
    start_keyframes: int = 0                                    # keyframes with 4 more in scene
    clips: int = 0
    dropped_short_chain: list[str] = field(default_factory=list)   # start sample tokens
    skipped: list[str] = field(default_factory=list)               # "what: why" (skip_bad=True)
    scenes_without_can: list[str] = field(default_factory=list)


def _scenes(nusc, split_scenes, report: ClipReport, skip_bad: bool) -> list[dict]:
    """The split's scene records in Vista's order (sorted by scene token)."""
    by_name = {scene["name"]: scene for scene in nusc.scene}
    absent = [name for name in split_scenes if name not in by_name]
    if absent and not skip_bad:
        raise NuScenesDataError(
            f"scenes {absent[:5]}{'...' if len(absent) > 5 else ''} are not in "
            f"{Path(nusc.dataroot) / nusc.version / 'scene.json'}; check the version "
            f"(v1.0-mini has 10 scenes) {SKIP_BAD}")
    report.skipped += [f"{name}: not in {nusc.version}" for name in absent]
    return sorted((by_name[n] for n in dict.fromkeys(split_scenes) if n in by_name),
                  key=lambda scene: scene["token"])


def _keyframes_by_scene(nusc) -> dict[str, list[dict]]:
    """Samples grouped by scene token, each list in time order."""
    grouped: dict[str, list[dict]] = {}
    for sample in sorted(nusc.sample, key=lambda s: (s["scene_token"], s["timestamp"])):
        grouped.setdefault(sample["scene_token"], []).append(sample)
    return grouped


def _get(nusc, table: str, token: str, referrer: str) -> dict:
    try:
        return nusc.get(table, token)
    except KeyError:
        raise NuScenesDataError(
            f"{table} token {token!r} ({referrer}) is not in "
            f"{Path(nusc.dataroot) / nusc.version / (table + '.json')}: the tables are corrupt "
            f"or from different versions; re-extract the metadata "
            f"({SKIP_BAD})") from None


def _check_channels(nusc, window: list[dict], channels: tuple[str, ...]) -> None:
    missing = [(k["token"], c) for k in window for c in channels if c not in k["data"]]
    if missing:
        table = Path(nusc.dataroot) / nusc.version / "sample_data.json"
        raise NuScenesDataError(f"sample {missing[0][0]} has no {missing[0][1]} keyframe in "
                                f"{table}; the table is incomplete: re-extract the metadata "
                                f"({SKIP_BAD})")


def _follow_chain(nusc, first_token: str, n_frames: int) -> list[dict] | None:
    """n_frames sample_data records along `next`, or None where the chain ends early."""
    records = [_get(nusc, "sample_data", first_token, "a sample's data")]
    while len(records) < n_frames:
        next_token = records[-1]["next"]
        if not next_token:
            return None
        previous = records[-1]
        records.append(_get(nusc, "sample_data", next_token, f"`next` of sample_data "
                            f"{previous['token']} ({previous['filename']})"))
    return records


def _check_files(nusc, filenames: list[str]) -> None:
    for filename in filenames:
        if not (Path(nusc.dataroot) / filename).is_file():
            folder = filename.split("/")[0]
            raise NuScenesDataError(f"{Path(nusc.dataroot) / filename}: image is missing; "
                                    f"download and extract the nuScenes '{folder}' blobs "
                                    f"({SKIP_BAD})")


def _pose_matrix(record: dict, inverse: bool = False) -> np.ndarray:
    from pyquaternion import Quaternion
    matrix = np.eye(4)
    matrix[:3, :3] = Quaternion(record["rotation"]).rotation_matrix
    matrix[:3, 3] = record["translation"]
    return np.linalg.inv(matrix) if inverse else matrix


def _global_from_sensor(nusc, sample_data: dict) -> np.ndarray:
    referrer = f"sample_data {sample_data['token']}"
    ego = _get(nusc, "ego_pose", sample_data["ego_pose_token"], referrer)
    sensor = _get(nusc, "calibrated_sensor", sample_data["calibrated_sensor_token"], referrer)
    return _pose_matrix(ego) @ _pose_matrix(sensor)


def vista_trajectory(nusc, keyframes: list[dict]) -> list[float]:
    """(x, y) per keyframe in the first keyframe's LIDAR_TOP frame, x negated: 2 * 5 numbers."""
    lidar = [_get(nusc, "sample_data", k["data"]["LIDAR_TOP"], f"sample {k['token']}")
             for k in keyframes]
    lidar_from_global = np.linalg.inv(_global_from_sensor(nusc, lidar[0]))
    traj = []
    for record in lidar:
        origin = (lidar_from_global @ _global_from_sensor(nusc, record))[:3, 3]
        traj += [float(-origin[0]), float(origin[1])]
    return traj


def vista_command(lateral: float, forward: float) -> int:
    if lateral >= TURN_THRESHOLD_M:
        return CMD_LEFT
    if lateral <= -TURN_THRESHOLD_M:
        return CMD_RIGHT
    return CMD_STOP if forward <= STOP_THRESHOLD_M else CMD_STRAIGHT


def _goal(nusc, first_camera: dict, last_keyframe: dict) -> tuple[list[float], float]:
    """The last keyframe's ego position seen from the first CAM_FRONT: ((u, v) / size or [], z)."""
    last_camera = _get(nusc, "sample_data", last_keyframe["data"]["CAM_FRONT"], "goal keyframe")
    target = _get(nusc, "ego_pose", last_camera["ego_pose_token"], "goal keyframe")["translation"]
    camera_from_global = np.linalg.inv(_global_from_sensor(nusc, first_camera))
    point = camera_from_global @ np.array([*target, 1.0])
    depth = float(point[2])
    if depth <= 0:
        return [], depth
    intrinsic = np.array(_get(nusc, "calibrated_sensor", first_camera["calibrated_sensor_token"],
                              "CAM_FRONT")["camera_intrinsic"])
    u, v, _ = intrinsic @ (point[:3] / depth)
    width, height = first_camera["width"], first_camera["height"]
    inside = 0 < u < width and 0 < v < height
    return ([float(u / width), float(v / height)] if inside else []), depth


def _proxy_speed_angle(nusc, keyframes: list[dict]) -> tuple[list[float], list[float]]:
    """Speed (m/s) and Vista angle at keyframes 1..4 from consecutive LIDAR_TOP ego poses."""
    speeds, angles = [], []
    for before, after in zip(keyframes, keyframes[1:]):
        poses = [_get(nusc, "ego_pose", _get(nusc, "sample_data", k["data"]["LIDAR_TOP"],
                                             "proxy")["ego_pose_token"], "proxy")
                 for k in (before, after)]
        dt = (after["timestamp"] - before["timestamp"]) / 1e6
        speed = math.dist(poses[0]["translation"][:2], poses[1]["translation"][:2]) / dt
        yaws = [math.atan2(*(_pose_matrix(p)[1::-1, 0])) for p in poses]
        yaw_rate = math.remainder(yaws[1] - yaws[0], 2 * math.pi) / dt
        wheel = math.atan(PROXY_WHEELBASE_M * yaw_rate / speed) if speed > 0.5 else 0.0
        speeds.append(speed)
        angles.append(math.degrees(wheel * PROXY_STEERING_RATIO) / STEERING_SCALE_DEG)
    return speeds, angles


def _vista_actions(nusc, keyframes, first_camera, scene_name, can_bus, proxy_speed) -> Actions:
    traj = vista_trajectory(nusc, keyframes)
    goal, depth = _goal(nusc, first_camera, keyframes[-1])
    actions = Actions(traj=traj[2:], cmd=vista_command(traj[-2], traj[-1]), goal=goal, z=depth)
    messages = can_bus.messages(scene_name)
    if messages is not None:
        nearest = [nearest_message(messages, k["timestamp"]) for k in keyframes[1:]]
        actions.speed = [m["vehicle_speed"] / KMH_PER_MS for m in nearest]
        actions.angle = [m["steering"] / STEERING_SCALE_DEG for m in nearest]
    elif proxy_speed:
        actions.speed, actions.angle = _proxy_speed_angle(nusc, keyframes)
        actions.proxy = True
    return actions


def vista_clips(nusc, split_scenes, n_frames: int = 25, *, split: str = "val",
                report: ClipReport | None = None, skip_bad: bool = False,
                check_images: bool = True, proxy_speed: bool = False) -> list[ClipRecord]:
    """Vista's single-view CAM_FRONT clips with actions, in Vista's order."""
    report = report if report is not None else ClipReport()
    can_bus = CanBus(nusc.dataroot)
    keyframes_by_scene = _keyframes_by_scene(nusc)
    clips = []
    for scene in _scenes(nusc, split_scenes, report, skip_bad):
        keyframes = keyframes_by_scene.get(scene["token"], [])
        try:
            messages = can_bus.messages(scene["name"])
        except NuScenesDataError as err:
            if not skip_bad:
                raise
            report.skipped.append(f"{scene['name']}: {err}")
            continue
        if messages is None:
            report.scenes_without_can.append(scene["name"])
        for start in range(len(keyframes) - FUTURE_KEYFRAMES):
            report.start_keyframes += 1
            window = keyframes[start:start + FUTURE_KEYFRAMES + 1]
            try:
                _check_channels(nusc, window, ("CAM_FRONT", "LIDAR_TOP"))
                chain = _follow_chain(nusc, window[0]["data"]["CAM_FRONT"], n_frames)
                if chain is None:
                    report.dropped_short_chain.append(window[0]["token"])
                    continue
                if check_images:
                    _check_files(nusc, [record["filename"] for record in chain])
                actions = _vista_actions(nusc, window, chain[0], scene["name"], can_bus,
                                         proxy_speed)
            except NuScenesDataError as err:
                if not skip_bad:
                    raise
                report.skipped.append(f"{window[0]['token']}: {err}")
                continue
            clips.append(ClipRecord(
                clip_id=f"{scene['name']}/{window[0]['token']}", dataset="nuscenes",
                split=split, scene=scene["name"], views=["CAM_FRONT"],
                frames=[[record["filename"]] for record in chain],
                timestamps=[record["timestamp"] for record in chain], fps=CAMERA_FPS,
                actions=actions, source=chain[0]["token"]))
    report.clips += len(clips)
    return clips


def mview_clips(nusc, split_scenes, n_frames: int = 8, *, stride: int | None = None,
                split: str = "val", report: ClipReport | None = None, skip_bad: bool = False,
                check_images: bool = True) -> list[ClipRecord]:
    """Six-view clips of `n_frames` consecutive keyframes (the cameras sync only there)."""
    report = report if report is not None else ClipReport()
    stride = stride or n_frames
    keyframes_by_scene = _keyframes_by_scene(nusc)
    clips = []
    for scene in _scenes(nusc, split_scenes, report, skip_bad):
        keyframes = keyframes_by_scene.get(scene["token"], [])
        for start in range(0, len(keyframes) - n_frames + 1, stride):
            report.start_keyframes += 1
            window = keyframes[start:start + n_frames]
            try:
                _check_channels(nusc, window, CAMERAS)
                records = [[_get(nusc, "sample_data", k["data"][c], f"sample {k['token']}")
                            for c in CAMERAS] for k in window]
                frames = [[r["filename"] for r in row] for row in records]
                if check_images:
                    _check_files(nusc, [f for row in frames for f in row])
            except NuScenesDataError as err:
                if not skip_bad:
                    raise
                report.skipped.append(f"{window[0]['token']}: {err}")
                continue
            clips.append(ClipRecord(
                clip_id=f"{scene['name']}/{window[0]['token']}/mview", dataset="nuscenes",
                split=split, scene=scene["name"], views=list(CAMERAS), frames=frames,
                timestamps=[k["timestamp"] for k in window], fps=KEYFRAME_FPS,
                source=window[0]["token"]))
    report.clips += len(clips)
    return clips


def vista_entry(clip: ClipRecord) -> dict:
    if clip.views[:1] != ["CAM_FRONT"] or len(clip.views) != 1:
        raise ManifestError(f"clip {clip.clip_id}: Vista's format holds CAM_FRONT clips only "
                            f"(views {clip.views})")
    actions = clip.actions or Actions()
    width, height = VISTA_IMAGE_SIZE
    # Vista never reads traj[:2], speed[0] or angle[0]: the current keyframe's origin is (0, 0),
    # and the current speed and angle are written as a copy of the next ones.
    speed = [v * KMH_PER_MS for v in actions.speed]
    angle = [a * STEERING_SCALE_DEG for a in actions.angle]
    return {"frames": [row[0] for row in clip.frames],
            "traj": [0.0, 0.0, *actions.traj] if actions.traj else [],
            "cmd": actions.cmd if actions.cmd is not None else CMD_STRAIGHT,
            "speed": speed[:1] + speed, "angle": angle[:1] + angle,
            "z": actions.z if actions.z is not None else -1.0,
            "goal": ([actions.goal[0] * width, actions.goal[1] * height] if actions.goal
                     else [-1.0, -1.0])}


def export_vista_manifest(clips: list[ClipRecord], path: str | Path) -> Path:
    """Write Vista's `nuScenes_val.json`: a list of {frames, traj, cmd, speed, angle, z, goal}."""
    from evals.atomic import atomic_write_json
    path = Path(path)
    atomic_write_json(path, [vista_entry(clip) for clip in clips])
    return path


def _timestamp_from_filename(filename: str) -> int:
    found = re.search(r"__(\d+)\.\w+$", filename)
    return int(found.group(1)) if found else 0


def _vista_entry_error(entry) -> str | None:
    """What is wrong with one Vista entry's keys or value types, or None."""
    absent = [key for key in VISTA_KEYS if not isinstance(entry, dict) or key not in entry]
    if absent:
        return f"lacks {absent}"
    frames, cmd = entry["frames"], entry["cmd"]
    if not (isinstance(frames, list) and frames and all(isinstance(f, str) for f in frames)):
        return f"'frames' is {frames!r:.60}, not a non-empty list of image paths"
    if type(cmd) is not int or not 0 <= cmd <= 3:
        return f"'cmd' is {cmd!r}, not 0, 1, 2 or 3"
    for key in ("traj", "speed", "angle", "goal", "z"):
        values = [entry[key]] if key == "z" else entry[key]
        if not isinstance(values, list) or any(type(v) not in (int, float) for v in values):
            kind = "a number" if key == "z" else "a list of numbers"
            return f"'{key}' is {entry[key]!r:.60}, not {kind}"
        if not all(math.isfinite(v) for v in values):
            return f"'{key}' is {entry[key]!r:.60}, which is not finite (NaN or Inf)"
    return None


def import_vista_manifest(path: str | Path, split: str = "val") -> list[ClipRecord]:
    """Read Vista's `nuScenes_val.json` into clip records (manifest units; see module doc)."""
    path = Path(path)
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: Vista manifest not found") from None
    except json.JSONDecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(entries, list):
        raise ManifestError(f"{path}: expected a list of clips, as Vista writes")
    width, height = VISTA_IMAGE_SIZE
    clips = []
    for index, entry in enumerate(entries):
        if problem := _vista_entry_error(entry):
            raise ManifestError(f"{path}: clip {index} {problem}")
        goal, depth = entry["goal"], entry["z"]
        goal_valid = depth > 0 and len(goal) == 2 and 0 < goal[0] < width and 0 < goal[1] < height
        actions = Actions(traj=list(entry["traj"][2:]), cmd=entry["cmd"],
                          speed=[v / KMH_PER_MS for v in entry["speed"][1:]],
                          angle=[a / STEERING_SCALE_DEG for a in entry["angle"][1:]],
                          goal=[goal[0] / width, goal[1] / height] if goal_valid else [],
                          z=depth)
        frames = entry["frames"]
        clips.append(ClipRecord(
            clip_id=f"vista/{index:06d}", dataset="nuscenes", split=split, scene="",
            views=["CAM_FRONT"], frames=[[f] for f in frames],
            timestamps=[_timestamp_from_filename(f) for f in frames], fps=CAMERA_FPS,
            actions=actions, source=f"{path.name}[{index}]"))
    return clips
