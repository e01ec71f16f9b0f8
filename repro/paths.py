"""Where the repository's data lives: job files, paper numbers, results, the work directory."""
from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    """The checkout this package runs from (`REPRO_ROOT` overrides it)."""
    env = os.environ.get("REPRO_ROOT")
    return Path(env).resolve() if env else Path(__file__).resolve().parents[1]


def slurm_dir() -> Path:
    return repo_root() / "slurm"


def results_dir() -> Path:
    """Results tree (`REPRO_RESULTS` overrides it, e.g. for tests)."""
    env = os.environ.get("REPRO_RESULTS")
    return Path(env).resolve() if env else repo_root() / "results"


def paper_dir() -> Path:
    """Paper numbers are read from the checkout, never from an overridden results tree."""
    return repo_root() / "results" / "paper"


def work_dir() -> Path:
    """Run directories, submitit logs and submission records (`REPRO_WORKDIR` overrides it).

    On a cluster this must be on a filesystem every node sees."""
    env = os.environ.get("REPRO_WORKDIR")
    return Path(env).resolve() if env else repo_root() / ".repro"
