"""Score a generated video set against a reference under a named protocol.

    evaluate(protocol, generated, reference, out)             # one pass: writes out (JSON)
    evaluate(..., shard=(i, n))                                # writes out.shard-i-of-n/
    merge_shards(out)                                          # joins every shard, writes out

The result JSON embeds the full protocol and its hash, the clip-order hash (and the clip list's
hash when one is given), each detector and its weights' SHA-256 (or the random-weights label),
the feature-level inputs hashes, the frame sizes [H, W] seen in the generated and the reference
clips (`generated.frame_sizes`, `reference.frame_sizes`: every distinct size; the protocol resizes
both to the detector's input), the FVD's flavour (`fvd_flavour`: detector, tag, name, note;
evals.protocols.FVD_FLAVOURS), and per measurement point FID, FVD (with its flavour's name) and
KID with intervals (evals/metrics.py). Features travel as typed parts (evals/parts.py).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_write_json
from .cliplist import read_clip_list
from .commit import git_commit
from .extractors import RANDOM_WEIGHTS_LABEL, build_extractors
from .metrics import score_point
from .parts import BundleError, Parts, load_bundle, merge_parts, save_bundle, shard_part, side_parts
from .pipeline import (check_shards, clip_order_hash, detector_identity, extract,
                       merge_frame_sizes, set_fingerprint)
from .protocols import Protocol, flavour_record, result_fvd_flavour
from .videoset import VideoSet, VideoSetError

RESULT_SCHEMA = 1


def shard_dir(out: Path, shard: tuple[int, int]) -> Path:
    return out.with_name(f"{out.name}.shard-{shard[0]}-of-{shard[1]}")


def _clip_order(generated: VideoSet, clip_list: Path | None) -> tuple[list[str], str | None]:
    if clip_list is None:
        return [c.clip_id for c in generated.clips], None
    data = read_clip_list(clip_list)
    ids = [c["clip_id"] for c in data["clips"]]
    have = {c.clip_id for c in generated.clips}
    missing = [cid for cid in ids if cid not in have]
    if missing:
        raise VideoSetError(f"{generated.root}: {len(missing)} clips of {clip_list} are missing "
                            f"(first: {', '.join(missing[:5])}); generate them, then evaluate")
    return ids, data["hash"]


def _reference_parts(protocol: Protocol, reference: Path, clip_ids: list[str], extractors,
                     detectors: list[dict], shard: tuple[int, int], cache_dir: Path | None,
                     progress: bool) -> tuple[Parts, dict[str, Any]]:
    """Reference features from a bundle folder, the cache, or by extraction (then cached).
    Detectors are compared by identity: a bundle made with the same weights stored elsewhere
    serves."""
    if (reference / "bundle.json").exists():
        meta, parts = load_bundle(reference)
        if meta["protocol_hash"] != protocol.hash or meta["clip_order_hash"] != \
                clip_order_hash(clip_ids) or \
                detector_identity(meta["detectors"]) != detector_identity(detectors):
            raise BundleError(f"{reference}: reference statistics were made with another "
                              "protocol, clip order or detector; recompute them")
        held = tuple(meta["shard"])
        refs = side_parts(parts, "ref")
        if held == tuple(shard):
            return refs, meta["reference"]
        if held == (0, 1):     # the whole reference: this shard's clips
            return {k: shard_part(v, shard) for k, v in refs.items()}, meta["reference"]
        raise BundleError(f"{reference}: holds reference shard {held[0]} of {held[1]}, this "
                          f"evaluation is shard {shard[0]} of {shard[1]}; pass the reference "
                          "video set or an unsharded bundle")
    videoset = VideoSet.open(reference, cond_frames=0, fps=protocol.fps)
    info = {"path": str(reference), "fingerprint": set_fingerprint(videoset),
            "clips_linked_from_outside": len(videoset.linked_from_outside())}
    key = hashlib.sha256(json.dumps([info["fingerprint"], protocol.hash,
                                     clip_order_hash(clip_ids), detector_identity(detectors),
                                     shard], sort_keys=True).encode()).hexdigest()[:24]
    cached = cache_dir / f"ref-{key}" if cache_dir else None
    if cached is not None and (cached / "bundle.json").exists():
        meta, parts = load_bundle(cached)
        return parts, {**info, "frame_sizes": meta["reference"].get("frame_sizes")}
    extraction = extract(protocol, {"ref": videoset}, clip_ids, extractors, shard, progress)
    info["frame_sizes"] = extraction.frame_sizes["ref"]
    meta = {"kind": "reference", "protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "clip_order_hash": clip_order_hash(clip_ids), "detectors": detectors,
            "shard": list(shard), "reference": info}
    if cached is not None:
        save_bundle(cached, meta, extraction.parts)
        return load_bundle(cached)[1], info
    return extraction.parts, info


def evaluate(protocol: Protocol, generated: str | Path, reference: str | Path, out: str | Path,
             weights_dir: str | Path | None = None, clip_list: str | Path | None = None,
             shard: tuple[int, int] = (0, 1), cache_dir: str | Path | None = None,
             device: str = "cpu", progress: bool = True,
             extractors: tuple | None = None) -> dict[str, Any] | Path:
    """Evaluate; returns the result dict, or the shard bundle's folder when sharded.

    `extractors` (from `build_extractors` for this protocol) saves rebuilding detectors when
    one process scores several sets."""
    protocol.validate()
    out = Path(out)
    gen = VideoSet.open(generated, cond_frames=protocol.cond_frames, fps=protocol.fps)
    clip_ids, list_hash = _clip_order(gen, Path(clip_list) if clip_list else None)
    if len(clip_ids) < 2:
        raise VideoSetError(f"{generated}: {len(clip_ids)} clip(s); FID/FVD need at least 2")
    if shard[0] >= len(clip_ids):
        raise VideoSetError(f"{generated}: shard {shard[0]} of {shard[1]} holds no clip of "
                            f"the {len(clip_ids)}; use at most {len(clip_ids)} shards")
    fid_x, fvd_x, infos = extractors or build_extractors(protocol, weights_dir, device)
    detectors = [info.to_dict() for info in infos]
    ref_parts, ref_info = _reference_parts(protocol, Path(reference), clip_ids, (fid_x, fvd_x),
                                           detectors, shard, Path(cache_dir) if cache_dir else None,
                                           progress)
    extraction = extract(protocol, {"gen": gen}, clip_ids, (fid_x, fvd_x), shard, progress)
    meta = {"kind": "evaluation", "protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "clip_order_hash": clip_order_hash(clip_ids), "clip_list_hash": list_hash,
            "n_clips": len(clip_ids), "detectors": detectors, "shard": list(shard),
            "generated": {"path": str(generated), "fingerprint": set_fingerprint(gen),
                          "frame_sizes": extraction.frame_sizes["gen"],
                          "clips_linked_from_outside": len(gen.linked_from_outside())},
            "reference": ref_info, "git_commit": git_commit(),
            "measurement_points": protocol.measurement_points()}
    parts = {**extraction.parts, **ref_parts}
    if shard[1] > 1:
        folder = shard_dir(out, shard)
        save_bundle(folder, meta, parts)
        return folder
    result = compute_result(protocol, parts, meta)
    atomic_write_json(out, result, default=float)
    return result


def merge_shards(out: str | Path, shard_dirs: list[Path] | None = None) -> dict[str, Any]:
    """Join the shards of `out` (all `out.shard-*-of-*` folders by default) and score them."""
    out = Path(out)
    dirs = shard_dirs or sorted(out.parent.glob(f"{out.name}.shard-*-of-*"))
    if not dirs:
        raise BundleError(f"no shard folders {out.name}.shard-I-of-N next to {out}")
    loaded = [load_bundle(d) for d in dirs]
    metas = [meta for meta, _ in loaded]
    check_shards(metas, [str(d) for d in dirs])
    meta = {**metas[0], "shard": [0, 1], "merged_from": [str(d) for d in dirs]}
    for side in ("generated", "reference"):
        meta[side] = {**metas[0][side],
                      "frame_sizes": merge_frame_sizes([m[side] for m in metas])}
    protocol = Protocol.from_dict(meta["protocol"])
    if protocol.hash != meta["protocol_hash"]:
        raise BundleError(f"{dirs[0]}: its protocol reads back with hash {protocol.hash}, not "
                          f"{meta['protocol_hash']}; another version of evals wrote it, rerun "
                          "the shards")
    result = compute_result(protocol, merge_parts([parts for _, parts in loaded]), meta)
    atomic_write_json(out, result, default=float)
    return result


def compute_result(protocol: Protocol, parts: Parts, record: dict[str, Any]) -> dict[str, Any]:
    """The result of scoring `parts` under `protocol`. `record` (a bundle's meta: clip order,
    detectors, sets, shard) is copied into the result; its detectors decide the label."""
    if record.get("protocol_hash", protocol.hash) != protocol.hash:
        raise ValueError(f"record of protocol {record['protocol_hash']}, scored under "
                         f"{protocol.hash}")
    n_points = len({key.point for key in parts})
    points = [score_point(protocol, parts, p) for p in range(n_points)]
    for row, (frames, seconds) in zip(points, protocol.measurement_points()):
        row.update(frames=frames, seconds=seconds)
    random = any(d["random_weights"] for d in record["detectors"])
    rest = {k: v for k, v in record.items()
            if k not in ("kind", "measurement_points", "protocol", "protocol_hash",
                         "schema_version")}
    return {"schema_version": RESULT_SCHEMA,
            "protocol": protocol.to_dict(), "protocol_hash": protocol.hash, **rest,
            "label": RANDOM_WEIGHTS_LABEL if random else "",
            "fvd_flavour": flavour_record(protocol.fvd.detector),
            "points": points, "created": dt.datetime.now(dt.timezone.utc).isoformat(),
            "versions": {"python": platform.python_version(), "numpy": np.__version__}}


def _sizes_text(sizes: list[list[int]] | None) -> str:
    """'576x1024' (H x W), several joined by ' and '; '' when not recorded."""
    return " and ".join(f"{h}x{w}" for h, w in sizes or [])


def format_result(result: dict[str, Any]) -> str:
    lines = [f"protocol {result['protocol']['name']} ({result['protocol_hash']}), "
             f"{result['n_clips']} clips"]
    sizes = {side: _sizes_text(result.get(side, {}).get("frame_sizes"))
             for side in ("generated", "reference")}
    if any(sizes.values()):
        lines.append(f"frames: generated {sizes['generated'] or '?'}, "
                     f"reference {sizes['reference'] or '?'}")
    linked = {side: result.get(side, {}).get("clips_linked_from_outside") or 0
              for side in ("generated", "reference")}
    if any(linked.values()):
        lines.append(f"clip folders linked from outside the set: generated "
                     f"{linked['generated']}, reference {linked['reference']}")
    flavour = result_fvd_flavour(result)
    lines.append(f"FVD flavour: {flavour['name']}")
    if result["label"]:
        lines.append(f"NOTE: {result['label']}")
    if result["n_clips"] != result["protocol"]["n_clips"]:
        lines.append(f"NOTE: the protocol specifies {result['protocol']['n_clips']} clips; "
                     f"these numbers come from {result['n_clips']}")
    for row in result["points"]:
        when = f"{row['seconds']:.1f} s" if "seconds" in row else f"point {row['point']}"
        text = []
        for metric in ("fid", "fvd"):
            m = row[metric]
            interval = f" [{m['low']:.2f}, {m['high']:.2f}]" if m["n_boot"] else ""
            name = flavour["tag"] if metric == "fvd" else "FID"
            text.append(f"{name} {m['value']:.2f}{interval} (n={m['n']})")
            k = row[f"kid_{metric}"]
            text.append(f"KID-{metric} {k['mean']:.4f}±{k['std']:.4f}")
        lines.append(f"  {when}: " + "  ".join(text))
    return "\n".join(lines)
