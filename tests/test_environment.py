"""Packaging: every runtime dependency is in environment.yml, the layout is as documented, and
the README's two commands are the ones bootstrap and CI use."""
from __future__ import annotations

import re
import tomllib

from repro.paths import repo_root

ROOT = repo_root()


def requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_runtime_dependencies_are_in_environment_yml():
    listed = {requirement_name(line.strip()[2:]) for line in
              (ROOT / "environment.yml").read_text().splitlines()
              if re.match(r"\s+- [A-Za-z]", line)}
    runtime = {requirement_name(d) for d in pyproject()["project"]["dependencies"]}
    test = {requirement_name(d) for d in pyproject()["project"]["optional-dependencies"]["test"]}
    assert runtime | test <= listed, f"missing from environment.yml: {(runtime | test) - listed}"


def test_torchvision_is_not_a_dependency():
    deps = pyproject()["project"]["dependencies"]
    assert not any(requirement_name(d) == "torchvision" for d in deps)


def test_top_level_layout():
    for name in ("maskgwm", "evals", "repro", "slurm", "results", "tests", "environment.yml",
                 "README.md", "pyproject.toml", ".ci/run"):
        assert (ROOT / name).exists(), name
    assert pyproject()["project"]["scripts"]["repro"] == "repro.cli:main"


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    assert "python3 -m repro.bootstrap smoke" in readme
    assert "python3 -m repro.bootstrap test" in readme
    ci = (ROOT / ".ci" / "run").read_text()
    assert "python3 -m repro.bootstrap test" in ci


def test_layering_evals_stands_alone():
    """evals must not import maskgwm or repro; maskgwm must not import repro."""
    rules = {"evals": ("maskgwm", "repro"), "maskgwm": ("repro",)}
    for package, forbidden in rules.items():
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            for name in forbidden:
                assert not re.search(rf"^\s*(from|import) {name}\b", text, flags=re.M), \
                    f"{path} imports {name}"
