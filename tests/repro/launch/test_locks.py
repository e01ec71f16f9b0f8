"""Submit locks (repro/launch/locks.py): two `repro submit` of the same target started at the
same moment run each job once, on the local executor and on the real Slurm of CI; a lock
whose holder died is taken over."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from repro.launch.locks import LOCK_NAME, node_lock

MINI_RUNS = """
[runs.base]
stage = "1a"
variant = "no-mr"
cells = ["table3b/no-mr"]
"""
TOGETHER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from repro.launch.submit import submit
    from repro.targets.jobfiles import load_target_file
    target_file, work, cluster, partition, me, other = sys.argv[1:7]
    Path(me).touch()                 # the barrier: both processes are ready, then both go
    while not Path(other).exists():
        time.sleep(0.01)
    submit(load_target_file(Path(target_file)), "ci", cluster, Path(work), evaluate=True,
           wait=cluster == "slurm", partition=partition or None, echo=print)
""")


def _two_submits_at_once(tmp_path: Path, make_target, cluster: str, partition: str = ""
                         ) -> list[str]:
    target = make_target(tmp_path, "lockmini", "opendv_ablation", MINI_RUNS,
                         "one trained run, scored (lock test)")
    ready = [tmp_path / "ready-0", tmp_path / "ready-1"]
    procs = [subprocess.Popen([sys.executable, "-c", TOGETHER, str(target.path),
                               str(tmp_path / "work"), cluster, partition, str(ready[i]),
                               str(ready[1 - i])], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in (0, 1)]
    outputs = [proc.communicate(timeout=900)[0] for proc in procs]
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    return outputs


def test_two_local_submits_at_once_run_each_job_once(tmp_path, make_target):
    outputs = _two_submits_at_once(tmp_path, make_target, "local")
    ran = [line for out in outputs for line in out.splitlines()
           if re.match(r"\[\d+/\d+\] (done|FAILED)", line)]
    labels = sorted(re.sub(r" \(run \w+\)", "", line.split(None, 2)[2].split(" in ")[0])
                    for line in ran)
    assert labels == ["sample base shard 1/2", "sample base shard 2/2", "score base",
                      "train base"], "\n".join(outputs)
    assert all("] done" in line for line in ran)
    assert any("waiting for another repro submit (pid " in out for out in outputs)


@pytest.mark.slurm
def test_two_slurm_submits_at_once_submit_each_job_once(tmp_path, make_target, slurm_cluster):
    outputs = _two_submits_at_once(tmp_path, make_target, "slurm", slurm_cluster.partition)
    submitted = [line for out in outputs for line in out.splitlines()
                 if line.split()[:1] == ["submitted"]]
    assert len(submitted) == 1, "\n".join(outputs)     # the run's job, once
    evals = [line for out in outputs for line in out.splitlines() if "eval " in line]
    assert sum("eval submitted" in line for line in evals) == 1, "\n".join(outputs)
    assert sum("eval reused" in line or "eval skipped" in line for line in evals) == 1
    job_dirs = [d for d in (tmp_path / "work" / "logs").rglob("*") if d.is_dir()
                and d.name.split("_")[0].isdigit()]
    job_ids = {d.name.split("_")[0] for d in job_dirs}
    assert len(job_ids) == 3, job_ids         # the run, the sample array, the score job


HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from repro.launch.locks import node_lock
    with node_lock(Path(sys.argv[1]), "test node"):
        Path(sys.argv[2]).touch()
        time.sleep(float(sys.argv[3]))
""")


def _holder(folder: Path, tmp_path: Path, seconds: float) -> subprocess.Popen:
    held = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), str(held), str(seconds)])
    while not held.exists():
        time.sleep(0.01)
    return proc


def test_a_second_process_waits_and_says_for_whom(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, tmp_path, 1.5)
    said: list[str] = []
    start = time.monotonic()
    with node_lock(folder, "run x", said.append):
        waited = time.monotonic() - start
        assert f"pid {os.getpid()}" in (folder / LOCK_NAME).read_text()
    holder.wait()
    assert waited >= 1.0
    assert said == [f"waiting for another repro submit (pid {holder.pid} on "
                    f"{os.uname().nodename} since " + said[0].split(" since ")[1]]


def test_a_lock_whose_holder_died_is_taken_over(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder, tmp_path, 60)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert f"pid {holder.pid}" in (folder / LOCK_NAME).read_text()    # left behind
    said: list[str] = []
    start = time.monotonic()
    with node_lock(folder, "run x", said.append):
        assert time.monotonic() - start < 1.0 and not said
    assert json.dumps((folder / LOCK_NAME).read_text()) == '""'     # cleared on release
