"""The state files of a run, sample shard or score job, and who wrote them.

A job's state folder holds `running.json` while it works (host, pid, process start, Slurm job
id), then `done.json` or `failed.json` (with the error and traceback). `guarded(folder, work)`
writes them around a job's work; `run_state` reads them; `process_alive` tells whether the
process behind a `running.json` on this host still runs (a reused pid is not it).
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

from evals.atomic import atomic_write_json, read_json
from evals.commit import git_commit as commit_of

from repro.paths import repo_root

STATES = ("pending", "running", "done", "failed")


def run_dir(workdir: Path, run_id: str) -> Path:
    return Path(workdir) / "runs" / run_id


def eval_dir(workdir: Path, run_id: str, protocol: str) -> Path:
    """A run's evaluation under `protocol` (repro/jobs/evaluation.py)."""
    return run_dir(workdir, run_id) / "eval" / protocol


def shard_state_dir(directory: Path, shard: int, shards: int) -> Path:
    """The state folder of sample shard `shard` of `shards` of an evaluation."""
    return directory / "sample" / f"{shard}-of-{shards}"


def run_state(directory: Path) -> tuple[str, dict[str, Any]]:
    """(state, details) of a run directory from its state files."""
    for state in ("done", "failed", "running"):
        path = directory / f"{state}.json"
        if path.exists():
            return state, read_json(path)
    return "pending", {}


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _stat(pid: int) -> list[str] | None:
    """Fields 3 on of /proc/<pid>/stat (Linux; after the command name), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start(fields: list[str]) -> str:
    try:
        boot = BOOT_ID.read_text().strip()
    except OSError:
        boot = "?"
    return f"{boot}:{fields[19]}"     # field 22: start time in clock ticks since boot


def process_start(pid: int) -> str | None:
    """A process's start, "<boot id>:<start time>" (Linux), which no later process with the same
    pid shares, nor any after a reboot; None where there is no /proc."""
    fields = _stat(pid)
    return _start(fields) if fields else None


def process_alive(details: dict[str, Any]) -> bool | None:
    """Whether the process that wrote a running.json still runs: None when it ran on another
    host or recorded no pid (only the scheduler knows), else True/False. A live process with
    the pid but another recorded `process_start` (the pid was reused) is not it."""
    if details.get("host") != socket.gethostname() or not details.get("pid"):
        return None
    pid = int(details["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass            # another user's process: /proc tells whether it is the one
    fields = _stat(pid)
    if fields is None:
        return not Path("/proc/self").exists()   # gone since os.kill, or no /proc here
    if fields[0] == "Z":
        return False    # exited, not yet reaped
    recorded = details.get("process_start")      # older running.json files have none
    return not recorded or recorded == _start(fields)


def wait_for_earlier_job(directory: Path, what: str, poll_s: float = 2.0) -> None:
    """Wait while a process on this host (a local job of an earlier submit) still works on the
    run or shard `directory`, so that no second job starts on the same folder."""
    state, details = run_state(directory)
    if state != "running" or details.get("pid") == os.getpid() or not process_alive(details):
        return          # (this process: a job of the in-process debug executor)
    print(f"waiting for {what}: process {details['pid']} of an earlier submit still works on "
          f"it", file=sys.stderr, flush=True)
    while process_alive(details):
        time.sleep(poll_s)


def git_commit() -> str:
    return commit_of(repo_root())


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "host": socket.gethostname(), "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "python": sys.version.split()[0]}


def guarded(state_dir: Path, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run `work()` between running.json and done.json or failed.json in `state_dir` (a done
    folder returns its record without working again)."""
    state, done = run_state(state_dir)
    if state == "done":
        return done
    (state_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(state_dir / "running.json", {"started": now(), **provenance()})
    try:
        outcome = work()
        record = {"finished": now(), **outcome, **provenance()}
    except SystemExit as exit_:    # submitit requeued the job (preemption, time limit)
        atomic_write_json(state_dir / "running.json",
                          {"requeued": now(), "reason": f"exit {exit_.code} on the scheduler's "
                           "signal (requeued)", **provenance()})
        raise
    except BaseException as err:
        atomic_write_json(state_dir / "failed.json",
                          {"finished": now(), "error": f"{type(err).__name__}: {err}",
                           "traceback": traceback.format_exc(), **provenance()})
        (state_dir / "running.json").unlink(missing_ok=True)
        raise
    (state_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(state_dir / "done.json", record)
    (state_dir / "running.json").unlink(missing_ok=True)
    return record
