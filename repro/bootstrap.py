"""Set up (or reuse) the local virtual environment, then run the main job or the tests.

Stdlib only: this runs from a bare `python3` on a fresh machine.

    python3 -m repro.bootstrap smoke [repro submit args...]   # set up, run the smoke job
    python3 -m repro.bootstrap test [pytest args...]          # set up, run the test suite

The environment lives in `.venv/` at the repository root (`REPRO_VENV` overrides it) and is
reinstalled only when `pyproject.toml` or this file changes. Without CUDA the CPU torch wheel
`torch==2.13.0` is installed first (DESIGN.md section 7: the resolver needs torch and the
`numpy<2` pin settled before the rest).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_TORCH = "torch==2.13.0"
CUDA_TORCH = "torch>=2.4"


def venv_dir() -> Path:
    return Path(os.environ.get("REPRO_VENV", ROOT / ".venv")).resolve()


def venv_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def has_cuda() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def install_fingerprint(torch_spec: str) -> str:
    digest = hashlib.sha256()
    for path in (ROOT / "pyproject.toml", Path(__file__)):
        digest.update(path.read_bytes())
    digest.update(f"{torch_spec}|{sys.version_info[:2]}".encode())
    return digest.hexdigest()


def pip(python: Path, *args: str) -> None:
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd[1:]), flush=True)
    if subprocess.run(cmd).returncode != 0:
        sys.exit(f"bootstrap: `pip install {' '.join(args)}` failed; see pip's message above. "
                 f"Delete {venv_dir()} to start from scratch.")


def ensure_env() -> Path:
    """Create or reuse the venv and install the project with its test extra; return its python."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"bootstrap: Python 3.11 is required (the local torch wheel is cp311); "
                 f"this is {sys.version.split()[0]}. Run it with python3.11.")
    env_dir = venv_dir()
    python = venv_python(env_dir)
    torch_spec = CUDA_TORCH if has_cuda() else CPU_TORCH
    stamp = env_dir / ".repro-installed"
    fingerprint = install_fingerprint(torch_spec)
    if python.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint:
        return python
    if not python.exists():
        print(f"bootstrap: creating {env_dir}", flush=True)
        venv.EnvBuilder(with_pip=True).create(env_dir)
    pip(python, torch_spec)
    pip(python, "numpy<2", "-e", f"{ROOT}[test]")
    stamp.write_text(fingerprint + "\n")
    return python


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in {"smoke", "test", "setup"}:
        print(__doc__)
        return 2
    what, rest = args[0], args[1:]
    python = ensure_env()
    os.chdir(ROOT)
    if what == "setup":
        return 0
    if what == "test":
        cmd = [str(python), "-m", "pytest", *rest]
    else:
        cmd = [str(venv_dir() / "bin" / "repro"), "submit", "smoke", *rest]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
