"""Block-bootstrap intervals for the Frechet distance, the paired difference, the KID interval."""
from __future__ import annotations

import numpy as np
import pytest

from evals.frechet import frechet_from_stats
from evals.resampling import (Interval, bootstrap_frechet, kid_interval,
                              paired_bootstrap_difference)
from evals.stats import FeatureStats

DIM = 8
FRAMES = 4
META = {"detector": "test-detector"}


def clip_stats(n_clips, seed, shift=0.0, n_blocks=20, first_clip=0, meta=META):
    """Stats of n_clips clips whose frames share a per-clip offset (frames are correlated)."""
    rng = np.random.default_rng(seed)
    clip_offsets = np.repeat(rng.standard_normal((n_clips, DIM)), FRAMES, axis=0)
    features = clip_offsets + 0.5 * rng.standard_normal((n_clips * FRAMES, DIM)) + shift
    stats = FeatureStats(DIM, n_blocks=n_blocks, metadata=meta)
    stats.update(features, first_clip + np.repeat(np.arange(n_clips), FRAMES))
    return stats


def test_reproducible_by_seed_and_value_is_the_plain_distance():
    gen, ref = clip_stats(60, seed=1, shift=0.3), clip_stats(60, seed=2)
    first = bootstrap_frechet(gen, ref, n_boot=50, seed=7)
    assert first == bootstrap_frechet(gen, ref, n_boot=50, seed=7)
    assert first != bootstrap_frechet(gen, ref, n_boot=50, seed=8)
    assert first.value == frechet_from_stats(gen, ref)
    assert first.low <= first.high and first.n_boot == 50 and first.std > 0
    assert first.level == 0.95


def test_level_controls_the_width():
    gen, ref = clip_stats(60, seed=1, shift=0.3), clip_stats(60, seed=2)
    wide = bootstrap_frechet(gen, ref, n_boot=60, seed=0, level=0.95)
    narrow = bootstrap_frechet(gen, ref, n_boot=60, seed=0, level=0.5)
    assert wide.low <= narrow.low <= narrow.high <= wide.high


def test_replicate_spread_shrinks_as_clips_grow():
    ref = clip_stats(400, seed=3)
    small = bootstrap_frechet(clip_stats(30, seed=4, shift=0.5), ref, n_boot=80, seed=0)
    large = bootstrap_frechet(clip_stats(400, seed=5, shift=0.5), ref, n_boot=80, seed=0)
    assert large.std < 0.6 * small.std


def test_bootstrap_replicates_sit_above_a_small_sample_estimate():
    # The documented upward bias: replicates repeat blocks and hold fewer distinct clips.
    gen, ref = clip_stats(25, seed=6), clip_stats(25, seed=6, first_clip=0)
    interval = bootstrap_frechet(gen, ref, n_boot=100, seed=0)
    assert interval.value < 1e-8  # identical sets
    assert interval.low > interval.value


def test_reference_resampling_modes():
    gen, ref = clip_stats(60, seed=1, shift=0.3), clip_stats(60, seed=2)
    fixed = bootstrap_frechet(gen, ref, n_boot=40, seed=0)
    same = bootstrap_frechet(gen, ref, n_boot=40, seed=0, resample_ref="same")
    independent = bootstrap_frechet(gen, ref, n_boot=40, seed=0, resample_ref="independent")
    assert fixed.value == same.value == independent.value
    assert len({fixed.std, same.std, independent.std}) == 3
    other_clips = clip_stats(60, seed=2, first_clip=1000)
    with pytest.raises(ValueError, match="same clips"):
        bootstrap_frechet(gen, other_clips, n_boot=10, resample_ref="same")
    assert bootstrap_frechet(gen, other_clips, n_boot=10, resample_ref="independent").std > 0
    with pytest.raises(ValueError, match="resample_ref"):
        bootstrap_frechet(gen, ref, n_boot=10, resample_ref="yes")


def test_paired_difference_excludes_zero_for_a_large_shift():
    ref = clip_stats(80, seed=10)
    close, far = clip_stats(80, seed=11, shift=0.1), clip_stats(80, seed=11, shift=1.5)
    paired = paired_bootstrap_difference(far, close, ref, n_boot=60, seed=0)
    expected = frechet_from_stats(far, ref) - frechet_from_stats(close, ref)
    assert paired.difference.value == pytest.approx(expected, rel=1e-12)
    assert 0 < paired.difference.low <= paired.difference.high
    assert paired.share_a_lower == 0.0
    reverse = paired_bootstrap_difference(close, far, ref, n_boot=60, seed=0)
    assert reverse.difference.high < 0 and reverse.share_a_lower == 1.0
    assert paired == paired_bootstrap_difference(far, close, ref, n_boot=60, seed=0)


def test_paired_difference_requires_the_same_clips_and_blocks():
    ref = clip_stats(40, seed=12)
    a = clip_stats(40, seed=13)
    with pytest.raises(ValueError, match="same clips"):
        paired_bootstrap_difference(a, clip_stats(40, seed=14, first_clip=5), ref, n_boot=10)
    with pytest.raises(ValueError, match="n_blocks"):
        paired_bootstrap_difference(a, clip_stats(40, seed=14, n_blocks=7), ref, n_boot=10)


def test_bootstrap_needs_blocks_and_sane_settings():
    ref = clip_stats(30, seed=15)
    with pytest.raises(ValueError, match="n_blocks=0"):
        bootstrap_frechet(clip_stats(30, seed=16, n_blocks=0), ref)
    with pytest.raises(ValueError, match="at least 2"):
        bootstrap_frechet(clip_stats(1, seed=16), ref)
    with pytest.raises(ValueError, match="level"):
        bootstrap_frechet(clip_stats(30, seed=16), ref, level=1.5)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_frechet(clip_stats(30, seed=16), ref, n_boot=1)


def test_kid_interval_is_the_normal_interval_of_the_subset_mean():
    interval = kid_interval(0.01, 0.002, n_subsets=100)
    assert isinstance(interval, Interval)
    assert interval.value == 0.01
    assert interval.high - interval.value == pytest.approx(1.959964 * 0.002 / 10, rel=1e-6)
    assert interval.value - interval.low == pytest.approx(interval.high - interval.value)
    assert kid_interval(0.01, 0.002, 100, level=0.5).high < interval.high


def view_stats(n_scenes, views, seed, shift=0.0, by_scene=True, n_blocks=20):
    """Multi-view stats: the views (clips 6s..6s+5) of scene s share most of their features;
    by_scene puts a scene's views in one block (group = scene), else one block per clip index."""
    rng = np.random.default_rng(seed)
    n_clips = n_scenes * views
    scene = np.repeat(rng.standard_normal((n_scenes, DIM)), views * FRAMES, axis=0)
    view = np.repeat(0.3 * rng.standard_normal((n_clips, DIM)), FRAMES, axis=0)
    features = scene + view + 0.3 * rng.standard_normal((n_clips * FRAMES, DIM)) + shift
    clips = np.repeat(np.arange(n_clips), FRAMES)
    stats = FeatureStats(DIM, n_blocks=n_blocks, metadata=META)
    stats.update(features, clips, group=clips // views if by_scene else None)
    return stats


def test_scene_blocks_widen_the_interval_of_correlated_views():
    """Blocks of views from different scenes look like 6x the independent data; whole-scene
    blocks do not (width ratio 2.1-5.5 over 20 seeds, about sqrt(6) expected)."""
    ref = view_stats(40, 6, seed=100)
    scenes = bootstrap_frechet(view_stats(40, 6, seed=0, shift=0.5), ref, n_boot=100, seed=0)
    split = bootstrap_frechet(view_stats(40, 6, seed=0, shift=0.5, by_scene=False), ref,
                              n_boot=100, seed=0)
    assert scenes.value == pytest.approx(split.value, rel=1e-12)  # same features, other blocks
    assert scenes.high - scenes.low > 1.5 * (split.high - split.low)
    assert scenes.std > 1.5 * split.std


def test_same_clips_in_other_blocks_are_refused():
    ref = view_stats(10, 6, seed=20)
    by_scene, by_clip = view_stats(10, 6, seed=21), view_stats(10, 6, seed=21, by_scene=False)
    with pytest.raises(ValueError, match="different blocks"):
        paired_bootstrap_difference(by_scene, by_clip, ref, n_boot=10)
    with pytest.raises(ValueError, match="different blocks"):
        bootstrap_frechet(by_clip, ref, n_boot=10, resample_ref="same")
    same = bootstrap_frechet(view_stats(10, 6, seed=21, shift=0.5), ref, n_boot=10,
                             resample_ref="same")
    assert same.std > 0
