"""The bootstrap that the README's two commands run: usage, and when it reinstalls."""
from __future__ import annotations

import subprocess
import sys

from repro import bootstrap


def test_usage_without_a_command():
    out = subprocess.run([sys.executable, "-m", "repro.bootstrap"], capture_output=True,
                         text=True, cwd=bootstrap.ROOT, timeout=60)
    assert out.returncode == 2 and "python3 -m repro.bootstrap smoke" in out.stdout


def test_fingerprint_tracks_the_torch_build():
    assert bootstrap.install_fingerprint(bootstrap.CPU_TORCH) == \
        bootstrap.install_fingerprint(bootstrap.CPU_TORCH)
    assert bootstrap.install_fingerprint(bootstrap.CPU_TORCH) != \
        bootstrap.install_fingerprint(bootstrap.CUDA_TORCH)


def test_bootstrap_is_stdlib_only():
    """It runs from a bare python3 before anything is installed."""
    code = ("import sys, importlib.util; sys.path.insert(0, '.');"
            "import repro.bootstrap;"
            "third = [m for m in sys.modules if m.split('.')[0] in "
            "{'numpy','torch','pandas','submitit','maskgwm','evals'}]; print(third)")
    out = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True,
                         cwd=bootstrap.ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
