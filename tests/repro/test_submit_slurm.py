"""`repro submit smoke --cluster slurm` on the real single-node Slurm that .ci/run starts."""
from __future__ import annotations

import pytest

from repro.jobs import load_target, resolve_target
from repro.runner import run_dir, run_state

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def train_only(monkeypatch):
    """These tests are about the training graph: no sample and score jobs (REPRO_EVAL=0);
    tests/repro/test_eval_graph.py covers those."""
    monkeypatch.setenv("REPRO_EVAL", "0")


def test_smoke_target_runs_on_slurm_with_dependencies(cli, isolated, slurm_cluster):
    result = cli("submit", "smoke", "--cluster", "slurm", "--scale", "ci", "--wait",
                 "--partition", slurm_cluster.partition)
    assert result.code == 0, result.out + result.err
    runs = resolve_target(load_target("smoke"), "ci")
    assert "10/10 runs done" in result.out and result.out.count("submitted") == len(runs)
    for run in runs:
        state, done = run_state(run_dir(isolated / "work", run.run_id))
        assert state == "done" and done["slurm_job_id"], run.name
    status = cli("status", "smoke")
    assert status.out.count("done ") == len(runs) and " slurm " in status.out
    again = cli("submit", "smoke", "--cluster", "slurm", "--scale", "ci")
    assert again.out.count("skipped") == len(runs)
