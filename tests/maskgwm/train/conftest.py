"""Trainer tests at the ci scale: one cache of synthetic data and latents per session, torch on
one thread, and `kit`: run configs, trainer options and a finished run's outputs."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from maskgwm.config.resolve import resolve_run_config
from maskgwm.config.schema import RunConfig
from maskgwm.model.model_file import load_model
from maskgwm.train.options import TrainOptions


@dataclass(frozen=True)
class TrainerKit:
    cache_dir: str

    @staticmethod
    def config(stage: str = "1c", variant: str = "ours", **overrides) -> RunConfig:
        return resolve_run_config(stage, "ci", variant, overrides)

    def options(self, cache: str | None = None, **fields) -> TrainOptions:
        """One worker-less process, no periodic checkpoints, the shared cache (or `cache`)."""
        return TrainOptions(**{"workers": 0, "cache_dir": cache or self.cache_dir,
                               "checkpoint_every": 0, "log_every": 100, **fields})

    @staticmethod
    def losses(out: Path) -> dict[int, float]:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return {row["step"]: row["loss"] for row in rows}

    @staticmethod
    def final_state(out: Path) -> dict[str, torch.Tensor]:
        return load_model(out / "model.pt")[0].state_dict()


@pytest.fixture(scope="session")
def train_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("train-cache"))


@pytest.fixture
def kit(train_cache, one_thread) -> TrainerKit:
    return TrainerKit(train_cache)
