"""Evaluation parts: the features of one measurement point, side and metric, and the bundle
folders that hold them on disk.

`PartKey(point, side, metric)` names a part; `Part` holds its FeatureStats (Frechet distances
and their intervals) and its raw features with their clip indices (KID, and cutting or merging
shards). `evals.pipeline.extract` makes parts, `save_bundle` writes them, `load_bundle` and
`merge_parts` read them back and `evals.evaluate.compute_result` scores them.

A bundle is a folder: `bundle.json` (the meta: protocol, clip order, shard, detectors, inputs;
its `parts` lists each part's file stem) and per part `p{k}-{side}-{metric}.npz` (FeatureStats),
`...-raw.npy` and `...-clips.npy`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .stats import FeatureStats

SCHEMA_VERSION = 1
SIDES = ("gen", "ref")
METRICS = ("fid", "fvd")
_STEM = re.compile(r"p(\d+)-([a-z]+)-([a-z]+)")


class BundleError(ValueError):
    pass


@dataclass(frozen=True, order=True)
class PartKey:
    point: int                      # index into protocol.measurement_points()
    side: str                       # gen | ref
    metric: str                     # fid | fvd (KID is computed on both parts' raw features)

    def __post_init__(self):
        if self.side not in SIDES or self.metric not in METRICS or self.point < 0:
            raise ValueError(f"no evaluation part {self!r} (sides {SIDES}, metrics {METRICS})")

    @property
    def file_stem(self) -> str:
        return f"p{self.point}-{self.side}-{self.metric}"

    @classmethod
    def from_stem(cls, stem: str) -> PartKey:
        match = _STEM.fullmatch(stem)
        if match is None or match[2] not in SIDES or match[3] not in METRICS:
            raise BundleError(f"{stem!r} names no evaluation part (p<k>-<side>-<metric>)")
        return cls(int(match[1]), match[2], match[3])


@dataclass(frozen=True, eq=False)
class Part:
    stats: FeatureStats
    raw: np.ndarray                 # [n, d] float32 feature rows
    clips: np.ndarray               # [n] int64: the clip index of each row

    def save(self, folder: Path, key: PartKey) -> None:
        self.stats.save(folder / f"{key.file_stem}.npz")
        np.save(folder / f"{key.file_stem}-raw.npy", self.raw)
        np.save(folder / f"{key.file_stem}-clips.npy", self.clips)

    @classmethod
    def load(cls, folder: Path, key: PartKey) -> Part:
        return cls(FeatureStats.load(folder / f"{key.file_stem}.npz"),
                   np.load(folder / f"{key.file_stem}-raw.npy"),
                   np.load(folder / f"{key.file_stem}-clips.npy"))


Parts = dict[PartKey, Part]


def side_parts(parts: Parts, side: str) -> Parts:
    return {key: part for key, part in parts.items() if key.side == side}


def save_bundle(folder: Path, meta: dict[str, Any], parts: Parts) -> None:
    """Write atomically: into a temporary folder, then rename."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        for key, part in parts.items():
            part.save(staging, key)
        (staging / "bundle.json").write_text(json.dumps(
            {**meta, "schema_version": SCHEMA_VERSION,
             "parts": sorted(key.file_stem for key in parts)}, indent=1))
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def load_bundle(folder: Path) -> tuple[dict[str, Any], Parts]:
    """(meta, parts) of a bundle folder."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "bundle.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise BundleError(f"{folder}: not a feature bundle ({err})") from None
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise BundleError(f"{folder}: bundle schema {meta.get('schema_version')!r}, "
                          f"expected {SCHEMA_VERSION}")
    keys = [PartKey.from_stem(stem) for stem in meta["parts"]]
    return meta, {key: Part.load(folder, key) for key in keys}


def shard_part(part: Part, shard: tuple[int, int]) -> Part:
    """The clips of `shard` (i, i + n, ...) of a whole part, as extracting only them gives
    (each clip keeps its group, so its block)."""
    index, count = shard
    keep = part.clips % count == index
    whole = part.stats
    group_of = dict(zip(whole.clip_indices.tolist(), whole.clip_groups.tolist()))
    stats = FeatureStats(whole.dim, whole.n_blocks, whole.metadata)
    for clip in np.unique(part.clips[keep]):
        stats.update(part.raw[part.clips == clip], int(clip), group=group_of[int(clip)])
    return Part(stats, part.raw[keep], part.clips[keep])


def merge_parts(parts_list: list[Parts]) -> Parts:
    """Join shard parts: stats merged, raw features ordered by clip index. Shards hold
    disjoint clips; a clip in two of them is an error (it would count twice)."""
    merged: Parts = {}
    for parts in parts_list[1:]:
        if parts.keys() != parts_list[0].keys():
            raise BundleError("shards hold different parts: "
                              f"{sorted(k.file_stem for k in parts.keys() ^ parts_list[0].keys())}")
    for key in parts_list[0]:
        pieces = [parts[key] for parts in parts_list]
        held = [np.unique(p.clips) for p in pieces]
        if sum(len(h) for h in held) != len(np.unique(np.concatenate(held))):
            raise BundleError(f"{key.file_stem}: some clips are in more than one shard; each "
                              "clip must be scored by exactly one shard")
        stats = pieces[0].stats
        for piece in pieces[1:]:
            stats = stats.merge(piece.stats)
        clips = np.concatenate([p.clips for p in pieces])
        order = np.argsort(clips, kind="stable")
        merged[key] = Part(stats, np.concatenate([p.raw for p in pieces])[order], clips[order])
    return merged
