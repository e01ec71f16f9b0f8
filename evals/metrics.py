"""FID, FVD and KID: where each is made, and the scores of one measurement point.

FID  frames: `evals.frames.fid_frames`; resize: `evals.resize.resize_frames` (protocol.fid.resize);
     detector: Inception-v3 pool3, 2048-d (evals/detectors/inception.py, loaded by
     evals/extractors.py); distance: `evals.frechet.frechet_from_stats` on FeatureStats.
FVD  frames: `evals.frames.fvd_frames` (padded to fvd.min_frames); resize:
     `evals.resize.preprocess_clips` (protocol.fvd.resize); detector: I3D, 400 logits
     (evals/detectors/i3d.py for i3d-400, evals/detectors/torchscript.py for i3d-torchscript);
     distance: the same Frechet distance. Which FVD a detector gives: its flavour
     (`evals.protocols.FVD_FLAVOURS`).
KID  `evals.frechet.kid` (unbiased MMD^2, cubic kernel, random subsets) on the raw features of
     either detector: `kid_fid` and `kid_fvd`.

Features accumulate into float64 FeatureStats (evals/stats.py) through evals/pipeline.py;
intervals come from the block bootstrap (evals/resampling.py).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .frechet import frechet_from_stats, kid
from .parts import METRICS, Part, PartKey, Parts
from .protocols import Protocol
from .resampling import bootstrap_frechet
from .stats import FeatureStats


def frechet(gen: FeatureStats, ref: FeatureStats, protocol: Protocol, seed: int
            ) -> dict[str, Any]:
    """FID or FVD (by the detector that made the stats) and its bootstrap interval."""
    spec = protocol.bootstrap
    if spec.n_boot == 0:
        return {"value": frechet_from_stats(gen, ref), "low": None, "high": None, "std": None,
                "n_boot": 0, "level": spec.level}
    interval = bootstrap_frechet(gen, ref, n_boot=spec.n_boot, seed=seed, level=spec.level)
    return {"value": interval.value, "low": interval.low, "high": interval.high,
            "std": interval.std, "n_boot": interval.n_boot, "level": spec.level}


def kernel(gen_raw: np.ndarray, ref_raw: np.ndarray, protocol: Protocol, seed: int
           ) -> dict[str, Any]:
    """KID, on subsets no larger than either side."""
    spec = protocol.kid
    size = min(spec.subset_size, len(gen_raw), len(ref_raw))
    mean, std = kid(gen_raw.astype(np.float64), ref_raw.astype(np.float64), size,
                    spec.subsets, seed)
    return {"mean": mean, "std": std, "subset_size": size, "subsets": spec.subsets,
            "subset_size_reduced": size < spec.subset_size}


def score_point(protocol: Protocol, parts: Parts, point: int) -> dict[str, Any]:
    """A result's row for `point`: FID and FVD with intervals, KID on both, inputs hashes."""
    seed = protocol.seed + point
    row: dict[str, Any] = {"point": point}
    for metric in METRICS:
        gen: Part = parts[PartKey(point, "gen", metric)]
        ref: Part = parts[PartKey(point, "ref", metric)]
        row[metric] = {**frechet(gen.stats, ref.stats, protocol, seed), "n": int(gen.stats.count)}
        row[f"kid_{metric}"] = kernel(gen.raw, ref.raw, protocol, seed)
        row[f"inputs_hash_{metric}"] = {"gen": gen.stats.inputs_hash,
                                        "ref": ref.stats.inputs_hash}
    row["fvd"]["flavour"] = protocol.fvd_flavour.name
    return row
