"""Named evaluation protocols (DESIGN.md sections 4 and 9).

This holds each protocol's identity and headline sizes; the Evaluators issue makes every
preprocessing choice an explicit field here.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Protocol:
    name: str
    description: str
    dataset: str
    n_videos: int           # clips scored by FVD
    n_fid_frames: int       # frames scored by FID
    frames_per_clip: int
    cond_frames: int
    actions: bool = False
    horizon_s: float = 0.0  # long-horizon protocols: rollout length in seconds


PROTOCOLS = {p.name: p for p in (
    Protocol("vista_nuscenes", "Vista's nuScenes val protocol: 5369 clips x 25 CAM_FRONT frames",
             "nuscenes", 5369, 5369 * 24, 25, 1),
    Protocol("drivewm_mview", "Drive-WM multi-view: 150 val scenes x 6 views, T = 8",
             "nuscenes_mview", 900, 10000, 8, 1),
    Protocol("waymo_zeroshot", "600 Waymo val front-camera videos, zero-shot",
             "waymo", 600, 15000, 25, 1),
    Protocol("opendv_ablation", "OpenDV-2K val, 3000 clips FVD, 18000 frames FID (GenAD setting)",
             "opendv", 3000, 18000, 25, 1),
    Protocol("opendv_long", "300 OpenDV-2K val videos, 3 condition frames, rollout to 15 s",
             "opendv", 300, 300 * 25, 25, 3, horizon_s=15.0),
)}


class UnknownProtocol(ValueError):
    pass


def get_protocol(name: str) -> Protocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise UnknownProtocol(f"unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})") from None
