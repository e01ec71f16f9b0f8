"""git_commit: HEAD of a checkout, marked dirty with uncommitted changes; unknown elsewhere.
bench_provenance: what a benchmark record says about the code it measured."""
from __future__ import annotations

import subprocess

import pytest

from evals.commit import bench_provenance, git_commit, uncommitted


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
    assert uncommitted(["a.txt"], tmp_path) == ["a.txt"]
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "b.txt").write_text("b")
    assert uncommitted(["new/"], tmp_path) == ["new/"] and uncommitted(["c/"], tmp_path) == []


def test_bench_provenance_names_the_code_and_the_command():
    record = bench_provenance("-m evals.bench", ("evals/", "evals/frechet.py"),
                              ["--out", "a b.json"])
    assert record["measures"] == ["evals/", "evals/frechet.py"]
    assert record["produced_by"] == "python -m evals.bench --out 'a b.json'"
    assert record["git_commit"].endswith("+dirty") == ("dirty_measured" in record)
    with pytest.raises(ValueError, match="evals/nothing.py"):
        bench_provenance("-m evals.bench", ("evals/nothing.py",), [])
