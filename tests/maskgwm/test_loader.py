"""The training loader: deterministic batches by seed (any worker count), the source mix,
crop/resize, and clear errors for broken frames."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from maskgwm.data.loader import (ClipDataset, FrameError, Source, crop_resize, make_loader,
                                 read_image_file)
from maskgwm.data.manifest import ClipManifest, ClipRecord


def write_source(root, name: str, n_clips: int, length: int, size=(48, 32)) -> Source:
    clips = []
    for c in range(n_clips):
        refs = []
        for t in range(length):
            ref = f"{name}/{c}/{t:03d}.jpg"
            (root / ref).parent.mkdir(parents=True, exist_ok=True)
            value = (40 * c + 7 * t) % 256
            Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(root / ref)
            refs.append([ref])
        clips.append(ClipRecord(f"{name}-{c}", name, "train", f"s{c}", ["CAM_FRONT"], refs,
                                [t * 100_000 for t in range(length)], 10.0))
    return Source(ClipManifest(name, str(root), clips), root)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return [write_source(root, "nuscenes", 3, 8), write_source(root, "opendv", 2, 12)]


def batches(dataset, workers: int) -> list[dict]:
    return list(make_loader(dataset, batch_size=4, workers=workers))


def test_same_seed_same_batches_for_any_worker_count(sources):
    dataset = ClipDataset(sources, n_frames=4, width=32, height=16, length=8, seed=3)
    first, second = batches(dataset, 0), batches(dataset, 2)
    assert len(first) == 2
    for a, b in zip(first, second):
        assert torch.equal(a["frames"], b["frames"]) and a["clip_id"] == b["clip_id"]
    assert first[0]["frames"].shape == (4, 4, 1, 3, 16, 32)
    other = batches(ClipDataset(sources, 4, 32, 16, 8, seed=4), 0)
    assert any(a["clip_id"] != b["clip_id"] or not torch.equal(a["start"], b["start"])
               for a, b in zip(first, other))


def test_mix_follows_the_weights(sources):
    mixed = ClipDataset([sources[0], sources[1]], 4, 32, 16, length=2000, seed=0)
    share = np.mean([mixed.choose(i)[0] == 0 for i in range(2000)])
    assert abs(share - 0.5) < 0.04
    skewed = ClipDataset([dataclasses.replace(sources[0], weight=3.0), sources[1]],
                         4, 32, 16, length=2000, seed=0)
    assert abs(np.mean([skewed.choose(i)[0] == 0 for i in range(2000)]) - 0.75) < 0.04


def test_windows_stay_inside_clips(sources):
    dataset = ClipDataset(sources, n_frames=8, width=32, height=16, length=50, seed=1)
    for i in range(50):
        _, clip, start = dataset.choose(i)
        assert start + 8 <= clip.length
    with pytest.raises(ValueError, match="no clip has 13 frames"):
        ClipDataset(sources, n_frames=13, width=32, height=16, length=1)


def test_crop_resize_keeps_the_centre():
    frame = np.zeros((90, 160, 3), np.uint8)
    frame[:, 8:152] = 255                       # 144 x 90 bright centre, dark side bars
    out = crop_resize(frame, 32, 20)            # aspect 1.6: crop to 144 x 90
    assert out.shape == (20, 32, 3) and out.min() > 200


def test_broken_frames_name_the_file(sources, tmp_path):
    with pytest.raises(FrameError, match="missing.jpg: frame missing"):
        read_image_file(tmp_path, "missing.jpg")
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(FrameError, match="bad.jpg: unreadable or truncated"):
        read_image_file(tmp_path, "bad.jpg")


def test_set_epoch_reaches_the_workers(sources):
    """Each epoch's batches are the same with and without workers: workers must see
    `set_epoch` (persistent workers kept their copy of the first epoch's dataset)."""
    def epochs(workers: int) -> list:
        dataset = ClipDataset(sources, 4, 32, 16, length=8, seed=3)
        loader = make_loader(dataset, batch_size=4, workers=workers)
        seen = []
        for epoch in (0, 1):
            dataset.set_epoch(epoch)
            seen.append([(b["clip_id"], b["start"].tolist()) for b in loader])
        return seen
    serial = epochs(0)
    assert serial[0] != serial[1]
    assert epochs(2) == serial


def test_fewer_samples_than_a_batch_is_an_error(sources):
    """drop_last would silently give no batch at all."""
    dataset = ClipDataset(sources, 4, 32, 16, length=3, seed=0)
    with pytest.raises(ValueError, match="3 samples, fewer than one batch of 4"):
        make_loader(dataset, batch_size=4)
    assert len(list(make_loader(dataset, batch_size=4, drop_last=False))) == 1
