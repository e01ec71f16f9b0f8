"""Clip records of one dataset split through its reader (OpenDV-2K, nuScenes, Waymo).

Shared by `repro data manifest`, `repro evalset build` and the trainer.
"""
from __future__ import annotations

from pathlib import Path


def read_clips(dataset: str, root: Path, split: str, n_frames: int, version: str):
    """ClipRecords of one dataset split, through its reader."""
    if dataset in ("nuscenes", "nuscenes_mview"):
        from nuscenes.utils.splits import create_splits_scenes

        from maskgwm.data.nuscenes import mview_clips, open_nuscenes, vista_clips
        splits = create_splits_scenes()
        if split not in splits:
            raise ValueError(f"unknown nuScenes split '{split}' (known: {', '.join(splits)})")
        nusc = open_nuscenes(root, version)
        reader = vista_clips if dataset == "nuscenes" else mview_clips
        return reader(nusc, splits[split], n_frames=n_frames, split=split)
    if dataset == "opendv":
        from maskgwm.data.opendv import opendv_clips
        return opendv_clips(root, split, n_frames)
    from maskgwm.data.waymo import waymo_clips
    return waymo_clips(root, version, n_frames, split=split)
