"""Trainer checkpoints: `<out>/checkpoints/step-XXXXXXXX.pt`, written atomically, last k kept.

Each file holds {"model": model_checkpoint(...) (so `load_model` reads it directly),
"optimizer", "scheduler", "ema" (or None), "rng": {torch, cuda, numpy, python}, "step",
"data": {"step", "epoch", "next_sample"}, "config": the RunConfig dict, "config_hash",
"options"}; only tensors, plain containers, numbers and strings (torch.load weights_only).
Resume takes the newest readable file; a corrupt newest one is renamed to `*.corrupt` (kept for
inspection, out of the resume order and of pruning) with a warning naming it; a file of another
run (config hash) is an error naming the settings that differ.
"""
from __future__ import annotations

import contextlib
import random
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from evals.atomic import atomic_open

NAME = re.compile(r"^step-(\d{8})\.pt$")
PARTIAL = re.compile(r"^\.step-\d{8}\.pt\..*\.tmp$")    # atomic_open's temporary files


class CheckpointMismatchError(RuntimeError):
    """A checkpoint this run cannot resume from: another run's (config hash), one whose
    optimizer state does not fit, or one that not every rank can read."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint that could not be written (disk full, I/O error); no partial file is left."""


def checkpoint_dir(out_dir: Path) -> Path:
    return Path(out_dir) / "checkpoints"


def checkpoint_path(out_dir: Path, step: int) -> Path:
    return checkpoint_dir(out_dir) / f"step-{step:08d}.pt"


def list_checkpoints(out_dir: Path) -> list[tuple[int, Path]]:
    """(step, path), newest first."""
    folder = checkpoint_dir(out_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := NAME.match(p.name))]
    return sorted(found, reverse=True)


def write_checkpoint(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic write (temporary file in the folder, fsync, os.replace); see `naming_write`."""
    with naming_write(path):
        with atomic_open(path, "wb") as handle:
            torch.save(payload, handle)
    return path


@contextlib.contextmanager
def naming_write(path: Path):
    """A failed write of `path` (a full disk: torch's own message is an opaque "unexpected
    pos") raised as CheckpointWriteError naming the file and the free space."""
    try:
        yield
    except (OSError, RuntimeError) as err:
        free = shutil.disk_usage(path.parent).free / 2**30
        raise CheckpointWriteError(
            f"cannot write {path} ({type(err).__name__}: {err}); {free:.2f} GiB free in "
            f"{path.parent}: free space there (or choose another --out), then resume from "
            f"the checkpoints kept") from err


def prune(out_dir: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (0 keeps all); returns the deleted."""
    if keep_last <= 0:
        return []
    old = [path for _, path in list_checkpoints(out_dir)[keep_last:]]
    for path in old:
        path.unlink(missing_ok=True)
    return old


def differences(found: dict[str, Any], expected: dict[str, Any], prefix: str = "") -> list[str]:
    """'key: found -> expected' for each leaf where two nested dicts differ."""
    out = []
    for key in sorted(set(found) | set(expected), key=str):
        a, b = found.get(key, "(absent)"), expected.get(key, "(absent)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def mismatch_message(where: Path, found_hash: Any, config_hash: str,
                     found: dict[str, Any], identity: dict[str, Any] | None) -> str:
    """Why the run that wrote `where` is not this one, naming the settings that differ."""
    what = ""
    if identity is not None:
        changed = differences({k: found.get(k, {}) for k in identity}, identity)
        if changed:
            what = (f" (that run -> this run: {'; '.join(changed[:6])}"
                    f"{'; ...' if len(changed) > 6 else ''})")
    return (f"{where} belongs to a run with config hash {found_hash}, this run's is "
            f"{config_hash}{what}: resume with the settings that wrote it, or choose another "
            f"--out (never mixing two runs in one folder)")


def read_checkpoint(path: Path, config_hash: str, map_location: Any = "cpu",
                    identity: dict[str, Any] | None = None) -> dict[str, Any]:
    """A trainer checkpoint of this run; CheckpointMismatchError (naming what differs from
    `identity`, options.run_identity) if another run wrote it, any other exception if it
    cannot be read."""
    data = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(data, dict) or "step" not in data or "model" not in data:
        raise ValueError("not a trainer checkpoint")
    found = data.get("config_hash")
    if found != config_hash:
        raise CheckpointMismatchError(mismatch_message(path, found, config_hash, data, identity))
    data["path"] = str(path)
    return data


def load_latest(out_dir: Path, config_hash: str, log: Callable[[str], None] = print,
                map_location: Any = "cpu",
                identity: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The newest readable checkpoint of this run, or None when there is none. Unreadable
    newer files are renamed to `<name>.corrupt`, so they neither shadow the file resumed from
    nor take a place among the last k kept. Partial files of writes a hard kill interrupted
    are deleted."""
    folder = checkpoint_dir(out_dir)
    for path in folder.iterdir() if folder.is_dir() else []:
        if PARTIAL.match(path.name):
            path.unlink(missing_ok=True)
            log(f"removed {path.name}, the partial file of an interrupted checkpoint write")
    for _, path in list_checkpoints(out_dir):
        try:
            return read_checkpoint(path, config_hash, map_location, identity)
        except CheckpointMismatchError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure: fall back to an older file
            aside = path.with_name(path.name + ".corrupt")
            path.replace(aside)
            log(f"warning: checkpoint {path} is unreadable ({type(err).__name__}: {err}); "
                f"renamed it to {aside.name} (rename it back if the file is fine) and fell "
                f"back to the one before")
    return None


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain lists (weights_only-safe)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, words, gauss = random.getstate()
    state = {"torch": torch.get_rng_state(),
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
             "python": [version, list(words), gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    if "cuda" in state and torch.cuda.is_available():
        states = state["cuda"]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
