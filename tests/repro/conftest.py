"""Fixtures for the `repro` tests: an isolated work and results directory, and a CLI runner."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from repro.cli import main


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
