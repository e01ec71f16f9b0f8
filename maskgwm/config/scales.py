"""What a scale decides, in one record per scale, loaded from scales.toml: its config overrides,
training options, evaluation sampling and job limits, evaluation set sizes, and whether its
inputs are synthetic (built-in data, random weights and detectors, Vista's test double) or real
(user-given, checked before submitting)."""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from .schema import ConfigError

SCALES_FILE = Path(__file__).resolve().with_name("scales.toml")
INPUTS = ("synthetic", "real")


@dataclass(frozen=True)
class Sampling:
    """Evaluation sampling of our runs, and the sample and score jobs."""
    steps: int
    guidance: float
    shards: int
    seed: int
    sample_hours: float
    score_hours: float


@dataclass(frozen=True)
class EvalSetSizes:
    """A synthetic scale's evaluation sets: clips scored (multi-view: `mview_scenes` x 6
    views), frame size, rollout rounds of long-horizon protocols, bootstrap resamples and clip
    blocks, KID subset, FID and FVD frames per clip (at most the clip's)."""
    n_clips: int
    width: int
    height: int
    long_rounds: int
    n_boot: int
    blocks: int
    kid_subset: int
    fid_frames: int
    fvd_frames: int
    mview_scenes: int


@dataclass(frozen=True)
class Scale:
    name: str
    description: str
    inputs: str                               # "synthetic" | "real"
    sampling: Sampling
    train: dict[str, Any] = field(default_factory=dict)       # maskgwm.train.TrainOptions
    overrides: dict[str, Any] = field(default_factory=dict)   # config, every stage
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)   # config, per stage
    evalset: EvalSetSizes | None = None       # None: each protocol unchanged (real scales)
    resources_from: str | None = None         # job files may leave this scale's resources out

    @property
    def synthetic(self) -> bool:
        """Built-in synthetic data, randomly initialised SD3 blocks and VAE, seeded
        random-weights detectors (labelled), the Vista test double; nothing to check."""
        return self.inputs == "synthetic"

    @property
    def checked(self) -> bool:
        """Real inputs from user-given paths, checked before anything is submitted."""
        return self.inputs == "real"


def _load() -> dict[str, Scale]:
    try:
        with open(SCALES_FILE, "rb") as handle:
            table = tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{SCALES_FILE}: not valid TOML: {err}") from None
    scales = {}
    for name, body in table.items():
        where = f"{SCALES_FILE} [{name}]"
        try:
            body = dict(body)
            inputs = body.pop("inputs")
            if inputs not in INPUTS:
                raise ConfigError(f"{where}: inputs = '{inputs}' (known: {', '.join(INPUTS)})")
            sampling = Sampling(**body.pop("sampling"))
            sizes = body.pop("evalset", None)
            evalset = EvalSetSizes(**sizes) if sizes is not None else None
            if (evalset is None) == (inputs == "synthetic"):
                raise ConfigError(f"{where}: `evalset` sizes are for synthetic scales only, "
                                  "and every synthetic scale needs them")
            scales[name] = Scale(name=name, inputs=inputs, sampling=sampling,
                                 evalset=evalset, **body)
        except (KeyError, TypeError) as err:
            fields = ", ".join(f.name for f in dataclasses.fields(Scale))
            raise ConfigError(f"{where}: {err} (a scale has {fields})") from None
    for scale in scales.values():
        source = scales.get(scale.resources_from) if scale.resources_from else None
        if scale.resources_from and (source is None or source.resources_from):
            raise ConfigError(f"{SCALES_FILE} [{scale.name}]: resources_from = "
                              f"'{scale.resources_from}' must name a scale whose resources "
                              "job files give")
    return scales


@cache
def all_scales() -> dict[str, Scale]:
    """Every scale, smallest first (the file's order)."""
    return _load()


def get_scale(name: str) -> Scale:
    try:
        return all_scales()[name]
    except KeyError:
        raise ConfigError(f"unknown scale '{name}' (known: {', '.join(all_scales())})") from None


SCALES = tuple(all_scales())
