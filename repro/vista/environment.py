"""Vista's own Python environment: the interpreter its sample.py runs with (REPRO_VISTA_PYTHON,
default this suite's), checked by importing, in that interpreter, what sample.py imports and
the modules its inference config instantiates (probe.py). This suite's environment cannot run
Vista (pytorch_lightning, open_clip, xformers, an old transformers, ...): a wrong interpreter
would otherwise fail every sample shard at import time, after submission."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

PYTHON_ENV = "REPRO_VISTA_PYTHON"
PROBE = Path(__file__).with_name("probe.py")
PROBE_TIMEOUT_S = 600       # importing torch, lightning and open_clip on a cold file system
MARK = "REPRO-PROBE "


def python(given: str | None = None) -> str:
    """The interpreter Vista runs with: `given` (REPRO_VISTA_PYTHON or --python), else ours."""
    return given or sys.executable


def probe(interpreter: str, checkout: Path) -> dict[str, Any]:
    """probe.py's report, or {"error": why} when the interpreter did not run it."""
    try:
        out = subprocess.run([interpreter, str(PROBE), str(checkout)], capture_output=True,
                             text=True, timeout=PROBE_TIMEOUT_S)
    except FileNotFoundError:
        return {"error": f"no such interpreter: {interpreter}"}
    except subprocess.TimeoutExpired:
        return {"error": f"importing Vista's modules took over {PROBE_TIMEOUT_S} s"}
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
    return {"error": f"exit status {out.returncode}: {' | '.join(tail)}"}


def setup_hint(checkout: Path) -> str:
    return (f"make Vista's environment as its docs/INSTALL.md says (`conda create -n vista "
            f"python=3.9`; `conda install pytorch==2.0.1 torchvision==0.15.2 pytorch-cuda=11.7 "
            f"-c pytorch -c nvidia`; `pip install -r {checkout / 'requirements.txt'}`) and set "
            f"{PYTHON_ENV}=<that env>/bin/python (or pass --python)")


def check(interpreter: str, checkout: Path
          ) -> tuple[dict[str, Any], tuple[str, str, str] | None]:
    """(probe report, (what, path, fix) when `interpreter` cannot import Vista's modules)."""
    report = probe(interpreter, checkout)
    if "error" in report:
        return report, (f"Vista's Python ({report['error']})", interpreter,
                        setup_hint(checkout))
    if report["failed"]:
        line, why = next(iter(report["failed"].items()))
        more = len(report["failed"]) - 1
        return report, (f"Vista's Python: `{line}` fails with {why}"
                        + (f" (and {more} more imports)" if more > 0 else ""),
                        interpreter, setup_hint(checkout))
    return report, None


def describe(report: dict[str, Any]) -> str:
    """One line for `repro vista check`."""
    cuda = {True: "visible", False: "not visible here (the sample jobs request a GPU each)",
            None: "unknown (torch not imported)"}[report.get("cuda")]
    return (f"Python {report.get('version')} at {report.get('python')} imports "
            f"{len(report.get('checked', []))} of Vista's modules; CUDA {cuda}")
