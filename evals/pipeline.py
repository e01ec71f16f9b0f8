"""Stream a generated and a reference video set through the detectors into evaluation parts.

`extract` gives one `Part` (evals/parts.py) per measurement point k, side (gen/ref) and metric
(fid/fvd): FeatureStats plus raw features and their clip indices, for KID. Shards
(`shard=(i, n)` takes clips i, i + n, ...) write bundles that `merge_parts` joins into exactly
the single-pass result. Reference features are cached by a fingerprint of the reference set's
clip files, the protocol and the detectors' identity (not their weights' path), so a reference
is extracted once. Bundle metas record the frame sizes [H, W] each side's clips had.

Bootstrap blocks (evals/stats.py) follow `block_groups`, a function of the protocol and the clip
order alone, so gen and ref, every shard, and a cached reference (keyed by protocol hash and
clip order) agree: clip i is group i, or under bootstrap.unit "scene" (multi-view) the index
of its scene in order of first appearance, so the views of a scene share a block.
"""
from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .frames import fid_frames, frames_needed, fvd_frames
from .multiview import scene_groups
from .parts import METRICS, BundleError, Part, PartKey, Parts
from .progress import progress_bar
from .protocols import Protocol
from .stats import FeatureStats
from .videoset import ClipEntry, VideoSet, VideoSetError


def set_fingerprint(videoset: VideoSet) -> str:
    """A cheap content fingerprint: the manifest plus the name, size and modification time of
    every file the set's clips are read from (a rewritten `.npy` clip keeps its size; hashing
    every frame of a full set would take longer than extracting it). Only clip data counts: a
    result, feature cache or shard bundle kept inside the set's folder leaves it unchanged.
    Symlinked clip folders and frames are followed to the files they point at."""
    digest = hashlib.sha256()
    manifest = videoset.root / "manifest.json"
    if manifest.exists():
        digest.update(manifest.read_bytes())
    for path in videoset.data_files():
        if path.is_file():
            stat = path.stat()
            digest.update(f"{_relative(path, videoset.root)}:{stat.st_size}:"
                          f"{stat.st_mtime_ns};".encode())
    return digest.hexdigest()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:          # a manifest path outside the set (absolute)
        return str(path)


DETECTOR_IDENTITY_KEYS = ("role", "name", "weights_sha256", "random_weights", "seed")


def detector_identity(detectors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What determines the detectors' features, from their records (`DetectorInfo.to_dict()`):
    name, weights SHA-256 or the random-weights seed (resize, size and crop are the protocol's).
    The weights file's path is provenance only: the same bytes elsewhere give the same
    features, so cache keys and same-detector checks compare this, never the path."""
    return [{key: d.get(key) for key in DETECTOR_IDENTITY_KEYS} for d in detectors]


def merge_frame_sizes(records: list[dict[str, Any]]) -> list[list[int]] | None:
    """The union of the shards' `frame_sizes` for one side; None where a shard (written before
    sizes were recorded) does not say."""
    if any(record.get("frame_sizes") is None for record in records):
        return None
    return [list(size) for size in sorted({tuple(size) for record in records
                                           for size in record["frame_sizes"]})]


def clip_order_hash(clip_ids: list[str]) -> str:
    return hashlib.sha256("\n".join(clip_ids).encode()).hexdigest()


def block_groups(protocol: Protocol, clip_ids: list[str]) -> list[int]:
    """The bootstrap group of each clip: its index, or its scene's (bootstrap.unit 'scene')."""
    if protocol.bootstrap.unit == "scene":
        return scene_groups(clip_ids)
    return list(range(len(clip_ids)))


class _PartBuilder:
    """Collects one part's features, clip by clip."""

    def __init__(self, blocks: int):
        self.blocks, self.stats, self.raw, self.clips = blocks, None, [], []

    def add(self, features: np.ndarray, clip_index: int, group: int, source: str) -> None:
        if self.stats is None:
            self.stats = FeatureStats(features.shape[1], n_blocks=self.blocks)
        self.stats.update(features, clip_index, source=source, group=group)
        self.raw.append(features.astype(np.float32))
        self.clips.append(np.full(len(features), clip_index, dtype=np.int64))

    def part(self) -> Part:
        return Part(self.stats, np.concatenate(self.raw), np.concatenate(self.clips))


@dataclass(frozen=True)
class Extraction:
    """What `extract` read: one part per (point, side, metric) and each side's frame sizes."""
    parts: Parts
    frame_sizes: dict[str, list[list[int]]]   # side -> every distinct [H, W] read, sorted


def _prefetch(read: Callable[[ClipEntry], np.ndarray], entries: list[ClipEntry],
              depth: int = 4) -> Iterator[np.ndarray]:
    """Read clips on a background thread, `depth` ahead, in order."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        pending: deque = deque()
        for entry in entries:
            pending.append(pool.submit(read, entry))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_clip(frames: np.ndarray, entry: ClipEntry, need: int, where: str) -> None:
    if len(frames) < need:
        raise VideoSetError(f"{where} clip {entry.clip_id}: {len(frames)} frames, the protocol "
                            f"needs {need}")


def extract(protocol: Protocol, sets: dict[str, VideoSet], clip_ids: list[str],
            extractors: tuple[Callable, Callable], shard: tuple[int, int] = (0, 1),
            progress: bool = True, chunk: int = 8) -> Extraction:
    """Features of the shard's clips for each side in `sets` ('gen' and/or 'ref')."""
    fid_x, fvd_x = extractors
    index, count = shard
    mine = [(i, cid) for i, cid in enumerate(clip_ids) if i % count == index]
    groups = block_groups(protocol, clip_ids)
    points = range(len(protocol.measurement_points()))
    need = frames_needed(protocol)
    out = {PartKey(p, side, m): _PartBuilder(protocol.bootstrap.blocks)
           for p in points for side in sets for m in METRICS}
    sizes: dict[str, set[tuple[int, int]]] = {side: set() for side in sets}
    for side, videoset in sets.items():
        entries = [videoset.clip(cid) for _, cid in mine]
        if side == "gen":
            for entry in entries:
                if videoset.layout == "manifest" and entry.cond_frames != protocol.cond_frames:
                    raise VideoSetError(f"{videoset.root}: clip {entry.clip_id} was generated "
                                        f"with {entry.cond_frames} condition frames; protocol "
                                        f"{protocol.name} uses {protocol.cond_frames}")
        clips = _prefetch(videoset.read, entries)
        bar = progress_bar(len(mine), f"{side} clips", "clip", enabled=progress)
        for start in range(0, len(mine), chunk):
            batch = [(ci, cid, next(clips)) for ci, cid in mine[start:start + chunk]]
            for clip_index, clip_id, frames in batch:
                _check_clip(frames, videoset.clip(clip_id), need, str(videoset.root))
                sizes[side].add(tuple(frames.shape[1:3]))
            for p in points:
                _add_chunk(out[PartKey(p, side, "fid")], fid_x, batch, groups,
                           str(videoset.root), lambda ci, fr: fr[fid_frames(protocol, ci, p)])
                _add_chunk(out[PartKey(p, side, "fvd")], fvd_x, batch, groups,
                           str(videoset.root), lambda ci, fr: fr[fvd_frames(protocol, ci, p)][None])
            bar.update(len(batch))
        bar.close()
    return Extraction({key: builder.part() for key, builder in out.items()},
                      {side: [list(size) for size in sorted(held)]
                       for side, held in sizes.items()})


def _add_chunk(builder: _PartBuilder, extractor: Callable, batch: list, groups: list[int],
               root: str, select: Callable[[int, np.ndarray], np.ndarray]) -> None:
    """One detector call for a chunk of clips (per clip where frame sizes differ)."""
    pieces = [select(clip_index, frames) for clip_index, _, frames in batch]
    if len({piece.shape[1:] for piece in pieces}) == 1:
        features = np.split(extractor(np.concatenate(pieces)),
                            np.cumsum([len(piece) for piece in pieces])[:-1])
    else:
        features = [extractor(piece) for piece in pieces]
    for (clip_index, clip_id, _), feats in zip(batch, features):
        builder.add(feats, clip_index, groups[clip_index], f"{root}/{clip_id}")


def check_shards(metas: list[dict[str, Any]], where: list[str]) -> None:
    """Shards must share protocol, clip order and list, detectors (by identity: their weights
    may lie at different paths on different machines), the generated and reference sets, and
    the shard count, and cover every index."""
    def origin(meta: dict[str, Any]) -> dict[str, Any]:
        return {**{key: meta[key] for key in ("protocol_hash", "clip_order_hash",
                                              "clip_list_hash", "n_clips")},
                "detectors": detector_identity(meta["detectors"]),
                "generated set": meta["generated"]["fingerprint"],
                "reference set": meta["reference"]["fingerprint"]}
    first = origin(metas[0])
    for meta, name in zip(metas[1:], where[1:]):
        for key, value in origin(meta).items():
            if value != first[key]:
                raise BundleError(f"{name}: {key} differs from {where[0]}; these shards come "
                                  "from different evaluations")
    count = metas[0]["shard"][1]
    seen = sorted(meta["shard"][0] for meta in metas)
    if seen != list(range(count)) or any(m["shard"][1] != count for m in metas):
        raise BundleError(f"shards {seen} of {count}: every shard 0..{count - 1} is needed "
                          "exactly once")
