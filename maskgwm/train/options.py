"""Trainer options: operational settings that do not change a run's results.

Checkpoint cadence, workers, strategy, activation checkpointing, compile, device and caches
leave the per-step losses unchanged up to floating-point reduction order, so a run is its
config alone (`run_identity`, `run_hash`); what changes results (the EMA included,
`optim.ema_decay`) is a config field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskgwm.config.schema import (RunConfig, apply_overrides, content_hash, to_dict,
                                   validate)

STRATEGIES = ("ddp", "fsdp")


@dataclass
class TrainOptions:
    checkpoint_every: int = 1000       # steps between periodic checkpoints (0: only at stop/end)
    keep_last: int = 3                 # checkpoints kept (older ones deleted); 0 keeps all
    drop_checkpoints_when_done: bool = False   # once model.pt is written (smoke: saves disk)
    log_every: int = 10                # steps between progress lines (metrics: every step)
    sample_every: int = 0              # steps between sample videos (0: off)
    sample_steps: int = 10             # Euler steps of those samples
    workers: int = 2                   # DataLoader worker processes
    strategy: str = "ddp"              # ddp | fsdp (multi-process only; distributed.wrap)
    activation_checkpointing: bool = False
    compile: bool = False              # regional torch.compile (MaskGWMDiT.compile_blocks)
    device: str | None = None          # None: cuda:<local rank> when CUDA is available, else cpu
    latent_cache: bool = True          # cache each clip's VAE latents (CPU path; float32)
    cache_dir: str | None = None       # synthetic data + latent cache (default <out>/cache)
    threads: int | None = None         # torch intra-op threads on CPU (None: leave as is)

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"TrainOptions.strategy = {self.strategy!r}: expected one of "
                             f"{', '.join(STRATEGIES)}")
        for name in ("checkpoint_every", "keep_last", "log_every", "sample_every", "workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainOptions.{name} must be >= 0")
        for name in ("sample_steps", "threads"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"TrainOptions.{name} must be >= 1")

    def cache_root(self, out_dir: Path) -> Path:
        return Path(self.cache_dir) if self.cache_dir else Path(out_dir) / "cache"


def run_identity(config: RunConfig) -> dict[str, Any]:
    """What makes a run this run: checkpoints and summary.json hold it under these keys."""
    return {"config": to_dict(config)}


def run_hash(config: RunConfig) -> str:
    """The hash a checkpoint must carry to be resumed by this run."""
    return content_hash(run_identity(config)["config"])


def env_path(value: str | os.PathLike | None, env: str) -> Path | None:
    """`value`, else the environment variable `env`, else None."""
    if value:
        return Path(value)
    found = os.environ.get(env)
    return Path(found) if found else None


def config_from_dict(data: dict[str, Any], where: str = "run config") -> RunConfig:
    """A RunConfig from `to_dict(config)` (e.g. a run spec's "config"), checked."""
    config = RunConfig()
    apply_overrides(config, data, where)
    validate(config, where)
    return config
