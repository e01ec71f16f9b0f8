"""`repro submit smoke --cluster slurm` on the real single-node Slurm that .ci/run starts."""
from __future__ import annotations

import json
import subprocess

import pytest

from repro.jobs.state import eval_dir
from repro.launch.backends import backend_for
from repro.targets.jobfiles import load_target, resolve_target
from repro.jobs.state import run_dir, run_state
from repro.launch.graph import evaluation, run_node
from repro.launch.submit import Scheduler, submit_eval

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


def _held_job(slurm_cluster, *args: str) -> str:
    """The id of a held (never started) `sleep 1` job."""
    return subprocess.run(["sbatch", "--parsable", "--hold", "-p", slurm_cluster.partition,
                           *args, "--wrap", "sleep 1"], capture_output=True, text=True,
                          check=True).stdout.strip().split(";")[0]


def _queued_two_shard_eval(work, slurm_cluster, cancel_shard: int | None = None):
    """(run, folder, array, score) of the smoke target's "ours" evaluation at ci scale as a
    2-shard Slurm submit left it: a held sample array, its score job cancelled by the user
    (and shard `cancel_shard` too), recorded in the folder's job.json."""
    run = next(r for r in resolve_target(load_target("smoke"), "ci") if r.name == "ours")
    directory = eval_dir(work, run.run_id, run.protocol)
    directory.mkdir(parents=True)
    array, score = _held_job(slurm_cluster, "--array=0-1"), _held_job(slurm_cluster)
    cancelled = [score] + ([f"{array}_{cancel_shard}"] if cancel_shard is not None else [])
    subprocess.run(["scancel", *cancelled], check=True)
    (directory / "job.json").write_text(json.dumps(
        {"cluster": "slurm", "target": "smoke", "targets": ["smoke"], "name": "ours",
         "scale": "ci", "protocol": run.protocol, "shards": 2,
         "sample_jobs": {"0": f"{array}_0", "1": f"{array}_1"}, "score_job": score}))
    return run, directory, array, score


def _submit_eval(run, work, partition):
    """The evaluation part of a submit alone, its run's job out of the picture."""
    return submit_eval(Scheduler(backend_for("slurm", partition)),
                       evaluation(run, run_node(run, work, None, "test"), work, "test"))


def test_a_cancelled_score_job_is_replaced_without_sampling_live_shards_again(
        isolated, slurm_cluster):
    """The user cancelled a run's score job while its sample array still waits in the queue:
    the next submit adds a score job after those shards and samples nothing again."""
    work = isolated / "work"
    run, directory, array, score = _queued_two_shard_eval(work, slurm_cluster)
    entry = None
    try:
        entry = _submit_eval(run, work, slurm_cluster.partition)
        assert entry.sample_jobs == {0: f"{array}_0", 1: f"{array}_1"}
        assert entry.score_job and entry.score_job != score
        shown = subprocess.run(["scontrol", "show", "job", entry.score_job],
                               capture_output=True, text=True, check=True).stdout
        dependency = next(f for f in shown.split() if f.startswith("Dependency="))
        assert f"{array}_0" in dependency and f"{array}_1" in dependency, dependency
        assert json.loads((directory / "job.json").read_text())["sample_jobs"] == \
            {"0": f"{array}_0", "1": f"{array}_1"}
    finally:
        extra = [entry.score_job, *entry.sample_jobs.values()] if entry else []
        subprocess.run(["scancel", array, *filter(None, extra)])


def test_a_resubmitted_shard_keeps_the_live_shards_in_the_record(isolated, slurm_cluster):
    """Shard 0 still waits in the queue, shard 1 was cancelled and the score job too: the next
    submit samples shard 1 again and records both shards' jobs, so that a later submit still
    sees shard 0 live and does not start a second sampler on its folder."""
    work = isolated / "work"
    run, directory, array, score = _queued_two_shard_eval(work, slurm_cluster, cancel_shard=1)
    entry = None
    try:
        entry = _submit_eval(run, work, slurm_cluster.partition)
        assert entry.sample_jobs[0] == f"{array}_0"
        assert entry.sample_jobs[1] not in (f"{array}_1", f"{array}_0")
        recorded = json.loads((directory / "job.json").read_text())["sample_jobs"]
        assert recorded == {"0": f"{array}_0", "1": entry.sample_jobs[1]}
    finally:
        extra = [entry.score_job, *entry.sample_jobs.values()] if entry else []
        subprocess.run(["scancel", array, *filter(None, extra)])
