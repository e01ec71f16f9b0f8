"""Sufficient statistics of a feature set (count, sum, sum of outer products) in float64.

`FeatureStats` accumulates what FID/FVD need, shard by shard, and keeps blocks of clips for the
bootstrap (evals/resampling.py): the frames of clip `i` (its index in the evaluation's global
clip list, not a shard-local one) always go to block `g % n_blocks`, where `g` is the clip's
group: `i` itself unless `update` is given another (multi-view sets pass the index of the
clip's scene, so all views of a scene share a block; evals/pipeline.py). `clip_groups` records
each clip's group, and a clip has one group across updates, merges and files. Blocks cost
n_blocks * d^2 * 8 bytes: with the default 50 blocks, 1.6 GB at d = 2048 (Inception pool3) and
64 MB at d = 400 (I3D logits); `n_blocks=0` turns them off (one d^2 accumulator).

Storage: each block's sum of x x^T lives in the lower triangle of its own d x d array (the
upper triangle stays zero), updated in place by BLAS dsyrk. At d = 2048 that costs ~16 ms per
clip instead of ~130 ms for forming X^T X and adding it to a full total and a full block. The
totals (`count`, `sum`, `outer`) are sums over blocks, formed when read. Files hold only the
non-empty blocks (`filled_blocks`), so a shard of a few clips stays small whatever n_blocks is;
`clip_groups` is stored (schema version 3) only where some group differs from its clip index,
so other files are written as version 2, as before.

`inputs_hash` identifies what went in, independently of order, batching and sharding: the sum
modulo 2^256 of SHA-256(clip index as int64 LE || feature row as float64 LE) over all rows.
A sum (not XOR) so that a row added twice does not cancel out. It detects accidental
differences between two labs' inputs; it is not a cryptographic commitment.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
from scipy.linalg import blas

from .atomic import atomic_open

SCHEMA_VERSION = 2                   # files of stats whose groups are their clip indices
GROUPED_SCHEMA_VERSION = 3           # files with `clip_groups` (multi-view scene blocks)
READABLE_VERSIONS = (1, 2, 3)        # version 1 stored every block, empty ones included
DEFAULT_N_BLOCKS = 50
HASH_MODULUS = 1 << 256
IDENTITY_KEYS = ("detector", "protocol_hash")  # metadata that must agree before stats can mix
ARRAY_KEYS = ("count", "sum", "outer", "block_count", "block_sum", "block_outer_lower",
              "clip_indices", "header")


class StatsFileError(ValueError):
    """A saved FeatureStats file is unreadable, corrupt or of another schema version."""


def full_from_lower(lower: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose lower triangle is `lower`'s (its upper triangle is ignored)."""
    lower = np.tril(lower)
    return lower + np.tril(lower, -1).T


def covariance_from_moments(count, total: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Unbiased covariance from (count, sum, full symmetric sum of x x^T)."""
    mean = total / count
    cov = (outer - count * np.outer(mean, mean)) / (count - 1)
    return (cov + cov.T) / 2


def _row_hashes_sum(features: np.ndarray, clip_indices: np.ndarray) -> int:
    total = 0
    for row, clip in zip(features, clip_indices):
        digest = hashlib.sha256(int(clip).to_bytes(8, "little", signed=True))
        digest.update(row.astype("<f8", copy=False).tobytes())
        total += int.from_bytes(digest.digest(), "big")
    return total % HASH_MODULUS


def _union_clips(clips: np.ndarray, groups: np.ndarray, more_clips: np.ndarray,
                 more_groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique clips, the group of each) of both; a clip with two groups is an error."""
    all_clips = np.concatenate([clips, more_clips])
    all_groups = np.concatenate([groups, more_groups])
    unique, first, inverse = np.unique(all_clips, return_index=True, return_inverse=True)
    kept = all_groups[first]
    expected = kept[inverse.reshape(-1)]
    clash = np.flatnonzero(all_groups != expected)
    if clash.size:
        row = clash[0]
        raise ValueError(f"clip {all_clips[row]} is in group {expected[row]} and group "
                         f"{all_groups[row]}: the frames of a clip must share one block")
    return unique, kept


def _add_outer_lower(target: np.ndarray, rows: np.ndarray) -> None:
    """target's lower triangle += rows^T rows, in place."""
    # target.T is Fortran-ordered, so dsyrk writes into it; its upper is target's lower.
    updated = blas.dsyrk(1.0, rows.T, beta=1.0, c=target.T, trans=0, lower=0, overwrite_c=1)
    if not np.may_share_memory(updated, target):
        target[...] = np.tril(updated.T)


class FeatureStats:
    """Float64 count / sum / outer-product sums of d-dimensional features, in per-clip blocks."""

    def __init__(self, dim: int, n_blocks: int = DEFAULT_N_BLOCKS, metadata: dict | None = None):
        if int(dim) < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if int(n_blocks) < 0:
            raise ValueError(f"n_blocks must be >= 0 (0 disables blocks), got {n_blocks}")
        self.dim = int(dim)
        self.n_blocks = int(n_blocks)
        self.metadata = dict(metadata or {})
        n_acc = max(self.n_blocks, 1)  # without blocks, one accumulator holds everything
        self._count = np.zeros(n_acc, dtype=np.int64)
        self._sum = np.zeros((n_acc, self.dim))
        self._outer_lower = np.zeros((n_acc, self.dim, self.dim))
        self.clip_indices = np.zeros(0, dtype=np.int64)  # sorted, unique
        self.clip_groups = np.zeros(0, dtype=np.int64)   # the group of each of clip_indices
        self._hash_acc = 0

    @property
    def detector(self):
        return self.metadata.get("detector")

    @property
    def inputs_hash(self) -> str:
        return f"{self._hash_acc:064x}"

    @property
    def count(self) -> int:
        return int(self._count.sum())

    @property
    def sum(self) -> np.ndarray:
        return self._sum.sum(axis=0)

    @property
    def outer(self) -> np.ndarray:
        """Sum of x x^T over all rows, as a full symmetric matrix."""
        return full_from_lower(self._outer_lower.sum(axis=0))

    @property
    def block_count(self) -> np.ndarray:
        return self._count[:self.n_blocks].copy()

    @property
    def block_sum(self) -> np.ndarray:
        return self._sum[:self.n_blocks].copy()

    @property
    def block_outer_lower(self) -> np.ndarray:
        """[n_blocks, d, d] block sums of x x^T in the lower triangles (upper zero); a view."""
        return self._outer_lower[:self.n_blocks]

    def update(self, features: np.ndarray, clip_index, source: str = "", group=None) -> None:
        """Add rows of `features` [n, d]; `clip_index` is one int for all rows or one per row.

        Rows go to block `group % n_blocks`; `group` (like `clip_index`) defaults to the clip
        index. The views of one scene pass the scene's index as their group."""
        what = f"features from {source!r}" if source else "features"
        features = np.asarray(features)
        if features.ndim != 2:
            raise ValueError(f"{what}: expected a 2-D array [n, {self.dim}], "
                             f"got shape {features.shape}")
        if features.shape[1] != self.dim:
            raise ValueError(f"{what}: expected dim {self.dim}, got {features.shape[1]} "
                             f"(shape {features.shape})")
        features = features.astype(np.float64, copy=False)
        clips = self._clip_array(clip_index, features.shape[0], what)
        groups = clips if group is None else self._clip_array(group, len(clips), what, "group")
        finite_rows = np.isfinite(features).all(axis=1)
        if not finite_rows.all():
            bad = int(np.flatnonzero(~finite_rows)[0])
            raise ValueError(f"{what}: row {bad} (clip {clips[bad]}) contains NaN or Inf "
                             f"({int((~finite_rows).sum())} bad rows of {len(features)})")
        if len(features) == 0:
            return
        clip_indices, clip_groups = _union_clips(self.clip_indices, self.clip_groups, clips,
                                                 groups)
        accumulators = groups % self.n_blocks if self.n_blocks else np.zeros_like(groups)
        for acc in np.unique(accumulators):
            part = features[accumulators == acc]
            _add_outer_lower(self._outer_lower[acc], part)
            self._sum[acc] += part.sum(axis=0)
            self._count[acc] += len(part)
        self.clip_indices, self.clip_groups = clip_indices, clip_groups
        self._hash_acc = (self._hash_acc + _row_hashes_sum(features, clips)) % HASH_MODULUS

    def _clip_array(self, clip_index, n_rows: int, what: str,
                    name: str = "clip_index") -> np.ndarray:
        clips = np.asarray(clip_index)
        if clips.ndim == 0:
            clips = np.full(n_rows, clips)
        if clips.shape != (n_rows,):
            raise ValueError(f"{what}: {name} must be an int or one index per row "
                             f"({n_rows}), got shape {clips.shape}")
        if clips.size and not np.issubdtype(clips.dtype, np.integer):
            raise ValueError(f"{what}: {name} must be integers, got dtype {clips.dtype}")
        clips = clips.astype(np.int64)
        if clips.size and clips.min() < 0:
            raise ValueError(f"{what}: {name} must be >= 0, got {clips.min()}")
        return clips

    def merge(self, other: FeatureStats) -> FeatureStats:
        """New stats holding both inputs; associative and independent of order."""
        if not isinstance(other, FeatureStats):
            raise TypeError(f"can only merge FeatureStats, got {type(other).__name__}")
        if (self.dim, self.n_blocks) != (other.dim, other.n_blocks):
            raise ValueError(f"cannot merge stats of dim {self.dim} / n_blocks {self.n_blocks} "
                             f"with dim {other.dim} / n_blocks {other.n_blocks}")
        for key in IDENTITY_KEYS:
            if self.metadata.get(key) != other.metadata.get(key):
                raise ValueError(f"cannot merge stats with different metadata {key!r}: "
                                 f"{self.metadata.get(key)!r} vs {other.metadata.get(key)!r}")
        # Other metadata survives only where both sides agree, so the result is order-free.
        shared = {k: v for k, v in self.metadata.items()
                  if k in other.metadata and other.metadata[k] == v}
        merged = FeatureStats(self.dim, self.n_blocks, shared)
        merged._count = self._count + other._count
        merged._sum = self._sum + other._sum
        merged._outer_lower = self._outer_lower + other._outer_lower
        merged.clip_indices, merged.clip_groups = _union_clips(
            self.clip_indices, self.clip_groups, other.clip_indices, other.clip_groups)
        merged._hash_acc = (self._hash_acc + other._hash_acc) % HASH_MODULUS
        return merged

    def mean(self) -> np.ndarray:
        if self.count < 1:
            raise ValueError("mean of an empty FeatureStats (no feature vectors were added)")
        return self.sum / self.count

    def cov(self) -> np.ndarray:
        """Unbiased covariance (ddof 1), as numpy.cov(rowvar=False) and pytorch-fid compute it."""
        if self.count < 2:
            raise ValueError(f"covariance needs at least 2 feature vectors, got {self.count}")
        return covariance_from_moments(self.count, self.sum, self.outer)

    def save(self, path) -> Path:
        """Write atomically (temp file in the same folder, fsync, rename) as .npz.

        `outer` is stored full; `block_outer_lower` as kept in memory (lower triangles), for
        the non-empty blocks only (their indices in `filled_blocks`).
        """
        path = Path(path)
        grouped = not np.array_equal(self.clip_groups, self.clip_indices)
        header = {"schema_version": GROUPED_SCHEMA_VERSION if grouped else SCHEMA_VERSION,
                  "dim": self.dim, "n_blocks": self.n_blocks,
                  "n": self.count, "n_clips": int(self.clip_indices.size),
                  "inputs_hash": self.inputs_hash, "detector": self.detector,
                  "protocol_hash": self.metadata.get("protocol_hash"), "metadata": self.metadata}
        filled = np.flatnonzero(self.block_count > 0)
        arrays = {"count": np.int64(self.count), "sum": self.sum, "outer": self.outer,
                  "block_count": self.block_count, "block_sum": self.block_sum,
                  "filled_blocks": filled, "block_outer_lower": self.block_outer_lower[filled],
                  "clip_indices": self.clip_indices,
                  "header": np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)}
        if grouped:
            arrays["clip_groups"] = self.clip_groups
        with atomic_open(path, "wb") as handle:
            np.savez(handle, **arrays)
        _fsync_directory(path.parent)
        return path

    @classmethod
    def load(cls, path) -> FeatureStats:
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as archive:
                missing = [key for key in ARRAY_KEYS if key not in archive.files]
                if missing:
                    raise StatsFileError(f"{path}: not a FeatureStats file (missing {missing})")
                arrays = {key: archive[key] for key in ARRAY_KEYS}
                for key in ("filled_blocks", "clip_groups"):
                    if key in archive.files:
                        arrays[key] = archive[key]
            header = json.loads(arrays["header"].tobytes().decode())
        except StatsFileError:
            raise
        except (OSError, EOFError, ValueError, zipfile.BadZipFile, UnicodeDecodeError) as err:
            raise StatsFileError(f"{path}: cannot read FeatureStats file: {err}") from err
        return cls._from_arrays(path, header, arrays)

    @classmethod
    def _from_arrays(cls, path: Path, header: dict, arrays: dict) -> FeatureStats:
        version = header.get("schema_version") if isinstance(header, dict) else None
        if version not in READABLE_VERSIONS:
            raise StatsFileError(f"{path}: schema version {version!r}, this code reads "
                                 f"versions {READABLE_VERSIONS}")
        try:
            stats = cls(header["dim"], header["n_blocks"], header["metadata"])
            stats._hash_acc = int(header["inputs_hash"], 16)
        except (KeyError, TypeError, ValueError) as err:
            raise StatsFileError(f"{path}: bad header {header!r}: {err}") from err
        d, k = stats.dim, stats.n_blocks
        filled = arrays.get("filled_blocks", np.arange(k)).astype(np.int64).reshape(-1)
        if filled.size and (filled.min() < 0 or filled.max() >= k):
            raise StatsFileError(f"{path}: filled_blocks {filled.tolist()} outside 0..{k - 1}")
        expected = {"count": (), "sum": (d,), "outer": (d, d), "block_count": (k,),
                    "block_sum": (k, d), "block_outer_lower": (filled.size, d, d)}
        for key, shape in expected.items():
            if arrays[key].shape != shape:
                raise StatsFileError(f"{path}: {key} has shape {arrays[key].shape}, "
                                     f"expected {shape} for dim {d}, n_blocks {k}")
        count = int(arrays["count"])
        if count != header.get("n"):
            raise StatsFileError(f"{path}: count {count} != header n {header.get('n')}")
        if k:
            stats._count = arrays["block_count"].astype(np.int64)
            stats._sum = arrays["block_sum"].astype(np.float64, copy=False)
            stats._outer_lower[filled] = np.tril(arrays["block_outer_lower"])
            if np.any(stats._count[np.setdiff1d(np.arange(k), filled)]):
                raise StatsFileError(f"{path}: a block with rows is missing from filled_blocks")
        else:
            stats._count = np.array([count], dtype=np.int64)
            stats._sum = arrays["sum"].astype(np.float64, copy=False)[None]
            stats._outer_lower = np.tril(arrays["outer"].astype(np.float64, copy=False))[None]
        if stats.count != count:
            raise StatsFileError(f"{path}: block counts sum to {stats.count}, total is {count}")
        stats.clip_indices = arrays["clip_indices"].astype(np.int64).reshape(-1)
        stats.clip_groups = stats.clip_indices.copy()
        if version == GROUPED_SCHEMA_VERSION:
            groups = arrays.get("clip_groups", np.zeros(0)).astype(np.int64).reshape(-1)
            if groups.shape != stats.clip_indices.shape:
                raise StatsFileError(f"{path}: clip_groups has {groups.size} entries for "
                                     f"{stats.clip_indices.size} clips")
            stats.clip_groups = groups
        return stats


def _fsync_directory(folder: Path) -> None:
    """Make the rename durable; some filesystems cannot open a directory, which is fine."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
