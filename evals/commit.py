"""The git commit a result or benchmark was produced from (its provenance)."""
from __future__ import annotations

import subprocess
from pathlib import Path


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
