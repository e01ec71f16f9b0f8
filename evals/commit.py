"""The git commit a result or benchmark was produced from (its provenance), and what a
benchmark record says about the code it measured (tests/test_bench_freshness.py reads it)."""
from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parents[1]


def git_commit(where: str | Path | None = None) -> str:
    """HEAD of the checkout holding `where` (default: this package), with "+dirty" when it has
    uncommitted changes; "unknown" outside a checkout or without git."""
    root = str(where or Path(__file__).resolve().parent)
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        status = subprocess.run(["git", "-C", root, "status", "--porcelain"],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def uncommitted(paths: Sequence[str], root: str | Path = REPO) -> list[str]:
    """The files under `paths` (repo-relative) with uncommitted changes, untracked ones too."""
    status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--", *paths],
                            capture_output=True, text=True, timeout=30)
    return sorted(line[3:] for line in status.stdout.splitlines())


def bench_provenance(invocation: str, measures: Sequence[str],
                     argv: Sequence[str] | None = None) -> dict:
    """A benchmark record's provenance: `git_commit`; `measures`, the repo-relative files and
    folders whose code the benchmark times (each must exist); `dirty_measured`, only with a
    dirty commit, those of them with uncommitted changes; and `produced_by`, the command that
    re-produces the record: `python <invocation> <argv, default sys.argv[1:]>`."""
    missing = [path for path in measures if not (REPO / path).exists()]
    if missing:
        raise ValueError(f"benchmark measures paths that do not exist in {REPO}: {missing}")
    commit = git_commit(REPO)
    args = sys.argv[1:] if argv is None else argv
    record = {"git_commit": commit, "measures": list(measures),
              "produced_by": shlex.join(["python", *shlex.split(invocation), *args])}
    if commit.endswith("+dirty"):
        record["dirty_measured"] = uncommitted(measures)
    return record
