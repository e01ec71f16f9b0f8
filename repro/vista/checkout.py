"""Validate a Vista checkout and checkpoint before anything is submitted.

Vista's `sample.py` (OpenDriveLab/Vista, checked at `VISTA_COMMIT`) parses its flags with
`parse_known_args`, so an unknown flag is silently ignored: passing a flag an older or newer
script does not have would run the wrong experiment without an error. The "version" check
therefore reads the script's argparse calls (by parsing its source, never importing it) and
requires every flag we pass, with the action we rely on (`--rand_gen` must be store_false: with
it the script walks the manifest once in order and stops). The checkpoint's SHA-256 is computed
once and cached by (path, size, mtime) under `<workdir>/cache/vista-sha256.json`.
"""
from __future__ import annotations

import ast
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.weights import cached_sha256, sha256_file

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
    "--rand_gen": "store_false",
}
DOUBLE_MARKER = "VISTA_TEST_DOUBLE = True"


class VistaError(ValueError):
    """A Vista checkout, checkpoint or output that cannot be used; the message says the fix."""


@dataclass(frozen=True)
class VistaCheckout:
    root: Path
    ckpt: Path
    commit: str                     # git HEAD of the checkout, or "unknown (not a git checkout)"
    script_sha256: str
    ckpt_sha256: str
    flags: dict[str, Any] = field(default_factory=dict)   # flag -> {"default", "action"}
    test_double: bool = False

    def provenance(self) -> dict[str, Any]:
        return {"vista_checkout": str(self.root), "vista_commit": self.commit,
                "vista_expected_commit": VISTA_COMMIT, "vista_sample_py_sha256":
                self.script_sha256, "vista_ckpt": str(self.ckpt),
                "vista_ckpt_sha256": self.ckpt_sha256, "vista_test_double": self.test_double,
                "vista_defaults": {k: v["default"] for k, v in self.flags.items()
                                   if k in ("--n_steps", "--cfg_scale", "--cond_aug")}}


def resolve_paths(checkout: str | Path | None, ckpt: str | Path | None
                  ) -> tuple[Path | None, Path | None]:
    """Flags first, then REPRO_VISTA_CHECKOUT / REPRO_VISTA_CKPT; the checkpoint defaults to
    <checkout>/ckpts/vista.safetensors (where Vista's README says to put it)."""
    checkout = checkout or os.environ.get(CHECKOUT_ENV) or None
    ckpt = ckpt or os.environ.get(CKPT_ENV) or None
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


def problems(root: Path | None, ckpt: Path | None) -> list[tuple[str, str, str]]:
    """Everything wrong with a checkout and checkpoint as (what, path, fix); [] = usable."""
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
    if ckpt is None or not ckpt.is_file():
        found.append(("Vista checkpoint", str(ckpt or root / DEFAULT_CKPT),
                      f"download vista.safetensors from {CKPT_URL} into "
                      f"{root / DEFAULT_CKPT} (or point {CKPT_ENV} / `--ckpt` at it)"))
    return found


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


def validate(checkout: str | Path | None, ckpt: str | Path | None,
             workdir: Path | None = None) -> VistaCheckout:
    """The checkout and checkpoint, checked and hashed; VistaError listing every problem."""
    root, ckpt_path = resolve_paths(checkout, ckpt)
    found = problems(root, ckpt_path)
    if found:
        raise VistaError("Vista cannot run:\n" + describe(found))
    script = root / SCRIPT
    cache = Path(workdir) / "cache" / "vista-sha256.json" if workdir else None
    return VistaCheckout(root, ckpt_path, git_head(root), sha256_file(script),
                         cached_sha256(ckpt_path, cache), script_flags(script),
                         DOUBLE_MARKER in script.read_text())
