"""What one submitted job executes for one run, and the run directory's state files.

A run directory `<workdir>/runs/<run_id>/` holds `spec.json` (what to run), `running.json`,
then `done.json` or `failed.json`. Training stages run the trainer into `<run>/train/`
(from the parent run's `train/model.pt`; preemption-safe, see training.py). Sampling and
scoring are separate jobs after training (eval_job.py, state under `<run>/eval/<protocol>/`);
A Vista run's job (stage "vista") is a prepare step: it validates the Vista checkout and
checkpoint its spec names and records their commit and SHA-256s (repro/vista/job.py); its
sample shards then run Vista's own sample.py (eval_job.py).

    python -m repro.runner <workdir>/runs/<run_id>/spec.json
"""
from __future__ import annotations

import datetime as dt
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_json, read_json
from evals.commit import git_commit as commit_of
from maskgwm.config.resolve import STAGES

from .paths import repo_root
from .records import RunRecord
from .training import JobRequeued, run_training

STATES = ("pending", "running", "done", "failed")


def run_dir(workdir: Path, run_id: str) -> Path:
    return Path(workdir) / "runs" / run_id


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


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _provenance() -> dict[str, Any]:
    return {"git_commit": git_commit(), "host": socket.gethostname(), "pid": os.getpid(),
            "process_start": process_start(os.getpid()),
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"), "python": sys.version.split()[0]}


def execute(spec_path: str | Path) -> dict[str, Any]:
    """Run one run (the callable that submitit pickles); returns the done record."""
    spec_path = Path(spec_path)
    spec = RunRecord.read(spec_path)
    directory = spec_path.parent
    state, done = run_state(directory)
    if state == "done":
        print(f"run {spec.run_id} is already done; nothing to do", flush=True)
        return done
    if spec.parent_id:
        parent_state, _ = run_state(run_dir(directory.parent.parent, spec.parent_id))
        if parent_state != "done":
            raise RuntimeError(f"run {spec.run_id}: parent run {spec.parent_id} is "
                               f"{parent_state}, not done; submit the target again once it "
                               "has finished")
    main = _global_rank() == 0
    if main:     # a retry: the old failure is history, not this attempt's state
        (directory / "failed.json").unlink(missing_ok=True)
        atomic_write_json(directory / "running.json", {"started": _now(), **_provenance()})
    try:
        if spec.stage in STAGES:
            parent = run_dir(directory.parent.parent, spec.parent_id) \
                if spec.parent_id else None
            training = run_training(spec, directory, parent)
            record = {"finished": _now(), "training": training, **_provenance()}
        else:
            record = _prepare_external(spec, directory)
    except JobRequeued as requeued:
        if main:
            atomic_write_json(directory / "running.json",
                              {"requeued": _now(), "reason": str(requeued), **_provenance()})
        raise
    except BaseException as err:
        if not main:
            raise
        atomic_write_json(directory / "failed.json",
                          {"finished": _now(), "error": f"{type(err).__name__}: {err}",
                           "traceback": traceback.format_exc(), **_provenance()})
        (directory / "running.json").unlink(missing_ok=True)
        raise
    if main:
        (directory / "failed.json").unlink(missing_ok=True)
        atomic_write_json(directory / "done.json", record)
        (directory / "running.json").unlink(missing_ok=True)
    return record


def _global_rank() -> int:
    """This process's rank in a multi-task job (only rank 0 writes the run's state files)."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


def _prepare_external(spec: RunRecord, directory: Path) -> dict[str, Any]:
    """Stage "vista": check the checkout and checkpoint, record them and the resolved config."""
    from .vista.job import prepare
    record = spec.to_json()
    atomic_write_json(directory / "config.json",
                      {key: record.get(key) for key in ("run_id", "parent_id", "stage",
                                                        "variant", "scale", "config", "vista")})
    return {"finished": _now(), **prepare(spec, directory), **_provenance()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    execute(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
