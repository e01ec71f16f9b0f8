"""Which frames of a clip each metric sees, as the protocol says (docs/DESIGN.md sections 4 and 9).

Random draws (FID frames per clip, long-horizon points) are seeded by (protocol seed, global
clip index, measurement point), so shards and reruns pick the same frames, and the generated
and reference clips are scored on the same frame indices.
"""
from __future__ import annotations

import numpy as np

from .protocols import Protocol


def _rng(protocol: Protocol, clip_index: int, point: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([protocol.seed, clip_index, point, purpose])


def point_frames(protocol: Protocol, clip_index: int, point: int) -> np.ndarray:
    """Frame indices of the clip scored at measurement point `point` (0-based)."""
    upto, _ = protocol.measurement_points()[point]
    if protocol.long_horizon is None:
        return np.arange(protocol.frames_per_clip)
    wanted = protocol.long_horizon.frames_per_point
    if upto <= wanted:
        return np.arange(upto)
    drawn = _rng(protocol, clip_index, point, 0).choice(upto, size=wanted, replace=False)
    return np.sort(drawn)


def fid_frames(protocol: Protocol, clip_index: int, point: int) -> np.ndarray:
    """Indices of the frames that count for FID at this point."""
    frames = point_frames(protocol, clip_index, point)
    if protocol.fid.exclude_cond_frames:
        frames = frames[frames >= protocol.cond_frames]
    k = protocol.fid.frames_per_clip
    if k and k < len(frames):
        frames = np.sort(_rng(protocol, clip_index, point, 1).choice(frames, size=k,
                                                                     replace=False))
    return frames


def fvd_frames(protocol: Protocol, clip_index: int, point: int) -> np.ndarray:
    """Indices fed to I3D: a slice of the point's frames, padded by repeating the last."""
    frames = point_frames(protocol, clip_index, point)
    spec = protocol.fvd
    end = spec.first_frame + spec.num_frames if spec.num_frames else len(frames)
    if end > len(frames) or spec.first_frame >= len(frames):
        raise ValueError(f"protocol {protocol.name}: fvd frames [{spec.first_frame}, {end}) "
                         f"do not fit the {len(frames)} frames of point {point}")
    frames = frames[spec.first_frame:end]
    if spec.pad == "repeat_last" and len(frames) < spec.min_frames:
        frames = np.concatenate([frames, np.repeat(frames[-1:], spec.min_frames - len(frames))])
    return frames


def frames_needed(protocol: Protocol) -> int:
    """How many frames each generated and reference clip must have."""
    return protocol.measurement_points()[-1][0]
