"""Sampling: velocity functions, generate_clip (one window and rollouts), sample_videoset
(sharding, merging, resuming after a crash, resizing)."""
from __future__ import annotations

import io
import json
import sys

import numpy as np
import pytest
import torch

from evals.videoset import VideoSet, VideoSetError, write_videoset
from maskgwm.data.loader import crop_resize
from maskgwm.generate import clip_seed, generate_clip, model_velocity
from maskgwm.model.actions import no_actions
from maskgwm.model.model_file import save_model
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.sample import SETTINGS_FILE, merge_videosets, sample_videoset, shard_dir

STEPS = 2


@pytest.fixture(scope="module")
def model(make_tiny_model) -> MaskGWMDiT:
    return make_tiny_model()


@pytest.fixture(scope="module")
def real_set(tmp_path_factory):
    """Three 5-frame clips of 64x128 pixels (HxW), one condition frame each."""
    rng = np.random.default_rng(0)
    clips = [(f"scene-{i}/clip", rng.integers(0, 256, (5, 64, 128, 3), dtype=np.uint8))
             for i in range(3)]
    return write_videoset(tmp_path_factory.mktemp("real"), clips, fps=10.0, cond_frames=1).root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, model, text):
    return save_model(tmp_path_factory.mktemp("ckpt") / "model.pt", model, text,
                      {"resolution": [64, 32]})   # [width, height]: halves the real size


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, checkpoint, vae, real_set) -> VideoSet:
    out = sample_videoset(checkpoint, vae, real_set, tmp_path_factory.mktemp("gen") / "all",
                          steps=STEPS, seed=5, log=lambda _: None)
    return VideoSet.open(out)


def condition(seed: int = 0, n: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 64), dtype=torch.uint8, generator=generator)


def clips_of(videoset: VideoSet) -> dict[str, np.ndarray]:
    return {entry.clip_id: videoset.read(entry) for entry in videoset.clips}


def test_generate_clip_is_deterministic_and_keeps_condition_frames(model, vae, text):
    cond = condition(n=2)
    first = generate_clip(model, vae, text, cond, 4, seed=3, steps=STEPS)
    assert first.shape == (4, 3, 32, 64) and first.dtype == torch.uint8
    assert torch.equal(first[:2], cond)
    assert torch.equal(generate_clip(model, vae, text, cond, 4, seed=3, steps=STEPS), first)
    assert not torch.equal(generate_clip(model, vae, text, cond, 4, seed=4, steps=STEPS), first)


def test_rollout_beyond_one_window(model, vae, text):
    cond = condition()
    clip = generate_clip(model, vae, text, cond, 7, seed=1, steps=STEPS, window=5,
                         rollout_cond=3)
    assert clip.shape == (7, 3, 32, 64) and torch.equal(clip[:1], cond)
    again = generate_clip(model, vae, text, cond, 7, seed=1, steps=STEPS, window=5,
                          rollout_cond=3)
    assert torch.equal(clip, again)
    with pytest.raises(ValueError, match="exceeds preset 'tiny'"):
        generate_clip(model, vae, text, cond, 40, seed=1, window=40)


def test_unconditional_pass_drops_actions(text, make_tiny_model):
    model = make_tiny_model(actions=True)
    latents = torch.randn(1, 3, 1, 16, 4, 8)
    tau = torch.tensor([[0.0, 0.5, 0.5]])
    actions = torch.randn(1, 3, model.action_dim)
    conditional, unconditional = model_velocity(model, text, actions=actions)
    other_unconditional = model_velocity(model, text, actions=actions + 1)[1]
    by_count = model_velocity(model, text, cond=1, actions=actions)[0]
    with torch.no_grad():
        with_actions, without = conditional(latents, tau), unconditional(latents, tau)
        assert not torch.allclose(with_actions, without)
        assert torch.equal(other_unconditional(latents, tau), without)   # actions ignored
        assert torch.equal(by_count(latents, tau), with_actions)


@pytest.mark.parametrize("missing", ["drop", "zeros"])
def test_action_free_sampling_feeds_what_training_feeds_clips_without_actions(
        text, make_tiny_model, missing):
    """Sampling an action-free protocol gives an action model a clip without action values,
    the input training gives such clips (test_objective): with model.missing_actions "drop"
    the dropped-action path in both passes (not a skipped cross-attention, a path the model
    never trained on); with "zeros" all-zero features in the conditional pass."""
    model = make_tiny_model(actions=True, missing_actions=missing)
    latents = torch.randn(1, 3, 1, 16, 4, 8)
    tau = torch.tensor([[0.0, 0.5, 0.5]])
    dropped = model_velocity(model, text, actions=torch.randn(1, model.action_dim))[1]
    without = model_velocity(model, text, actions=no_actions(1))[0]
    conditional, unconditional = model_velocity(model, text)
    with torch.no_grad():
        expected = dropped(latents, tau)
        torch.testing.assert_close(unconditional(latents, tau), expected, rtol=0, atol=0)
        torch.testing.assert_close(conditional(latents, tau), without(latents, tau),
                                   rtol=0, atol=0)
        assert torch.equal(conditional(latents, tau), expected) == (missing == "drop")


def test_single_run_keeps_real_metadata_and_condition_frames(single_run, real_set):
    real = VideoSet.open(real_set)
    assert [e.clip_id for e in single_run.clips] == [e.clip_id for e in real.clips]
    for entry, real_entry in zip(single_run.clips, real.clips):
        assert (entry.source_clip, entry.cond_frames, entry.fps, entry.frames) == \
            (real_entry.source_clip, 1, 10.0, 5)
        frames = single_run.read(entry)
        assert frames.shape == (5, 32, 64, 3)
        assert np.array_equal(frames[0], crop_resize(real.read(real_entry)[0], 64, 32))
        assert not np.array_equal(frames[1], frames[2])


def test_shards_merged_equal_single_run(tmp_path, checkpoint, vae, real_set, single_run):
    parts = [sample_videoset(checkpoint, vae, real_set, tmp_path / "gen", shard=i, num_shards=2,
                             steps=STEPS, seed=5, log=lambda _: None) for i in range(2)]
    assert parts == [tmp_path / "gen" / "shard-000-of-002", tmp_path / "gen" / "shard-001-of-002"]
    assert [len(VideoSet.open(p)) for p in parts] == [2, 1]
    merged = merge_videosets(parts, tmp_path / "merged", reference=real_set)
    assert [e.clip_id for e in merged.clips] == [e.clip_id for e in single_run.clips]
    expected = clips_of(single_run)
    for clip_id, frames in clips_of(merged).items():
        assert np.array_equal(frames, expected[clip_id]), clip_id
    merged_again = merge_videosets(parts, tmp_path / "merged", reference=real_set)
    assert len(merged_again) == 3
    with pytest.raises(VideoSetError, match="is in both"):
        merge_videosets([parts[0], parts[0]], tmp_path / "twice")
    with pytest.raises(VideoSetError, match="1 clips of .* are in no part"):
        merge_videosets(parts[:1], tmp_path / "partial", reference=real_set)


def test_resume_after_crash(tmp_path, checkpoint, vae, real_set, single_run, monkeypatch):
    import maskgwm.sample as sampling
    calls, generate = [], sampling.generate_clip

    def crash_on_the_third(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("simulated crash")
        return generate(*args, **kwargs)

    monkeypatch.setattr(sampling, "generate_clip", crash_on_the_third)
    out = tmp_path / "gen"
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample_videoset(checkpoint, vae, real_set, out, steps=STEPS, seed=5, log=lambda _: None)
    assert len(VideoSet.open(out)) == 2
    monkeypatch.setattr(sys, "stderr", io.StringIO())      # a job's log file, not a terminal
    messages = []
    sample_videoset(checkpoint, vae, real_set, out, steps=STEPS, seed=5, log=messages.append)
    assert len(messages) == 2       # the progress bar's last line, then the summary
    assert "shard 0/1: 100%" in messages[0] and "1/1 [" in messages[0]
    assert "clip/s" in messages[0] or "s/clip" in messages[0]
    assert "scene-2/clip: 5 frames" in messages[0] and "\r" not in messages[0]
    assert "1 clips generated, 2 already there" in messages[-1]
    resumed = VideoSet.open(out)
    assert [e.clip_id for e in resumed.clips] == [e.clip_id for e in single_run.clips]
    expected = clips_of(single_run)
    for clip_id, frames in clips_of(resumed).items():
        assert np.array_equal(frames, expected[clip_id])
    with pytest.raises(ValueError, match="other settings .*steps"):
        sample_videoset(checkpoint, vae, real_set, out, steps=3, seed=5, log=lambda _: None)


def test_resume_refuses_another_checkpoint_or_real_set(tmp_path, make_tiny_model, text, vae,
                                                       checkpoint, real_set, single_run):
    """A folder of clips from one checkpoint and real set is not resumed with another: same
    preset, step and clip ids, but other weights, run or real frames."""
    other = save_model(tmp_path / "other.pt", make_tiny_model(seed=7), text,
                       {"resolution": [64, 32]})
    with pytest.raises(ValueError, match="other settings .*checkpoint_sha256"):
        sample_videoset(other, vae, real_set, single_run.root, steps=STEPS, seed=5,
                        log=lambda _: None)
    rng = np.random.default_rng(1)
    same_ids = write_videoset(tmp_path / "real-b", [
        (entry.clip_id, rng.integers(0, 256, (5, 48, 96, 3), dtype=np.uint8))
        for entry in VideoSet.open(real_set).clips], fps=10.0, cond_frames=1).root
    with pytest.raises(ValueError, match="other settings .*real_set"):
        sample_videoset(checkpoint, vae, same_ids, single_run.root, steps=STEPS, seed=5,
                        log=lambda _: None)
    runs = [save_model(tmp_path / f"{run}.pt", make_tiny_model(seed=1), text,
                       {"resolution": [64, 32], "run_config_hash": run}) for run in "ab"]
    sample_videoset(runs[0], vae, real_set, tmp_path / "gen", steps=STEPS, log=lambda _: None)
    settings = json.loads((tmp_path / "gen" / SETTINGS_FILE).read_text())["settings"]
    assert settings["run"] == "a"
    with pytest.raises(ValueError, match="other settings .*run"):
        sample_videoset(runs[1], vae, real_set, tmp_path / "gen", steps=STEPS,
                        log=lambda _: None)


def test_non_finite_weights_fail_naming_the_clip(tmp_path, make_tiny_model, text, vae,
                                                 real_set):
    model = make_tiny_model(seed=1)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    path = save_model(tmp_path / "nan.pt", model, text, {"resolution": [64, 32]})
    with pytest.raises(ValueError, match=r"clip scene-0/clip \(checkpoint .*nan.pt\): the model "
                                         r"produced NaN or Inf latents"):
        sample_videoset(path, vae, real_set, tmp_path / "gen", steps=STEPS, log=lambda _: None)
    assert len(VideoSet.open(tmp_path / "gen")) == 0


def test_resolution_from_arguments_resizes_condition_frames(tmp_path, model, text, vae,
                                                            real_set):
    path = save_model(tmp_path / "plain.pt", model, text)   # no resolution in extra
    out = sample_videoset(path, vae, real_set, tmp_path / "gen", steps=STEPS, frames=3,
                          width=48, height=32, log=lambda _: None)
    real = VideoSet.open(real_set)
    generated = VideoSet.open(out)
    entry = generated.clips[0]
    frames = generated.read(entry)
    assert frames.shape == (3, 32, 48, 3) and entry.frames == 3   # cropped to 3:2, resized
    assert np.array_equal(frames[0], crop_resize(real.read(real.clips[0])[0], 48, 32))


def test_clip_seed_and_shard_dir(tmp_path):
    assert clip_seed(0, "a") == clip_seed(0, "a") != clip_seed(1, "a") != clip_seed(0, "b")
    assert 0 <= clip_seed(2 ** 40, "scene-1/clip") < 2 ** 63
    assert shard_dir(tmp_path, 0, 1) == tmp_path
    assert shard_dir(tmp_path, 3, 12) == tmp_path / "shard-003-of-012"
