"""The real single-node Slurm runs submitit jobs: one job, and a job array."""
from __future__ import annotations

import os
import sys
import time

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm

# The job's python can import this file (as tests.repro...) only from the repository root: ship
# its functions by value instead.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

WAIT_S = 60


def add_on_node(a: int, b: int) -> tuple[int, str]:
    return a + b, os.environ["SLURM_JOB_ID"]


def make_executor(folder, cluster) -> submitit.AutoExecutor:
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
    executor.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=1,
                               slurm_partition=cluster.partition)
    return executor


def wait_result(job: submitit.Job):
    """job.result(), failing the test instead of hanging if the job is not done in WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not job.done():
        if time.monotonic() > deadline:
            job.cancel(check=False)
            pytest.fail(f"Slurm job {job.job_id} not done in {WAIT_S} s (state {job.state}); "
                        f"stderr:\n{job.stderr()}")
        time.sleep(0.5)
    return job.result()


def test_submit_runs_on_the_node(slurm_cluster, slurm_workdir):
    job = make_executor(slurm_workdir / "single", slurm_cluster).submit(add_on_node, 2, 3)
    total, job_id = wait_result(job)
    assert total == 5
    assert job_id == job.job_id
    assert job.paths.stdout.exists()


def test_map_array_runs_every_task(slurm_cluster, slurm_workdir):
    executor = make_executor(slurm_workdir / "array", slurm_cluster)
    jobs = executor.map_array(add_on_node, [1, 2, 3], [10, 20, 30])
    results = [wait_result(job) for job in jobs]
    assert [total for total, _ in results] == [11, 22, 33]
    assert len({job_id for _, job_id in results}) == 3


def fail_on_rank_one() -> str:
    if os.environ["SLURM_PROCID"] == "1":
        raise RuntimeError("rank 1 fails")
    time.sleep(300)         # rank 0 would wait this long for rank 1 in a collective
    return "rank 0 outlived rank 1"


def test_a_failing_task_ends_a_multi_task_job(slurm_cluster, slurm_workdir):
    """The training executor (repro.launch.backends.make_executor) with two tasks: one task's
    failure ends the job at once, not after the other task's wait."""
    from repro.launch.backends import JobShape, slurm_states
    from repro.launch.backends import make_executor as training_executor
    from repro.targets.jobfiles import Resources
    resources = Resources(nodes=1, gpus_per_node=0, cpus_per_task=1, mem_gb=1, time_hours=0.1,
                          tasks_per_node=2)
    executor = training_executor("slurm", JobShape("ranks", slurm_workdir / "ranks", resources),
                                 None, slurm_cluster.partition)
    job = executor.submit(fail_on_rank_one)
    deadline = time.monotonic() + WAIT_S       # squeue: this Slurm keeps no accounting
    while slurm_states([job.job_id]) and time.monotonic() < deadline:
        time.sleep(0.5)
    log = job.paths.stderr.read_text() if job.paths.stderr.exists() else ""
    assert not slurm_states([job.job_id]), f"job {job.job_id} still runs:\n{log}"
    assert "task 1: Exited with exit code 1" in log and "task 0: Killed" in log
