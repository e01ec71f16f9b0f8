"""Training jobs on the real single-node Slurm survive preemption, time limits and requeues:
(a) `scancel --signal=USR2`, (b) the time limit, (c) `scontrol requeue` (a hard kill). In each
case the job finishes and every step appears exactly once in the run's metrics. A job of two
Slurm tasks trains with FSDP over gloo, its ranks and rendezvous taken from Slurm."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import time
from pathlib import Path

import pytest

from repro.launch.backends import backend_for
from repro.launch.graph import run_node
from repro.launch.submit import Scheduler, submit_run
from repro.targets.jobfiles import load_target, resolve_target
from repro.jobs.state import run_dir, run_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow]   # ~6-8 min of real preemptions


def stage1a_run(steps: int, minutes: float | None = None, preset: str = "tiny"):
    """The smoke target's stage-1a run at the ci scale, with `steps` steps."""
    run = next(r for r in resolve_target(load_target("smoke"), "ci") if r.name == "stage1a")
    config = json.loads(json.dumps(run.config))
    config["stage"]["steps"] = steps
    config["model"]["preset"] = preset
    resources = run.resources if minutes is None else \
        dataclasses.replace(run.resources, time_hours=minutes / 60)
    return dataclasses.replace(run, config=config, resources=resources)


def submit(run, workdir: Path, partition: str, monkeypatch, **options):
    import dataclasses

    from maskgwm.config.scales import all_scales
    monkeypatch.setitem(all_scales(), "ci", dataclasses.replace(all_scales()["ci"], train={
        "workers": 0, "log_every": 1, "threads": 1, "keep_last": 1, **options}))
    entry = submit_run(Scheduler(backend_for("slurm", partition)),
                       run_node(run, workdir, None, "test"))
    assert entry.action == "submitted" and entry.job_id
    return entry


def steps_logged(directory: Path) -> list[int]:
    path = directory / "train" / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]


def wait_until(condition, timeout_s: float, what: str, poll_s: float = 1.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def restarts(job_id: str) -> int:
    out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    for field in out.stdout.split():
        if field.startswith("Restarts="):
            return int(field.split("=", 1)[1])
    return -1


def finish(entry, directory: Path, steps: int, timeout_s: float) -> None:
    wait_until(lambda: run_state(directory)[0] in ("done", "failed"), timeout_s,
               f"run {directory.name} to finish")
    state, record = run_state(directory)
    log = Path(entry.job.stderr).read_text() if Path(entry.job.stderr).exists() else ""
    assert state == "done", f"{record}\n{log[-3000:]}"
    assert steps_logged(directory) == list(range(1, steps + 1))
    assert record["training"]["step"] == steps


def test_usr2_checkpoints_requeues_and_finishes(isolated, slurm_cluster, monkeypatch):
    workdir = isolated / "work"
    run = stage1a_run(steps=80, preset="small")
    entry = submit(run, workdir, slurm_cluster.partition, monkeypatch, checkpoint_every=0)
    directory = run_dir(workdir, run.run_id)
    wait_until(lambda: len(steps_logged(directory)) >= 3, 240, "training to start")
    subprocess.run(["scancel", "--signal=USR2", entry.job_id], check=True)
    wait_until(lambda: restarts(entry.job_id) >= 1, 120, "the job to be requeued")
    finish(entry, directory, 80, 400)
    log = Path(entry.job.stdout).read_text()
    assert "checkpointing after the current step" in log


def test_time_limit_checkpoints_requeues_and_finishes(isolated, slurm_cluster, monkeypatch):
    """A 1-minute limit: USR2 30 s before it, checkpoint, requeue, resume. slurmctld checks
    limits on a ~30 s cycle, so an attempt trains anywhere from ~5 to ~60 s; the `small` preset
    runs about 2.5 steps/s here, so 150 steps need at least two attempts and, with more than 3
    attempts reaching the limit, also exercise MAX_TIMEOUTS (submitit's default of 3 stopped
    such a run)."""
    workdir = isolated / "work"
    run = stage1a_run(steps=150, minutes=1, preset="small")
    entry = submit(run, workdir, slurm_cluster.partition, monkeypatch, checkpoint_every=0)
    directory = run_dir(workdir, run.run_id)
    finish(entry, directory, 150, 900)
    assert restarts(entry.job_id) >= 1


def test_hard_requeue_resumes_from_the_last_periodic_checkpoint(isolated, slurm_cluster,
                                                               monkeypatch):
    workdir = isolated / "work"
    run = stage1a_run(steps=150, preset="small")
    entry = submit(run, workdir, slurm_cluster.partition, monkeypatch, checkpoint_every=10)
    directory = run_dir(workdir, run.run_id)
    wait_until(lambda: len(steps_logged(directory)) >= 15, 240, "a periodic checkpoint")
    subprocess.run(["scontrol", "requeue", entry.job_id], check=True)
    finish(entry, directory, 150, 600)
    assert restarts(entry.job_id) >= 1


def test_two_task_fsdp_job_takes_its_ranks_from_slurm(isolated, slurm_cluster, monkeypatch):
    """tasks_per_node = 2 on a CPU node: srun starts two processes, which find their ranks in
    SLURM_PROCID / SLURM_NTASKS and rendezvous at the node list's first host on a port from the
    job id; only rank 0 writes the run's files. USR2 reaches both ranks: they agree on the step
    to stop at, rank 0 checkpoints and requeues, and the requeued job finishes the run."""
    workdir = isolated / "work"
    run = stage1a_run(steps=40, preset="small")
    run.config["stage"]["batch_size"] = 2
    run = dataclasses.replace(run, resources=dataclasses.replace(
        run.resources, tasks_per_node=2, cpus_per_task=1))
    entry = submit(run, workdir, slurm_cluster.partition, monkeypatch, strategy="fsdp",
                   checkpoint_every=0)
    directory = run_dir(workdir, run.run_id)
    wait_until(lambda: len(steps_logged(directory)) >= 3, 240, "training to start")
    subprocess.run(["scancel", "--signal=USR2", entry.job_id], check=True)
    wait_until(lambda: restarts(entry.job_id) >= 1, 120, "the job to be requeued")
    finish(entry, directory, 40, 400)
    summary = json.loads((directory / "train" / "summary.json").read_text())
    assert (summary["world_size"], summary["local_batch"], summary["strategy"]) == (2, 1, "fsdp")
