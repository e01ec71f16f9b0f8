"""`repro data synth`, `repro data manifest` and `repro evalset build` on synthetic data."""
from __future__ import annotations

import json

from evals.cliplist import read_clip_list
from maskgwm.data.manifest import ClipManifest


def test_opendv_synth_manifest_and_evalset(cli, tmp_path):
    root = tmp_path / "opendv"
    assert cli("data", "synth", "opendv", str(root), "--scenes", "4", "--seconds", "4").code == 0
    result = cli("data", "manifest", "opendv", "--dataroot", str(root), "--split", "Train",
                 "--frames", "8", "--out", str(tmp_path / "train.parquet"))
    assert result.code == 0, result.err
    manifest = ClipManifest.load(tmp_path / "train.parquet")
    assert manifest.clips and all(c.length == 8 and c.split == "Train" for c in manifest.clips)
    short = cli("evalset", "build", "opendv_ablation", "--dataroot", str(root),
                "--out", str(tmp_path / "list.json"))
    assert short.code == 2 and "fewer than the 25 asked for" in short.err


def test_waymo_evalset_is_a_hashed_clip_list(cli, tmp_path):
    root = tmp_path / "waymo"
    assert cli("data", "synth", "waymo", str(root), "--scenes", "3", "--seconds", "3",
               "--size", "64x40").code == 0
    out = tmp_path / "waymo_list.json"
    result = cli("evalset", "build", "waymo_zeroshot", "--dataroot", str(root / "v2"),
                 "--out", str(out))
    assert result.code == 0, result.err
    clip_list = read_clip_list(out)
    assert len(clip_list["clips"]) == 3 and clip_list["protocol"] == "waymo_zeroshot"
    assert all(c["cond_frames"] == 1 and c["frames"] == 25 for c in clip_list["clips"])
    frames = json.loads((tmp_path / "waymo_list.manifest.json").read_text())
    assert [c["clip_id"] for c in frames["clips"]] == [c["clip_id"] for c in clip_list["clips"]]
    assert "the protocol asks for 600" in result.out


def test_bad_size_and_missing_data(cli, tmp_path):
    result = cli("data", "synth", "opendv", str(tmp_path / "x"), "--size", "big")
    assert result.code == 2 and "expected WxH" in result.err
    result = cli("evalset", "build", "waymo_zeroshot", "--dataroot", str(tmp_path / "none"),
                 "--out", str(tmp_path / "l.json"))
    assert result.code == 2 and "no Waymo v2 segment files" in result.err


def test_nuscenes_synth_loads_and_builds_the_vista_evalset(cli, tmp_path):
    root = tmp_path / "nuscenes"
    # the first 7 real mini scenes include both of mini_val's (scene-0103, scene-0916)
    assert cli("data", "synth", "nuscenes", str(root), "--scenes", "7", "--seconds", "3",
               "--size", "64x36").code == 0
    out = tmp_path / "vista.json"
    result = cli("evalset", "build", "vista_nuscenes", "--dataroot", str(root), "--version",
                 "v1.0-mini", "--split", "mini_val", "--out", str(out))
    assert result.code == 0, result.err
    clip_list = read_clip_list(out)
    assert clip_list["clips"] and all(c["frames"] == 25 for c in clip_list["clips"])
    manifest = ClipManifest.load(tmp_path / "vista.manifest.json")
    assert {c.scene for c in manifest.clips} == {"scene-0103", "scene-0916"}
    assert all(c.actions is not None for c in manifest.clips)
    wrong = cli("evalset", "build", "vista_nuscenes", "--dataroot", str(root), "--version",
                "v1.0-mini", "--out", str(tmp_path / "x.json"))    # split val: not in mini
    assert wrong.code == 2 and "not in" in wrong.err and "scene.json" in wrong.err


def test_a_missing_scene_names_the_skip_bad_flag_which_lists_what_it_skipped(cli, tmp_path):
    """Only 3 synthetic scenes: mini_val's scene-0916 is not in the tables. The error names
    the CLI flag (not a Python argument), and the flag skips the scene and says so."""
    root = tmp_path / "nuscenes"
    assert cli("data", "synth", "nuscenes", str(root), "--scenes", "3", "--seconds", "3",
               "--size", "64x36").code == 0
    args = ["data", "manifest", "nuscenes", "--dataroot", str(root), "--version", "v1.0-mini",
            "--split", "mini_val", "--frames", "8", "--out", str(tmp_path / "m.json")]
    result = cli(*args)
    assert result.code == 2 and "scene-0916" in result.err
    assert "--skip-bad on `repro data manifest`" in result.err
    result = cli(*args, "--skip-bad")
    assert result.code == 0, result.err
    assert "skipped 1 (--skip-bad):\n  scene-0916: not in v1.0-mini" in result.out
    assert {c.scene for c in ClipManifest.load(tmp_path / "m.json").clips} == {"scene-0103"}
    waymo = cli("evalset", "build", "waymo_zeroshot", "--dataroot", str(tmp_path),
                "--out", str(tmp_path / "w.json"), "--skip-bad")
    assert waymo.code == 2 and "--skip-bad applies to nuScenes and OpenDV" in waymo.err
