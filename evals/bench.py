"""Benchmarks of the evaluators, as ratios measured in one run (these machines are noisy).

- `bench_frechet`: our Frechet distance against the scipy.linalg.sqrtm formula pytorch-fid uses;
- `bench_pipeline`: detector throughput (images/s, clips/s) and the whole pipeline (reading
  PNG frames, selecting, resizing, detectors, statistics) against the detectors' bare forward
  passes on already-resized input.

    python -m evals.bench [--out results/bench/evals.json] [--device cuda]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.linalg

from .atomic import atomic_write_text
from .commit import bench_provenance
from .frechet import frechet_distance

MEASURES = ("evals/",)   # the Frechet distance and the whole extraction pipeline


def _pytorch_fid_sqrtm(matrix: np.ndarray) -> np.ndarray:
    """sqrtm(matrix, disp=False) as pytorch-fid calls it (with its error estimate), where the
    installed scipy still takes `disp` (deprecated in 1.16, removed in 1.18)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm's singular-matrix and deprecation notices
        try:
            root, _ = scipy.linalg.sqrtm(matrix, disp=False)
        except TypeError:
            root = scipy.linalg.sqrtm(matrix)
    return root


def frechet_distance_scipy_sqrtm(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """The pytorch-fid formula: sqrtm of sigma1 @ sigma2, offset retry, real part of the trace."""
    diff = mu1 - mu2
    covmean = _pytorch_fid_sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _pytorch_fid_sqrtm((sigma1 + offset).dot(sigma2 + offset))
    covmean = np.real(covmean)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def random_gaussian_stats(dim: int, n: int, rng: np.random.Generator):
    """Mean and full-rank covariance of n > dim correlated random features."""
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    features = rng.standard_normal((n, dim)) @ mixing + rng.standard_normal(dim)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _blas_info():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed"
    return [{key: pool.get(key) for key in ("internal_api", "version", "num_threads",
                                            "threading_layer", "architecture", "filepath")}
            for pool in threadpool_info()]


def _timed(function, *args):
    start = time.perf_counter()
    value = function(*args)
    return value, time.perf_counter() - start


def bench_frechet(dim: int = 2048, n: int | None = None, seed: int = 0, repeats: int = 5) -> dict:
    """Time scipy's sqrtm path once and ours `repeats` times (median) on the same inputs."""
    n = 2 * dim if n is None else n
    if n <= dim:
        raise ValueError(f"n must exceed dim for full-rank covariances, got n={n}, dim={dim}")
    rng = np.random.default_rng(seed)
    mu1, sigma1 = random_gaussian_stats(dim, n, rng)
    mu2, sigma2 = random_gaussian_stats(dim, n, rng)
    frechet_distance(mu1, sigma1, mu2, sigma2)  # warm-up: thread pools, page faults
    ours_runs = [_timed(frechet_distance, mu1, sigma1, mu2, sigma2) for _ in range(repeats)]
    ours_value = ours_runs[0][0]
    ours_s = float(np.median([seconds for _, seconds in ours_runs]))
    scipy_value, scipy_s = _timed(frechet_distance_scipy_sqrtm, mu1, sigma1, mu2, sigma2)
    return {
        f"frechet_speedup_vs_scipy_d{dim}": scipy_s / ours_s,
        "frechet_ours_s": ours_s,
        "frechet_ours_min_s": float(min(seconds for _, seconds in ours_runs)),
        "frechet_scipy_s": scipy_s,
        "frechet_rel_diff": abs(ours_value - scipy_value) / abs(scipy_value),
        "frechet_value": ours_value,
        "dim": dim, "n": n, "seed": seed, "repeats": repeats,
        "scipy_version": scipy.__version__,
        "numpy_version": np.__version__,
        "blas": _blas_info(),
    }


def bench_pipeline(n_clips: int = 4, frames: int = 16, width: int = 512, height: int = 288,
                   device: str = "cpu", seed: int = 0, repeats: int = 3) -> dict:
    """Pipeline time over the bare detector forward passes for the same frames and clips."""
    import torch

    from .extractors import build_extractors
    from .frames import fid_frames, fvd_frames
    from .pipeline import extract
    from .protocols import get_protocol
    from .resize import preprocess_clips, resize_frames
    from .videoset import write_videoset

    protocol = get_protocol("opendv_ablation").replace(
        n_clips=n_clips, frames_per_clip=frames, **{"fid.frames_per_clip": 0,
                                                     "bootstrap.blocks": 2})
    rng = np.random.default_rng(seed)
    fid_x, fvd_x, _ = build_extractors(protocol, None, device)
    with tempfile.TemporaryDirectory() as tmp:
        clips = [(f"c{i}", rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8))
                 for i in range(n_clips)]
        videoset = write_videoset(Path(tmp) / "set", clips, fps=10, cond_frames=1)
        ids = [c.clip_id for c in videoset.clips]
        data = [videoset.read(entry) for entry in videoset.clips]
        images = np.concatenate([clip[fid_frames(protocol, i, 0)]
                                 for i, clip in enumerate(data)])
        videos = np.stack([clip[fvd_frames(protocol, i, 0)] for i, clip in enumerate(data)])
        images_in = resize_frames(images, 299, protocol.fid.resize).to(device)
        videos_in = preprocess_clips(videos, 224, method=protocol.fvd.resize).to(device)

        def bare(inputs, extractor) -> float:
            start = time.perf_counter()
            with torch.no_grad():
                for b in range(0, len(inputs), extractor.batch_size):
                    extractor.module(inputs[b:b + extractor.batch_size])
            return time.perf_counter() - start

        def pipeline() -> float:
            start = time.perf_counter()
            extract(protocol, {"gen": videoset}, ids, (fid_x, fvd_x), progress=False)
            return time.perf_counter() - start

        pipeline(), bare(images_in, fid_x), bare(videos_in, fvd_x)   # warm-up
        timings = [(pipeline(), bare(images_in, fid_x), bare(videos_in, fvd_x))
                   for _ in range(repeats)]   # interleaved, so drift hits both alike
    pipeline_s = min(t[0] for t in timings)
    inception_s, i3d_s = min(t[1] for t in timings), min(t[2] for t in timings)
    return {
        "pipeline_overhead_vs_detector": pipeline_s / (inception_s + i3d_s),
        "pipeline_s": pipeline_s, "detector_forward_s": inception_s + i3d_s,
        "inception_images_per_s": len(images) / inception_s,
        "i3d_clips_per_s": len(videos) / i3d_s, "i3d_frames_per_clip": videos.shape[1],
        "pipeline_images": len(images), "pipeline_clips": len(videos),
        "frame_size": [height, width], "device": device, "repeats_min_of": repeats,
        "detectors": "seeded random weights (same architecture and cost as the official ones)",
    }


def provenance(invocation: str, measures: tuple[str, ...],
               argv: list[str] | None = None) -> dict:
    """Where a benchmark ran: the commit, the code it measured, its command and the machine."""
    return {**bench_provenance(invocation, measures, argv),
            "machine": {"platform": platform.platform(), "processor": platform.processor(),
                        "cpus": os.cpu_count()}}


def emit(result: dict, out: str | None) -> None:
    """Print a benchmark record as JSON and, with `out`, write it atomically."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if out:
        atomic_write_text(out, text + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="write the JSON here (e.g. results/bench/evals.json)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    emit({**bench_frechet(), **bench_pipeline(device=args.device),
          **provenance("-m evals.bench", MEASURES, argv)}, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
