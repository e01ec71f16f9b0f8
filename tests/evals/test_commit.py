"""git_commit: HEAD of a checkout, marked dirty with uncommitted changes; unknown elsewhere."""
from __future__ import annotations

import subprocess

from evals.commit import git_commit


def git(folder, *args):
    subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)


def test_commit_dirty_and_unknown(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("a")
    git(tmp_path, "add", "a.txt")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert git_commit(tmp_path) == head and len(head) == 40
    (tmp_path / "a.txt").write_text("b")
    assert git_commit(tmp_path) == head + "+dirty"
