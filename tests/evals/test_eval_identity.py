"""What identifies an evaluation's inputs: detectors by their weights' hash (not their path),
video sets by their clip files (not whatever else lies in the folder), and the frame sizes
each side had, recorded for the reader."""
from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from evals.evaluate import evaluate, format_result, merge_shards
from evals.extractors import build_extractors
from evals.parts import BundleError
from evals.pipeline import set_fingerprint
from evals.protocols import get_protocol
from evals.videoset import VideoSet, write_videoset

N_CLIPS, FRAMES = 2, 10
PROTOCOL = get_protocol("opendv_ablation").replace(
    n_clips=N_CLIPS, frames_per_clip=FRAMES, **{
        "fid.frames_per_clip": 2, "bootstrap.n_boot": 0, "bootstrap.blocks": 4,
        "kid.subset_size": 4, "kid.subsets": 5})
FAKE_SHA = {"fid": "a" * 64, "fvd": "b" * 64}


def moving_clip(seed: int, noise: float = 0.0, cell: int = 8) -> np.ndarray:
    """A textured pattern sliding right, [FRAMES, 4 * cell, 6 * cell, 3]."""
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((cell, cell, 1)))
    frames = np.stack([np.roll(texture, cell // 2 * t, axis=1) for t in range(FRAMES)])
    noisy = frames + noise * np.random.default_rng(seed + 1000).normal(size=frames.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def random_extractors():
    return build_extractors(PROTOCOL)


def at_path(extractors, weights_dir: str, sha: dict[str, str] = FAKE_SHA):
    """The same modules, recorded as official weights (hash `sha`) loaded from `weights_dir`:
    what two machines holding the same files at different places record."""
    fid_x, fvd_x, infos = extractors
    return fid_x, fvd_x, [dataclasses.replace(
        info, weights_file=f"{weights_dir}/{info.name}.pt", weights_sha256=sha[info.role],
        random_weights=False, seed=None) for info in infos]


@pytest.fixture()
def sets(tmp_path):
    write_videoset(tmp_path / "ref", [(f"c{i}", moving_clip(i)) for i in range(N_CLIPS)], fps=10)
    write_videoset(tmp_path / "gen", [(f"c{i}", moving_clip(i, 40)) for i in range(N_CLIPS)],
                   fps=10, cond_frames=1)
    return tmp_path


# --- detectors: identity by weights hash, the path is provenance ------------------------------

def test_detectors_with_the_same_weights_at_another_path_share_cache_bundles_and_shards(
        sets, random_extractors):
    machine_a = at_path(random_extractors, "/machine-a/weights")
    machine_b = at_path(random_extractors, "/elsewhere/b")
    first = evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "a.json",
                     cache_dir=sets / "cache", progress=False, extractors=machine_a)
    assert first["detectors"][0]["weights_file"] == "/machine-a/weights/inception-2015-12-05.pt"
    cached = list((sets / "cache").glob("ref-*"))
    assert len(cached) == 1
    again = evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "b.json",
                     cache_dir=sets / "cache", progress=False, extractors=machine_b)
    assert list((sets / "cache").glob("ref-*")) == cached          # a cache hit
    assert again["detectors"][0]["weights_file"] == "/elsewhere/b/inception-2015-12-05.pt"
    from_bundle = evaluate(PROTOCOL, sets / "gen", cached[0], sets / "c.json",
                           progress=False, extractors=machine_b)
    assert from_bundle["points"][0]["fvd"]["value"] == first["points"][0]["fvd"]["value"]
    for index, extractors in ((0, machine_a), (1, machine_b)):
        evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "s.json", shard=(index, 2),
                 progress=False, extractors=extractors)
    merged = merge_shards(sets / "s.json")
    assert merged["points"][0]["fid"]["value"] == pytest.approx(
        first["points"][0]["fid"]["value"], rel=1e-9)


def test_other_weights_or_seeds_are_still_refused(sets, random_extractors):
    evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "a.json", cache_dir=sets / "cache",
             progress=False, extractors=at_path(random_extractors, "/w"))
    bundle = next((sets / "cache").glob("ref-*"))
    other = at_path(random_extractors, "/w", {"fid": "a" * 64, "fvd": "c" * 64})
    with pytest.raises(BundleError, match="another protocol, clip order or detector"):
        evaluate(PROTOCOL, sets / "gen", bundle, sets / "x.json", progress=False,
                 extractors=other)
    reseeded = (*random_extractors[:2],
                [dataclasses.replace(i, seed=7) for i in random_extractors[2]])
    for index, extractors in ((0, random_extractors), (1, reseeded)):
        evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "s.json", shard=(index, 2),
                 progress=False, extractors=extractors)
    with pytest.raises(BundleError, match="detectors differs"):
        merge_shards(sets / "s.json")


# --- fingerprints: only clip data counts -----------------------------------------------------

def test_results_caches_and_shards_inside_the_sets_change_nothing(sets, random_extractors):
    """--out gen/r.json, --cache-dir ref/.cache: shards of one evaluation still agree, and
    the reference cache is hit on the next run."""
    fingerprints = {name: set_fingerprint(VideoSet.open(sets / name)) for name in ("gen", "ref")}
    for index in (0, 1):
        evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "gen" / "r.json",
                 shard=(index, 2), cache_dir=sets / "ref" / ".cache", progress=False,
                 extractors=random_extractors)
    merge_shards(sets / "gen" / "r.json")             # was: generated set differs
    cached = sorted((sets / "ref" / ".cache").glob("ref-*"))
    assert len(cached) == 2                             # one per reference shard
    evaluate(PROTOCOL, sets / "gen", sets / "ref", sets / "gen" / "whole.json",
             cache_dir=sets / "ref" / ".cache", shard=(0, 2), progress=False,
             extractors=random_extractors)
    assert sorted((sets / "ref" / ".cache").glob("ref-*")) == cached
    (sets / "gen" / "notes.txt").write_text("scored twice")
    (sets / "gen" / "c0" / "thumbs.db").write_bytes(b"not a frame")
    assert {name: set_fingerprint(VideoSet.open(sets / name))
            for name in ("gen", "ref")} == fingerprints


def test_an_ordinary_set_keeps_its_fingerprint(tmp_path):
    """The manifest, then `relative/path:size:mtime_ns;` per clip file in path order: the
    format fingerprints had before they ignored non-clip files (cache keys stay valid)."""
    write_videoset(tmp_path / "s", [("c0", moving_clip(0)[:2])], fps=10)
    write_videoset(tmp_path / "s", [("c1", moving_clip(1)[:2])], fps=10, as_npy=True)
    root = tmp_path / "s"
    digest = hashlib.sha256((root / "manifest.json").read_bytes())
    for rel in ("c0/000000.png", "c0/000001.png", "c1.npy"):
        stat = (root / rel).stat()
        digest.update(f"{rel}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    assert set_fingerprint(VideoSet.open(root)) == digest.hexdigest()


def test_a_vista_folder_fingerprints_only_its_frames(tmp_path):
    from PIL import Image
    for clip in range(2):
        for frame in range(2):
            Image.fromarray(moving_clip(clip)[frame]).save(
                tmp_path / f"NUSCENES_{clip:06d}_{frame:04d}.png")
    before = set_fingerprint(VideoSet.open(tmp_path))
    (tmp_path / "result.json").write_text("{}")
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "x.npy").write_bytes(b"x")
    assert set_fingerprint(VideoSet.open(tmp_path)) == before
    (tmp_path / "NUSCENES_000001_0001.png").write_bytes(
        (tmp_path / "NUSCENES_000000_0000.png").read_bytes())
    assert set_fingerprint(VideoSet.open(tmp_path)) != before


# --- frame sizes ------------------------------------------------------------------------------

def test_frame_sizes_of_each_side_are_recorded_and_merged(tmp_path, random_extractors):
    """Generated at one size, the reference at two (clip c0 larger): every distinct
    size per side, in the result, the reference cache and the merged shards."""
    write_videoset(tmp_path / "gen", [(f"c{i}", moving_clip(i, 40)) for i in range(N_CLIPS)],
                   fps=10, cond_frames=1)
    write_videoset(tmp_path / "ref", [(f"c{i}", moving_clip(i, cell=10 if i % 2 else 12))
                                      for i in range(N_CLIPS)], fps=10)
    single = evaluate(PROTOCOL, tmp_path / "gen", tmp_path / "ref", tmp_path / "r.json",
                      cache_dir=tmp_path / "cache", progress=False, extractors=random_extractors)
    saved = json.loads((tmp_path / "r.json").read_text())
    for result in (single, saved):
        assert result["generated"]["frame_sizes"] == [[32, 48]]
        assert result["reference"]["frame_sizes"] == [[40, 60], [48, 72]]
    assert "frames: generated 32x48, reference 40x60 and 48x72" in format_result(saved)
    cached = evaluate(PROTOCOL, tmp_path / "gen", tmp_path / "ref", tmp_path / "again.json",
                      cache_dir=tmp_path / "cache", progress=False, extractors=random_extractors)
    assert cached["reference"]["frame_sizes"] == [[40, 60], [48, 72]]
    for index in (0, 1):       # shard 0 holds c0 (48x72), shard 1 c1 (40x60)
        folder = evaluate(PROTOCOL, tmp_path / "gen", tmp_path / "ref", tmp_path / "s.json",
                          shard=(index, 2), progress=False, extractors=random_extractors)
        meta = json.loads((folder / "bundle.json").read_text())
        assert meta["reference"]["frame_sizes"] == [[48, 72] if index == 0 else [40, 60]]
    merged = merge_shards(tmp_path / "s.json")
    assert merged["generated"]["frame_sizes"] == [[32, 48]]
    assert merged["reference"]["frame_sizes"] == [[40, 60], [48, 72]]


def test_clip_folders_linked_from_outside_are_counted_in_the_result(tmp_path, random_extractors):
    """A symlinked clip folder is read (README allows it), and the result says how many
    clips lie outside their set."""
    import shutil
    clips = [(f"c{i}", moving_clip(i)) for i in range(N_CLIPS)]
    write_videoset(tmp_path / "elsewhere", clips[:1], fps=10, cond_frames=1)
    write_videoset(tmp_path / "gen", clips, fps=10, cond_frames=1)
    write_videoset(tmp_path / "ref", clips, fps=10)
    shutil.rmtree(tmp_path / "gen" / "c0")
    (tmp_path / "gen" / "c0").symlink_to(tmp_path / "elsewhere" / "c0")
    result = evaluate(PROTOCOL, tmp_path / "gen", tmp_path / "ref", tmp_path / "r.json",
                      progress=False, extractors=random_extractors)
    assert result["generated"]["clips_linked_from_outside"] == 1
    assert result["reference"]["clips_linked_from_outside"] == 0
    assert "clip folders linked from outside the set: generated 1, reference 0" in \
        format_result(result)
