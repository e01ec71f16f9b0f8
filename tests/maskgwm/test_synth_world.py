"""The procedural driving world: determinism, kinematic consistency, rendering."""
from __future__ import annotations

import math

import numpy as np
import pytest

from maskgwm.data.synth import EgoState, render_frames, simulate_drive
from maskgwm.data.synth.world import STEERING_RATIO, WHEELBASE_M

FPS = 12.0


def test_deterministic_by_seed():
    assert simulate_drive(5, 60, FPS) == simulate_drive(5, 60, FPS)
    assert simulate_drive(5, 60, FPS) != simulate_drive(6, 60, FPS)
    states = simulate_drive(5, 12, FPS)
    frames = render_frames(5, states, 64, 36)
    np.testing.assert_array_equal(frames, render_frames(5, states, 64, 36))
    assert not np.array_equal(render_frames(5, states, 64, 36), render_frames(6, states, 64, 36))


def test_speed_and_yaw_match_integrated_positions():
    states = simulate_drive(1, 240, FPS)
    for before, after in zip(states, states[1:]):
        dx, dy = after.x - before.x, after.y - before.y
        assert math.hypot(dx, dy) * FPS == pytest.approx(before.speed, rel=1e-3, abs=1e-9)
        yaw_rate = before.speed * math.tan(before.steering / STEERING_RATIO) / WHEELBASE_M
        assert (after.yaw - before.yaw) * FPS == pytest.approx(yaw_rate, abs=1e-9)
        if before.speed > 1.0:     # the chord points midway between the two headings
            error = math.atan2(dy, dx) - (before.yaw + after.yaw) / 2
            assert math.remainder(error, 2 * math.pi) == pytest.approx(0.0, abs=1e-6)


def test_drives_include_stops_and_both_turn_directions():
    drives = [simulate_drive(seed, 240, FPS) for seed in range(12)]
    steering = np.concatenate([[s.steering for s in d] for d in drives])
    speed = np.concatenate([[s.speed for s in d] for d in drives])
    assert steering.max() > 0.5 and steering.min() < -0.5
    assert (speed == 0.0).any() and speed.max() > 5.0
    assert all(s.speed >= 0 for d in drives for s in d)


def _stopped_drive() -> tuple[int, list[EgoState]]:
    for seed in range(50):
        states = simulate_drive(seed, 240, FPS)
        if sum(s.speed == 0.0 for s in states) >= 12:
            return seed, states
    raise AssertionError("no seed in 0..49 stops for a second")


def test_frames_change_when_moving_not_when_stopped():
    seed, states = _stopped_drive()
    frames = render_frames(seed, states, 128, 72).astype(np.int16)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    stopped = [k for k in range(len(states) - 1) if states[k].speed == states[k + 1].speed == 0.0]
    moving = [k for k in range(len(states) - 1) if states[k].speed > 4.0]
    assert stopped and moving
    # Other cars still move while the ego waits, so "unchanged" is relative.
    assert np.mean(change[stopped]) < 0.3 * np.mean(change[moving])


@pytest.mark.parametrize("yaw_offset", [0.0, math.radians(55), math.radians(-110), math.pi])
def test_shapes_and_dtype(yaw_offset):
    states = simulate_drive(2, 6, FPS)
    frames = render_frames(2, states, 128, 72, yaw_offset=yaw_offset)
    assert frames.shape == (6, 72, 128, 3) and frames.dtype == np.uint8
    assert frames.std() > 10            # not a blank image


def test_cameras_see_different_things():
    states = simulate_drive(2, 3, FPS)
    front = render_frames(2, states, 128, 72, 0.0)
    back = render_frames(2, states, 128, 72, math.pi)
    assert np.abs(front.astype(int) - back).mean() > 3


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_frames"):
        simulate_drive(0, 0, FPS)
    with pytest.raises(ValueError, match="too small"):
        render_frames(0, simulate_drive(0, 2, FPS), 4, 4)
