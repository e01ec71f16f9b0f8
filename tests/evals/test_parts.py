"""Typed evaluation parts: keys, the bundle files they keep (the format earlier runs wrote), and
the checks on joining and scoring them."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evals.evaluate import compute_result
from evals.parts import (BundleError, Part, PartKey, load_bundle, merge_parts, save_bundle,
                         shard_part)
from evals.protocols import get_protocol
from evals.stats import FeatureStats

N_CLIPS, DIM = 6, 3


def _part(offset: float, clips=range(N_CLIPS)) -> Part:
    rng = np.random.default_rng(int(offset * 10))
    stats, raw = FeatureStats(DIM, n_blocks=4), []
    for clip in clips:
        rows = rng.normal(offset, 1.0, size=(2, DIM)).astype(np.float32)
        stats.update(rows, clip)
        raw.append(rows)
    return Part(stats, np.concatenate(raw), np.repeat(np.array(list(clips), np.int64), 2))


def _parts() -> dict[PartKey, Part]:
    return {PartKey(0, side, metric): _part(0.5 if side == "gen" else 0.0)
            for side in ("gen", "ref") for metric in ("fid", "fvd")}


def test_a_key_names_its_files_and_reads_back_from_them():
    key = PartKey(3, "ref", "fvd")
    assert key.file_stem == "p3-ref-fvd" and PartKey.from_stem("p3-ref-fvd") == key
    assert sorted([PartKey(1, "gen", "fid"), PartKey(0, "ref", "fid")])[0].point == 0
    with pytest.raises(ValueError, match="no evaluation part"):
        PartKey(0, "generated", "fid")
    with pytest.raises(BundleError, match="names no evaluation part"):
        PartKey.from_stem("p0-gen-kid")


def test_a_bundle_keeps_the_file_layout_earlier_runs_wrote(tmp_path):
    parts = _parts()
    save_bundle(tmp_path / "b", {"kind": "reference"}, parts)
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    assert meta["schema_version"] == 1
    assert meta["parts"] == ["p0-gen-fid", "p0-gen-fvd", "p0-ref-fid", "p0-ref-fvd"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(
        ["bundle.json"] + [f"{stem}{end}" for stem in meta["parts"]
                           for end in (".npz", "-raw.npy", "-clips.npy")])
    loaded = load_bundle(tmp_path / "b")[1]
    assert loaded.keys() == parts.keys()
    for key, part in parts.items():
        np.testing.assert_array_equal(loaded[key].raw, part.raw)
        np.testing.assert_array_equal(loaded[key].clips, part.clips)
        assert loaded[key].stats.inputs_hash == part.stats.inputs_hash


def test_shards_of_a_part_merge_back_and_must_hold_the_same_parts():
    whole = _parts()
    shards = [{key: shard_part(part, (i, 2)) for key, part in whole.items()} for i in (0, 1)]
    merged = merge_parts(shards)
    for key, part in whole.items():
        np.testing.assert_array_equal(merged[key].clips, part.clips)
        assert merged[key].stats.inputs_hash == part.stats.inputs_hash
    del shards[1][PartKey(0, "ref", "fvd")]
    with pytest.raises(BundleError, match="different parts.*p0-ref-fvd"):
        merge_parts(shards)


def test_compute_result_refuses_a_record_of_another_protocol():
    protocol = get_protocol("opendv_ablation").replace(**{"bootstrap.n_boot": 0,
                                                         "kid.subset_size": 4})
    record = {"protocol_hash": get_protocol("opendv_ablation").hash,
              "detectors": [{"random_weights": True}]}
    with pytest.raises(ValueError, match="scored under"):
        compute_result(protocol, _parts(), record)
    result = compute_result(protocol, _parts(), {**record, "protocol_hash": protocol.hash})
    assert result["protocol_hash"] == protocol.hash and len(result["points"]) == 1
