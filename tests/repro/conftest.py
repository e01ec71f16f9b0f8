"""Fixtures for the `repro` tests: an isolated work and results directory, and a CLI runner."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from repro.cli import main
from repro.targets.jobfiles import Target, load_target_file


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """REPRO_WORKDIR and REPRO_RESULTS under tmp_path; returns tmp_path."""
    monkeypatch.setenv("REPRO_WORKDIR", str(tmp_path / "work"))
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture, isolated: Path):
    def run(*args: str) -> CliResult:
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse errors and --help
            code = int(exit_.code or 0)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)
    return run


TARGET_HEADER = """
[target]
title = "{title}"
protocol = "{protocol}"

[resources.paper]
nodes = 1
gpus_per_node = 1
cpus_per_task = 2
mem_gb = 8
time_hours = 1

[resources.smoke]
nodes = 1
gpus_per_node = 0
cpus_per_task = 1
mem_gb = 4
time_hours = 1
"""


def write_target(folder: Path, name: str, protocol: str, runs: str, title: str) -> "Target":
    """A small job file `<folder>/<name>.toml` (one node, no GPU at ci/smoke) with `runs`."""
    path = folder / f"{name}.toml"
    path.write_text(TARGET_HEADER.format(title=title, protocol=protocol) + runs)
    return load_target_file(path)


@pytest.fixture(scope="session")
def make_target():
    """`write_target` as a fixture: make_target(folder, name, protocol, runs, title)."""
    return write_target


VISTA_ENV = ("REPRO_VISTA_CHECKOUT", "REPRO_VISTA_CKPT", "REPRO_VISTA_PYTHON", "REPRO_VISTA_CLIP",
             "REPRO_VISTA_ALLOW_UNPINNED", "REPRO_VISTA_LOW_VRAM", "REPRO_VISTA_SAMPLER",
             "REPRO_VISTA_DOUBLE_STOP_AFTER")


@pytest.fixture
def clean_vista_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No REPRO_VISTA_* setting from outside the test."""
    for name in VISTA_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def vista_checkout(tmp_path: Path) -> Path:
    """A copy of the test double laid out as a user's Vista checkout (no checkpoint yet)."""
    import shutil

    from repro.vista.checkout import DOUBLE
    root = tmp_path / "Vista"
    shutil.copytree(DOUBLE, root)
    return root
