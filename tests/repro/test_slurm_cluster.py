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
