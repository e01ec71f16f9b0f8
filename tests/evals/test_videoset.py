"""The video-set format: round trips, Vista's layout, and clear errors for broken sets."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from evals.cliplist import ClipListError, read_clip_list, write_clip_list
from evals.videoset import VideoSet, VideoSetError, VideoSetWriter, write_videoset


def clip(seed: int, frames: int = 5, size: tuple[int, int] = (16, 24)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, *size, 3), dtype=np.uint8)


@pytest.mark.parametrize("as_npy", [False, True])
def test_round_trip(tmp_path, as_npy):
    clips = [(f"c{i}", clip(i)) for i in range(3)]
    videoset = write_videoset(tmp_path / "set", clips, fps=10, cond_frames=1, as_npy=as_npy)
    assert [c.clip_id for c in videoset.clips] == ["c0", "c1", "c2"]
    assert videoset.clip("c1").cond_frames == 1 and videoset.clip("c1").frames == 5
    for clip_id, frames in clips:
        np.testing.assert_array_equal(videoset.read(videoset.clip(clip_id)), frames)


def test_vista_layout(tmp_path):
    for index in range(2):
        for t, frame in enumerate(clip(index, frames=3)):
            Image.fromarray(frame).save(tmp_path / f"NUSCENES_{index:06d}_{t:04d}.png")
    videoset = VideoSet.open(tmp_path, cond_frames=1)
    assert [c.clip_id for c in videoset.clips] == ["vista-000000", "vista-000001"]
    np.testing.assert_array_equal(videoset.read(videoset.clips[1]), clip(1, frames=3))
    (tmp_path / "NUSCENES_000001_0001.png").unlink()
    with pytest.raises(VideoSetError, match="NUSCENES_000001_0001.png is missing"):
        VideoSet.open(tmp_path)


def test_missing_frame_names_clip_and_frame(tmp_path):
    videoset = write_videoset(tmp_path, [("c0", clip(0))], fps=10)
    (tmp_path / "c0" / "000002.png").unlink()
    with pytest.raises(VideoSetError, match=r"c0: frame 000002 is missing"):
        videoset.read(videoset.clip("c0"))


def test_frames_are_ordered_by_number_and_duplicates_named(tmp_path):
    """Unpadded names (0.png ... 11.png) are read in time order; two files for one frame
    are named, not reported as a missing frame."""
    frames = clip(0, frames=12)
    videoset = write_videoset(tmp_path, [("c0", frames)], fps=10)
    for t in range(12):
        (tmp_path / "c0" / f"{t:06d}.png").rename(tmp_path / "c0" / f"{t}.png")
    np.testing.assert_array_equal(videoset.read(videoset.clip("c0")), frames)
    Image.fromarray(frames[1]).save(tmp_path / "c0" / "000001.jpg")
    with pytest.raises(VideoSetError, match="c0: 000001.jpg and 1.png are the same frame"):
        videoset.read(videoset.clip("c0"))


def test_frames_of_different_sizes_name_the_full_path(tmp_path):
    """Generated and reference sets share clip ids: the message must say which set."""
    videoset = write_videoset(tmp_path / "ref", [("c0", clip(0))], fps=10)
    Image.fromarray(clip(1, 1, (8, 8))[0]).save(tmp_path / "ref" / "c0" / "000003.png")
    with pytest.raises(VideoSetError) as error:
        videoset.read(videoset.clip("c0"))
    assert str(tmp_path / "ref" / "c0" / "000003.png") in str(error.value)


def test_frames_of_different_sizes(tmp_path):
    videoset = write_videoset(tmp_path, [("c0", clip(0))], fps=10)
    Image.fromarray(clip(1, 1, (8, 8))[0]).save(tmp_path / "c0" / "000003.png")
    with pytest.raises(VideoSetError, match="frames differ in size.*000003.png"):
        videoset.read(videoset.clip("c0"))


def test_unreadable_image_names_the_file(tmp_path):
    videoset = write_videoset(tmp_path, [("c0", clip(0))], fps=10)
    (tmp_path / "c0" / "000001.png").write_bytes(b"not a png")
    with pytest.raises(VideoSetError, match="000001.png: unreadable image"):
        videoset.read(videoset.clip("c0"))


def test_empty_or_truncated_array_names_the_file(tmp_path):
    videoset = write_videoset(tmp_path, [("c0", clip(0))], fps=10, as_npy=True)
    path = tmp_path / videoset.clip("c0").path
    path.write_bytes(b"")
    with pytest.raises(VideoSetError, match=f"{path.name}: unreadable array \\(EOFError"):
        videoset.read(videoset.clip("c0"))


def test_wrong_dtype_and_shape(tmp_path):
    writer = VideoSetWriter(tmp_path)
    with pytest.raises(VideoSetError, match="uint8.*multiply by 255"):
        writer.add("c0", clip(0).astype(np.float32) / 255, fps=10)
    with pytest.raises(VideoSetError, match=r"\[T, H, W, 3\]"):
        writer.add("c0", clip(0)[..., :2], fps=10)
    assert not (tmp_path / "c0").exists()


def test_manifest_frame_count_mismatch(tmp_path):
    write_videoset(tmp_path, [("c0", clip(0))], fps=10)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["clips"][0]["frames"] = 6
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    videoset = VideoSet.open(tmp_path)
    with pytest.raises(VideoSetError, match="5 frames, manifest says 6"):
        videoset.read(videoset.clip("c0"))


def test_unknown_schema_and_empty_folder(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 99, "clips": []}))
    with pytest.raises(VideoSetError, match="schema_version 99"):
        VideoSet.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([{"clip_id": "c0"}]))
    with pytest.raises(VideoSetError, match="manifest.json: expected a JSON object"):
        VideoSet.open(tmp_path)
    (tmp_path / "manifest.json").unlink()
    with pytest.raises(VideoSetError, match="no manifest.json"):
        VideoSet.open(tmp_path)


def test_writer_resumes_without_duplicates(tmp_path):
    with VideoSetWriter(tmp_path) as writer:
        writer.add("c0", clip(0), fps=10)
    with VideoSetWriter(tmp_path) as writer:
        assert "c0" in writer and "c1" not in writer
        writer.add("c1", clip(1), fps=10)
        writer.add("c0", clip(2), fps=10)        # redoing a clip replaces it
    videoset = VideoSet.open(tmp_path)
    assert [c.clip_id for c in videoset.clips] == ["c0", "c1"]
    np.testing.assert_array_equal(videoset.read(videoset.clip("c0")), clip(2))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_clip_list_hash(tmp_path):
    clips = [{"clip_id": f"c{i}", "source_clip": f"scene-{i}", "frames": 25, "cond_frames": 1}
             for i in range(3)]
    digest = write_clip_list(tmp_path / "list.json", "vista_nuscenes", clips)
    assert read_clip_list(tmp_path / "list.json")["hash"] == digest
    data = json.loads((tmp_path / "list.json").read_text())
    data["clips"][1]["frames"] = 24
    (tmp_path / "list.json").write_text(json.dumps(data))
    with pytest.raises(ClipListError, match="content hash mismatch"):
        read_clip_list(tmp_path / "list.json")
    with pytest.raises(ClipListError, match="duplicate"):
        write_clip_list(tmp_path / "dup.json", "x", clips + clips[:1])
    del data["clips"][1]["cond_frames"]
    (tmp_path / "list.json").write_text(json.dumps(data))
    with pytest.raises(ClipListError, match="list.json: every clip needs clip_id"):
        read_clip_list(tmp_path / "list.json")
    (tmp_path / "list.json").write_text(json.dumps(data["clips"]))
    with pytest.raises(ClipListError, match="list.json: schema_version None"):
        read_clip_list(tmp_path / "list.json")


def test_dataset_clip_ids_get_safe_folder_names(tmp_path):
    ids = ["scene-0103/abc123", "scene-0103_abc123", "opendv/v1/000000010"]
    videoset = write_videoset(tmp_path, [(cid, clip(i)) for i, cid in enumerate(ids)], fps=10)
    paths = [videoset.clip(cid).path for cid in ids]
    assert len(set(paths)) == 3 and all("/" not in p for p in paths)
    assert paths[1] == "scene-0103_abc123"
    np.testing.assert_array_equal(videoset.read(videoset.clip(ids[0])), clip(0))


@pytest.mark.parametrize("escape", ["../../outside", "/etc", "c0/../../outside", ".."])
def test_a_clip_path_that_leaves_the_set_is_refused(tmp_path, escape):
    root = tmp_path / "set"
    write_videoset(root, [("c0", clip(0)), ("c1", clip(0))], fps=10.0)
    (tmp_path / "outside").mkdir()
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["clips"][1]["path"] = escape
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VideoSetError, match=f"clip c1: path '{re.escape(escape)}' leaves the set"):
        VideoSet.open(root)


def test_symlinked_clip_folders_are_read_and_counted(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    write_videoset(elsewhere, [("c1", clip(1))], fps=10.0)
    root = tmp_path / "set"
    write_videoset(root, [("c0", clip(0)), ("c1", clip(1))], fps=10.0)
    shutil.rmtree(root / "c1")
    (root / "c1").symlink_to(elsewhere / "c1", target_is_directory=True)
    videoset = VideoSet.open(root)
    assert videoset.linked_from_outside() == ["c1"]
    assert np.array_equal(videoset.read(videoset.clip("c1")), clip(1))
