"""Multi-view sets (drivewm_mview): the bootstrap resamples whole scenes, so the views of one
scene share a block in every pass, shard and merge (evals/pipeline.py, evals/multiview.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evals.evaluate import evaluate, merge_shards
from evals.extractors import DetectorInfo
from evals.multiview import view_clip_id
from evals.parts import PartKey, load_bundle, merge_parts, shard_part
from evals.pipeline import extract
from evals.protocols import get_protocol
from evals.videoset import VideoSet, write_videoset

N_SCENES, VIEWS, FRAMES, BLOCKS = 5, ("CAM_FRONT", "CAM_BACK", "CAM_LEFT"), 8, 4
PROTOCOL = get_protocol("drivewm_mview").replace(
    n_clips=N_SCENES * len(VIEWS), **{"bootstrap.n_boot": 30, "bootstrap.blocks": BLOCKS,
                                      "kid.subset_size": 8, "kid.subsets": 5})
CLIP_IDS = [view_clip_id(f"scene-{s:03d}/tok{s}/mview", view)    # scene ids hold '/' too
            for s in range(N_SCENES) for view in VIEWS]
EXTRA = 4


def _clip(scene: int, view: int, side: int) -> np.ndarray:
    """Frames coding (scene, view) in red, the frame number in green, the side in blue."""
    frames = np.zeros((FRAMES, 4, 4, 3), dtype=np.uint8)
    frames[..., 0] = 16 * scene + view
    frames[..., 1] = np.arange(FRAMES)[:, None, None]
    frames[..., 2] = side
    return frames


def _features(codes: np.ndarray) -> np.ndarray:
    """[one-hot scene (N_SCENES) | EXTRA smooth pseudo-random dims] from pixel codes [n, 3],
    float32 as the detectors give (bundles keep raw features as float32)."""
    codes = codes.astype(np.float64)
    one_hot = np.eye(N_SCENES)[(codes[:, 0] // 16).astype(int)]
    phase = codes[:, 0] + 0.37 * codes[:, 1] + 0.9 * codes[:, 2]
    return np.concatenate([one_hot, np.sin(np.outer(phase, np.arange(1, EXTRA + 1)))],
                          axis=1).astype(np.float32)


def fid_x(frames: np.ndarray) -> np.ndarray:          # [n, H, W, 3] -> [n, d]
    return _features(frames[:, 0, 0, :])


def fvd_x(videos: np.ndarray) -> np.ndarray:          # [b, T, H, W, 3] -> [b, d]
    codes = videos[:, :, 0, 0, :].astype(np.float64)
    return _features(np.stack([codes[:, 0, 0], codes[:, :, 1].mean(1), codes[:, 0, 2]], 1))


EXTRACTORS = (fid_x, fvd_x, [DetectorInfo("fid", PROTOCOL.fid.detector, None, None, True, 0),
                             DetectorInfo("fvd", PROTOCOL.fvd.detector, None, None, True, 0)])


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("mview")
    for side, name in ((0, "ref"), (1, "gen")):
        write_videoset(root / name, [(CLIP_IDS[s * len(VIEWS) + v], _clip(s, v, side))
                                     for s in range(N_SCENES) for v in range(len(VIEWS))],
                       fps=PROTOCOL.fps, cond_frames=0 if name == "ref" else 1)
    return root


def _open(sets):
    return {"gen": VideoSet.open(sets / "gen", cond_frames=1, fps=PROTOCOL.fps),
            "ref": VideoSet.open(sets / "ref", cond_frames=0, fps=PROTOCOL.fps)}


def test_views_of_a_scene_share_a_block(sets):
    """Block b holds exactly the frames of scenes s with s % BLOCKS == b, all their views."""
    for key, part in extract(PROTOCOL, _open(sets), CLIP_IDS, EXTRACTORS[:2],
                             progress=False).parts.items():
        stats = part.stats
        scene_rows = stats.block_sum[:, :N_SCENES]      # rows of each scene in each block
        for scene in range(N_SCENES):
            holding = np.flatnonzero(scene_rows[:, scene]).tolist()
            assert holding == [scene % BLOCKS], (key, scene, scene_rows)
        assert stats.clip_groups.tolist() == [i // len(VIEWS) for i in range(len(CLIP_IDS))]


def test_single_view_protocols_keep_one_block_per_clip_index(sets):
    protocol = PROTOCOL.replace(**{"bootstrap.unit": "clip"})
    stats = extract(protocol, _open(sets), CLIP_IDS, EXTRACTORS[:2],
                    progress=False).parts[PartKey(0, "gen", "fvd")].stats
    assert stats.clip_groups.tolist() == list(range(len(CLIP_IDS)))
    assert np.count_nonzero(stats.block_sum[:, 0]) == min(len(VIEWS), BLOCKS)  # scene 0 split


def test_a_clip_id_without_a_view_is_refused_under_scene_blocks(sets):
    with pytest.raises(ValueError, match="'c0'.*<scene>/<view>"):
        extract(PROTOCOL, _open(sets), ["c0"] + CLIP_IDS[1:], EXTRACTORS[:2], progress=False)


def _assert_same_parts(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        x, y = a[key].stats, b[key].stats
        np.testing.assert_array_equal(x.block_count, y.block_count, err_msg=key.file_stem)
        np.testing.assert_allclose(x.block_sum, y.block_sum, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(x.block_outer_lower, y.block_outer_lower, rtol=1e-12,
                                   atol=1e-12)
        np.testing.assert_array_equal(x.clip_indices, y.clip_indices)
        np.testing.assert_array_equal(x.clip_groups, y.clip_groups)
        assert x.inputs_hash == y.inputs_hash
        np.testing.assert_array_equal(a[key].clips, b[key].clips)


@pytest.mark.parametrize("n_shards", [2, 4])
def test_shards_and_sharded_reference_merge_to_the_single_pass_blocks(sets, n_shards):
    """Shards split a scene's views (clip i goes to shard i % n); each view still lands in
    its scene's block, whether extracted by the shard or cut from a whole bundle."""
    single = extract(PROTOCOL, _open(sets), CLIP_IDS, EXTRACTORS[:2], progress=False).parts
    extracted = [extract(PROTOCOL, _open(sets), CLIP_IDS, EXTRACTORS[:2], (i, n_shards),
                         progress=False).parts for i in range(n_shards)]
    _assert_same_parts(merge_parts(extracted[::-1]), single)
    cut = [{key: shard_part(part, (i, n_shards)) for key, part in single.items()}
           for i in range(n_shards)]
    _assert_same_parts(merge_parts(cut), single)


def test_sharded_multiview_evaluation_merges_to_the_single_pass_intervals(sets, tmp_path):
    single = evaluate(PROTOCOL, sets / "gen", sets / "ref", tmp_path / "single.json",
                      cache_dir=tmp_path / "cache", progress=False, extractors=EXTRACTORS)
    bundle = next((tmp_path / "cache").glob("ref-*"))            # the whole reference
    for reference in (sets / "ref", bundle):
        out = tmp_path / f"sharded-{reference.name}.json"
        for index in (2, 0, 1):
            evaluate(PROTOCOL, sets / "gen", reference, out, shard=(index, 3), progress=False,
                     extractors=EXTRACTORS)
        merged = merge_shards(out)
        for metric in ("fid", "fvd"):
            a, b = single["points"][0][metric], merged["points"][0][metric]
            assert a["n_boot"] == b["n_boot"] == 30 and a["std"] > 0
            for key in ("value", "low", "high", "std"):
                assert b[key] == pytest.approx(a[key], rel=1e-9), (metric, key)
        parts = load_bundle(tmp_path / f"{out.name}.shard-1-of-3")[1]
        for key in (PartKey(0, "gen", "fid"), PartKey(0, "ref", "fvd")):
            assert parts[key].stats.clip_indices.tolist() == [1, 4, 7, 10, 13]
            assert parts[key].stats.clip_groups.tolist() == [0, 1, 2, 3, 4]  # clip // 3
    assert json.loads((bundle / "bundle.json").read_text())["protocol_hash"] == PROTOCOL.hash
