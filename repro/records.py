"""What a job reads: a run's `runs/<id>/spec.json` (`RunRecord`) and an evaluation's
`runs/<id>/eval/<protocol>/spec.json` (`EvalRecord`), written at submit time, read by the jobs.

Both are dataclasses with a schema version; files written before the version field existed
read as version 1. In this package "spec" means a job file's run entry (`jobs.RunSpec`); these
are records. A Vista run's record carries what the user gave for Vista (`VistaFields`), so a
Slurm job on another node uses the same checkout, checkpoint, interpreter and CLIP weights.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_json, read_json


SCHEMA_VERSION = 1


class RecordError(ValueError):
    """A record file this version cannot read; the message names the file and the fix."""


@dataclass(frozen=True)
class VistaFields:
    """What Vista was given at submit time (flags, else REPRO_VISTA_* variables, read once by
    repro/vista/inputs.given_inputs) and, in an evaluation's record, the sample.py settings
    (repro/vista/staging.VistaSettings). Jobs run with these fields, not the environment."""
    checkout: str | None = None
    ckpt: str | None = None
    python: str | None = None
    clip: str | None = None
    allow_unpinned: bool = False
    sampler: dict[str, Any] | None = None      # overrides of n_steps, cfg_scale, cond_aug
    low_vram: bool = False
    settings: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VistaFields":
        data = dict(data)
        data["allow_unpinned"] = data.get("allow_unpinned") in (True, "1")
        return _build(cls, data, "vista")


class _Record:
    """JSON in and out for the records below (`where` names the file in errors)."""

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data.get("vista") is None:
            data.pop("vista", None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = ""):
        data = dict(data)
        if data.get("vista") is not None:
            data["vista"] = VistaFields.from_json(data["vista"])
        return _build(cls, data, where or cls.__name__)

    @classmethod
    def read(cls, path: Path):
        return cls.from_json(read_json(Path(path)), str(path))


@dataclass(frozen=True)
class RunRecord(_Record):
    run_id: str
    parent_id: str | None
    target: str
    name: str
    stage: str                       # 1a .. 3, or "vista"
    variant: str | None
    scale: str
    config: dict[str, Any]
    cells: list[str]
    protocol: str | None
    train_options: dict[str, Any] = field(default_factory=dict)
    vista: VistaFields | None = None
    submitted_from_commit: str = ""
    schema_version: int = SCHEMA_VERSION


@dataclass(frozen=True)
class EvalRecord(_Record):
    run_id: str
    target: str
    name: str
    stage: str
    scale: str
    protocol: str
    config_hash: str
    vae_seed: int
    workdir: str
    steps: int
    guidance: float
    shards: int
    seed: int
    vista: VistaFields | None = None
    submitted_from_commit: str = ""
    nodes: list[str] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION


def write_record(path: Path, record: RunRecord | EvalRecord) -> None:
    atomic_write_json(Path(path), record.to_json())


def _build(cls, data: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    version = data.get("schema_version", 1)
    if cls is not VistaFields and version > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema version {version}, this code reads up to "
                          f"{SCHEMA_VERSION}: update the suite, or submit again to rewrite it")
    unknown = sorted(set(data) - names)
    missing = sorted(f.name for f in dataclasses.fields(cls) if f.name not in data
                     and f.default is dataclasses.MISSING
                     and f.default_factory is dataclasses.MISSING)
    if unknown or missing:
        raise RecordError(f"{where}: not a {cls.__name__}"
                          + (f"; unknown fields {unknown}" if unknown else "")
                          + (f"; missing fields {missing}" if missing else "")
                          + ": submit the target again to rewrite it")
    return cls(**data)
