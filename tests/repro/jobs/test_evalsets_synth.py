"""Synthetic evaluation sets at ci scale for the nuScenes, Waymo and multi-view nuScenes
protocols: written with the synthetic writers, read back through the real readers, with the
protocol's clip, frame and view counts (repro/jobs/evalsets.py, repro/jobs/evalsynth.py)."""
from __future__ import annotations

import json

import pytest

from evals.cliplist import read_clip_list
from evals.multiview import group_views
from evals.videoset import VideoSet
from maskgwm.data.nuscenes import CAMERAS
from repro.jobs.evalsets import ensure_evalset, scaled_protocol


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("evalsets")


@pytest.mark.parametrize("name", ["vista_nuscenes", "waymo_zeroshot"])
def test_single_view_sets(work, name):
    evalset = ensure_evalset(name, "ci", work, log=lambda _: None)
    real = VideoSet.open(evalset.real_dir)
    assert evalset.views is None and len(real) == evalset.protocol.n_clips == 3
    assert all(c.frames == 25 and c.cond_frames == 1 for c in real.clips)
    assert real.read(real.clips[0]).shape == (25, 32, 64, 3)
    assert len({c.clip_id for c in real.clips}) == 3
    cache = work / "cache" / "evalsynth"
    prefix = "nuscenes" if name == "vista_nuscenes" else "waymo"
    assert any(p.name.startswith(prefix + "-") for p in cache.iterdir())
    again = ensure_evalset(name, "ci", work, log=lambda _: None)   # built once, then loaded
    assert again.clip_list_hash == evalset.clip_list_hash


def test_multiview_set_has_six_views_per_scene(work):
    evalset = ensure_evalset("drivewm_mview", "ci", work, log=lambda _: None)
    assert evalset.views == tuple(CAMERAS)
    real = VideoSet.open(evalset.real_dir)
    scenes = group_views(real.clips, evalset.views)
    assert len(scenes) == 2 and len(real) == evalset.protocol.n_clips == 12
    for scene_id, entries in scenes:
        assert scene_id.endswith("/mview") and all(e.source_clip == scene_id for e in entries)
        assert all((e.frames, e.fps, e.cond_frames) == (8, 2.0, 1) for e in entries)
    first = [real.read(e) for e in scenes[0][1]]
    assert first[0].shape == (8, 32, 64, 3)
    assert not all((first[0] == other).all() for other in first[1:])   # the cameras differ
    listed = read_clip_list(evalset.clip_list)
    assert [c["clip_id"] for c in listed["clips"]] == [c.clip_id for c in real.clips]
    record = json.loads((evalset.root / "evalset.json").read_text())
    assert record["views"] == list(CAMERAS) and record["n_clips"] == 12
    assert scaled_protocol("drivewm_mview", "smoke").n_clips == 18      # 3 scenes x 6 views
