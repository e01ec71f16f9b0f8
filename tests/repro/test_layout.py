"""repro/ shows its roles: a few top-level modules beside one subpackage per role."""
from __future__ import annotations

from repro.paths import repo_root

ROLES = {"targets", "launch", "jobs", "report", "commands", "vista"}


def test_repro_keeps_a_small_top_level():
    repro = repo_root() / "repro"
    modules = sorted(p.name for p in repro.glob("*.py"))
    packages = {p.name for p in repro.iterdir() if (p / "__init__.py").is_file()}
    assert len(modules) <= 10, modules
    assert packages == ROLES, packages
    for package in packages:        # each role says what it holds
        assert (repro / package / "__init__.py").read_text().startswith('"""'), package
