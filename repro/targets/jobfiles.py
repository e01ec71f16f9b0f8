"""Job-definition files (`slurm/<target>.toml`): schema, validating loader, and the run graph.

A target names runs (variant + config overrides at a training stage, with a parent run), the
protocol they are scored with, resources per scale and the paper cells each run fills. A run's
id is a hash of its fully resolved config and its parent's id, so runs that several targets
(or several cells) share resolve to one id and are trained once.

Seed replicas (`resolve_target(..., seeds=N)`, `repro submit TARGET --seeds N`): seed 0 is the
run as declared. For s = 1..N-1 every trained run that fills paper cells gets a replica named
`<name>-seed<s>` whose config seed is the job file's seed + s (training and sampling seeds
derive from it), forked from the same parent run as seed 0 (parents are never replicated).
A replica fills the same cells; `ResolvedRun.seed` is s.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

from evals.protocols import PROTOCOLS
from maskgwm.config import (PARENT_STAGE, SCALES, STAGES, ConfigError, content_hash,
                            resolve_run_config, to_dict, variant_names)
from maskgwm.config.scales import all_scales
from maskgwm.config.resolve import load_toml

from repro.targets import paper
from repro.paths import slurm_dir

TARGETS = ("table1", "table2", "table3a", "table3b", "table4a", "table4b", "table4c",
           "table5", "table6", "fig6", "fig7", "smoke")
EXTERNAL_STAGES = ("vista",)  # runs of an external program, no training
BASE_RUNS = {"stage1a": ("1a", None), "stage1b": ("1b", "stage1a")}  # the shared 1a -> 1b chain
BASE_VARIANT = "no-mr"
ALL = "all"                 # the union of every target but LEFT_OUT (`union_target`)
LEFT_OUT = ("smoke",)       # a demonstration target, not a paper table

RESOURCE_KEYS = {"nodes": int, "gpus_per_node": int, "cpus_per_task": int, "mem_gb": int,
                 "time_hours": (int, float)}
RESOURCE_OPTIONAL = {"partition": str, "tasks_per_node": int, "gpu_mem_gb": (int, float)}
TARGET_KEYS = {"title": str, "protocol": str}
TARGET_OPTIONAL = {"description": str}
RUN_KEYS = {"stage": str, "cells": list}
RUN_OPTIONAL = {"variant": str, "parent": str, "overrides": dict, "protocol": str, "seed": int,
                "note": str}


class JobFileError(ValueError):
    """A malformed job file; the message names the file and the key."""


class UnknownTarget(ValueError):
    pass


@dataclass(frozen=True)
class Resources:
    nodes: int
    gpus_per_node: int
    cpus_per_task: int
    mem_gb: int
    time_hours: float
    partition: str | None = None
    tasks_per_node: int | None = None   # training processes per node (default: one per GPU)
    gpu_mem_gb: float = 80.0            # each GPU's memory: the memory plan's capacity

    @property
    def gpus(self) -> int:
        return self.nodes * self.gpus_per_node

    @property
    def tasks(self) -> int:
        """Training processes per node: tasks_per_node, else one per GPU, else one."""
        return self.tasks_per_node or max(self.gpus_per_node, 1)


@dataclass(frozen=True)
class RunSpec:
    """A run as a job file declares it."""
    name: str
    stage: str
    variant: str | None
    parent: str | None
    cells: tuple[str, ...]
    protocol: str
    overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    seed: int = 0
    note: str = ""


@dataclass(frozen=True)
class Target:
    name: str
    path: Path
    title: str
    protocol: str
    description: str
    resources: dict[str, Resources]
    runs: dict[str, RunSpec]
    members: tuple["Target", ...] = ()     # a union of job files (`all`), no runs of its own

    def tables(self) -> list[str]:
        """Paper tables this target regenerates, in first-mention order."""
        if self.members:
            return list(dict.fromkeys(t for member in self.members for t in member.tables()))
        names = [self.name] if self.name in paper.PAPER_TABLES else []
        for run in self.runs.values():
            names += [cell.split("/")[0] for cell in run.cells]
        return list(dict.fromkeys(names))


@dataclass(frozen=True)
class ResolvedRun:
    """One run of a target at one scale, with its identity."""
    run_id: str
    name: str
    target: str
    stage: str
    variant: str | None
    scale: str
    parent_id: str | None
    config: dict[str, Any]
    cells: tuple[str, ...]
    protocol: str
    resources: Resources
    seed: int = 0  # replica index s: 0 is the run as declared, s >= 1 a seed replica of it
    targets: tuple[str, ...] = field(default=(), compare=False)  # in a union: who needs it

    @property
    def owners(self) -> tuple[str, ...]:
        """The targets that need this run (under this protocol): `targets` in a union, else
        the run's own target."""
        return self.targets or (self.target,)

    @property
    def steps(self) -> int:
        return self.config.get("stage", {}).get("steps", 0)

    @property
    def external(self) -> bool:
        return self.stage in EXTERNAL_STAGES


def _check_keys(where: str, table: Any, required: dict, optional: dict) -> None:
    if not isinstance(table, dict):
        raise JobFileError(f"{where}: expected a table, got {table!r}")
    for key in table:
        if key not in required and key not in optional:
            known = ", ".join(sorted({**required, **optional}))
            raise JobFileError(f"{where}: unknown key '{key}' (allowed: {known})")
    for key in required:
        if key not in table:
            raise JobFileError(f"{where}: missing required key '{key}'")
    for key, value in table.items():
        kind = {**required, **optional}[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise JobFileError(f"{where}: key '{key}' has the wrong type ({value!r})")


NAME = re.compile(r"^[A-Za-z0-9._-]+$")
"""Target, run and partition names: they reach job names, folders and sbatch options."""
RESOURCE_RANGES = {"nodes": (1, 4096), "gpus_per_node": (0, 64), "cpus_per_task": (1, 1024),
                   "mem_gb": (1, 65536), "time_hours": (1 / 60, 8760), "tasks_per_node": (1, 256),
                   "gpu_mem_gb": (1, 4096)}
"""Allowed (low, high) of each resource; 8760 h (365 days) bounds Slurm's time limit."""


def check_name(where: str, value: str) -> str:
    """`value` if it is a plain name (letters, digits, '.', '_', '-'), else a JobFileError."""
    if not NAME.match(value):
        raise JobFileError(f"{where} = {value!r}: use only letters, digits, '.', '_' and '-'")
    return value


def _check_resources(where: str, body: dict) -> None:
    for key, (low, high) in RESOURCE_RANGES.items():
        if key in body and not low <= body[key] <= high:
            shown = f"{low:g}" if key != "time_hours" else "1 minute (0.0167)"
            raise JobFileError(f"{where} {key} = {body[key]!r}: allowed {shown} to {high:g}")
    if "partition" in body:
        check_name(f"{where} partition", body["partition"])


def _check_protocol(where: str, name: str) -> None:
    if name not in PROTOCOLS:
        raise JobFileError(f"{where}: unknown protocol '{name}' (known: {', '.join(PROTOCOLS)})")


@cache
def _paper_cells(table: str) -> tuple[str, ...]:
    return tuple(paper.cells(table))


def _check_cells(where: str, cells: list) -> None:
    for cell in cells:
        table, _, cell_id = str(cell).partition("/")
        if table not in paper.PAPER_TABLES:
            raise JobFileError(f"{where}: cell '{cell}' names no paper table "
                               f"(use TABLE/CELL, tables: {', '.join(paper.PAPER_TABLES)})")
        if cell_id not in _paper_cells(table):
            raise JobFileError(f"{where}: '{cell_id}' is not a cell of {table} "
                               f"(cells: {', '.join(_paper_cells(table))})")


def _parse_run(path: Path, name: str, body: Any, default_protocol: str) -> RunSpec:
    where = f"{path} [runs.{name}]"
    _check_keys(where, body, RUN_KEYS, RUN_OPTIONAL)
    stage = body["stage"]
    if stage not in STAGES + EXTERNAL_STAGES:
        raise JobFileError(f"{where}: unknown stage '{stage}' "
                           f"(known: {', '.join(STAGES + EXTERNAL_STAGES)})")
    if name in BASE_RUNS:
        raise JobFileError(f"{where}: '{name}' is reserved for the shared base chain")
    if stage in EXTERNAL_STAGES:
        for key in ("variant", "parent", "overrides"):
            if key in body:
                raise JobFileError(f"{where}: key '{key}' does not apply to stage '{stage}'")
    else:
        if "variant" not in body:
            raise JobFileError(f"{where}: missing required key 'variant'")
        if body["variant"] not in variant_names():
            raise JobFileError(f"{where}: unknown variant '{body['variant']}' "
                               f"(known: {', '.join(variant_names())})")
        if stage != "1a" and "parent" not in body:
            raise JobFileError(f"{where}: missing required key 'parent' (stage {stage} starts "
                               f"from a stage-{PARENT_STAGE[stage]} run)")
    protocol = body.get("protocol", default_protocol)
    _check_protocol(f"{where} protocol", protocol)
    _check_cells(f"{where} cells", body["cells"])
    return RunSpec(name=name, stage=stage, variant=body.get("variant"),
                   parent=body.get("parent"), cells=tuple(body["cells"]), protocol=protocol,
                   overrides=body.get("overrides", {}), seed=body.get("seed", 0),
                   note=body.get("note", ""))


def _check_parents(path: Path, runs: dict[str, RunSpec]) -> None:
    for run in runs.values():
        if run.parent is None:
            continue
        if run.parent in runs:
            parent_stage = runs[run.parent].stage
        elif run.parent in BASE_RUNS:
            parent_stage = BASE_RUNS[run.parent][0]
        else:
            known = ", ".join(list(runs) + list(BASE_RUNS))
            raise JobFileError(f"{path} [runs.{run.name}]: unknown parent '{run.parent}' "
                               f"(known: {known})")
        if parent_stage != PARENT_STAGE[run.stage]:
            raise JobFileError(f"{path} [runs.{run.name}]: a stage-{run.stage} run starts from a "
                               f"stage-{PARENT_STAGE[run.stage]} run, but parent "
                               f"'{run.parent}' is stage {parent_stage}")


def load_target_file(path: Path) -> Target:
    """Load and validate one job file; every error names the file and the key."""
    path = Path(path)
    try:
        data = load_toml(path)
    except ConfigError as err:
        raise JobFileError(str(err)) from None
    _check_keys(str(path), data, {"target": dict, "resources": dict, "runs": dict}, {})
    _check_keys(f"{path} [target]", data["target"], TARGET_KEYS, TARGET_OPTIONAL)
    protocol = data["target"]["protocol"]
    _check_protocol(f"{path} [target] protocol", protocol)
    resources = {}
    for scale, body in data["resources"].items():
        if scale not in SCALES:
            raise JobFileError(f"{path} [resources]: unknown scale '{scale}' "
                               f"(known: {', '.join(SCALES)})")
        _check_keys(f"{path} [resources.{scale}]", body, RESOURCE_KEYS, RESOURCE_OPTIONAL)
        _check_resources(f"{path} [resources.{scale}]", body)
        tasks = body.get("tasks_per_node")
        if tasks is not None and (tasks < 1 or body["gpus_per_node"] not in (0, tasks)):
            raise JobFileError(f"{path} [resources.{scale}] tasks_per_node = {tasks}: give "
                               f"1 or more, and with GPUs one task per GPU (gpus_per_node = "
                               f"{body['gpus_per_node']}); leave it out for one per GPU")
        resources[scale] = Resources(**body)
    for scale in all_scales().values():   # e.g. lite uses paper's, ci smoke's
        if scale.resources_from is None and scale.name not in resources:
            raise JobFileError(f"{path}: missing required table [resources.{scale.name}]")
    for scale in all_scales().values():
        if scale.resources_from is not None:
            resources.setdefault(scale.name, resources[scale.resources_from])
    if not data["runs"]:
        raise JobFileError(f"{path}: [runs] is empty; a target names at least one run")
    check_name(f"{path}: the target name (the file's name)", path.stem)
    for name in data["runs"]:
        check_name(f"{path} [runs.{name}]: the run name", name)
    runs = {name: _parse_run(path, name, body, protocol) for name, body in data["runs"].items()}
    _check_parents(path, runs)
    target = Target(name=path.stem, path=path, title=data["target"]["title"], protocol=protocol,
                    description=data["target"].get("description", ""), resources=resources,
                    runs=runs)
    for scale in SCALES:  # surfaces bad overrides now, not at submit time
        resolve_target(target, scale)
    return target


def default_scale(target: str, scale: str | None) -> str:
    """The scale asked for, else `smoke` for the smoke target and `paper` for the others."""
    return scale or ("smoke" if target == "smoke" else "paper")


def load_target(name: str, directory: Path | None = None) -> Target:
    """The job file `<directory>/<name>.toml`, or for `all` the union of every job file but
    `smoke` (`union_target`)."""
    if name == ALL:
        return union_target(directory)
    directory = directory or slurm_dir()
    path = directory / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) + ", all"
        raise UnknownTarget(f"unknown target '{name}' (known: {known})")
    return load_target_file(path)


def load_all_targets(directory: Path | None = None) -> list[Target]:
    directory = directory or slurm_dir()
    found = {p.stem for p in directory.glob("*.toml")}
    order = [name for name in TARGETS if name in found] + sorted(found - set(TARGETS))
    return [load_target(name, directory) for name in order]


def union_target(directory: Path | None = None) -> Target:
    """`all`: the union of every job file in `directory` (default slurm/) but `smoke`; it
    declares no runs (`resolve_union` gives them)."""
    directory = directory or slurm_dir()
    members = tuple(t for t in load_all_targets(directory) if t.name not in LEFT_OUT)
    return Target(name=ALL, path=directory, title="Every paper table and figure (each run once)",
                  protocol="", description="", resources={}, runs={}, members=members)


def resolve_union(target: Target, scale: str, seeds: int = 1) -> list[ResolvedRun]:
    """Every member's runs, resolved as a submit of that member would, merged by id: one entry
    per (run id, protocol) for runs with cells (the members' cells merged), one per run id for
    runs without (parents). An entry is the first member's run unchanged (name, target,
    resources, protocol) with `targets`, every member that needs it; parents come before
    their children (DESIGN.md section 3.4)."""
    merged: dict[tuple[str, str], ResolvedRun] = {}
    for member in target.members:
        for run in resolve_target(member, scale, seeds):
            key = (run.run_id, run.protocol if run.cells else "")
            seen = merged.get(key)
            merged[key] = replace(run, targets=(member.name,)) if seen is None else replace(
                seen, cells=tuple(dict.fromkeys(seen.cells + run.cells)),
                targets=tuple(dict.fromkeys(seen.targets + (member.name,))))
    return list(merged.values())


def _resolve_one(target: Target, spec: RunSpec, scale: str, parent_id: str | None,
                 replica: int = 0) -> ResolvedRun:
    seed = spec.seed + replica
    if spec.stage in EXTERNAL_STAGES:
        config: dict[str, Any] = {"external": spec.stage, "scale": scale, "seed": seed}
    else:
        where = f"{target.path} [runs.{spec.name}.overrides]"
        try:
            config = to_dict(resolve_run_config(spec.stage, scale, spec.variant or BASE_VARIANT,
                                                spec.overrides, seed, where))
        except ConfigError as err:
            raise JobFileError(str(err)) from None
    name = f"{spec.name}-seed{replica}" if replica else spec.name
    return ResolvedRun(run_id=content_hash(config, parent_id), name=name,
                       target=target.name, stage=spec.stage, variant=spec.variant, scale=scale,
                       parent_id=parent_id, config=config, cells=spec.cells,
                       protocol=spec.protocol, resources=target.resources[scale], seed=replica)


def replicated(run: ResolvedRun) -> bool:
    """Whether a run gets seed replicas: trained (not external) and filling paper cells."""
    return bool(run.cells) and not run.external


def resolve_target(target: Target, scale: str, seeds: int = 1) -> list[ResolvedRun]:
    """All runs a target needs at `scale`, each parent before its children (otherwise as the
    job file lists them), base-chain runs included once; with `seeds` > 1, then the seed
    replicas s = 1..seeds-1 of every run with cells (see the module docstring), ordered by
    seed, then as above."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale '{scale}' (known: {', '.join(SCALES)})")
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a whole number >= 1, got {seeds!r}")
    if target.members:
        return resolve_union(target, scale, seeds)
    specs = dict(target.runs)
    for name, (stage, parent) in BASE_RUNS.items():
        specs[name] = RunSpec(name=name, stage=stage, variant=BASE_VARIANT, parent=parent,
                              cells=(), protocol=target.protocol)
    resolved: dict[str, ResolvedRun] = {}

    def visit(name: str) -> ResolvedRun:
        if name not in resolved:
            spec = specs[name]
            parent_id = visit(spec.parent).run_id if spec.parent else None
            resolved[name] = _resolve_one(target, spec, scale, parent_id)
        return resolved[name]

    for name in target.runs:
        visit(name)
    runs = list(resolved.values())     # in visiting order: every parent before its children
    for replica in range(1, seeds):
        runs += [_resolve_one(target, specs[run.name], scale, run.parent_id, replica)
                 for run in runs if run.seed == 0 and replicated(run)]
    return runs
