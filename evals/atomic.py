"""File I/O for the whole suite (evals, maskgwm and repro use it): atomic writes (a temporary
file in the target's folder, fsync, then rename) and JSON reads whose errors say the fix.

A reader sees the old file or the new one, never half of one; an interrupted write leaves
no partial file behind; a folder that cannot be written is an `UnwritableError` naming it.
A written file gets the permissions of any new file under the process's umask (not the 0600
of a temporary file), so results on a shared cluster stay readable by the group.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Iterator


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


NEW_FILE_MODE = 0o666 & ~_umask()


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` for writers that want a file name (savefig, ffmpeg,
    copyfile); on a clean exit it replaces `path`. `suffix`: for writers that read the
    format from the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, NEW_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[IO]:
    """Open a temporary file beside `path`; on a clean exit it replaces `path`."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


class UnwritableError(OSError):
    """A file that cannot be written; the message names it and, with a hint, what to do."""


def atomic_write_text(path: str | Path, text: str, hint: str = "") -> None:
    try:
        with atomic_open(path) as handle:
            handle.write(text)
    except OSError as err:
        raise UnwritableError(f"cannot write {path}: {err.strerror or err}"
                              + (f"; {hint}" if hint else "")) from None


def atomic_write_json(path: str | Path, data: Any, hint: str = "", **dump_options: Any) -> None:
    atomic_write_text(path, json.dumps(data, **{"indent": 1, **dump_options}) + "\n", hint)


def read_json(path: str | Path) -> Any:
    """The JSON value in `path`; a cut-short or edited file is a ValueError saying the fix."""
    try:
        with open(path) as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}): it was cut short or edited; "
                         "restore it, or delete it and submit the target again") from None
