"""Multi-view sampling: generate_views (K views in one model call per step), and
sample_videoset on a multi-view set (scene grouping, sharding by scene, per-scene seeds,
resuming a scene cut off between views)."""
from __future__ import annotations

import io
import sys

import numpy as np
import pytest
import torch

from evals.multiview import group_views, view_clip_id
from evals.videoset import VideoSet, VideoSetError, VideoSetWriter, write_videoset
from maskgwm.generate import clip_seed, generate_clip, generate_views
from maskgwm.model.model_file import save_model
from maskgwm.sample import merge_videosets, sample_videoset

STEPS = 2
VIEWS = ["CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT"]   # 3 of the 6 cameras: CPU-sized
SCENES = ["scene-0103/tok/mview", "scene-0916/tok/mview", "scene-0553/tok/mview"]


@pytest.fixture(scope="module")
def model(make_tiny_model):
    return make_tiny_model(view_blocks=True, view_attention="KW")


class Recorder:
    """Counts model calls and records the latent shapes they see."""

    def __init__(self, model):
        self.shapes: list[tuple[int, ...]] = []
        self.handle = model.register_forward_pre_hook(
            lambda _, args: self.shapes.append(tuple(args[0].shape)))

    def close(self) -> None:
        self.handle.remove()


def cond_views(k: int, n: int = 1, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (k, n, 3, 32, 64), dtype=torch.uint8, generator=generator)


def test_generate_views_is_joint_deterministic_and_keeps_condition_frames(model, vae, text):
    cond = cond_views(2)
    recorder = Recorder(model)
    try:
        out = generate_views(model, vae, text, cond, 3, seed=3, steps=STEPS, guidance=4.0)
    finally:
        recorder.close()
    assert out.shape == (2, 3, 3, 32, 64) and out.dtype == torch.uint8
    assert torch.equal(out[:, :1], cond)
    # one conditional and one unconditional call per step, each over both views
    assert len(recorder.shapes) == 2 * STEPS
    assert all(shape[:3] == (1, 3, 2) for shape in recorder.shapes), recorder.shapes
    assert torch.equal(generate_views(model, vae, text, cond, 3, seed=3, steps=STEPS), out)
    assert not torch.equal(generate_views(model, vae, text, cond, 3, seed=4, steps=STEPS), out)
    # the views interact (view blocks): changing one view's condition changes the other view
    other = cond.clone()
    other[1] = 255 - other[1]
    changed = generate_views(model, vae, text, other, 3, seed=3, steps=STEPS)
    assert not torch.equal(changed[0, 1:], out[0, 1:])
    # one view is generate_clip
    single = generate_views(model, vae, text, cond[:1], 3, seed=3, steps=STEPS)[0]
    assert torch.equal(single, generate_clip(model, vae, text, cond[0], 3, seed=3, steps=STEPS))


def test_group_views_needs_every_view(tmp_path):
    frames = np.zeros((2, 8, 8, 3), np.uint8)
    clips = [(view_clip_id(SCENES[0], v), frames) for v in VIEWS]
    entries = write_videoset(tmp_path / "a", clips, fps=2.0, cond_frames=1).clips
    assert group_views(entries, VIEWS) == [(SCENES[0], entries)]
    with pytest.raises(VideoSetError, match=r"views \['CAM_FRONT_RIGHT'\] are missing"):
        group_views(entries[:2], VIEWS)
    with pytest.raises(VideoSetError, match="not a view clip"):
        group_views(entries, VIEWS[:2])


@pytest.fixture(scope="module")
def mview_set(tmp_path_factory):
    """Three scenes x 3 views of 3 frames (64x32), one condition frame."""
    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("real-mview")
    with VideoSetWriter(root) as writer:
        for scene in SCENES:
            for view in VIEWS:
                writer.add(view_clip_id(scene, view),
                           rng.integers(0, 256, (3, 32, 64, 3), dtype=np.uint8), 2.0, scene, 1)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model, text):
    return save_model(tmp_path_factory.mktemp("ckpt") / "model.pt", model, text,
                      {"resolution": [64, 32]})


def test_multiview_set_shards_by_scene_and_resumes(tmp_path, checkpoint, vae, mview_set,
                                                   model, text, monkeypatch):
    parts = [sample_videoset(checkpoint, vae, mview_set, tmp_path / "gen", shard=i,
                             num_shards=2, steps=STEPS, seed=5, log=lambda _: None,
                             views=VIEWS) for i in range(2)]
    scenes = [[s for s, _ in group_views(VideoSet.open(p).clips, VIEWS)] for p in parts]
    assert scenes == [[SCENES[0], SCENES[2]], [SCENES[1]]]   # whole scenes per shard
    merged = merge_videosets(parts, tmp_path / "merged", reference=mview_set)
    real = VideoSet.open(mview_set)
    assert [e.clip_id for e in merged.clips] == [e.clip_id for e in real.clips]
    for entry in merged.clips:
        assert (entry.source_clip, entry.frames, entry.fps, entry.cond_frames) == \
            (real.clip(entry.clip_id).source_clip, 3, 2.0, 1)
    # a scene is seeded by (seed, scene id): its views equal one generate_views call
    cond = torch.stack([torch.from_numpy(real.read(real.clip(view_clip_id(SCENES[1], v)))[:1])
                        .permute(0, 3, 1, 2) for v in VIEWS])
    expected = generate_views(model, vae, text, cond, 3, clip_seed(5, SCENES[1]), STEPS)
    for view, frames in zip(VIEWS, expected):
        got = merged.read(merged.clip(view_clip_id(SCENES[1], view)))
        assert np.array_equal(got, frames.permute(0, 2, 3, 1).numpy()), view

    # a shard cut off after one view of a scene regenerates that scene, writing its missing
    # views only (the same clips, by the seed)
    out = parts[1]
    manifest = VideoSet.open(out)
    kept = manifest.clips[0]
    stamp = (out / kept.path).stat().st_mtime_ns
    with VideoSetWriter(out) as writer:
        for entry in manifest.clips[1:]:
            del writer.clips[entry.clip_id]
    messages: list[str] = []
    monkeypatch.setattr(sys, "stderr", io.StringIO())      # a job's log file, not a terminal
    sample_videoset(checkpoint, vae, mview_set, tmp_path / "gen", shard=1, num_shards=2,
                    steps=STEPS, seed=5, log=messages.append, views=VIEWS)
    assert "1 scenes generated, 0 already there" in messages[-1]
    assert len(messages) == 2 and "1/1 [" in messages[0]
    assert "scene/s" in messages[0] or "s/scene" in messages[0]     # the bar counts scenes
    assert f"{SCENES[1]}: 3 views x " in messages[0]     # the progress bar's last line
    resumed = VideoSet.open(out)
    assert sorted(e.clip_id for e in resumed.clips) == sorted(e.clip_id for e in manifest.clips)
    assert (out / kept.path).stat().st_mtime_ns == stamp
    for entry in resumed.clips:
        assert np.array_equal(resumed.read(entry), merged.read(merged.clip(entry.clip_id)))
    messages.clear()
    sample_videoset(checkpoint, vae, mview_set, tmp_path / "gen", shard=1, num_shards=2,
                    steps=STEPS, seed=5, log=messages.append, views=VIEWS)
    assert "0 scenes generated, 1 already there" in messages[-1]
