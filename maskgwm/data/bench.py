"""Loader throughput: decoded clips/s with 0, 1 and 2 workers, frames cropped and resized to
512x288 (the paper's resolution) from 1280x720 JPEGs (OpenDV-2K's YouTube frames are 720p+).

    python -m maskgwm.data.bench [--out results/bench/data.json]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from evals.bench import emit, provenance

from .loader import ClipDataset, Source, make_loader
from .manifest import ClipManifest, ClipRecord

MEASURES = ("maskgwm/data/bench.py", "maskgwm/data/loader.py", "maskgwm/data/manifest.py")


def write_jpeg_clips(root: Path, n_clips: int, n_frames: int, size: tuple[int, int],
                     seed: int = 0) -> ClipManifest:
    rng = np.random.default_rng(seed)
    clips = []
    for c in range(n_clips):
        coarse = rng.integers(0, 256, (size[1] // 40, size[0] // 40, 3)).astype(np.uint8)
        base = np.kron(coarse, np.ones((40, 40, 1), np.uint8))
        refs = []
        for t in range(n_frames):
            ref = f"clip{c:03d}/{t:06d}.jpg"
            (root / ref).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.roll(base, 8 * t, axis=1)).save(root / ref, quality=90)
            refs.append([ref])
        clips.append(ClipRecord(f"clip{c:03d}", "bench", "train", f"s{c}", ["CAM_FRONT"], refs,
                                [t * 100_000 for t in range(n_frames)], 10.0))
    return ClipManifest("bench", str(root), clips)


def bench_loader(workers_list=(0, 1, 2), n_frames: int = 16, batch_size: int = 2,
                 batches: int = 6, width: int = 512, height: int = 288) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_jpeg_clips(root, 4, n_frames, (1280, 720))
        result = {}
        for workers in workers_list:
            dataset = ClipDataset([Source(manifest, root)], n_frames, width, height,
                                  length=batch_size * batches, seed=0)
            start = time.perf_counter()
            for _ in make_loader(dataset, batch_size, workers):
                pass
            seconds = time.perf_counter() - start
            result[f"clips_per_s_workers{workers}"] = batch_size * batches / seconds
        result.update(frames_per_clip=n_frames, source_size=[1280, 720], out_size=[width, height],
                      clips_measured=batch_size * batches,
                      note="includes worker start-up; JPEG decode + centre crop + LANCZOS")
        return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    emit({**bench_loader(), **provenance("-m maskgwm.data.bench", MEASURES, argv)},
         args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
