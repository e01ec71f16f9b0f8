"""Atomic writes for the `repro` command, with errors that say how to fix an unwritable path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_text as _atomic_write_text


class UnwritableError(OSError):
    """A results or work directory that cannot be written; the message says what to do."""


def atomic_write_text(path: Path, text: str, hint: str = "") -> None:
    try:
        _atomic_write_text(path, text)
    except OSError as err:
        raise UnwritableError(f"cannot write {path}: {err.strerror or err}"
                              + (f"; {hint}" if hint else "")) from None


def atomic_write_json(path: Path, data: Any, hint: str = "") -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", hint)


def read_json(path: Path) -> Any:
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): it was cut short or edited; "
                         "restore it, or delete it and submit the target again") from None
