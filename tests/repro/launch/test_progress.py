"""A local submit's progress lines (repro/launch/progress.py): the time-left estimate from
made-up durations, the line format, and the scheduler's count through a fake backend (a failed
job, a node it blocks, an array run one task at a time). A real ci-scale submit's lines are
checked in test_submit.py and test_eval_graph.py."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from repro.launch.backends import Backend, Job
from repro.launch.graph import Node
from repro.launch.progress import Tracker, duration, eta_s
from repro.launch.submit import Scheduler


def test_eta_is_the_mean_of_finished_jobs_of_the_same_kind_else_of_all():
    assert eta_s(["run"], []) is None                   # nothing finished: no estimate
    finished = [("run", 10.0), ("run", 20.0), ("sample", 4.0)]
    assert eta_s(["run", "run"], finished) == pytest.approx(30.0)
    assert eta_s(["sample", "run"], finished) == pytest.approx(19.0)
    assert eta_s(["score"], finished) == pytest.approx(34.0 / 3)   # no score yet: all jobs
    assert eta_s([], finished) == 0


def test_durations_read_in_seconds_minutes_or_hours():
    assert [duration(s) for s in (0.4, 12, 59.4, 90, 540, 3600, 9000)] == \
        ["0 s", "12 s", "59 s", "2 min", "9 min", "1.0 h", "2.5 h"]


def node(key: str, kind: str = "run", label: str = "") -> SimpleNamespace:
    return SimpleNamespace(key=key, kind=kind, label=label or f"{kind} {key}")


def test_a_line_per_finished_job_with_the_jobs_left_and_an_estimate():
    lines: list[str] = []
    tracker = Tracker(lines.append)
    jobs = [node("a"), node("b"), node("s0", "sample"), node("s1", "sample"),
            node("sc", "score")]
    tracker.expect(jobs)
    tracker.ended(jobs[0], 12.0, failed=False)
    assert lines[-1] == ("[1/5] done    run a in 12 s; 4 jobs left, about 48 s more "
                         "(from the jobs finished so far)")
    tracker.ended(jobs[1], 600.0, failed=True, log="/logs/b/1_0_log.err")
    assert lines[-1].startswith("[2/5] FAILED  run b in 10 min, log /logs/b/1_0_log.err; "
                                "3 jobs left, about 15 min more")
    tracker.drop(jobs[2])                               # blocked: the count shrinks
    tracker.ended(jobs[3], 30.0, failed=False)
    assert lines[-1].startswith("[3/4] done    sample s1 in 30 s; 1 job left, about 4 min more")
    tracker.ended(jobs[4], 1.0, failed=False)
    assert lines[-1] == "[4/4] done    score sc in 1 s; 0 jobs left"


class FakeBackend(Backend):
    """Runs a job's call when it is waited for; checks that jobs run one at a time."""

    def __init__(self):
        super().__init__("local")
        self.running: Job | None = None

    def submit(self, shape, after, call, *args) -> Job:
        assert self.running is None, "a job was submitted before the last one ended"
        self.running = Job(f"{len(args)}", stderr=f"/logs/{args[0]}.err",
                           handle=SimpleNamespace(result=lambda: call(*args)))
        return self.running

    def wait(self, job: Job) -> None:
        if job.handle is not None:
            self.running = None
        super().wait(job)


def fake_node(tmp_path: Path, key: str, kind: str = "run", parents: list | None = None,
              fails: bool = False) -> Node:
    folder = tmp_path / key

    def call(name: str) -> None:
        folder.mkdir(exist_ok=True)
        state = "failed" if fails else "done"
        (folder / f"{state}.json").write_text(json.dumps({"error": "boom"} if fails else {}))
        if fails:
            raise RuntimeError("boom")
    run = SimpleNamespace(name=key, run_id=f"id-{key}", stage="1a")
    return Node(key, kind, run, folder, folder / "done.json", None, call, (key,),
                parents or [], label=f"{kind} {key}")


def test_the_scheduler_reports_each_job_run_here_and_counts_out_blocked_ones(tmp_path):
    lines: list[str] = []
    tracker = Tracker(lines.append)
    scheduler = Scheduler(FakeBackend(), tracker)
    failing = fake_node(tmp_path, "a", fails=True)
    blocked = fake_node(tmp_path, "b", parents=[failing])
    other = fake_node(tmp_path, "c")
    shards = [fake_node(tmp_path, f"s{i}", "sample", [other]) for i in range(2)]
    tracker.expect([failing, blocked, other, *shards])
    seen = []
    scheduler.place([failing], lambda placed: seen.append(placed[0].job.handle is not None))
    assert seen == [True]           # job.json is written before a job run here is waited for
    assert [p.action for p in scheduler.place([blocked])] == ["blocked"]
    scheduler.place([other])
    scheduler.place(shards)         # an array: one task at a time (FakeBackend checks)
    assert [line.split("  ")[0] for line in lines] == \
        ["[1/5] FAILED", "[2/4] done", "[3/4] done", "[4/4] done"]
    assert "run a in 0 s, log /logs/a.err; 4 jobs left" in lines[0]
    assert "sample s1 in 0 s; 0 jobs left" in lines[-1]
    assert all(shard.done() for shard in shards)
