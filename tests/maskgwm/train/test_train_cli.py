"""`python -m maskgwm.train STAGE ...`: a ci run, --resume when done, the --out guard, the
preemption signal, and the multi-GPU check script on the CPU."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def train(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "maskgwm.train", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_train_resume_and_guard(tmp_path):
    out = tmp_path / "run"
    first = train("1a", "--scale", "ci", "--out", str(out), "--workers", "0", "--resume")
    assert first.returncode == 0, first.stderr
    assert "--resume, but" in first.stderr and "starting at step 0" in first.stderr
    result = json.loads(first.stdout.strip().splitlines()[-1])
    assert result["status"] == "done" and result["step"] == 2
    assert (out / "model.pt").is_file() and (out / "summary.json").is_file()

    again = train("1a", "--scale", "ci", "--out", str(out), "--workers", "0")
    assert again.returncode == 2 and "--resume" in again.stderr

    resumed = train("1a", "--scale", "ci", "--out", str(out), "--workers", "0", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["already_done"] is True

    other = train("1a", "--scale", "ci", "--out", str(out), "--resume", "--set",
                  "optim.lr=0.001")
    assert other.returncode == 2 and "config hash" in other.stderr


def test_preemption_signal_stops_at_a_step_with_a_checkpoint(tmp_path):
    """USR2 (what Slurm sends before a time limit with --signal, and scancel --signal) stops
    the CLI at a step boundary with a checkpoint and exit status 3; --resume then finishes
    with every step logged once."""
    out, metrics = tmp_path / "run", tmp_path / "run" / "metrics.jsonl"
    args = ["1a", "--scale", "ci", "--steps", "40", "--out", str(out), "--workers", "0",
            "--checkpoint-every", "0", "--log-every", "1"]
    proc = subprocess.Popen([sys.executable, "-m", "maskgwm.train", *args],
                            env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR2)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3, stderr[-2000:]
    stopped = json.loads(stdout.strip().splitlines()[-1])
    assert stopped["status"] == "interrupted" and 2 <= stopped["step"] < 40
    assert "SIGUSR2" in stderr and "--resume" in stderr and Path(stopped["checkpoint"]).is_file()
    resumed = train(*args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert steps == list(range(1, 41))


def test_multi_gpu_check_script_on_cpu(tmp_path):
    """scripts/multi_gpu_check.sh (what gpu_checks.sh runs on 2+ GPUs) through the CLI under
    torchrun: DDP and FSDP with 2 gloo processes agree with one process."""
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(root / "scripts" / "multi_gpu_check.sh"),
                           str(tmp_path / "check")], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads((tmp_path / "check" / "compare.json").read_text())
    assert report["ok"] and report["device"] == "cpu"
    assert report["fsdp"]["strategy"] == "fsdp" and report["ddp"]["world_size"] == 2
