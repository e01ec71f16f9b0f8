"""End-to-end evaluation with seeded random detectors on tiny video sets: result contents,
shard merging, reference caching, and the metrics' behaviour (fixed seeds, large effects)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evals.evaluate import evaluate, format_result, merge_shards
from evals.extractors import RANDOM_WEIGHTS_LABEL, build_extractors
from evals.parts import BundleError, load_bundle, merge_parts
from evals.pipeline import set_fingerprint
from evals.protocols import get_protocol
from evals.videoset import VideoSet, VideoSetError, write_videoset

N_CLIPS, FRAMES = 4, 10
PROTOCOL = get_protocol("opendv_ablation").replace(
    n_clips=N_CLIPS, frames_per_clip=FRAMES, **{
        "fid.frames_per_clip": 2, "bootstrap.n_boot": 0, "bootstrap.blocks": 4,
        "kid.subset_size": 8, "kid.subsets": 5})


PROTOCOL_ALL_FRAMES = PROTOCOL.replace(**{"fid.frames_per_clip": 0})  # shuffle keeps the set


def moving_clip(seed: int, noise: float = 0.0) -> np.ndarray:
    """A textured pattern sliding right: temporal structure for I3D to see."""
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((8, 8, 1)))
    frames = np.stack([np.roll(texture, 4 * t, axis=1) for t in range(FRAMES)])
    noisy = frames + noise * np.random.default_rng(seed + 1000).normal(size=frames.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    ref = [(f"c{i}", moving_clip(i)) for i in range(N_CLIPS)]
    write_videoset(root / "ref", ref, fps=10)
    write_videoset(root / "same", ref, fps=10, cond_frames=1)
    order = np.random.default_rng(0).permutation(np.arange(1, FRAMES))
    shuffled = [(cid, frames[np.concatenate([[0], order])]) for cid, frames in ref]
    write_videoset(root / "shuffled", shuffled, fps=10, cond_frames=1)
    for noise in (20, 60, 120):
        write_videoset(root / f"noise{noise}", [(f"c{i}", moving_clip(i, noise))
                                                for i in range(N_CLIPS)], fps=10, cond_frames=1)
    return root


@pytest.fixture(scope="module")
def extractors():
    return build_extractors(PROTOCOL)


@pytest.fixture(scope="module")
def score(sets, extractors):
    """(FID, FVD) of a set against the reference, computed once per set."""
    done: dict[str, tuple[float, float]] = {}

    def run(name: str, protocol=PROTOCOL) -> tuple[float, float]:
        if name not in done:
            result = evaluate(protocol, sets / name, sets / "ref", sets / f"{name}.json",
                              cache_dir=sets / "cache", progress=False, extractors=extractors)
            done[name] = (result["points"][0]["fid"]["value"],
                          result["points"][0]["fvd"]["value"])
        return done[name]
    return run


def test_result_records_protocol_detectors_and_counts(sets, tmp_path, extractors):
    result = evaluate(PROTOCOL.replace(**{"bootstrap.n_boot": 3}), sets / "noise60",
                      sets / "ref", tmp_path / "r.json", progress=False, extractors=extractors)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["protocol_hash"] == PROTOCOL.replace(**{"bootstrap.n_boot": 3}).hash
    assert saved["protocol"]["name"] == "opendv_ablation"
    assert saved["label"] == RANDOM_WEIGHTS_LABEL
    assert [d["role"] for d in saved["detectors"]] == ["fid", "fvd"]
    assert all(d["random_weights"] and d["weights_sha256"] is None for d in saved["detectors"])
    point = result["points"][0]
    assert point["fid"]["n"] == N_CLIPS * 2 and point["fvd"]["n"] == N_CLIPS
    assert point["fid"]["low"] <= point["fid"]["high"] and point["fid"]["n_boot"] == 3
    assert np.isfinite(point["kid_fvd"]["mean"])
    assert point["inputs_hash_fid"]["gen"] != point["inputs_hash_fid"]["ref"]
    assert saved["git_commit"] and "measurement_points" not in saved
    assert "NOTE: the protocol specifies" not in format_result(saved)
    partial = {**saved, "protocol": {**saved["protocol"], "n_clips": 5369}}
    assert f"5369 clips; these numbers come from {N_CLIPS}" in format_result(partial)


def test_identical_sets_score_zero_and_shuffling_raises_only_fvd(score):
    fid_same, fvd_same = score("same")
    assert abs(fid_same) < 1e-6 and abs(fvd_same) < 1e-6
    fid_shuffled, fvd_shuffled = score("shuffled", PROTOCOL_ALL_FRAMES)
    assert abs(fid_shuffled) < 1e-6          # the same frames, in another order
    assert fvd_shuffled > 1.0


def test_growing_noise_raises_both_monotonically(score):
    values = [score(name) for name in ("same", "noise20", "noise60", "noise120")]
    fids, fvds = zip(*values)
    assert all(a < b for a, b in zip(fids, fids[1:])), fids
    assert all(a < b for a, b in zip(fvds, fvds[1:])), fvds


def test_shards_merge_to_the_single_pass_result(sets, tmp_path, score, extractors):
    score("noise60")
    single = json.loads((sets / "noise60.json").read_text())
    out = tmp_path / "sharded.json"
    for index in (1, 0):
        evaluate(PROTOCOL, sets / "noise60", sets / "ref", out, shard=(index, 2),
                 progress=False, extractors=extractors)
    merged = merge_shards(out)
    for metric in ("fid", "fvd"):
        a, b = single["points"][0][metric]["value"], merged["points"][0][metric]["value"]
        assert a == pytest.approx(b, rel=1e-9)
        assert single["points"][0][f"kid_{metric}"]["mean"] == \
            pytest.approx(merged["points"][0][f"kid_{metric}"]["mean"], rel=1e-9)
    assert merged["points"][0]["seconds"] == single["points"][0]["seconds"] == FRAMES / 10
    parts = load_bundle(next(tmp_path.glob("sharded.json.shard-0-of-2")))[1]
    with pytest.raises(BundleError, match="more than one shard"):
        merge_parts([parts, parts])


def test_a_whole_reference_bundle_serves_every_shard(sets, tmp_path, score, extractors):
    """The cached reference bundle as --reference: each shard takes its own clips, so the
    merged result equals the single pass (no reference clip counted twice)."""
    score("noise60")
    single = json.loads((sets / "noise60.json").read_text())
    bundle = next(b for b in (sets / "cache").glob("ref-*")     # this protocol's; the cache
                  if json.loads((b / "bundle.json").read_text())["protocol_hash"]   # holds others
                  == PROTOCOL.hash)
    out = tmp_path / "sharded.json"
    for index in (0, 1):
        evaluate(PROTOCOL, sets / "noise60", bundle, out, shard=(index, 2), progress=False,
                 extractors=extractors)
    merged = merge_shards(out)
    for metric in ("fid", "fvd"):
        assert merged["points"][0][metric]["value"] == \
            pytest.approx(single["points"][0][metric]["value"], rel=1e-9)
    with pytest.raises(BundleError, match="holds reference shard 0 of 2"):
        evaluate(PROTOCOL, sets / "noise60", tmp_path / "sharded.json.shard-0-of-2",
                 tmp_path / "other.json", shard=(1, 2), progress=False, extractors=extractors)


def test_shards_of_different_sets_or_no_clips_are_refused(sets, tmp_path, extractors):
    out = tmp_path / "mixed.json"
    for index, name in ((0, "noise20"), (1, "noise60")):
        evaluate(PROTOCOL, sets / name, sets / "ref", out, shard=(index, 2), progress=False,
                 extractors=extractors)
    with pytest.raises(BundleError, match="generated set differs"):
        merge_shards(out)
    with pytest.raises(VideoSetError, match="shard 4 of 5 holds no clip of the 4"):
        evaluate(PROTOCOL, sets / "noise20", sets / "ref", out, shard=(4, 5), progress=False,
                 extractors=extractors)


def test_fingerprint_sees_a_rewritten_clip_of_the_same_size(tmp_path):
    import os
    videoset = write_videoset(tmp_path, [("c0", moving_clip(0))], fps=10, as_npy=True)
    before = set_fingerprint(videoset)
    path = tmp_path / videoset.clip("c0").path
    np.save(path, moving_clip(1))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert set_fingerprint(VideoSet.open(tmp_path)) != before


def test_fingerprint_sees_frames_in_a_symlinked_clip_folder(tmp_path):
    """A set may link its clip folders to frames elsewhere: a changed frame there must
    change the fingerprint, or the reference cache serves stale features."""
    import os
    import shutil
    write_videoset(tmp_path / "real", [("c0", moving_clip(0))], fps=10)
    (tmp_path / "linked").mkdir()
    shutil.copy(tmp_path / "real" / "manifest.json", tmp_path / "linked" / "manifest.json")
    (tmp_path / "linked" / "c0").symlink_to(tmp_path / "real" / "c0")
    before = set_fingerprint(VideoSet.open(tmp_path / "linked"))
    frame = tmp_path / "real" / "c0" / "000003.png"
    frame.write_bytes((tmp_path / "real" / "c0" / "000000.png").read_bytes())
    stat = frame.stat()
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert set_fingerprint(VideoSet.open(tmp_path / "linked")) != before


def test_reference_features_are_cached(sets, tmp_path, score, extractors):
    score("noise20")
    cached = list((sets / "cache").glob("ref-*/bundle.json"))
    assert cached
    before = [path.stat().st_mtime_ns for path in cached]
    evaluate(PROTOCOL, sets / "noise120", sets / "ref", tmp_path / "again.json",
             cache_dir=sets / "cache", progress=False, extractors=extractors)
    assert [path.stat().st_mtime_ns for path in cached] == before


def test_missing_clip_and_short_clips_are_named(sets, tmp_path, extractors):
    write_videoset(tmp_path / "short", [(f"c{i}", moving_clip(i)[:6]) for i in range(N_CLIPS)],
                   fps=10, cond_frames=1)
    with pytest.raises(VideoSetError, match="clip c0: 6 frames, the protocol needs 10"):
        evaluate(PROTOCOL, tmp_path / "short", sets / "ref", tmp_path / "x.json",
                 progress=False, extractors=extractors)
    write_videoset(tmp_path / "other", [(f"d{i}", moving_clip(i)) for i in range(2)],
                   fps=10, cond_frames=1)
    with pytest.raises(VideoSetError, match="no clip 'd0'"):
        evaluate(PROTOCOL, tmp_path / "other", sets / "ref", tmp_path / "x.json",
                 progress=False, extractors=extractors)
    assert not (tmp_path / "x.json").exists()


def test_condition_frame_count_must_match_the_protocol(sets, tmp_path, extractors):
    write_videoset(tmp_path / "cond3", [(f"c{i}", moving_clip(i)) for i in range(N_CLIPS)],
                   fps=10, cond_frames=3)
    with pytest.raises(VideoSetError, match="generated with 3 condition frames"):
        evaluate(PROTOCOL, tmp_path / "cond3", sets / "ref", tmp_path / "x.json",
                 progress=False, extractors=extractors)
