"""A Vista checkout: where it is, and whether its sample.py is the one this suite drives.

Vista's `sample.py` (OpenDriveLab/Vista, checked at `VISTA_COMMIT`) parses its flags with
`parse_known_args`, so an unknown flag is silently ignored: passing a flag an older or newer
script does not have would run the wrong experiment without an error. The "version" check
therefore reads the script's argparse calls (by parsing its source, never importing it) and
requires every flag we pass, with the action we rely on (`--rand_gen` must be store_false: with
it the script walks the manifest once in order and stops). The sampler settings are passed
explicitly too, so a checkout whose defaults differ cannot change them unseen. `DOUBLE` is the
test double that stands in for Vista at ci/smoke scale (repro/vista/inputs.py).
"""
from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

VISTA_REPO = "https://github.com/OpenDriveLab/Vista"
VISTA_COMMIT = "cc9821b4253ca7987c32757613d2fc2448fa9f5d"   # main, 2025-07-02: flags checked here
CKPT_URL = "https://huggingface.co/OpenDriveLab/Vista/blob/main/vista.safetensors"
CHECKOUT_ENV, CKPT_ENV = "REPRO_VISTA_CHECKOUT", "REPRO_VISTA_CKPT"
SCRIPT, CONFIG = "sample.py", "configs/inference/vista.yaml"
DEFAULT_CKPT = "ckpts/vista.safetensors"
REQUIRED_FILES = (SCRIPT, CONFIG, "sample_utils.py")
REQUIRED_FLAGS: dict[str, str | None] = {   # flag -> argparse action we rely on (None: a value)
    "--dataset": None, "--save": None, "--action": None, "--n_rounds": None, "--n_frames": None,
    "--n_conds": None, "--seed": None, "--height": None, "--width": None,
    "--n_steps": None, "--cfg_scale": None, "--cond_aug": None, "--rand_gen": "store_false",
}
DOUBLE_MARKER = "VISTA_TEST_DOUBLE = True"
DOUBLE = Path(__file__).resolve().with_name("double")   # the bundled test double


class VistaError(ValueError):
    """A Vista checkout, checkpoint or output that cannot be used; the message says the fix."""


def resolve_paths(checkout: str | Path | None, ckpt: str | Path | None
                  ) -> tuple[Path | None, Path | None]:
    """Absolute paths; the checkpoint defaults to <checkout>/ckpts/vista.safetensors (where
    Vista's README says to put it)."""
    root = Path(checkout).expanduser().resolve() if checkout else None
    if ckpt is None and root is not None:
        ckpt = root / DEFAULT_CKPT
    return root, Path(ckpt).expanduser().resolve() if ckpt else None


def script_flags(script: Path) -> dict[str, dict[str, Any]]:
    """{flag: {"default", "action"}} from the script's `add_argument` calls (source only)."""
    tree = ast.parse(script.read_text(), str(script))
    flags: dict[str, dict[str, Any]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"):
            continue
        names = [a.value for a in node.args if isinstance(a, ast.Constant)
                 and isinstance(a.value, str) and a.value.startswith("--")]
        info: dict[str, Any] = {"default": None, "action": None}
        for keyword in node.keywords:
            if keyword.arg in info:
                try:
                    info[keyword.arg] = ast.literal_eval(keyword.value)
                except ValueError:
                    info[keyword.arg] = ast.unparse(keyword.value)
        for name in names:
            flags[name] = info
    return flags


def checkout_problems(root: Path | None) -> list[tuple[str, str, str]]:
    """Everything wrong with a checkout's files and sample.py flags as (what, path, fix)."""
    where = (f"clone {VISTA_REPO} (checked at commit {VISTA_COMMIT}) and give it with "
             f"{CHECKOUT_ENV} (or `repro submit ... --vista-checkout DIR`, "
             "`repro vista ... --checkout DIR`)")
    if root is None:
        return [("no Vista checkout given", f"${CHECKOUT_ENV}", where)]
    if not root.is_dir():
        return [("Vista checkout (not a directory)", str(root), where)]
    found = [(f"Vista's {name} (not a Vista checkout)", str(root / name), where)
             for name in REQUIRED_FILES if not (root / name).is_file()]
    version = (f"this suite drives the sample.py of Vista commit {VISTA_COMMIT}: "
               f"`git -C {root} checkout {VISTA_COMMIT}`")
    if (root / SCRIPT).is_file():
        try:
            flags = script_flags(root / SCRIPT)
        except SyntaxError as err:
            flags = {}
            found.append((f"a parseable sample.py ({err})", str(root / SCRIPT), version))
        for flag, action in REQUIRED_FLAGS.items():
            if flag not in flags:
                found.append((f"the {flag} flag of sample.py (unexpected Vista version)",
                              str(root / SCRIPT), version))
            elif action and flags[flag]["action"] != action:
                found.append((f"{flag} as {action} (it is {flags[flag]['action']}: "
                              "unexpected Vista version)", str(root / SCRIPT), version))
    return found


def is_double(root: Path) -> bool:
    """Whether `root` holds a test double of sample.py rather than Vista's."""
    script = Path(root) / SCRIPT
    return script.is_file() and DOUBLE_MARKER in script.read_text()


def describe(found: list[tuple[str, str, str]]) -> str:
    return "\n".join(f"  - {what}: missing or wrong: {path}\n      fix: {fix}"
                     for what, path, fix in found)


def git_head(root: Path) -> str:
    """HEAD of the checkout when `root` is the top of a git work tree (not merely inside one,
    like the test double inside this repository)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git failed)"
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != root.resolve():
        return "unknown (not a git checkout)"
    return lines[1]
