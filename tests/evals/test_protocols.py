"""Protocols: the paper's settings, frame selection, measurement points, hashing."""
from __future__ import annotations

import numpy as np
import pytest

from evals.frames import fid_frames, frames_needed, fvd_frames, point_frames
from evals.protocols import PROTOCOLS, get_protocol


def test_the_five_protocols_and_their_sizes():
    assert set(PROTOCOLS) == {"vista_nuscenes", "drivewm_mview", "waymo_zeroshot",
                              "opendv_ablation", "opendv_long"}
    vista = get_protocol("vista_nuscenes")
    assert (vista.n_clips, vista.frames_per_clip, vista.cond_frames) == (5369, 25, 1)
    assert vista.fid.detector == "inception-2015-12-05" and vista.fvd.detector == "i3d-400"
    assert get_protocol("waymo_zeroshot").n_clips == 600
    assert get_protocol("drivewm_mview").n_clips == 900
    for protocol in PROTOCOLS.values():
        protocol.validate()
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("fvd2048")


def test_vista_fid_excludes_the_condition_frame():
    vista = get_protocol("vista_nuscenes")
    assert list(fid_frames(vista, 7, 0)) == list(range(1, 25))
    assert list(fvd_frames(vista, 7, 0)) == list(range(25))


def test_opendv_ablation_draws_six_generated_frames_per_clip():
    protocol = get_protocol("opendv_ablation")
    frames = fid_frames(protocol, 3, 0)
    assert len(frames) == 6 and frames.min() >= 1 and list(frames) == sorted(frames)
    assert list(frames) == list(fid_frames(protocol, 3, 0))            # seeded by clip index
    assert any(list(fid_frames(protocol, i, 0)) != list(frames) for i in range(4, 10))


def test_short_clips_are_padded_for_i3d():
    mview = get_protocol("drivewm_mview")
    assert list(fvd_frames(mview, 0, 0)) == [0, 1, 2, 3, 4, 5, 6, 7, 7, 7]


def test_fvd_frames_must_fit_the_clip():
    """16 FVD frames of an 8-frame protocol is an error, not 8 frames padded to 10."""
    with pytest.raises(ValueError, match="fvd frames from 0 \\(16\\) do not fit the 8"):
        get_protocol("drivewm_mview").replace(**{"fvd.num_frames": 16}).validate()
    with pytest.raises(ValueError, match="do not fit"):
        get_protocol("vista_nuscenes").replace(**{"fvd.first_frame": 25}).validate()
    get_protocol("vista_nuscenes").replace(**{"fvd.num_frames": 16}).validate()


def test_long_horizon_points():
    long = get_protocol("opendv_long")
    points = long.measurement_points()
    assert [frames for frames, _ in points] == [25, 47, 69, 91, 113, 135, 157]
    assert points[-1][1] >= 15.0 > points[-2][1]
    assert frames_needed(long) == 157
    assert list(point_frames(long, 0, 0)) == list(range(25))
    later = point_frames(long, 5, 3)
    assert len(later) == 25 and later.max() < 91 and np.all(np.diff(later) > 0)


def test_hash_tracks_every_field():
    base = get_protocol("vista_nuscenes")
    assert base.hash == get_protocol("vista_nuscenes").hash
    variant = base.replace(**{"fvd.num_frames": 16})
    assert variant.fvd.num_frames == 16 and variant.hash != base.hash
    assert base.replace(**{"fid.resize": "torch_bilinear"}).hash != base.hash
    with pytest.raises(ValueError, match="resize"):
        base.replace(**{"fid.resize": "nearest"}).validate()


def test_long_horizon_rounds_that_add_no_frames_are_refused_not_looped():
    import signal

    def stop(*_):
        raise TimeoutError("measurement_points did not return")
    protocol = get_protocol("opendv_long").replace(**{"long_horizon.cond_frames": 25})
    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(5)
    try:
        with pytest.raises(ValueError, match="window .25. must exceed long_horizon.cond_frames"):
            protocol.validate()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_multiview_bootstraps_scenes_and_single_view_hashes_are_unchanged():
    """bootstrap.unit was added later: at its default ("clip") it stays out of to_dict and the
    hash, so single-view results and cached features stay valid; drivewm_mview resamples
    scenes, and its hash changed with that, so its old reference bundles are not reused."""
    assert {name: p.hash for name, p in PROTOCOLS.items() if name != "drivewm_mview"} == {
        "vista_nuscenes": "41a9c60ca47cea09", "waymo_zeroshot": "90c0f5dae91477ec",
        "opendv_ablation": "f9976cbbac61f6e6", "opendv_long": "f8a3d584645b5c17"}
    mview = get_protocol("drivewm_mview")
    assert mview.bootstrap.unit == "scene" and mview.to_dict()["bootstrap"]["unit"] == "scene"
    assert mview.hash != "2c236395537451b3"                # the clip-block version
    assert mview.replace(**{"bootstrap.unit": "clip"}).hash == "2c236395537451b3"
    vista = get_protocol("vista_nuscenes")
    assert vista.bootstrap.unit == "clip" and "unit" not in vista.to_dict()["bootstrap"]
    with pytest.raises(ValueError, match="bootstrap.unit"):
        vista.replace(**{"bootstrap.unit": "view"}).validate()
