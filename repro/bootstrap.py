"""Set up (or reuse) the local virtual environment, then run the main job or the tests.

Stdlib only: this runs from a bare `python3` on a fresh machine.

    python3 -m repro.bootstrap smoke [repro submit args...]   # set up, run the smoke job
    python3 -m repro.bootstrap test [pytest args...]          # set up, run the test suite

`test` without pytest args runs the tests not marked `slow` (under 20 minutes on 2 cores), then,
when CI is set (or REPRO_TEST_SLOW=1, which .ci/run exports), the slow ones in a second pytest
run; a run that collects no tests (pytest exit code 5) fails the command.

The environment lives in `.venv/` at the repository root (`REPRO_VENV` overrides it) and is
reinstalled only when `pyproject.toml` or this file changes. Without CUDA the CPU torch wheel
`torch==2.13.0` is installed first (docs/DESIGN.md section 7: the resolver needs torch and the
`numpy<2` pin settled before the rest).

`test` also sets up a second environment, `.venv-ref/` (`REPRO_REF_VENV` overrides it), with
the reference packages pytorch-fid and torch-fidelity on torch 2.14.1 + torchvision 0.29.1
(docs/DESIGN.md sections 7 and 9), and passes its python to the tests as `REPRO_REF_PYTHON`.
Where it cannot be built, bootstrap warns, the tests that need it skip (fail under
REPRO_REQUIRE_REFERENCES=1), and `REPRO_REF_PROBLEM` tells them why.
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
# The reference venv: torch first (local disk), then the packages it checks us against.
REF_TORCH = ("torch==2.14.1", "torchvision==0.29.1")
REF_PACKAGES = ("numpy<2", "pytorch-fid==0.3.0", "torch-fidelity==0.4.0")


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


def ensure_reference_env() -> Path | None:
    """Create or reuse the reference-package venv; return its python, or None after a warning.

    Sets REPRO_REF_PYTHON (its python) or REPRO_REF_PROBLEM (why there is none) for the tests.
    """
    os.environ.pop("REPRO_REF_PYTHON", None)
    env_dir = Path(os.environ.get("REPRO_REF_VENV", ROOT / ".venv-ref")).resolve()
    python = venv_python(env_dir)
    stamp = env_dir / ".repro-ref-installed"
    fingerprint = "|".join((*REF_TORCH, *REF_PACKAGES, str(sys.version_info[:2])))
    if not (python.exists() and stamp.exists() and stamp.read_text().strip() == fingerprint):
        problem = None
        if not python.exists():
            print(f"bootstrap: creating the reference venv {env_dir} (about 5.5 GB, once)",
                  flush=True)
            try:
                venv.EnvBuilder(with_pip=True).create(env_dir)
            except (OSError, subprocess.CalledProcessError) as err:
                problem = f"could not create {env_dir}: {err}"
        for specs in (REF_TORCH, REF_PACKAGES) if problem is None else ():
            cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                   *specs]
            print("+", " ".join(cmd[1:]), flush=True)
            if subprocess.run(cmd).returncode != 0:
                problem = (f"`pip install {' '.join(specs)}` failed in {env_dir} (see pip's "
                           f"message above; these wheels may not exist for this machine)")
                break
        if problem is None:
            stamp.write_text(fingerprint + "\n")
        else:
            stamp.unlink(missing_ok=True)
            os.environ["REPRO_REF_PROBLEM"] = problem
            print(f"bootstrap: WARNING: no reference venv: {problem}. Tests against pytorch-fid "
                  f"and torch-fidelity will skip (fail under REPRO_REQUIRE_REFERENCES=1).",
                  flush=True)
            return None
    os.environ.pop("REPRO_REF_PROBLEM", None)
    os.environ["REPRO_REF_PYTHON"] = str(python)
    return python


NO_TESTS_COLLECTED = 5   # pytest's exit code when nothing was collected (or all deselected)


def marker_runs() -> list[list[str]]:
    """The default run's pytest runs: `-m "not slow"`; then, under CI (or REPRO_TEST_SLOW=1,
    which .ci/run sets), `-m slow`."""
    runs = [["-m", "not slow"]]
    if os.environ.get("CI") or os.environ.get("REPRO_TEST_SLOW") == "1":
        runs.append(["-m", "slow"])
    return runs


def run_tests(python: Path, run=subprocess.run) -> int:
    """The default run: every test not marked slow; then, under CI (or REPRO_TEST_SLOW=1), the
    slow ones too. Exit status: the first non-zero of the two runs; a run that collected no
    tests (pytest's exit code 5) is a failure with a message saying so (the suite has slow tests:
    asking for them and getting none means they were lost, not that they passed)."""
    runs = marker_runs()
    if len(runs) == 1:
        print("bootstrap: tests marked slow are left out (REPRO_TEST_SLOW=1 runs them; CI does)",
              flush=True)
    status = 0
    for marker in runs:
        cmd = [str(python), "-m", "pytest", *marker]
        print("+", " ".join(cmd), flush=True)
        code = run(cmd).returncode
        if code == NO_TESTS_COLLECTED:
            print(f"bootstrap: FAILED: `pytest -m \"{marker[1]}\"` collected no tests (pytest "
                  f"exit code 5); this suite has tests of both kinds", file=sys.stderr, flush=True)
        status = status or code
    return status


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
        ensure_reference_env()
        if not rest:
            return run_tests(python)
        cmd = [str(python), "-m", "pytest", *rest]
    else:
        cmd = [str(venv_dir() / "bin" / "repro"), "submit", "smoke", *rest]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


if __name__ == "__main__":
    sys.exit(main())
