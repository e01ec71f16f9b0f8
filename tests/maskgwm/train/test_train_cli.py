"""`python -m maskgwm.train STAGE ...`: a ci run, --resume when done, and the --out guard."""
from __future__ import annotations

import json
import os
import subprocess
import sys


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
