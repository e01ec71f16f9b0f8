"""Atomic file writes: a temporary file in the same directory, fsync, then rename."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


class UnwritableError(OSError):
    """A results or work directory that cannot be written; the message says what to do."""


def atomic_write_text(path: Path, text: str, hint: str = "") -> None:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise UnwritableError(f"cannot write {path}: {err.strerror}"
                              + (f"; {hint}" if hint else "")) from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any, hint: str = "") -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n", hint)


def read_json(path: Path) -> Any:
    with open(path) as handle:
        return json.load(handle)
