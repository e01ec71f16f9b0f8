"""Training throughput benchmark: a smoke-scale stage 1c run (variant "ours", small preset,
synthetic data, CPU unless CUDA is there), reporting steps/s, samples/s and the data-wait
fraction (time blocked waiting for the next batch / total step time; target <= 0.10).

    python -m maskgwm.train.bench --out results/bench/train.json [--steps 30] [--workers 1]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from evals.atomic import atomic_write_json
from evals.commit import bench_provenance
from maskgwm.config.resolve import resolve_run_config
from maskgwm.config.schema import to_dict
from maskgwm.train.metrics import rates, read_rows
from maskgwm.train.options import TrainOptions
from maskgwm.train.trainer import Trainer

TARGET_DATA_WAIT = 0.10
# a whole training run: synthetic data, loader and latent cache, model, objective, config
MEASURES = ("maskgwm/train/", "maskgwm/model/", "maskgwm/data/", "maskgwm/config/")


def bench(out: Path, steps: int, workers: int, threads: int | None, work: Path,
          argv: list[str] | None = None) -> dict:
    if threads:
        torch.set_num_threads(threads)
    config = resolve_run_config("1c", "smoke", "ours", {"stage.steps": steps})
    options = TrainOptions(workers=workers, checkpoint_every=0, log_every=10,
                           cache_dir=str(work / "cache"))
    started = time.perf_counter()
    trainer = Trainer(config, work / "run", options=options)
    result = trainer.run()
    wall = time.perf_counter() - started
    rows = read_rows(work / "run", trainer.step)
    summary = json.loads((work / "run" / "summary.json").read_text())
    overall = rates(rows, config.stage.batch_size)
    steady = rates(rows[1:], config.stage.batch_size)
    p = trainer.model.preset
    report = {
        "benchmark": "train stage 1c, variant ours, smoke scale (synthetic data)",
        **bench_provenance("-m maskgwm.train.bench", MEASURES, argv),
        "model_weights": (f"random initialisation ({config.scale} scale, seed {config.seed}) "
                          "and the random ci/smoke VAE: a throughput benchmark on synthetic "
                          "data; no detector, no samples scored"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(trainer.device),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None},
        "shapes": {"preset": p.name, "parameters": sum(x.numel() for x in
                                                       trainer.model.parameters()),
                   "global_batch": config.stage.batch_size, "frames": config.data.frames,
                   "views": config.data.views, "image": [config.data.width, config.data.height],
                   "latent": [16, config.data.height // 8, config.data.width // 8]},
        "options": {"workers": workers, "latent_cache": options.latent_cache,
                    "activation_checkpointing": options.activation_checkpointing},
        "steps_per_s": overall["steps_per_s"], "samples_per_s": overall["samples_per_s"],
        "data_wait_fraction": overall["data_wait_fraction"],
        "data_wait_target": TARGET_DATA_WAIT,
        "meets_target": overall["data_wait_fraction"] <= TARGET_DATA_WAIT,
        "excluding_first_step": steady,
        "cold_cache": "the latent cache starts empty: each clip is encoded once, in a worker",
        "wall_s_including_setup": wall, "peak_memory_bytes": summary["peak_memory_bytes"],
        "peak_memory_kind": summary["peak_memory_kind"], "status": result["status"],
        "config": to_dict(config)}
    atomic_write_json(out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskgwm.train.bench")
    parser.add_argument("--out", default="results/bench/train.json")
    parser.add_argument("--steps", type=int, default=30, help="stage 1c steps (smoke: 30)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--work", help="run folder (default: a temporary one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        report = bench(Path(args.out), args.steps, args.workers, args.threads,
                       Path(args.work) if args.work else Path(tmp), argv)
    print(f"steps_per_s {report['steps_per_s']:.3f}  samples_per_s "
          f"{report['samples_per_s']:.3f}  data_wait_fraction "
          f"{report['data_wait_fraction']:.3f} (target <= {TARGET_DATA_WAIT}; "
          f"excluding step 1: {report['excluding_first_step']['data_wait_fraction']:.3f})  "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
