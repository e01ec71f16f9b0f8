"""Percentile bootstrap intervals for FID/FVD from the clip blocks of FeatureStats.

Frames of one clip are correlated, and so are the views of one multi-view scene, so the
resampling unit is a block of whole groups: block b holds the clips whose group g has
g % n_blocks == b (evals/stats.py), where a clip's group is its index i, or for multi-view
protocols (bootstrap.unit "scene") the index of its scene, so all views of a scene share a
block (evals/pipeline.py block_groups). Each replicate draws multinomial weights over the
non-empty blocks (as many draws as blocks, with replacement); the weighted sums of block
(count, sum, outer) give the replicate's mean and covariance without touching features again.

Bootstrap FID is biased upward: a replicate repeats blocks, so it holds fewer distinct clips,
and the Frechet distance of a finite sample grows as the sample shrinks. The replicates'
percentile interval therefore need not contain the point estimate; report the plain
(non-bootstrapped) distance as `value` and the interval separately, as `Interval` does.

The reference set is held fixed unless `resample_ref` says otherwise: "same" reuses the
generated set's weights (the reference is the real counterpart of the same clips, so pairs
stay together; both must assign the same clips to the same blocks), "independent" draws its
own weights over its own blocks.

KID has its own spread: `kid_interval` uses mean +- z * std / sqrt(n_subsets) from the KID
subsets (a normal approximation of the subset average's Monte Carlo error; subsets overlap,
so it understates the uncertainty about the population value).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from .frechet import FixedGaussian, frechet_distance, frechet_from_stats
from .stats import FeatureStats, covariance_from_moments, full_from_lower

REF_MODES = ("none", "same", "independent")
CHUNK_BYTES = 256 * 2**20  # replicates whose weighted outer products are formed at once


@dataclass(frozen=True)
class Interval:
    value: float      # the plain estimate, not a bootstrap mean
    low: float
    high: float
    n_boot: int       # replicates (or KID subsets)
    std: float        # spread of the replicates (ddof 1), or kid()'s subset std
    level: float = 0.95
    method: str = "percentile block bootstrap"


@dataclass(frozen=True)
class PairedDifference:
    difference: Interval  # of FD(a) - FD(b)
    share_a_lower: float  # share of replicates with FD(a) < FD(b)


def _check_blocks(stats: FeatureStats, role: str) -> np.ndarray:
    if stats.n_blocks == 0:
        raise ValueError(f"{role} has no blocks (n_blocks=0); the bootstrap needs per-clip "
                         f"blocks: accumulate with n_blocks > 0")
    filled = np.flatnonzero(stats.block_count > 0)
    if filled.size < 2:
        raise ValueError(f"{role} has {filled.size} non-empty block(s); the bootstrap needs "
                         f"at least 2 (more clips, or more blocks)")
    return filled


def _check_level(level: float, n_boot: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 2:
        raise ValueError(f"n_boot must be >= 2, got {n_boot}")


def _draw_weights(rng: np.random.Generator, stats: FeatureStats, filled: np.ndarray,
                  n_boot: int) -> np.ndarray:
    """[n_boot, n_blocks] multinomial block counts, zero on empty blocks."""
    weights = np.zeros((n_boot, stats.n_blocks))
    weights[:, filled] = rng.multinomial(filled.size, np.full(filled.size, 1.0 / filled.size),
                                         size=n_boot)
    return weights


def _replicate_moments(stats: FeatureStats, weights: np.ndarray):
    """Yield (mean, cov) for each row of `weights`, chunked to bound memory."""
    dim = stats.dim
    flat_outer = stats.block_outer_lower.reshape(stats.n_blocks, dim * dim)
    chunk = max(1, CHUNK_BYTES // (dim * dim * 8))
    for start in range(0, len(weights), chunk):
        part = weights[start:start + chunk]
        counts = part @ stats.block_count
        sums = part @ stats.block_sum
        outers = (part @ flat_outer).reshape(len(part), dim, dim)
        for count, total, outer in zip(counts, sums, outers):
            if count < 2:
                raise ValueError(f"a bootstrap replicate holds {count} feature vectors; need 2")
            yield total / count, covariance_from_moments(count, total, full_from_lower(outer))


def _ref_replicates(ref, gen, gen_weights, resample_ref, rng):
    """(mean, cov) of each reference replicate when the reference is resampled."""
    if resample_ref not in REF_MODES:
        raise ValueError(f"resample_ref must be one of {REF_MODES}, got {resample_ref!r}")
    filled = _check_blocks(ref, "ref")
    if resample_ref == "same":
        _check_same_clips(gen, ref, "generated", "ref")
        return _replicate_moments(ref, gen_weights)
    return _replicate_moments(ref, _draw_weights(rng, ref, filled, len(gen_weights)))


class _RefDistance:
    """FD of a replicate to its reference replicate (`refs` yields those); a reference held
    fixed ("none") is factorised once (frechet.FixedGaussian)."""

    def __init__(self, ref, gen, gen_weights, resample_ref, rng):
        if resample_ref == "none":
            self.fixed = FixedGaussian(ref.mean(), ref.cov())
            self.refs = itertools.repeat(None, len(gen_weights))
        else:
            self.fixed = None
            self.refs = _ref_replicates(ref, gen, gen_weights, resample_ref, rng)

    def __call__(self, mu, cov, ref_moments) -> float:
        if self.fixed is not None:
            return self.fixed.distance(mu, cov)
        return frechet_distance(mu, cov, *ref_moments)


def _check_same_clips(a: FeatureStats, b: FeatureStats, name_a: str, name_b: str) -> None:
    if a.n_blocks != b.n_blocks:
        raise ValueError(f"{name_a} and {name_b} use different n_blocks "
                         f"({a.n_blocks} vs {b.n_blocks}): same block assignment required")
    if not np.array_equal(a.clip_indices, b.clip_indices):
        only_a = np.setdiff1d(a.clip_indices, b.clip_indices).size
        only_b = np.setdiff1d(b.clip_indices, a.clip_indices).size
        raise ValueError(f"{name_a} and {name_b} are not scored on the same clips "
                         f"({only_a} clips only in {name_a}, {only_b} only in {name_b}): "
                         f"same clips and block assignment required")
    if a.n_blocks and not np.array_equal(a.clip_groups % a.n_blocks, b.clip_groups % b.n_blocks):
        moved = int(np.sum(a.clip_groups % a.n_blocks != b.clip_groups % b.n_blocks))
        raise ValueError(f"{name_a} and {name_b} put {moved} of the same clips in different "
                         f"blocks (clips grouped by scene in one, by clip in the other?): "
                         f"same block assignment required")


def _percentile_interval(value, replicates, level, method="percentile block bootstrap"):
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(replicates, [tail, 1.0 - tail])
    return Interval(float(value), float(low), float(high), len(replicates),
                    float(np.std(replicates, ddof=1)), level, method)


def bootstrap_frechet(gen: FeatureStats, ref: FeatureStats, n_boot: int = 200, seed: int = 0,
                      level: float = 0.95, resample_ref: str = "none") -> Interval:
    """Plain FD(gen, ref) and the percentile interval of block-bootstrap replicates."""
    _check_level(level, n_boot)
    value = frechet_from_stats(gen, ref)
    rng = np.random.default_rng(seed)
    weights = _draw_weights(rng, gen, _check_blocks(gen, "gen"), n_boot)
    distance = _RefDistance(ref, gen, weights, resample_ref, rng)
    replicates = [distance(mu, cov, ref_moments)
                  for (mu, cov), ref_moments in zip(_replicate_moments(gen, weights), distance.refs)]
    return _percentile_interval(value, np.array(replicates), level)


def paired_bootstrap_difference(gen_a: FeatureStats, gen_b: FeatureStats, ref: FeatureStats,
                                n_boot: int = 200, seed: int = 0, level: float = 0.95,
                                resample_ref: str = "none") -> PairedDifference:
    """Interval of FD(a) - FD(b) for two generated sets on the same clips, same block weights."""
    _check_level(level, n_boot)
    _check_same_clips(gen_a, gen_b, "gen_a", "gen_b")
    value = frechet_from_stats(gen_a, ref) - frechet_from_stats(gen_b, ref)
    rng = np.random.default_rng(seed)
    weights = _draw_weights(rng, gen_a, _check_blocks(gen_a, "gen_a"), n_boot)
    distance = _RefDistance(ref, gen_a, weights, resample_ref, rng)
    differences, a_lower = [], []
    for (mu_a, cov_a), (mu_b, cov_b), ref_moments in zip(
            _replicate_moments(gen_a, weights), _replicate_moments(gen_b, weights),
            distance.refs):
        fd_a = distance(mu_a, cov_a, ref_moments)
        fd_b = distance(mu_b, cov_b, ref_moments)
        differences.append(fd_a - fd_b)
        a_lower.append(fd_a < fd_b)
    interval = _percentile_interval(value, np.array(differences), level,
                                    "paired percentile block bootstrap")
    return PairedDifference(interval, float(np.mean(a_lower)))


def kid_interval(mean: float, std: float, n_subsets: int, level: float = 0.95) -> Interval:
    """Normal interval mean +- z * std / sqrt(n_subsets) from kid()'s subset spread."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_subsets < 1:
        raise ValueError(f"n_subsets must be >= 1, got {n_subsets}")
    half_width = NormalDist().inv_cdf(0.5 + level / 2.0) * std / np.sqrt(n_subsets)
    return Interval(float(mean), float(mean - half_width), float(mean + half_width), n_subsets,
                    float(std), level, "KID subsets, normal approximation")
