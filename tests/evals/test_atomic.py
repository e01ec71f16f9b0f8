"""evals/atomic.py: atomic writes leave the old or the new file, and a new file's permissions
follow the umask (a temporary file's 0600 would hide results from the rest of a group)."""
from __future__ import annotations

import os
import stat

import pytest

from evals import atomic
from evals.atomic import atomic_path, atomic_write_text


def test_written_files_get_the_umask_mode_not_0600(tmp_path):
    path = tmp_path / "result.json"
    atomic_write_text(path, "{}")
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        tmp.write_bytes(b"png")
    expected = 0o666 & ~atomic._umask()
    for written in (path, tmp_path / "plot.png"):
        assert stat.S_IMODE(os.stat(written).st_mode) == expected, written
    assert expected & 0o044, "this check needs a umask that lets the group or others read"


def test_an_interrupted_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "table.md"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]
