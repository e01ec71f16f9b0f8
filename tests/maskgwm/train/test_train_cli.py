"""`python -m maskgwm.train STAGE ...`: a ci run, --resume when done, the --out guard, and the
multi-GPU check script on the CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def train(*args, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "maskgwm.train", *args], env=env,
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_cli_train_resume_and_guard(tmp_path):
    out = tmp_path / "run"
    first = train("1a", "--scale", "ci", "--out", str(out), "--workers", "0")
    assert first.returncode == 0, first.stderr
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
