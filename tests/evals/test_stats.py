"""FeatureStats: accumulation, blocks, merge invariance, input hash, save/load, input errors."""
from __future__ import annotations

import functools
import json
import zipfile

import numpy as np
import pytest

from evals.stats import SCHEMA_VERSION, FeatureStats, StatsFileError, full_from_lower

DIM = 6
N_BLOCKS = 5
META = {"detector": "inception-2015-12-05", "protocol_hash": "abc123", "note": "test"}


def make_clips(n_clips=23, frames_per_clip=4, seed=0):
    """Features [n_clips * frames, DIM] (mean far from zero) and each row's global clip index."""
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((n_clips * frames_per_clip, DIM)) * 2.0 + 5.0
    clips = np.repeat(np.arange(n_clips), frames_per_clip)
    return features, clips


def one_pass(features, clips, n_blocks=N_BLOCKS):
    stats = FeatureStats(DIM, n_blocks=n_blocks, metadata=META)
    stats.update(features, clips, source="all")
    return stats


def assert_stats_close(a: FeatureStats, b: FeatureStats, rtol=1e-10):
    assert a.count == b.count
    np.testing.assert_array_equal(a.block_count, b.block_count)
    np.testing.assert_array_equal(a.clip_indices, b.clip_indices)
    for name in ("sum", "outer", "block_sum", "block_outer_lower"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=rtol, atol=0,
                                   err_msg=name)
    np.testing.assert_allclose(a.mean(), b.mean(), rtol=rtol)
    np.testing.assert_allclose(a.cov(), b.cov(), rtol=rtol, atol=rtol * np.abs(b.cov()).max())
    assert a.inputs_hash == b.inputs_hash


def test_mean_and_cov_match_numpy():
    features, clips = make_clips()
    stats = one_pass(features, clips)
    np.testing.assert_allclose(stats.mean(), features.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(), np.cov(features, rowvar=False), rtol=1e-10)
    assert stats.count == len(features)
    np.testing.assert_array_equal(stats.cov(), stats.cov().T)


def test_frames_of_a_clip_land_in_block_clip_index_mod_n_blocks():
    features, clips = make_clips(n_clips=12, frames_per_clip=3)
    stats = one_pass(features, clips)
    for block in range(N_BLOCKS):
        rows = clips % N_BLOCKS == block
        assert stats.block_count[block] == rows.sum()
        np.testing.assert_allclose(stats.block_sum[block], features[rows].sum(axis=0))
        np.testing.assert_allclose(full_from_lower(stats.block_outer_lower[block]),
                                   features[rows].T @ features[rows], rtol=1e-12)
    assert not np.triu(stats.block_outer_lower, 1).any()  # upper triangles stay zero
    np.testing.assert_allclose(stats.outer, features.T @ features, rtol=1e-12)


def test_scalar_clip_index_and_per_row_indices_agree():
    features, clips = make_clips(n_clips=7, frames_per_clip=2)
    per_clip = FeatureStats(DIM, n_blocks=N_BLOCKS, metadata=META)
    for clip in range(7):
        per_clip.update(features[clips == clip], clip, source=f"clip-{clip}")
    assert_stats_close(per_clip, one_pass(features, clips))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_merge_of_any_split_in_any_order_equals_one_pass(seed):
    features, clips = make_clips()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(features))  # rows of a clip may even go to different shards
    cuts = np.sort(rng.choice(np.arange(1, len(features)), size=rng.integers(1, 6),
                              replace=False))
    shards = []
    for rows in np.split(order, cuts):
        shard = FeatureStats(DIM, n_blocks=N_BLOCKS, metadata=META)
        shard.update(features[rows], clips[rows])
        shards.append(shard)
    shuffled = [shards[i] for i in rng.permutation(len(shards))]
    left_fold = functools.reduce(FeatureStats.merge, shuffled)
    right_fold = functools.reduce(lambda acc, s: s.merge(acc), reversed(shuffled))
    reference = one_pass(features, clips)
    assert_stats_close(left_fold, reference)
    assert_stats_close(right_fold, reference)
    assert left_fold.metadata == META


def test_merge_keeps_only_agreeing_metadata_and_does_not_mutate():
    features, clips = make_clips(n_clips=4)
    a = FeatureStats(DIM, N_BLOCKS, {**META, "shard": 0})
    b = FeatureStats(DIM, N_BLOCKS, {**META, "shard": 1})
    a.update(features[:8], clips[:8])
    b.update(features[8:], clips[8:])
    before = a.block_outer_lower.copy()
    merged = a.merge(b)
    assert merged.metadata == META
    np.testing.assert_array_equal(a.block_outer_lower, before)


@pytest.mark.parametrize("other, message", [
    (FeatureStats(DIM + 1, N_BLOCKS, META), "dim"),
    (FeatureStats(DIM, N_BLOCKS + 1, META), "n_blocks"),
    (FeatureStats(DIM, N_BLOCKS, {**META, "detector": "i3d"}), "detector"),
    (FeatureStats(DIM, N_BLOCKS, {**META, "protocol_hash": "other"}), "protocol_hash"),
])
def test_merge_rejects_incompatible_stats(other, message):
    with pytest.raises(ValueError, match=message):
        FeatureStats(DIM, N_BLOCKS, META).merge(other)


def test_inputs_hash_ignores_order_and_batching_but_not_content():
    features, clips = make_clips()
    reference = one_pass(features, clips).inputs_hash
    batched = FeatureStats(DIM, n_blocks=0)
    for rows in np.array_split(np.random.default_rng(0).permutation(len(features)), 5):
        batched.update(features[rows], clips[rows])
    assert batched.inputs_hash == reference
    nudged = features.copy()
    nudged[3, 2] = np.nextafter(nudged[3, 2], np.inf)
    assert one_pass(nudged, clips).inputs_hash != reference
    assert one_pass(features, clips + 1).inputs_hash != reference
    doubled = one_pass(features, clips)
    doubled.update(features[:1], clips[:1])
    doubled.update(features[:1], clips[:1])
    assert doubled.inputs_hash != reference  # a sum, not XOR: duplicates do not cancel


def test_blocks_can_be_disabled():
    features, clips = make_clips()
    stats = one_pass(features, clips, n_blocks=0)
    assert stats.block_outer_lower.shape == (0, DIM, DIM)
    np.testing.assert_allclose(stats.cov(), np.cov(features, rowvar=False), rtol=1e-10)


def test_save_load_round_trip(tmp_path):
    features, clips = make_clips()
    stats = one_pass(features, clips)
    path = stats.save(tmp_path / "gen.npz")
    loaded = FeatureStats.load(path)
    assert_stats_close(loaded, stats, rtol=0)
    assert loaded.metadata == META and loaded.n_blocks == N_BLOCKS
    with np.load(path) as archive:
        header = json.loads(archive["header"].tobytes().decode())
    assert header["schema_version"] == SCHEMA_VERSION
    assert header["n"] == len(features) and header["detector"] == META["detector"]
    assert header["protocol_hash"] == META["protocol_hash"]
    assert header["inputs_hash"] == stats.inputs_hash
    assert [p.name for p in tmp_path.iterdir()] == ["gen.npz"]  # no temp file left behind


def test_save_load_round_trip_without_blocks(tmp_path):
    features, clips = make_clips()
    stats = one_pass(features, clips, n_blocks=0)
    loaded = FeatureStats.load(stats.save(tmp_path / "noblocks.npz"))
    assert_stats_close(loaded, stats, rtol=0)
    loaded.update(features[:3], clips[:3])  # still accumulates after a load
    stats.update(features[:3], clips[:3])
    assert_stats_close(loaded, stats, rtol=0)


def test_files_hold_only_non_empty_blocks_and_version_1_files_still_load(tmp_path):
    features, clips = make_clips(n_clips=2)                # 2 of 50 blocks get rows
    stats = one_pass(features, clips, n_blocks=50)
    path = stats.save(tmp_path / "sparse.npz")
    with np.load(path) as archive:
        assert archive["filled_blocks"].tolist() == [0, 1]
        assert archive["block_outer_lower"].shape == (2, DIM, DIM)
        arrays = {key: archive[key] for key in archive.files if key != "filled_blocks"}
    assert_stats_close(FeatureStats.load(path), stats, rtol=0)
    arrays["block_outer_lower"] = stats.block_outer_lower          # the old layout: every block
    header = json.loads(arrays["header"].tobytes().decode())
    arrays["header"] = np.frombuffer(json.dumps({**header, "schema_version": 1}).encode(),
                                     dtype=np.uint8)
    np.savez(tmp_path / "v1.npz", **arrays)
    assert_stats_close(FeatureStats.load(tmp_path / "v1.npz"), stats, rtol=0)
    with np.load(path) as archive:
        broken = {key: archive[key] for key in archive.files}
    broken["filled_blocks"] = np.array([0, 7])                     # block 1 has rows
    np.savez(tmp_path / "broken.npz", **broken)
    with pytest.raises(StatsFileError, match="broken.npz.*filled_blocks"):
        FeatureStats.load(tmp_path / "broken.npz")


def test_load_rejects_corrupt_truncated_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(StatsFileError, match="garbage.npz"):
        FeatureStats.load(garbage)
    good = one_pass(*make_clips()).save(tmp_path / "good.npz")
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:500])
    with pytest.raises(StatsFileError, match="truncated.npz"):
        FeatureStats.load(truncated)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, mu=np.zeros(3))
    with pytest.raises(StatsFileError, match="foreign.npz.*missing"):
        FeatureStats.load(foreign)


def rewrite_header(src, dst, **changes):
    with np.load(src) as archive:
        arrays = {key: archive[key] for key in archive.files}
    header = json.loads(arrays["header"].tobytes().decode())
    header.update(changes)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    np.savez(dst, **arrays)


def test_load_checks_schema_version_and_shapes(tmp_path):
    good = one_pass(*make_clips()).save(tmp_path / "good.npz")
    rewrite_header(good, tmp_path / "v99.npz", schema_version=99)
    with pytest.raises(StatsFileError, match=r"v99.npz.*schema version 99"):
        FeatureStats.load(tmp_path / "v99.npz")
    rewrite_header(good, tmp_path / "dim.npz", dim=DIM + 1)
    with pytest.raises(StatsFileError, match=r"dim.npz.*shape"):
        FeatureStats.load(tmp_path / "dim.npz")
    rewrite_header(good, tmp_path / "n.npz", n=1)
    with pytest.raises(StatsFileError, match=r"n.npz.*count"):
        FeatureStats.load(tmp_path / "n.npz")
    assert zipfile.is_zipfile(good)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_update_rejects_non_finite_naming_source_and_row(bad_value):
    features, clips = make_clips(n_clips=3)
    features[5, 1] = bad_value
    stats = FeatureStats(DIM, N_BLOCKS)
    with pytest.raises(ValueError, match=r"clip_0042\.mp4.*row 5"):
        stats.update(features, clips, source="clip_0042.mp4")
    assert stats.count == 0


def test_update_rejects_wrong_dim_and_shape():
    stats = FeatureStats(DIM, N_BLOCKS)
    with pytest.raises(ValueError, match=rf"shard-3.*expected dim {DIM}, got {DIM + 1}"):
        stats.update(np.zeros((2, DIM + 1)), 0, source="shard-3")
    with pytest.raises(ValueError, match="2-D"):
        stats.update(np.zeros(DIM), 0, source="x")
    with pytest.raises(ValueError, match="one index per row"):
        stats.update(np.zeros((3, DIM)), np.arange(2))
    with pytest.raises(ValueError, match=">= 0"):
        stats.update(np.zeros((1, DIM)), -1)


def test_cov_needs_two_samples():
    stats = FeatureStats(DIM, N_BLOCKS)
    with pytest.raises(ValueError, match="empty"):
        stats.mean()
    stats.update(np.ones((1, DIM)), 0)
    with pytest.raises(ValueError, match="at least 2 feature vectors, got 1"):
        stats.cov()


def test_group_decides_the_block_and_is_kept_through_merge_and_files(tmp_path):
    """Multi-view: the views of scene g (clips 3g, 3g+1, 3g+2) all go to block g % N_BLOCKS."""
    from evals.stats import GROUPED_SCHEMA_VERSION
    features, clips = make_clips(n_clips=12, frames_per_clip=2)
    groups = clips // 3
    stats = FeatureStats(DIM, N_BLOCKS, META)
    stats.update(features, clips, group=groups)
    for block in range(N_BLOCKS):
        rows = groups % N_BLOCKS == block
        assert stats.block_count[block] == rows.sum()
        np.testing.assert_allclose(stats.block_sum[block], features[rows].sum(axis=0))
    assert stats.clip_groups.tolist() == [c // 3 for c in range(12)]
    assert stats.inputs_hash == one_pass(features, clips).inputs_hash   # groups are not inputs
    halves = [FeatureStats(DIM, N_BLOCKS, META) for _ in range(2)]
    for rows, half in zip((clips % 2 == 1, clips % 2 == 0), halves):  # a scene in both halves
        half.update(features[rows], clips[rows], group=groups[rows])
    assert_stats_close(halves[1].merge(halves[0]), stats, rtol=1e-12)
    np.testing.assert_array_equal(halves[1].merge(halves[0]).clip_groups, stats.clip_groups)
    loaded = FeatureStats.load(stats.save(tmp_path / "grouped.npz"))
    assert_stats_close(loaded, stats, rtol=0)
    np.testing.assert_array_equal(loaded.clip_groups, stats.clip_groups)
    with np.load(tmp_path / "grouped.npz") as archive:
        header = json.loads(archive["header"].tobytes().decode())
        assert header["schema_version"] == GROUPED_SCHEMA_VERSION
    with np.load(one_pass(features, clips).save(tmp_path / "plain.npz")) as archive:
        assert "clip_groups" not in archive.files           # ungrouped files: as before
    assert FeatureStats.load(tmp_path / "plain.npz").clip_groups.tolist() == list(range(12))
    with np.load(tmp_path / "grouped.npz") as archive:
        arrays = {key: archive[key] for key in archive.files if key != "clip_groups"}
    np.savez(tmp_path / "lost.npz", **arrays)
    with pytest.raises(StatsFileError, match="lost.npz.*clip_groups"):
        FeatureStats.load(tmp_path / "lost.npz")


def test_a_clip_has_one_group():
    features, clips = make_clips(n_clips=4, frames_per_clip=2)
    stats = FeatureStats(DIM, N_BLOCKS, META)
    stats.update(features, clips, group=clips // 2)
    with pytest.raises(ValueError, match="clip 3 is in group 1 and group 3"):
        stats.update(features[6:], clips[6:])                # group defaults to the clip index
    assert stats.count == len(features)                      # the refused update added nothing
    with pytest.raises(ValueError, match="clip 1 is in group 0 and group 1"):
        stats.merge(one_pass(features[2:4], clips[2:4]))
    with pytest.raises(ValueError, match="clip 0 is in group 0 and group 1"):
        FeatureStats(DIM, N_BLOCKS).update(features[:2], 0, group=np.array([0, 1]))
    with pytest.raises(ValueError, match="group must be >= 0"):
        FeatureStats(DIM, N_BLOCKS).update(features[:2], 0, group=-1)
