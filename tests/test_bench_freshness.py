"""Benchmark records (results/bench/*.json) are fresh: each names the commit it was measured at
(`git_commit`), the code it measured (`measures`: repo-relative files and folders) and the
command that re-produces it (`produced_by`), and no later commit changed that code.

A "+dirty" (or "-dirty") commit is accepted, the suffix kept, when the record's
`dirty_measured` (written by evals.commit.bench_provenance) is empty: the uncommitted changes
lay outside the measured code (the GPU runs' copies carried wheel files), so the commit still
names that code. A record that cannot be measured again here (the H200 runs) carries
`stale_allowed: <why>`, and a results/bench page its reason names lists it under a heading
that says `stale_allowed`; only the freshness check is waived for it.

The check needs git and the whole history: without them it fails when REPRO_REQUIRE_SLURM=1
(CI, `.ci/run`) and is skipped elsewhere, saying why.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path("results") / "bench"
RECORDS = sorted((ROOT / BENCH).glob("*.json"))
DIRTY = ("+dirty", "-dirty")


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True,
                          timeout=60)


def history_problem(root: Path) -> str | None:
    """Why the git history of `root` cannot be checked, or None."""
    if shutil.which("git") is None:
        return "git is not on PATH"
    shallow = git(root, "rev-parse", "--is-shallow-repository")
    if shallow.returncode:
        return f"{root} is not a git checkout ({shallow.stderr.strip()})"
    if shallow.stdout.strip() == "true":
        return (f"{root} is a shallow clone, without the commits the records name; "
                "`git fetch --unshallow` fetches them")
    return None


def listed_stale(page: Path) -> set[str]:
    """The `*.json` names in backticks under the headings of `page` that say `stale_allowed`."""
    names, inside = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("#"):
            inside = "stale_allowed" in line
        elif inside:
            names.update(re.findall(r"`([\w.-]+\.json)`", line))
    return names


def stale_allowed_problem(name: str, reason: object, root: Path) -> str | None:
    if not isinstance(reason, str) or not reason.strip():
        return "stale_allowed gives no reason"
    pages = re.findall(r"[\w.-]+\.md", reason)
    if not any((root / BENCH / page).is_file() and name in listed_stale(root / BENCH / page)
               for page in pages):
        return (f"stale_allowed: no results/bench page it names ({pages or 'none'}) lists "
                f"`{name}` under a heading that says stale_allowed")
    return None


def record_problems(name: str, record: dict, root: Path = ROOT) -> list[str]:
    """What is wrong with benchmark record `name` of `root`'s results/bench; [] when fresh."""
    commit, measures, command = (record.get(key) for key in
                                 ("git_commit", "measures", "produced_by"))
    problems = [] if command else ["no produced_by (the command that re-produces the record)"]
    rerun = f"re-produce it with `{command}` and commit the record"
    if not commit or commit == "unknown":
        return problems + [f"git_commit is {commit!r}: {rerun}"]
    if not measures or not isinstance(measures, list):
        return problems + ["no measures (the files and folders whose code it measured)"]
    missing = [path for path in measures if not (root / path).exists()]
    if missing:
        return problems + [f"measures paths that do not exist: {missing}"]
    base = next((commit[:-len(s)] for s in DIRTY if commit.endswith(s)), commit)
    found = git(root, "rev-parse", "--verify", "--quiet", f"{base}^{{commit}}")
    sha = found.stdout.strip()
    if found.returncode or git(root, "merge-base", "--is-ancestor", sha, "HEAD").returncode:
        return problems + [f"git_commit {commit} is not in this checkout's history: {rerun}"]
    allowed = "stale_allowed" in record
    if base != commit:
        dirty = record.get("dirty_measured")
        if dirty is None:
            problems.append(f"{commit} is dirty but dirty_measured does not say whether the "
                            f"measured code was committed: {rerun}")
        elif dirty and not allowed:
            problems.append(f"it measured uncommitted changes to {dirty}, which {commit} does "
                            f"not name: commit them, then {rerun}")
    if allowed:
        reason = stale_allowed_problem(name, record["stale_allowed"], root)
        return problems + ([reason] if reason else [])
    changes = git(root, "log", "--format=%h %ad %s", "--date=short", f"{sha}..HEAD", "--",
                  *measures).stdout.splitlines()
    if changes:
        shown = [f"    {line[:110]}" for line in changes[:10]]
        problems.append(
            f"stale: measured at {sha[:12]}, and {len(changes)} later commit(s) changed the "
            f"code it measures ({', '.join(measures)}):\n" + "\n".join(shown)
            + ("\n    ..." if len(changes) > 10 else "") + f"\n  {rerun}")
    return problems


@pytest.fixture(scope="module")
def history() -> None:
    problem = history_problem(ROOT)
    if problem and os.environ.get("REPRO_REQUIRE_SLURM") == "1":
        pytest.fail(f"REPRO_REQUIRE_SLURM=1 (CI) but the benchmark records cannot be checked: "
                    f"{problem}", pytrace=False)
    if problem:
        pytest.skip(f"benchmark freshness not checked: {problem}")


def test_there_are_records():
    assert RECORDS, f"no benchmark records in {ROOT / BENCH}"


@pytest.mark.parametrize("path", RECORDS, ids=lambda path: path.name)
def test_benchmark_record_is_fresh(path: Path, history: None):
    problems = record_problems(path.name, json.loads(path.read_text()))
    if problems:
        pytest.fail(f"{BENCH / path.name}: " + "\n  ".join(problems), pytrace=False)


def test_pages_list_only_stale_allowed_records():
    for page in (ROOT / BENCH).glob("*.md"):
        for name in listed_stale(page):
            record = ROOT / BENCH / name
            assert record.is_file() and "stale_allowed" in json.loads(record.read_text()), \
                f"{page.name} lists {name} as stale_allowed, but it is no such record"


def commit_all(root: Path, message: str) -> str:
    for args in (("add", "-A"), ("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm",
                                 message)):
        assert git(root, *args).returncode == 0
    return git(root, "rev-parse", "HEAD").stdout.strip()


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH")
def test_records_go_stale_when_their_code_changes(tmp_path: Path):
    git(tmp_path, "init", "-q")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "timed.py").write_text("a = 1\n")
    (tmp_path / "pkg" / "other.py").write_text("b = 1\n")
    (tmp_path / BENCH).mkdir(parents=True)
    (tmp_path / BENCH / "gpu.md").write_text("# Kept (`stale_allowed`)\n\n- `gpu.json`\n")
    measured = commit_all(tmp_path, "measured")
    record = {"git_commit": measured, "measures": ["pkg/timed.py"],
              "produced_by": "python -m pkg.bench"}

    def check(**changes) -> list[str]:
        return record_problems("bench.json", {**record, **changes}, tmp_path)

    assert check() == [] and check(git_commit=measured[:7]) == []
    assert check(git_commit=measured + "+dirty", dirty_measured=[]) == []
    assert "dirty_measured" in check(git_commit=measured + "-dirty")[0]
    assert "uncommitted changes to ['pkg/timed.py']" in check(
        git_commit=measured + "+dirty", dirty_measured=["pkg/timed.py"])[0]
    assert "not in this checkout's history" in check(git_commit="0" * 40)[0]
    assert "do not exist" in check(measures=["pkg/gone.py"])[0]
    assert check(measures=[]) and check(produced_by=None)

    (tmp_path / "pkg" / "other.py").write_text("b = 2\n")
    commit_all(tmp_path, "elsewhere")
    assert check() == []
    (tmp_path / "pkg" / "timed.py").write_text("a = 2\n")
    changed = commit_all(tmp_path, "timed code changed")
    [stale] = check()
    assert changed[:7] in stale and "timed code changed" in stale
    assert "python -m pkg.bench" in stale and "elsewhere" not in stale
    assert "2 later commit(s)" in check(measures=["pkg/"])[0]

    allowed = "no GPU here (gpu.md)"
    assert record_problems("gpu.json", {**record, "stale_allowed": allowed}, tmp_path) == []
    assert "lists `bench.json`" in check(stale_allowed=allowed)[0]
    assert "no reason" in check(stale_allowed=" ")[0]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not on PATH")
def test_a_shallow_clone_or_no_checkout_is_named(tmp_path: Path):
    assert "not a git checkout" in history_problem(tmp_path)
    source = tmp_path / "source"
    source.mkdir()
    git(source, "init", "-q")
    for n in range(2):
        (source / "f.txt").write_text(str(n))
        commit_all(source, f"c{n}")
    assert history_problem(source) is None
    git(tmp_path, "clone", "-q", "--depth", "1", source.as_uri(), "shallow")
    assert "shallow clone" in history_problem(tmp_path / "shallow")
