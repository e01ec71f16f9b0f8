"""A procedural driving world: ego motion from sampled actions, and cheap perspective rendering.

`simulate_drive` samples piecewise speed targets (with occasional stops) and piecewise steering
(left and right turns), and integrates them with a kinematic bicycle model, so the recorded
actions explain the motion. `render_frames` draws what a camera on that ego sees: sky, grass,
a road whose lane markings scroll with the distance driven and bend with the ego's curvature,
other cars moving along the road at their own speeds, and roadside poles and trees. numpy only;
everything is deterministic given the seed.

World frame: x forward and y left at t = 0, yaw counter-clockwise. Camera yaw offsets follow the
same convention (front-left is +55 degrees).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

WHEELBASE_M = 2.7
STEERING_RATIO = 15.0          # steering-wheel angle / road-wheel angle
MAX_ACCEL = 2.0                # m/s^2
MAX_DECEL = 3.0                # m/s^2
MAX_STEERING_RATE = 1.5        # steering-wheel rad/s
CAMERA_HEIGHT_M = 1.5
FOCAL_PER_WIDTH = 1266.417 / 1600    # nuScenes CAM_FRONT's focal length / image width
HORIZON_FRACTION = 0.42        # horizon row / image height
LANE_WIDTH_M = 3.5
ROAD_HALF_WIDTH_M = 5.6
MARKING_HALF_WIDTH_M = 0.09
DASH_PERIOD_M, DASH_LENGTH_M = 9.0, 3.0
FOG_DISTANCE_M = 90.0
ROADSIDE_SPACING_M = 11.0
N_CARS = 12
SKY_TOP, SKY_HORIZON = np.array([95, 140, 200.0]), np.array([190, 208, 228.0])
HAZE = np.array([185, 195, 205.0])
ROAD_GREY, GRASS_GREEN = np.array([88, 88, 94.0]), np.array([72, 112, 52.0])
MARKING_WHITE = np.array([235, 235, 225.0])
TRUNK_BROWN, POLE_GREY = np.array([90, 65, 40.0]), np.array([150, 150, 155.0])


def camera_intrinsic(width: int, height: int) -> list[list[float]]:
    """The pinhole matrix K that `render_frames` uses at this image size (optical axis level)."""
    focal = width * FOCAL_PER_WIDTH
    return [[focal, 0.0, width / 2], [0.0, focal, HORIZON_FRACTION * height], [0.0, 0.0, 1.0]]


@dataclass
class EgoState:
    t: float          # s since the start of the drive
    x: float          # m, world frame
    y: float          # m, world frame
    yaw: float        # rad, counter-clockwise positive
    speed: float      # m/s
    steering: float   # steering-wheel angle, rad (road-wheel angle = steering / STEERING_RATIO)

    @property
    def curvature(self) -> float:
        """1/m, positive turning left: the bicycle model's yaw rate / speed."""
        return math.tan(self.steering / STEERING_RATIO) / WHEELBASE_M

    @property
    def yaw_rate(self) -> float:
        return self.speed * self.curvature


def _sample_action_segments(rng: np.random.Generator, duration: float):
    """Start times, speed targets (m/s) and steering targets (wheel rad) of piecewise actions."""
    starts, speeds, steerings = [], [], []
    t = 0.0
    while t < duration:
        stop = bool(starts) and rng.random() < 0.2
        if stop:
            speed, steering, length = 0.0, 0.0, rng.uniform(3.0, 5.0)
        else:
            speed = rng.uniform(4.0, 13.0)
            turn = rng.choice([0, 1, -1], p=[0.4, 0.3, 0.3])   # straight, left, right
            steering = turn * rng.uniform(1.0, 3.0)
            length = rng.uniform(2.0, 5.0)
        starts.append(t)
        speeds.append(speed)
        steerings.append(steering)
        t += length
    return np.array(starts), np.array(speeds), np.array(steerings)


def simulate_drive(seed: int, n_frames: int, fps: float) -> list[EgoState]:
    """Ego states at `fps` for `n_frames` frames; the same seed gives the same drive."""
    if n_frames < 1 or fps <= 0:
        raise ValueError(f"need n_frames >= 1 and fps > 0, got {n_frames} and {fps}")
    rng = np.random.default_rng([seed, 0])
    dt = 1.0 / fps
    starts, speed_targets, steering_targets = _sample_action_segments(rng, n_frames * dt)
    x = y = yaw = steering = 0.0
    speed = float(rng.uniform(4.0, 10.0))
    states = []
    for k in range(n_frames):
        t = k * dt
        states.append(EgoState(t, x, y, yaw, speed, steering))
        segment = int(np.searchsorted(starts, t, side="right")) - 1
        yaw_rate = speed * math.tan(steering / STEERING_RATIO) / WHEELBASE_M
        heading = yaw + 0.5 * yaw_rate * dt      # the chord of the arc driven in dt
        x += speed * dt * math.cos(heading)
        y += speed * dt * math.sin(heading)
        yaw += yaw_rate * dt
        dv = float(np.clip(speed_targets[segment] - speed, -MAX_DECEL * dt, MAX_ACCEL * dt))
        speed = max(0.0, speed + dv)
        steering += float(np.clip(steering_targets[segment] - steering,
                                  -MAX_STEERING_RATE * dt, MAX_STEERING_RATE * dt))
    return states


@dataclass
class _Sprite:
    forward: float        # m along the camera axis
    column: float         # image column of the centre
    width_m: float
    height_m: float
    base_m: float         # height of the bottom above the ground
    color: np.ndarray
    shaded: bool          # cars: dark windows and a shadow band


class _Camera:
    """Pinhole geometry of one camera and the ground point seen by each pixel below the horizon."""

    def __init__(self, width: int, height: int, yaw_offset: float):
        self.width, self.height = width, height
        self.focal = width * FOCAL_PER_WIDTH
        self.horizon = HORIZON_FRACTION * height
        self.first_ground_row = int(math.floor(self.horizon)) + 1
        self.cos_yaw, self.sin_yaw = math.cos(yaw_offset), math.sin(yaw_offset)
        rows = np.arange(self.first_ground_row, height) + 0.5
        self.depth = self.focal * CAMERA_HEIGHT_M / (rows - self.horizon)          # [Hg]
        lateral_per_depth = -(np.arange(width) + 0.5 - width / 2) / self.focal       # left +
        lateral = self.depth[:, None] * lateral_per_depth[None, :]
        self.ego_x = self.depth[:, None] * self.cos_yaw - lateral * self.sin_yaw     # [Hg, W]
        self.ego_y = self.depth[:, None] * self.sin_yaw + lateral * self.cos_yaw
        self.fog = (1 - np.exp(-self.depth / FOG_DISTANCE_M))[:, None, None]
        sky_rows = np.arange(self.first_ground_row)[:, None] / max(self.first_ground_row, 1)
        self.sky = SKY_TOP * (1 - sky_rows) + SKY_HORIZON * sky_rows                  # [Hs, 3]

    def sprite(self, ego_x: float, ego_y: float, width_m: float, length_m: float,
               height_m: float, base_m: float, color: np.ndarray, shaded: bool) -> _Sprite | None:
        forward = ego_x * self.cos_yaw + ego_y * self.sin_yaw
        lateral = -ego_x * self.sin_yaw + ego_y * self.cos_yaw
        if forward < 1.0 or forward > 150.0:
            return None
        visible_width = width_m * abs(self.cos_yaw) + length_m * abs(self.sin_yaw)
        column = self.width / 2 - self.focal * lateral / forward
        return _Sprite(forward, column, visible_width, height_m, base_m, color, shaded)

    def draw(self, image: np.ndarray, sprite: _Sprite) -> None:
        scale = self.focal / sprite.forward
        half = max(0.5, sprite.width_m * scale / 2)
        left, right = int(round(sprite.column - half)), int(round(sprite.column + half))
        bottom = int(round(self.horizon + (CAMERA_HEIGHT_M - sprite.base_m) * scale))
        top = int(round(self.horizon + (CAMERA_HEIGHT_M - sprite.base_m - sprite.height_m) * scale))
        left, right = max(left, 0), min(max(right, left + 1), self.width)
        top, bottom = max(top, 0), min(max(bottom, top + 1), self.height)
        if left >= right or top >= bottom:
            return
        fog = 1 - math.exp(-sprite.forward / FOG_DISTANCE_M)
        color = sprite.color * (1 - fog) + HAZE * fog
        image[top:bottom, left:right] = color
        if sprite.shaded and bottom - top >= 3:
            windows = top + max(1, (bottom - top) * 2 // 5)
            image[top:windows, left:right] = color * 0.55 + HAZE * 0.1
            shadow = bottom - max(1, (bottom - top) // 6)
            image[shadow:bottom, left:right] = color * 0.35


class _Traffic:
    """Other cars (lane, along-road start, speed) and the colours of this world, from the seed."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 1])
        self.seed = seed
        lanes = rng.choice([-LANE_WIDTH_M, 0.0, LANE_WIDTH_M], size=N_CARS)
        self.lanes = lanes
        same_direction = lanes <= 0
        self.speeds = np.where(same_direction, rng.uniform(3.0, 14.0, N_CARS),
                               -rng.uniform(5.0, 14.0, N_CARS))
        self.starts = rng.uniform(0.0, 150.0, N_CARS)
        self.colors = rng.uniform(30, 230, size=(N_CARS, 3))
        self.light = rng.uniform(0.85, 1.1)

    def cars(self, t: float, odometer: float):
        """(ahead, lateral lane offset, colour) of each car relative to the ego along the road."""
        relative = self.starts + self.speeds * t - odometer
        in_ego_lane = self.lanes == 0.0
        # Positions wrap over a window around the ego; cars in the ego's lane stay ahead of it.
        wrapped = np.where(in_ego_lane, 14.0 + np.mod(relative - 14.0, 86.0),
                           -60.0 + np.mod(relative + 60.0, 160.0))
        return zip(wrapped, self.lanes, self.colors)

    def roadside(self, odometer: float):
        """(ahead, lateral offset, is_tree, colour) of world-fixed poles and trees near the ego."""
        first = int(math.floor((odometer - 60.0) / ROADSIDE_SPACING_M))
        last = int(math.ceil((odometer + 120.0) / ROADSIDE_SPACING_M))
        for index in range(first, last + 1):
            hashed = _hash01(index, self.seed)
            side = 1.0 if index % 2 == 0 else -1.0
            lateral = side * (ROAD_HALF_WIDTH_M + 1.5 + 3.0 * hashed)
            ahead = index * ROADSIDE_SPACING_M + 4.0 * _hash01(index + 7919, self.seed) - odometer
            yield ahead, lateral, hashed < 0.6, hashed


def _hash01(index: int, seed: int) -> float:
    """A deterministic pseudo-random number in [0, 1) for an integer position."""
    value = math.sin(index * 12.9898 + seed * 78.233) * 43758.5453
    return value - math.floor(value)


def _odometer(states: list[EgoState]) -> np.ndarray:
    xy = np.array([[state.x, state.y] for state in states])
    steps = np.hypot(*np.diff(xy, axis=0).T) if len(states) > 1 else np.zeros(0)
    return np.concatenate([[0.0], np.cumsum(steps)])


def _render_ground(camera: _Camera, curvature: float, odometer: float, light: float) -> np.ndarray:
    ex = np.clip(camera.ego_x, -80.0, 80.0)
    offset = camera.ego_y - 0.5 * curvature * ex * ex     # lateral distance from the road axis
    along = camera.ego_x + odometer                        # world-fixed along-road coordinate
    checker = (np.floor(along / 4.0) + np.floor(camera.ego_y / 4.0)) % 2
    color = np.where((np.abs(offset) < ROAD_HALF_WIDTH_M)[..., None],
                     ROAD_GREY * (0.96 + 0.04 * checker)[..., None],
                     GRASS_GREEN * (0.85 + 0.15 * checker)[..., None])
    distance_to_line = np.abs(np.abs(offset) - LANE_WIDTH_M / 2)
    on_dash = np.mod(along, DASH_PERIOD_M) < DASH_LENGTH_M
    dashed = (distance_to_line < MARKING_HALF_WIDTH_M) & on_dash
    edge = np.abs(np.abs(offset) - (LANE_WIDTH_M * 1.5)) < MARKING_HALF_WIDTH_M
    color = np.where((dashed | edge)[..., None], MARKING_WHITE, color)
    return (color * light) * (1 - camera.fog) + HAZE * camera.fog


def _sprites(camera: _Camera, traffic: _Traffic, state: EgoState, odometer: float) -> list[_Sprite]:
    curvature = state.curvature
    sprites = []
    for ahead, lane, color in traffic.cars(state.t, odometer):
        lateral = lane + 0.5 * curvature * min(abs(ahead), 80.0) ** 2
        sprites.append(camera.sprite(ahead, lateral, 1.8, 4.5, 1.5, 0.0, color, True))
    for ahead, lateral, is_tree, hashed in traffic.roadside(odometer):
        lateral += 0.5 * curvature * min(abs(ahead), 80.0) ** 2
        if is_tree:
            trunk = camera.sprite(ahead, lateral, 0.4, 0.4, 2.5, 0.0, TRUNK_BROWN, False)
            canopy_color = np.array([40, 100 + 60 * hashed, 40.0])
            canopy = camera.sprite(ahead, lateral, 2.6, 2.6, 3.5, 2.0, canopy_color, False)
            sprites += [trunk, canopy]
        else:
            sprites.append(camera.sprite(ahead, lateral, 0.25, 0.25, 6.0, 0.0, POLE_GREY, False))
    return sorted((s for s in sprites if s is not None), key=lambda s: -s.forward)


def render_frames(seed: int, states: list[EgoState], width: int, height: int,
                  yaw_offset: float = 0.0) -> np.ndarray:
    """uint8 [T, H, W, 3]: what a camera yawed by `yaw_offset` (rad, left +) on the ego sees."""
    if width < 8 or height < 8:
        raise ValueError(f"image size {width}x{height} is too small (need at least 8x8)")
    camera = _Camera(width, height, yaw_offset)
    traffic = _Traffic(seed)
    odometers = _odometer(states)
    frames = np.empty((len(states), height, width, 3), dtype=np.uint8)
    image = np.empty((height, width, 3), dtype=np.float64)
    for index, (state, odometer) in enumerate(zip(states, odometers)):
        image[:camera.first_ground_row] = (camera.sky * traffic.light)[:, None, :]
        image[camera.first_ground_row:] = _render_ground(camera, state.curvature, odometer,
                                                         traffic.light)
        for sprite in _sprites(camera, traffic, state, odometer):
            camera.draw(image, sprite)
        frames[index] = np.clip(image, 0, 255).astype(np.uint8)
    return frames
