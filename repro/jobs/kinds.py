"""Run kinds: what a run of the job graph is, asked instead of testing its stage.

A trained run (stages 1a-3, `TrainedRun`) trains from its parent's checkpoint and samples its
evaluation with our sampler. A Vista run (stage "vista", repro/vista/kind.py) has no training:
its own job prepares Vista (checkout, interpreter, checkpoint) and its sample shards run Vista's
sample.py. The scheduler (repro/launch/) asks a kind for job resources, record fields and the
dry-run plan; the job bodies (run.py, evaluation.py) for the work itself.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from evals.weights import cached_sha256, sidecar_cache
from maskgwm.config import get_scale
from maskgwm.config.resolve import STAGES

from repro.jobs.state import run_dir, run_state
from repro.records import EvalRecord, RunRecord, VistaFields
from repro.targets.jobfiles import ResolvedRun, Resources


class TrainedRun:
    """Stages 1a-3: the trainer, then our sampler from the run's `train/model.pt`."""
    name = "trained"
    job_verb = "train"      # what its own job does (progress lines)
    not_ready = "its training run is not done"
    unestimated = ""        # why dry runs give no sampling GPU-hours ("": they do)

    def evaluated(self, run: ResolvedRun) -> bool:
        """Whether the run gets sample and score jobs (given paper cells to fill)."""
        return run.stage in STAGES

    def job_resources(self, run: ResolvedRun) -> Resources:
        return run.resources

    def record_fields(self, run: ResolvedRun) -> dict[str, Any]:
        """Fields of the run's record (spec.json) beyond the run itself."""
        return {}

    def eval_fields(self, record: RunRecord, protocol: str) -> dict[str, Any]:
        """Fields of an evaluation's record (eval/<P>/spec.json) beyond the sampling."""
        return {}

    def before_submit(self, run: ResolvedRun, workdir: Path) -> str:
        """Work a submit does first (a note to print, or "")."""
        return ""

    def execute(self, spec: RunRecord, directory: Path) -> dict[str, Any]:
        """The run's own job: train from the parent run's checkpoint."""
        from repro.jobs.training import run_training
        parent = run_dir(directory.parent.parent, spec.parent_id) if spec.parent_id else None
        return {"training": run_training(spec, directory, parent)}

    def sample(self, spec: EvalRecord, directory: Path, shard: int) -> dict[str, Any]:
        """Generate one shard of the evaluation set (resumes a killed shard per clip)."""
        from evals.videoset import VideoSet
        from maskgwm.sample import sample_videoset

        from repro.jobs.evalsets import ensure_evalset
        model = self.model(spec, directory)
        evalset = ensure_evalset(spec.protocol, spec.scale, Path(spec.workdir))
        device = compute_device()
        long = evalset.protocol.long_horizon
        out = sample_videoset(model, _vae(spec, device), evalset.real_dir,
                              directory / "samples", shard=shard, num_shards=spec.shards,
                              steps=spec.steps, guidance=spec.guidance, seed=spec.seed,
                              window=long.window if long else None, device=device,
                              views=evalset.views)
        return {"shard": shard, "shards": spec.shards, "clips": len(VideoSet.open(out)),
                "out": str(out)}

    def model(self, spec: EvalRecord, directory: Path) -> Path:
        """What generated the clips: the trained run's checkpoint."""
        run = run_dir(Path(spec.workdir), spec.run_id)
        model = run / "train" / "model.pt"
        if run_state(run)[0] != "done" or not model.is_file():
            raise RuntimeError(f"run {spec.run_id} ({spec.name}) is not trained ({model} "
                               "missing); submit the target again once training has finished")
        return model

    def provenance(self, spec: EvalRecord, model: Path) -> dict[str, Any]:
        return {"checkpoint": str(model),
                "checkpoint_sha256": cached_sha256(model, sidecar_cache(model)),
                "sampling": {k: getattr(spec, k) for k in ("steps", "guidance", "shards", "seed")},
                "vae": (f"SD3VAE.random(seed={spec.vae_seed})"
                        if get_scale(spec.scale).synthetic else "SD3 VAE")}

    def echo_plan(self, run: ResolvedRun, workdir: Path, partition: str | None,
                  echo: Callable[[str], None]) -> None:
        """Dry run: print what the sample array runs beyond its shape (ours: nothing more)."""


def compute_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _vae(spec: EvalRecord, device: str):
    from maskgwm.model.vae import SD3VAE
    from maskgwm.train.modelsetup import SD3_FOLDER
    if get_scale(spec.scale).synthetic:   # the VAE the trainer encoded with (modelsetup)
        return SD3VAE.random(spec.vae_seed)
    root = os.environ.get("REPRO_WEIGHTS")
    if not root:
        raise FileNotFoundError(f"scale '{spec.scale}' decodes with SD3's VAE: set "
                                f"REPRO_WEIGHTS to a folder with {SD3_FOLDER}/")
    return SD3VAE.from_pretrained(Path(root) / SD3_FOLDER, device=device)


def kind_of(stage: str, vista: VistaFields | None = None):
    """The kind of a run of `stage` (a ResolvedRun's, RunRecord's or EvalRecord's); `vista`:
    what a submit was given for Vista runs (repro/vista/inputs.given_inputs)."""
    if stage == "vista":
        from repro.vista.kind import VistaRun
        return VistaRun(vista)
    return TrainedRun()
