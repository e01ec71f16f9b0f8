"""Synthetic driving data: a procedural world (`world`) and writers that lay it out in real formats."""
from maskgwm.data.synth.world import EgoState, camera_intrinsic, render_frames, simulate_drive

__all__ = ["EgoState", "camera_intrinsic", "render_frames", "simulate_drive"]
