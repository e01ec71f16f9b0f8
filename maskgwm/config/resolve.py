"""Resolve a run's full config: defaults -> stage -> scale -> variant -> run overrides -> seed."""
from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any, Mapping

from .scales import SCALES, SCALES_FILE, get_scale
from .schema import ConfigError, RunConfig, apply_overrides, validate

CONFIG_DIR = Path(__file__).resolve().parent
STAGES = ("1a", "1b", "1c", "2", "3")
PARENT_STAGE = {"1b": "1a", "1c": "1b", "2": "1c", "3": "2"}


def load_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; a syntax error names the file and the line."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None


@cache
def stage_table() -> dict[str, Any]:
    return load_toml(CONFIG_DIR / "stages.toml")


@cache
def variant_table() -> dict[str, Any]:
    return load_toml(CONFIG_DIR / "variants.toml")


def variant_names() -> list[str]:
    return list(variant_table())


def variant_description(name: str) -> str:
    return variant_table()[name].get("description", "")


def _variant_overrides(name: str, seen: tuple[str, ...] = ()) -> list[tuple[str, dict]]:
    """The chain of override tables for a variant, most general first."""
    table = variant_table()
    where = CONFIG_DIR / "variants.toml"
    if name not in table:
        raise ConfigError(f"{where}: unknown variant '{name}' (known: {', '.join(table)})")
    if name in seen:
        raise ConfigError(f"{where}: variant '{name}' inherits from itself")
    body = dict(table[name])
    body.pop("description", None)
    parent = body.pop("inherits", None)
    chain = _variant_overrides(parent, seen + (name,)) if parent else []
    return chain + [(f"{where} [{name}]", body)]


def resolve_run_config(stage: str, scale: str, variant: str,
                       overrides: Mapping[str, Any] | None = None, seed: int = 0,
                       where: str = "run overrides") -> RunConfig:
    """The fully resolved config of one training run."""
    if stage not in STAGES:
        raise ConfigError(f"{where}: unknown stage '{stage}' (known: {', '.join(STAGES)})")
    if scale not in SCALES:
        raise ConfigError(f"{where}: unknown scale '{scale}' (known: {', '.join(SCALES)})")
    config = RunConfig(scale=scale, seed=seed)
    apply_overrides(config, stage_table()[stage], f"{CONFIG_DIR / 'stages.toml'} [{stage}]")
    scale_spec = get_scale(scale)
    scale_where = f"{SCALES_FILE} [{scale}]"
    apply_overrides(config, scale_spec.overrides, scale_where)
    apply_overrides(config, scale_spec.stages.get(stage, {}), f"{scale_where} stages.{stage}")
    for table_where, body in _variant_overrides(variant):
        apply_overrides(config, body, table_where)
    apply_overrides(config, overrides or {}, where)
    validate(config, f"{where} (stage {stage}, scale {scale}, variant {variant})")
    return config
