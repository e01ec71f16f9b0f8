"""Input checks the detectors share."""
from __future__ import annotations

from torch import Tensor


def check_value_range(x: Tensor, detector: str) -> None:
    """ValueError unless every value of x lies in [-1, 1] (1e-4 slack for round-off)."""
    low, high = x.min().item(), x.max().item()
    if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
        raise ValueError(f"{detector} takes values in [-1, 1], got [{low:g}, {high:g}] "
                         "(uint8-range input must be normalised first)")
