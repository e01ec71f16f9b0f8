"""OpenDV-2K reader on a synthetic tree: clip counts, splits, discards, language, errors."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from maskgwm.data.opendv import (OpenDVError, clip_language, frame_name, opendv_clips,
                                 scan_opendv)
from maskgwm.data.synth.opendv_writer import write_synthetic_opendv


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("opendv")
    return write_synthetic_opendv(root, n_videos=4, seed=0, width=32, height=18, seconds=6.0)


def expected_clips(frames: int, n_frames: int, stride: int) -> int:
    return (frames - n_frames) // stride + 1 if frames >= n_frames else 0


@pytest.mark.parametrize("n_frames,stride", [(25, None), (10, 5), (40, None), (7, 3)])
def test_clip_count_formula(tree, n_frames, stride):
    clips = opendv_clips(tree["root"], "Train", n_frames, stride)
    train = [v for v in tree["videos"] if v["split"] == "Train"]
    assert len(clips) == sum(expected_clips(v["frames"], n_frames, stride or n_frames)
                             for v in train)
    assert all(c.length == n_frames and c.fps == 10.0 and c.actions is None for c in clips)


def test_splits_and_layout(tree):
    train = opendv_clips(tree["root"], "Train", 10)
    val = opendv_clips(tree["root"], "Val", 10)
    assert {c.split for c in train} == {"Train"} and {c.split for c in val} == {"Val"}
    assert all(c.frames[0][0].startswith("full_images/") for c in train)
    assert all(c.frames[0][0].startswith("val_images/") for c in val)
    assert not {c.scene for c in train} & {c.scene for c in val}
    # youtuber "Driving Channel" lives in folder "Driving_Channel"
    assert any("/Driving_Channel/" in c.frames[0][0] for c in train)
    assert [c.clip_id for c in train] == [c.clip_id for c in opendv_clips(tree["root"],
                                                                           "train", 10)]
    assert len({c.clip_id for c in train}) == len(train)


def test_discard_extracted_vs_apply(tmp_path, tree):
    raw = write_synthetic_opendv(tmp_path, n_videos=4, seed=0, width=32, height=18,
                                 seconds=6.0, discard_applied=False)
    extracted = opendv_clips(tree["root"], "Val", 10)
    applied = opendv_clips(raw["root"], "Val", 10, discard="apply")
    # same video time either way: frame 0 of the extracted video is at start_discard = 1 s
    assert [c.timestamps for c in extracted] == [c.timestamps for c in applied]
    assert extracted[0].timestamps[0] == 1_000_000
    assert applied[0].frames[0][0].endswith(frame_name(10))
    assert applied[-1].frames[-1][0].endswith(frame_name(49))  # last 10 frames discarded
    frames = opendv_clips(raw["root"], "Val", 10, discard="apply", discard_unit="frames")
    assert frames[0].frames[0][0].endswith(frame_name(1))
    # without the discard the raw tree would have 60 frames -> 6 clips, not 4
    assert len(applied) == 4


def test_language_cmd(tree):
    clips = opendv_clips(tree["root"], "Train", 10, language=tree["language"])
    annotated = [c for c in clips if c.actions is not None]
    assert annotated and all(c.frames[0][0].endswith(frame_name(int(c.clip_id[-9:])))
                             for c in annotated)
    labels = clip_language(tree["language"], clips)
    assert set(labels) == {c.clip_id for c in annotated}
    assert all("blip" in label and 0 <= label["cmd"] < 14 for label in labels.values())


def copy_tree(info, tmp_path):
    dest = tmp_path / "copy"
    shutil.copytree(info["root"], dest)
    return dest


def test_missing_meta(tmp_path):
    with pytest.raises(OpenDVError, match="OpenDV-YouTube.json"):
        opendv_clips(tmp_path, "Val", 10)


def test_missing_video_folder(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    video = next(v for v in tree["videos"] if v["split"] == "Val")
    shutil.rmtree(root / video["folder"])
    with pytest.raises(OpenDVError, match=f"{video['folder']}: video folder missing"):
        opendv_clips(root, "Val", 10)
    scan = scan_opendv(root, "Val", 10, skip_bad=True)
    assert video["folder"] in scan.skipped and scan.clips == []


def test_missing_and_truncated_frame(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    train = [v for v in tree["videos"] if v["split"] == "Train"]
    gap = root / train[0]["folder"] / frame_name(7)
    os.remove(gap)
    with pytest.raises(OpenDVError, match=f"{frame_name(7)}: frame missing"):
        opendv_clips(root, "Train", 10)
    broken = root / train[1]["folder"] / frame_name(3)
    broken.write_bytes(broken.read_bytes()[:50])
    scan = scan_opendv(root, "Train", 10, skip_bad=True)
    assert set(scan.skipped) == {train[0]["folder"], train[1]["folder"]}
    assert frame_name(3) in scan.skipped[train[1]["folder"]]
    assert "truncated" in scan.skipped[train[1]["folder"]]
    assert len(scan.clips) == expected_clips(train[2]["frames"], 10, 10)


def test_missing_tail_frames(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    video = next(v for v in tree["videos"] if v["split"] == "Val")
    for index in range(20, video["frames"]):
        os.remove(root / video["folder"] / frame_name(index))
    with pytest.raises(OpenDVError, match=f"{frame_name(20)}: frame missing"):
        opendv_clips(root, "Val", 10)
    assert len(opendv_clips(root, "Val", 10, length_slack_s=None)) == 2


def test_video_shorter_than_asked(tree):
    with pytest.raises(OpenDVError, match="fewer than the 41 asked"):
        opendv_clips(tree["root"], "Train", 41)
    scan = scan_opendv(tree["root"], "Train", 41, skip_bad=True)
    assert scan.clips == [] and len(scan.skipped) == scan.videos == 3


def test_meta_fields_checked(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "OpenDV-YouTube.json").write_text(json.dumps([{"videoid": "x"}]))
    with pytest.raises(OpenDVError, match="lacks"):
        opendv_clips(tmp_path, "Train", 10)


def test_meta_values_checked(tree, tmp_path):
    root = copy_tree(tree, tmp_path)
    meta = root / "meta" / "OpenDV-YouTube.json"
    entries = json.loads(meta.read_text())
    entries[1]["length"] = "00:00:06"
    meta.write_text(json.dumps(entries))
    with pytest.raises(OpenDVError, match=rf"OpenDV-YouTube\.json: entry 1 \(video "
                                          rf"{entries[1]['videoid']}\): length '00:00:06' "
                                          "is not a number of seconds"):
        opendv_clips(root, "Train", 10)
    meta.write_text(json.dumps({"videos": entries}))
    with pytest.raises(OpenDVError, match=r"OpenDV-YouTube\.json: a dict, not a list"):
        opendv_clips(root, "Train", 10)


def test_truncated_language_file(tree, tmp_path):
    path = tmp_path / "language.json"
    path.write_text(Path(tree["language"]).read_text()[:50])
    with pytest.raises(OpenDVError, match=r"language\.json: not valid JSON"):
        opendv_clips(tree["root"], "Train", 10, language=path)
    path.write_text(json.dumps([{"folder": "a/b", "first_frame": "000000000.jpg"}]))
    with pytest.raises(OpenDVError, match=r"language\.json: annotation 0 .*malformed"):
        opendv_clips(tree["root"], "Train", 10, language=path)


def test_language_with_discard_apply_follows_the_official_frames(tree, tmp_path):
    """Annotations name frames of the official extraction (discarded seconds dropped), so a
    clip read with discard='apply' gets the command of the same video time."""
    raw = write_synthetic_opendv(tmp_path, n_videos=4, seed=0, width=32, height=18,
                                 seconds=6.0, discard_applied=False)
    extracted = opendv_clips(tree["root"], "Train", 10, language=tree["language"])
    applied = opendv_clips(raw["root"], "Train", 10, discard="apply", language=tree["language"])
    assert [c.timestamps for c in applied] == [c.timestamps for c in extracted]
    assert any(c.actions is not None for c in extracted)
    assert [c.actions for c in applied] == [c.actions for c in extracted]
