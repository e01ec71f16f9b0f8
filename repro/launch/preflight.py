"""Pre-submit check: the weights and data a target's jobs need at lite and paper scale.

`repro submit` calls `check_inputs` right after resolving the target, before anything is
written or submitted, so a missing file is reported now, completely, instead of hours later on
a compute node one job at a time; `repro submit --dry-run` prints the same list as a warning.
`missing_inputs(runs, scale)` returns one `Missing` per file or folder: what it is, the exact
path looked at, the runs (or evaluations) that need it, and how to fix it.

Checked (paths as the jobs resolve them, from the same constants):
- training runs (stages 1a-3): SD3-medium's VAE, `$REPRO_WEIGHTS/<SD3_FOLDER>/vae/` (every run
  encodes frames with it; maskgwm.train.modelsetup.load_vae); SD3-medium's transformer,
  `.../transformer/` (stage 1a without a parent inflates it; build_model); with
  data.source = "real", each dataset of the stage's data.mix under REPRO_DATA_ROOT
  (maskgwm.data.registry) and the files its reader opens first.
- evaluated runs (paper cells; not with REPRO_EVAL=0): the VAE again (sample jobs decode with
  it), the protocol's FID and FVD detector weights in REPRO_DETECTOR_WEIGHTS (or REPRO_WEIGHTS),
  checked against the published hashes with evals.weights (a mismatch is a "wrong file"), and
  the protocol's real split under REPRO_DATA_ROOT (repro/jobs/evalsets.py) unless its evaluation set
  is built already.
Dataset files: OpenDV-2K `meta/OpenDV-YouTube.json` and `full_images/` (Train) or
`val_images/` (Val); nuScenes `v1.0-trainval/<table>.json` (13 tables), the map images that
map.json lists, `samples/` and (single view) `sweeps/`; Waymo v2 `camera_image/*.parquet`.

Not checked: parent checkpoints (the job graph trains them), `text_embeddings.pt` (optional:
zeros stand in), the nuScenes CAN bus (optional), individual frames (the readers check them),
Vista runs (stage "vista"): the Vista checkout (sample.py with every flag we pass,
configs/inference/vista.yaml, sample_utils.py) and checkpoint (repro/vista/checkout.py), at
lite/paper always and at ci/smoke whenever REPRO_VISTA_CHECKOUT is set (without it the Vista
runs are left out there, repro/vista/graph.py). Runs and evaluations already done need nothing.
Otherwise at ci and smoke scale (synthetic data, random VAE, random-weights detectors) nothing
is checked.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from maskgwm.config import get_scale
from maskgwm.data.registry import get_dataset
from maskgwm.config.resolve import STAGES

from repro.records import VistaFields
from repro.targets.jobfiles import ResolvedRun

SD3_REPO = "stabilityai/stable-diffusion-3-medium-diffusers"
TRANSFORMER_WEIGHTS = ("diffusion_pytorch_model.safetensors",   # diffusers' from_pretrained names
                       "diffusion_pytorch_model.safetensors.index.json",
                       "diffusion_pytorch_model.bin", "diffusion_pytorch_model.bin.index.json")
SHOWN_USERS = 6


@dataclass
class Missing:
    """One input that is missing (or, for detector weights, not the published file)."""
    what: str
    path: str
    fix: str
    needed_by: list[tuple[str, str]] = field(default_factory=list)   # (job kind, run name)
    problem: str = "missing"          # or "wrong file"

    def users(self) -> str:
        groups: dict[str, list[str]] = {}
        for kind, name in self.needed_by:
            groups.setdefault(kind, []).append(name)
        return "; ".join(f"{kind} of {', '.join(names[:SHOWN_USERS])}" +
                         (f" (+{len(names) - SHOWN_USERS} more)"
                          if len(names) > SHOWN_USERS else "")
                         for kind, names in groups.items())

    def describe(self) -> str:
        return (f"  - {self.what}: {self.problem} {self.path}\n"
                f"      needed by: {self.users()}\n      fix: {self.fix}")


class PreflightError(ValueError):
    """Inputs of a submission are missing; the message lists every one (the CLI exits 2)."""

    def __init__(self, missing: list[Missing], header: str):
        self.missing = list(missing)
        super().__init__(format_missing(self.missing, header))


def format_missing(missing: list[Missing], header: str) -> str:
    return "\n".join([header] + [item.describe() for item in missing])


@dataclass(frozen=True)
class _Root:
    """A folder given by an environment variable; None when the variable is unset."""
    path: Path | None
    env: str
    also: str = ""                    # a fallback variable, named in the fix

    def __truediv__(self, rel: str | Path) -> Path:
        return (self.path or Path(f"${self.env}")) / rel

    def setting(self, holding: str) -> str:
        if self.path is None:
            return (f"set {self.env}{f' (or {self.also})' if self.also else ''} to the folder "
                    f"holding {holding}; it is not set")
        return f"{self.env}={self.path} is the folder holding {holding}"

    def is_file(self, path: Path) -> bool:
        return self.path is not None and path.is_file()

    def is_dir(self, path: Path) -> bool:
        return self.path is not None and path.is_dir()


class _Found:
    """Missing items keyed by (what, path), each with every run that needs it."""

    def __init__(self):
        self.items: dict[tuple[str, str], Missing] = {}

    def add(self, what: str, path: Path | str, fix: str, user: tuple[str, str],
            problem: str = "missing") -> None:
        item = self.items.setdefault((what, str(path)), Missing(what, str(path), fix, [],
                                                                problem))
        if user not in item.needed_by:
            item.needed_by.append(user)


def _sd3(found: _Found, weights: _Root, component: str, weight_files: tuple[str, ...],
         user: tuple[str, str]) -> None:
    """config.json and a weights file of one SD3-medium component folder (vae, transformer)."""
    from maskgwm.train.modelsetup import SD3_FOLDER
    folder = weights / SD3_FOLDER / component
    what = f"SD3-medium {'VAE' if component == 'vae' else component}"
    fix = (f"download {SD3_REPO} from Hugging Face (gated: accept its licence first) into "
           f"{weights / SD3_FOLDER} ({weights.setting(SD3_FOLDER + '/')})")
    if not weights.is_file(folder / "config.json"):
        found.add(f"{what} config", folder / "config.json", fix, user)
    if not any(weights.is_file(folder / name) for name in weight_files):
        found.add(f"{what} weights", folder / weight_files[0], fix, user)


def _dataset(found: _Found, data: _Root, name: str, split: str, version: str,
             user: tuple[str, str]) -> None:
    dataset = get_dataset(name)
    root = data / dataset.folder
    fix = f"put {dataset.contents} at {root} ({data.setting(dataset.folder + '/')})"
    for what, path, kind in dataset.first_files(root, split, version, data.path is not None):
        if kind == "file":
            ok = data.is_file(path)
        elif kind == "dir":
            ok = data.is_dir(path)
        else:
            ok = data.is_dir(path.parent) and any(path.parent.glob(path.name))
        if not ok:
            found.add(what, path, fix, user)


def _detectors(found: _Found, protocol_name: str, weights: _Root, user: tuple[str, str],
               verified: dict[Path, str]) -> None:
    """The protocol's FID and FVD detector files, hash-checked once each (evals.weights)."""
    from evals.protocols import get_protocol
    from evals.weights import WeightsError, get_entry, verify_weights, where_to_get
    protocol = get_protocol(protocol_name)
    for name in dict.fromkeys((protocol.fid.detector, protocol.fvd.detector)):
        entry = get_entry(name)
        path = weights / entry.file_name
        what = f"{name} detector weights"
        if not weights.is_file(path):
            found.add(what, path, f"{where_to_get(entry, path)} "
                      f"({weights.setting('the detector files')})", user)
            continue
        if path not in verified:
            try:
                verify_weights(path, name)
                verified[path] = ""
            except WeightsError as err:
                verified[path] = str(err)
        if verified[path]:
            found.add(what, path, verified[path], user, problem="wrong file")


def _detector_root(scale: str, detector_root: str | Path | None) -> _Root:
    from repro.jobs.evaluation import WEIGHTS_ENV, detector_weights
    env = next((name for name in WEIGHTS_ENV if os.environ.get(name)), None)
    if detector_root:
        return _Root(Path(detector_root), env or WEIGHTS_ENV[0])
    return _Root(detector_weights(scale), env or WEIGHTS_ENV[0], "" if env else WEIGHTS_ENV[1])


def missing_inputs(runs: list[ResolvedRun], scale: str, workdir: Path | None = None,
                   evaluate: bool = True, weights_root: str | Path | None = None,
                   data_root: str | Path | None = None,
                   detector_root: str | Path | None = None,
                   vista: VistaFields | None = None) -> list[Missing]:
    """Every input the unfinished runs (and, with `evaluate`, evaluations) of `runs` need at
    `scale` that is not there; [] at ci and smoke scale. Roots default to REPRO_WEIGHTS,
    REPRO_DATA_ROOT and REPRO_DETECTOR_WEIGHTS (or REPRO_WEIGHTS); with `workdir`, runs and
    evaluations already done and evaluation sets already built are not checked."""
    external = _vista_missing(runs, scale, workdir, vista)
    if not get_scale(scale).checked:
        return external
    from maskgwm.model.vae import WEIGHT_FILES
    from maskgwm.train.options import env_path

    from repro.jobs.evaluation import eval_state
    from repro.jobs.evalsets import EVALSET_SOURCES, SET_FILE, evalset_dir
    from repro.jobs.state import eval_dir, run_dir, run_state
    from repro.launch.graph import evaluated_runs

    weights = _Root(env_path(weights_root, "REPRO_WEIGHTS"), "REPRO_WEIGHTS")
    data = _Root(env_path(data_root, "REPRO_DATA_ROOT"), "REPRO_DATA_ROOT")
    detectors = _detector_root(scale, detector_root)
    found, verified, trained = _Found(), {}, set()
    for run in runs:
        if run.stage not in STAGES or run.run_id in trained:   # Vista runs: _vista_missing
            continue
        trained.add(run.run_id)         # a union lists a run once per protocol
        if workdir is not None and run_state(run_dir(workdir, run.run_id))[0] == "done":
            continue
        user = ("training", run.name)
        _sd3(found, weights, "vae", WEIGHT_FILES, user)
        if run.stage == "1a" and run.parent_id is None:
            _sd3(found, weights, "transformer", TRANSFORMER_WEIGHTS, user)
        config = run.config.get("data", {})
        if config.get("source") != "real":
            continue
        for name, weight in config.get("mix", {}).items():
            if weight > 0 and get_dataset(name).train_split is not None:
                dataset = get_dataset(name)
                _dataset(found, data, name, dataset.train_split, dataset.train_version, user)
    for run in evaluated_runs(runs) if evaluate else []:
        if workdir is not None and \
                eval_state(eval_dir(workdir, run.run_id, run.protocol))[0] == "done":
            continue
        user = (f"evaluation ({run.protocol})", run.name)
        if run.stage in STAGES:           # Vista's evaluation decodes with its own VAE
            _sd3(found, weights, "vae", WEIGHT_FILES, user)
        _detectors(found, run.protocol, detectors, user, verified)
        if workdir is None or not (evalset_dir(workdir, run.protocol, scale) / SET_FILE).is_file():
            dataset, split, _, _ = EVALSET_SOURCES[run.protocol]
            _dataset(found, data, dataset, split, get_dataset(dataset).eval_version, user)
    return external + list(found.items.values())


def _vista_missing(runs: list[ResolvedRun], scale: str, workdir: Path | None,
                   vista: VistaFields | None) -> list[Missing]:
    """What the unfinished Vista runs need (repro/vista/graph.py, inputs.py)."""
    from repro.jobs.evaluation import eval_state
    from repro.jobs.state import eval_dir
    from repro.vista.graph import missing
    if workdir is not None:
        runs = [run for run in runs if run.stage != "vista" or
                eval_state(eval_dir(workdir, run.run_id, run.protocol))[0] != "done"]
    return [Missing(what, path, fix, list(users)) for what, path, fix, users
            in missing(runs, scale, workdir, vista)]


def check_inputs(runs: list[ResolvedRun], scale: str, workdir: Path | None = None,
                 evaluate: bool = True, vista: VistaFields | None = None) -> None:
    """PreflightError listing every missing input (see `missing_inputs`); nothing otherwise."""
    missing = missing_inputs(runs, scale, workdir, evaluate, vista=vista)
    if missing:
        target = runs[0].target if runs else "the target"
        raise PreflightError(missing, f"{len(missing)} inputs that {target} needs at scale "
                             f"'{scale}' are missing or wrong; nothing was submitted:")


def warn_missing(runs: list[ResolvedRun], scale: str, workdir: Path | None, evaluate: bool,
                 echo=print, vista: VistaFields | None = None) -> list[Missing]:
    """For dry runs: the same list as a warning section."""
    missing = missing_inputs(runs, scale, workdir, evaluate, vista=vista)
    if missing:
        echo("\n" + format_missing(missing, f"# WARNING: {len(missing)} inputs are missing or "
                                   f"wrong; `repro submit` will refuse until they are there:"))
    elif get_scale(scale).checked:
        echo("\n# preflight: every weight file and dataset checked is in place")
    return missing
