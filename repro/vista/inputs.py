"""Everything one Vista run needs, checked together: which sample.py runs, with which Python,
checkpoint and CLIP weights, and what the results record about them.

- lite/paper scale: real Vista. The user's checkout (files and flags, checkout.py), Vista's own
  interpreter able to import its modules (environment.py), the pinned checkpoint and the CLIP
  weights in a local hub cache (weights.py), one GPU per sample task, Vista's 576x1024.
- ci/smoke scale: the TEST DOUBLE stands in (real Vista needs a GPU and its resolution, these
  scales run on CPUs at the evaluation set's size). A checkout given there switches the Vista
  runs on and is checked for files and flags only; the double runs with this suite's Python,
  stand-in weight files and a stand-in hub cache, through the same staging and environment as
  real Vista. A checkout that is itself a test double (CI) is used as given.

`VistaSetup.provenance()` is what the prepare job records and every Vista result carries.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.weights import cached_sha256, sha256_file

from repro.records import VistaFields
from repro.vista.checkout import (CHECKOUT_ENV, CKPT_ENV, CKPT_URL, DEFAULT_CKPT, DOUBLE,
                                  SCRIPT, VISTA_COMMIT, VistaError, checkout_problems,
                                  describe, git_head, is_double, resolve_paths, script_flags)
from repro.vista.environment import PYTHON_ENV, python
from repro.vista.environment import check as check_python_env
from repro.vista.environment import describe as describe_env
from repro.vista.weights import (CHECKPOINT, CLIP_BIN, CLIP_ENV, UNPINNED_ENV, Pin, clip_fix,
                                 local_hub, pin_problem, resolve_clip, write_stand_in)

LOW_VRAM_ENV = "REPRO_VISTA_LOW_VRAM"   # =1: pass --low_vram (Vista: for GPUs under 80 GB)
SAMPLER_ENV = "REPRO_VISTA_SAMPLER"     # "n_steps=25,cfg_scale=2.0,cond_aug=0.0"
SAMPLER_KEYS = {"n_steps": int, "cfg_scale": float, "cond_aug": float}


def given_inputs(checkout: str | Path | None = None, ckpt: str | Path | None = None,
                 python: str | None = None, clip: str | Path | None = None,
                 allow_unpinned: bool = False, sampler: str | None = None,
                 low_vram: bool | None = None) -> VistaFields:
    """What the user gave for Vista: flags first, then the REPRO_VISTA_* variables. The only
    place those variables are read; everything else takes the fields this returns."""
    env = os.environ
    root, ckpt_path = resolve_paths(checkout or env.get(CHECKOUT_ENV) or None,
                                    ckpt or env.get(CKPT_ENV) or None)
    clip = clip or env.get(CLIP_ENV) or None
    return VistaFields(
        checkout=str(root) if root else None, ckpt=str(ckpt_path) if ckpt_path else None,
        python=python or env.get(PYTHON_ENV) or None,
        clip=str(Path(clip).expanduser().resolve()) if clip else None,
        allow_unpinned=allow_unpinned or env.get(UNPINNED_ENV) == "1",
        sampler=parse_sampler(env.get(SAMPLER_ENV, "") if sampler is None else sampler),
        low_vram=env.get(LOW_VRAM_ENV) == "1" if low_vram is None else low_vram)


def parse_sampler(text: str) -> dict[str, Any] | None:
    """"n_steps=25,cfg_scale=2.0" as {n_steps, cfg_scale, cond_aug} (only those given)."""
    found: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, _, value = item.partition("=")
        if key.strip() not in SAMPLER_KEYS:
            raise VistaError(f"{SAMPLER_ENV}: unknown setting '{key}' (known: "
                             f"{', '.join(SAMPLER_KEYS)}; e.g. n_steps=25,cfg_scale=2.0)")
        try:
            found[key.strip()] = SAMPLER_KEYS[key.strip()](value)
        except ValueError:
            raise VistaError(f"{SAMPLER_ENV}: '{item}' is not a number") from None
    return found or None


@dataclass(frozen=True)
class VistaSetup:
    root: Path                       # the checkout whose sample.py runs
    given: Path                      # the checkout the user gave
    python: str
    ckpt: Path
    ckpt_sha256: str
    ckpt_pinned: bool
    clip_cache: Path                 # HF_HUB_CACHE for the run (HF_HUB_OFFLINE=1)
    clip_file: Path
    commit: str
    script_sha256: str
    flags: dict[str, Any] = field(default_factory=dict)

    @property
    def test_double(self) -> bool:
        return is_double(self.root)

    @property
    def standing_in(self) -> bool:
        """The double runs in place of a real checkout the user gave."""
        return self.root != self.given

    def env(self) -> dict[str, str]:
        """Environment additions for sample.py: the CLIP weights come from the local cache."""
        return {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(self.clip_cache),
                "TRANSFORMERS_OFFLINE": "1"}

    def provenance(self) -> dict[str, Any]:
        return {"vista_checkout": str(self.given), "vista_ran": str(self.root),
                "vista_commit": self.commit, "vista_expected_commit": VISTA_COMMIT,
                "vista_sample_py_sha256": self.script_sha256, "vista_ckpt": str(self.ckpt),
                "vista_ckpt_sha256": self.ckpt_sha256, "vista_ckpt_pinned": self.ckpt_pinned,
                "vista_ckpt_expected_sha256": CHECKPOINT.sha256,
                "vista_clip_weights": str(self.clip_file), "vista_python": self.python,
                "vista_test_double": self.test_double, "vista_standing_in": self.standing_in}


def stands_in(scale: str) -> bool:
    """At synthetic scales (CPU jobs at the evaluation set's size) the double stands in."""
    from maskgwm.config import get_scale
    return get_scale(scale).synthetic


def stand_in(given: Path | None) -> tuple[Path, str]:
    """The checkout and Python that run where the double stands in: a given double as it
    is, else the bundled one; this suite's Python."""
    return (given if given is not None and is_double(given) else DOUBLE), sys.executable


def stand_in_note(given: Path | None, scale: str) -> str:
    root = stand_in(given)[0]
    runs = root / SCRIPT
    instead = "" if root == given or given is None else f" in place of {given}"
    return (f"Vista at scale '{scale}': the TEST DOUBLE {runs} stands in{instead}; it is not "
            "Vista and its numbers are not Vista's. Real Vista runs at lite/paper scale, one "
            "GPU per sample task, at 576x1024")


def problems(inputs: VistaFields, scale: str, workdir: Path | None = None,
             check_python: bool = True) -> list[tuple[str, str, str]]:
    """Everything wrong for a Vista run at `scale`, as (what, path, fix); [] = it can run.
    `workdir` (default REPRO_WORKDIR's) holds the hash cache and a given CLIP file's hub."""
    workdir = _workdir(workdir)
    root, ckpt_path = resolve_paths(inputs.checkout, inputs.ckpt)
    found = checkout_problems(root)
    if found or stands_in(scale):
        return found
    if check_python:
        wrong = check_python_env(python(inputs.python), root)[1]
        found += [wrong] if wrong else []
    if ckpt_path is None or not ckpt_path.is_file():
        found.append(("Vista checkpoint", str(ckpt_path or root / DEFAULT_CKPT),
                      f"download vista.safetensors from {CKPT_URL} into {root / DEFAULT_CKPT} "
                      "(or point REPRO_VISTA_CKPT / --ckpt at it)"))
    else:
        found += _unpinned(ckpt_path, CHECKPOINT, workdir, inputs.allow_unpinned)
    cache, clip = resolve_clip(workdir, inputs.clip)
    if clip is None:
        found.append(("OpenCLIP ViT-H-14 weights (laion2b_s32b_b79k) in a local hub cache",
                      str(cache), clip_fix(cache)))
    elif clip.name == CLIP_BIN.file_name:
        found += _unpinned(clip, CLIP_BIN, workdir, inputs.allow_unpinned)
    return found


def _unpinned(path: Path, pin: Pin, workdir: Path, allowed: bool
              ) -> list[tuple[str, str, str]]:
    """[(what, path, fix)] when `path` is not the pinned file and no override allows it."""
    wrong = None if allowed else pin_problem(path, pin, _hash_cache(workdir))
    return [(wrong[0], str(path), wrong[1])] if wrong else []


def validate(inputs: VistaFields, scale: str, workdir: Path | None = None,
             check_python: bool = True) -> VistaSetup:
    """The checked setup for a Vista run at `scale`; VistaError listing every problem."""
    workdir = _workdir(workdir)
    found = problems(inputs, scale, workdir, check_python)
    if found:
        raise VistaError("Vista cannot run:\n" + describe(found))
    return _setup(inputs, scale, workdir)


def _setup(inputs: VistaFields, scale: str, workdir: Path) -> VistaSetup:
    """The setup of inputs `problems` found nothing wrong with."""
    given, ckpt_path = resolve_paths(inputs.checkout, inputs.ckpt)
    if stands_in(scale):
        root, interpreter = stand_in(given)
        stand_ins = workdir / "cache" / "vista-double"
        ckpt_path = write_stand_in(stand_ins / "vista.safetensors", "test double checkpoint")
        clip = write_stand_in(stand_ins / CLIP_BIN.file_name, "test double CLIP weights")
        cache = local_hub(clip, stand_ins)
    else:
        root, interpreter = given, python(inputs.python)
        cache, clip = resolve_clip(workdir, inputs.clip)
    sha = cached_sha256(ckpt_path, _hash_cache(workdir))
    return VistaSetup(root, given, interpreter, ckpt_path, sha, sha == CHECKPOINT.sha256,
                      cache, clip, git_head(root), sha256_file(root / SCRIPT),
                      script_flags(root / SCRIPT))


def check_report(inputs: VistaFields, workdir: Path | None
                 ) -> tuple[list[str], list[tuple[str, str, str]]]:
    """`repro vista check` (real Vista, as at lite/paper): (lines describing the setup, [])
    or ([], every problem)."""
    root, _ = resolve_paths(inputs.checkout, inputs.ckpt)
    found = problems(inputs, "paper", workdir, check_python=False)
    report: dict[str, Any] = {}
    if root is not None and not checkout_problems(root):
        report, wrong = check_python_env(python(inputs.python), root)
        found += [wrong] if wrong else []
    if found:
        return [], found
    setup = _setup(inputs, "paper", _workdir(workdir))
    return ([f"{key}: {value}" for key, value in setup.provenance().items()]
            + [f"vista_python_check: {describe_env(report)}"]), []


def _workdir(workdir: Path | None) -> Path:
    from repro.paths import work_dir
    return Path(workdir) if workdir is not None else work_dir()


def _hash_cache(workdir: Path) -> Path:
    return Path(workdir) / "cache" / "vista-sha256.json"
