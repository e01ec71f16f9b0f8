"""`repro submit` through submitit's local executor: runs finish in dependency order, a second
submit skips finished runs, and a failing run shows as failed in `repro status` with its log."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.targets.jobfiles import load_target, resolve_target
from repro.jobs.state import run_dir, run_state


@pytest.fixture(autouse=True)
def train_only(monkeypatch):
    """These tests are about the training graph: no sample and score jobs (REPRO_EVAL=0);
    tests/repro/test_eval_graph.py covers those."""
    monkeypatch.setenv("REPRO_EVAL", "0")


def run_ids(target: str, scale: str = "ci") -> dict[str, str]:
    return {r.name: r.run_id for r in resolve_target(load_target(target), scale)}


def progress_lines(out: str) -> list[str]:
    """The `[i/N] ...` lines a local submit prints as each job ends."""
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert [line.split("]")[0] for line in lines] == \
        [f"[{i}/{len(lines)}" for i in range(1, len(lines) + 1)], lines
    if lines:
        assert lines[-1].endswith("; 0 jobs left"), lines[-1]
    return lines


def test_local_submit_runs_the_graph_once(cli, isolated):
    work = isolated / "work"
    first = cli("submit", "table4a", "--scale", "ci")
    assert first.code == 0, first.out + first.err
    assert first.out.count("submitted") == 6 and "6/6 runs done" in first.out
    progress = progress_lines(first.out)
    assert len(progress) == 6 and progress[0].startswith(
        f"[1/6] done    train stage1a (run {run_ids('table4a')['stage1a']}) in ")
    assert "; 5 jobs left, about " in progress[0]
    assert progress[0].endswith(" more (from the jobs finished so far)")
    runs = {r.name: r for r in resolve_target(load_target("table4a"), "ci")}
    ids = {name: run.run_id for name, run in runs.items()}
    for name, run_id in ids.items():
        state, done = run_state(run_dir(work, run_id))
        assert state == "done" and done["training"]["step"] == runs[name].steps
        summary = json.loads((run_dir(work, run_id) / "train" / "summary.json").read_text())
        assert summary["config"] == runs[name].config
        assert (run_dir(work, run_id) / "train" / "model.pt").is_file()
    # children started after their parent finished
    finished = {n: json.loads((run_dir(work, i) / "done.json").read_text())["finished"]
                for n, i in ids.items()}
    assert finished["stage1a"] <= finished["stage1b"] <= finished["time-r0.1"]
    check_time_column(cli, work, runs)

    again = cli("submit", "table4a", "--scale", "ci")
    assert again.code == 0 and again.out.count("skipped") == 6 and "submitted" not in again.out
    assert progress_lines(again.out) == []
    # a target sharing runs reuses them: table5's r=0.1 and r=0.25 runs are table4a's
    shared = cli("submit", "table5", "--scale", "ci")
    assert shared.code == 0
    skipped = [line.split()[1] for line in shared.out.splitlines() if line.strip().startswith("skipped")]
    assert {"time-r0.1", "time-r0.25", "row-time-r0.1", "row-time-r0.25"} <= set(skipped)

    status = cli("status", "table4a")
    assert status.out.count("done ") == 6
    shared_status = cli("status", "table5")     # the shared runs show under both targets
    assert shared_status.out.count("done ") == len(run_ids("table5"))
    assert shared_status.out.count("table5:") == len(run_ids("table5"))


def check_time_column(cli, work: Path, runs: dict) -> None:
    """After training (no evaluation here), collect fills Table 4a's Time cells from each run's
    summary.json, and the table shows them with the ratio column, labelled as CPU timing."""
    days = {}
    for name in ("time-r0.1", "time-r0.25", "row-shift-r0.1", "row-shift-r0.25"):
        summary = json.loads((run_dir(work, runs[name].run_id) / "train" /
                              "summary.json").read_text())
        assert summary["device_name"] == "cpu" and summary["world_size"] == 1
        days[name] = 10000 / summary["steps_per_s"] / 86400
    assert cli("collect", "table4a", "--scale", "ci").code == 1     # no FVD yet
    assert cli("collect", "table4a", "--scale", "ci", "--partial").code == 0
    res = cli("table", "table4a", "--scale", "ci")
    assert res.code == 0, res.err
    lines = [line for line in res.out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = {r["cell"]: r for r in (dict(zip(header, (c.strip() for c in line.strip("|")
                                                      .split("|")))) for line in lines[1:])}
    for name, value in days.items():
        assert rows[name]["Time ours"] == f"{value:.3g}" and rows[name]["FVD ours"] == ""
        assert rows[name]["Time ratio ours"] == f"{value / days['time-r0.1']:.3f}"
    assert rows["time-r0.25"]["Time ratio paper"] == "0.957"
    assert "**CPU timing at scale ci**" in res.out and "measured on CPU, 1 process" in res.out


def test_failing_run_is_reported_with_its_log(cli, isolated):
    work = isolated / "work"
    bad = run_ids("table4a")["time-r0.1"]
    run_dir(work, bad).mkdir(parents=True)
    (run_dir(work, bad) / "train").write_text("")   # the run cannot create its folder
    result = cli("submit", "table4a", "--scale", "ci")
    assert result.code == 1
    assert f"not done: time-r0.1 (run {bad})" in result.out and "5/6 runs done" in result.out
    progress = progress_lines(result.out)
    position = list(run_ids("table4a")).index("time-r0.1")
    assert len(progress) == 6 and [i for i, line in enumerate(progress) if "FAILED" in line] \
        == [position]
    assert progress[position].startswith(
        f"[{position + 1}/6] FAILED  train time-r0.1 (run {bad}) in ")
    failed_log = Path(progress[position].split(", log ")[1].split(";")[0])
    assert failed_log.name.endswith(".err") and "Error" in failed_log.read_text()
    status = cli("status")
    lines = status.out.splitlines()
    row = next(i for i, line in enumerate(lines) if "table4a:time-r0.1" in line)
    assert lines[row].startswith("failed")
    assert "OutputDirError" in lines[row + 1]
    log = lines[row + 2].split("log: ")[1].split()[0]
    assert Path(log).exists() and "Error" in Path(log).read_text()

    (run_dir(work, bad) / "train").unlink()          # fixed: a resubmit runs only it
    retry = cli("submit", "table4a", "--scale", "ci", "--strategy", "fsdp")
    assert retry.code == 0 and retry.out.count("submitted") == 1
    assert progress_lines(retry.out)[0].startswith(f"[1/1] done    train time-r0.1 (run {bad})")
    spec = json.loads((run_dir(work, bad) / "spec.json").read_text())
    assert spec["train_options"] == {"checkpoint_every": 1, "workers": 0, "log_every": 1,
                                     "strategy": "fsdp"}
    summary = json.loads((run_dir(work, bad) / "train" / "summary.json").read_text())
    assert summary["strategy"] == "single"           # one process: nothing to shard


def test_a_retried_run_is_running_not_failed(isolated, monkeypatch):
    """While a run that failed before runs again, its state is running (status asks the
    scheduler about it), not the old failure."""
    from evals.atomic import atomic_write_json
    from repro.jobs import run as runner
    from repro.jobs import training
    from repro.launch.graph import run_record
    run = next(r for r in resolve_target(load_target("smoke"), "ci") if r.name == "stage1a")
    directory = run_dir(isolated / "work", run.run_id)
    directory.mkdir(parents=True)
    atomic_write_json(directory / "spec.json", run_record(run).to_json())
    atomic_write_json(directory / "failed.json", {"error": "the first attempt's"})
    seen, train = [], training.run_training

    def observed(*args):    # the real training, with the state the run shows meanwhile
        seen.append(run_state(directory)[0])
        return train(*args)
    monkeypatch.setattr(training, "run_training", observed)
    runner.execute(directory / "spec.json")
    assert seen == ["running"] and run_state(directory)[0] == "done"


def test_a_broken_state_file_is_named(cli, isolated):
    broken = isolated / "work" / "runs" / "0123456789ab" / "job.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"cluster": "loc')
    status = cli("status")
    assert status.code == 2 and f"{broken} is not valid JSON" in status.err


def test_unwritable_workdir_submits_nothing(cli, isolated, monkeypatch):
    blocker = isolated / "file"
    blocker.write_text("")
    monkeypatch.setenv("REPRO_WORKDIR", str(blocker))
    result = cli("submit", "smoke", "--scale", "ci")
    assert result.code == 2 and "REPRO_WORKDIR" in result.err and result.out == ""


def test_a_local_job_killed_hard_is_lost_and_a_live_one_is_waited_for(cli, isolated):
    """A local job's process that died without a word shows as lost; a submit while an
    earlier submit's job still trains the run waits for it instead of starting a second
    trainer on the same folder."""
    import socket
    import subprocess
    import sys
    import time

    from repro.launch.backends import backend_for
    from repro.launch.graph import run_node
    from repro.launch.submit import Scheduler, submit_run
    run = next(r for r in resolve_target(load_target("smoke"), "ci") if r.name == "stage1a")
    directory = run_dir(isolated / "work", run.run_id)
    directory.mkdir(parents=True)
    (directory / "job.json").write_text(json.dumps(
        {"cluster": "local", "job_id": "1", "target": "smoke", "targets": ["smoke"],
         "name": "stage1a", "scale": "ci", "stdout": "o", "stderr": "e"}))

    def running(pid: int) -> None:
        (directory / "running.json").write_text(json.dumps(
            {"started": "2026-01-01T00:00:00+00:00", "host": socket.gethostname(), "pid": pid}))

    dead = subprocess.Popen(["true"])
    dead.wait()
    running(dead.pid)
    status = cli("status", "smoke")
    assert any(line.split()[:2] == ["lost", "smoke:stage1a"] for line in status.out.splitlines()), \
        status.out
    finishes = (f"import time, pathlib; time.sleep(1.5); "
                f"pathlib.Path({str(directory / 'done.json')!r}).write_text('{{}}')")
    orphan = subprocess.Popen([sys.executable, "-c", finishes])
    try:
        running(orphan.pid)
        start = time.monotonic()
        entry = submit_run(Scheduler(backend_for("local")),
                           run_node(run, isolated / "work", None, "test"))
        assert entry.action == "skipped" and time.monotonic() - start >= 1.0
        assert json.loads((directory / "job.json").read_text())["job_id"] == "1"
    finally:
        orphan.kill()
        orphan.wait()


CHILD_RUN = """
[runs.child]
stage = "1c"
variant = "ours"
parent = "stage1b"
cells = ["table3b/ours"]
"""


def test_runs_blocked_by_a_failed_parent_show_in_status(isolated, make_target):
    """A local submit whose stage 1a fails leaves stage 1b, its child and the child's
    evaluation blocked: `repro status` lists them with the failed run that blocks them, until
    the run each waits for is done."""
    from repro.commands.status import collect_status, format_status
    from repro.launch.submit import submit
    target = make_target(isolated, "blockme", "opendv_ablation", CHILD_RUN, "blocked (test)")
    work, ids = isolated / "work", {r.name: r.run_id for r in resolve_target(target, "ci")}
    run_dir(work, ids["stage1a"]).mkdir(parents=True)
    (run_dir(work, ids["stage1a"]) / "train").write_text("")   # stage 1a cannot run
    out: list[str] = []
    submit(target, "ci", "local", work, echo=out.append, evaluate=True)
    # stage 1a, 1b, the child, its 2 sample shards and score; all after 1a are blocked
    assert [line.split(" in ")[0] for line in out if line.startswith("[")] == \
        [f"[1/6] FAILED  train stage1a (run {ids['stage1a']})"]
    lines = format_status(collect_status(work, "blockme")).splitlines()

    def reason(name: str) -> str:
        words = name.split()
        row = next((i for i, line in enumerate(lines)
                    if line.split()[1:1 + len(words)] == words), None)
        assert row is not None, f"no row for {name}:\n" + "\n".join(lines)
        assert lines[row].startswith("blocked"), lines[row]
        return lines[row + 1]
    failed = f"waits for run stage1a (run {ids['stage1a']}), which failed: fix that, then submit"
    assert failed in reason("blockme:stage1b") and failed in reason("blockme:child")
    assert "its training run is not done: fix that" in reason("blockme:child score")
    for run_id in ids.values():     # trained since (e.g. by a train-only submit): not blocked
        (run_dir(work, run_id) / "done.json").write_text("{}")
    lines = format_status(collect_status(work, "blockme")).splitlines()
    assert not any(line.startswith("blocked") for line in lines), "\n".join(lines)


def test_ctrl_c_during_a_local_submit_is_one_line_and_exit_130(isolated):
    """Ctrl-C while a local job trains (SIGINT to the terminal's process group): the job is
    cancelled, the submit ends with one line saying so (no traceback, also none from
    submitit's controller) and exit status 130; the job's process is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from repro.jobs.state import process_alive
    env = {**os.environ, "REPRO_WORKDIR": str(isolated / "work"),
           "REPRO_RESULTS": str(isolated / "results"), "REPRO_EVAL": "0"}

    def as_from_a_terminal() -> None:   # pytest's process may block or ignore SIGINT
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    blocked = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    submit = subprocess.Popen([sys.executable, "-m", "repro.cli", "submit", "smoke", "--scale",
                               "ci"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, start_new_session=True,
                              preexec_fn=as_from_a_terminal)
    run = next(r for r in resolve_target(load_target("smoke"), "ci") if r.name == "stage1a")
    running = run_dir(isolated / "work", run.run_id) / "running.json"
    deadline = time.monotonic() + 120
    while not running.exists() and time.monotonic() < deadline and submit.poll() is None:
        time.sleep(0.2)
    assert running.exists(), submit.communicate()
    job = json.loads(running.read_text())
    os.killpg(submit.pid, signal.SIGINT)
    out, err = submit.communicate(timeout=60)
    assert submit.returncode == 130, (f"SIGINT blocked in pytest: {blocked}, handler "
                                      f"{signal.getsignal(signal.SIGINT)}", err[-2000:])
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("repro: interrupted: 1 job cancelled; submit "
                                            "again to resume")
    deadline = time.monotonic() + 10
    while process_alive(job) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process_alive(job) is False


UNION_TABLE4A = """
[runs."time-r0.1"]
stage = "1c"
variant = "time-r0.1"
parent = "stage1b"
cells = ["table4a/time-r0.1"]
"""
UNION_TABLE5 = UNION_TABLE4A.replace("table4a/", "table5/") + """
[runs."time-r0.4"]
stage = "1c"
variant = "time-r0.4"
parent = "stage1b"
cells = ["table5/time-r0.4"]
"""


def test_a_union_target_trains_each_shared_run_once(isolated, make_target, monkeypatch):
    """`all` over two job files that share the base chain and a stage-1c run: each run is
    trained once, under its owning target's id, and shows under both targets in status."""
    from repro.commands.status import collect_status
    from repro.jobs import training
    from repro.launch.submit import submit
    from repro.targets.jobfiles import union_target
    folder = isolated / "slurm"
    folder.mkdir()
    table4a = make_target(folder, "table4a", "opendv_ablation", UNION_TABLE4A, "4a (test)")
    table5 = make_target(folder, "table5", "opendv_ablation", UNION_TABLE5, "5 (test)")
    union = union_target(folder)
    trained: list[str] = []

    def fake_training(spec, directory, parent):       # the graph is under test, not training
        trained.append(spec.run_id)
        return {"status": "done", "step": 1}
    monkeypatch.setattr(training, "run_training", fake_training)
    work = isolated / "work"
    placed = submit(union, "ci", "debug", work, echo=lambda line: None)
    assert [p.action for p in placed] == ["submitted"] * 4      # one node per run
    ids = {r.run_id for t in (table4a, table5) for r in resolve_target(t, "ci")}
    assert sorted(trained) == sorted(ids) and len(ids) == 4      # 1a, 1b, two 1c runs
    shared = next(r for r in resolve_target(table4a, "ci") if r.name == "time-r0.1")
    job = json.loads((run_dir(work, shared.run_id) / "job.json").read_text())
    assert job["targets"] == ["table4a", "table5"] and job["target"] == "table4a"
    rows = collect_status(work, "all")
    assert sorted(r["run_id"] for r in rows) == sorted(ids)       # each run once
    assert {r["target"] for r in rows if r["run_id"] == shared.run_id} == {"table4a"}
    assert len(collect_status(work, "table5")) == 4 and len(collect_status(work, "table4a")) == 3
    submit(union, "ci", "debug", work, echo=lambda line: None)      # again: nothing trained
    assert len(trained) == 4
