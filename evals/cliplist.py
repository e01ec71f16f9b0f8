"""Evaluation clip lists: which clips a protocol scores, as a file with a content hash.

    {"schema_version": 1, "protocol": "vista_nuscenes", "hash": "<sha256 of the clips>",
     "clips": [{"clip_id": ..., "source_clip": ..., "frames": 25, "cond_frames": 1,
                "fps": 10.0 (optional)}, ...]}

The hash covers clip_id, source_clip, frames and cond_frames (the fields of a video-set
manifest entry that decide what is scored), in order.

Every result records the hash, so two labs can check that they scored the same clips.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from .atomic import atomic_write_json

SCHEMA_VERSION = 1
CLIP_KEYS = ("clip_id", "source_clip", "frames", "cond_frames")


class ClipListError(ValueError):
    pass


def clips_hash(clips: list[dict[str, Any]]) -> str:
    """SHA-256 of the clip entries (order matters: it is the evaluation order)."""
    canonical = json.dumps([{k: clip[k] for k in CLIP_KEYS} for clip in clips],
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_clip_list(path: str | Path, protocol: str, clips: list[dict[str, Any]]) -> str:
    """Write atomically; returns the content hash."""
    for index, clip in enumerate(clips):
        missing = [k for k in CLIP_KEYS if k not in clip]
        if missing:
            raise ClipListError(f"clip {index}: missing {', '.join(missing)}")
    ids = [clip["clip_id"] for clip in clips]
    if len(set(ids)) != len(ids):
        raise ClipListError("duplicate clip ids in the clip list")
    digest = clips_hash(clips)
    atomic_write_json(path, {"schema_version": SCHEMA_VERSION, "protocol": protocol,
                             "hash": digest, "clips": clips})
    return digest


def read_clip_list(path: str | Path) -> dict[str, Any]:
    """Load and verify a clip list; a file whose clips no longer match its hash is an error."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ClipListError(f"{path}: cannot read clip list ({err})") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        version = data.get("schema_version") if isinstance(data, dict) else None
        raise ClipListError(f"{path}: schema_version {version!r}, expected {SCHEMA_VERSION}")
    try:
        actual = clips_hash(data["clips"])
    except (KeyError, TypeError) as err:
        raise ClipListError(f"{path}: every clip needs {', '.join(CLIP_KEYS)} ({err!r} is "
                            "missing or malformed); rebuild the list with write_clip_list"
                            ) from None
    if actual != data.get("hash"):
        raise ClipListError(f"{path}: content hash mismatch (file says {data.get('hash')}, "
                            f"clips hash to {actual}): the list was edited; rebuild it")
    return data
