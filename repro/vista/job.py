"""Vista's part of the job graph: the prepare step, one sample shard, and the dry-run plan.

- `prepare(spec, directory)` (the Vista run's own job, repro/vista/kind.py): checks everything
  the run needs at its scale (inputs.py: the test double at ci/smoke, real Vista at lite/paper) and
  records it in the run's done.json (commit, SHA-256s, interpreter, whether the checkpoint is
  the pinned one).
- `run_shard(spec, directory, shard)` (the sample array task, repro/vista/kind.py): exports
  the bundle once, ingests what a killed earlier attempt left, stages the clips still missing,
  runs `sample.py`, ingests its output into `samples/` (the layout our sampler writes, so
  `merge_videosets` and scoring run unchanged). Resumable per clip.
- `settings_for(protocol, scale, seed, inputs)`: n_conds = the protocol's condition frames (1 for
  nuScenes and Waymo, 3 for opendv_long), n_rounds so 25 + 22 (k - 1) frames cover the
  protocol's longest point, Vista's 576x1024 at lite/paper, the eval set's size at ci/smoke
  (the double). Seed 23 (sample.py's default, which it re-sets before every clip) plus the
  run's seed replica; 50 steps, guidance 2.5 and noise augmentation 0 (sample.py's defaults,
  passed explicitly) unless the inputs' sampler overrides them (REPRO_VISTA_SAMPLER or
  --sampler "n_steps=25,cfg_scale=2.0").
  Assumed: Vista's own defaults are the settings its paper evaluated with (its evaluation code
  is unreleased, docs/DESIGN.md section 4).
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from repro.records import EvalRecord, RunRecord, VistaFields
from repro.vista.checkout import VistaError, resolve_paths
from repro.vista.export import VISTA_SIZE, export_bundle, rounds_for, vista_size
from repro.vista.ingest import check_complete, ingest
from repro.vista.inputs import given_inputs, stand_in, stand_in_note, stands_in, validate
from repro.vista.staging import OUT, VistaSettings, command, index_map, stage

VISTA_SEED = 23          # sample.py's default seed; a run's seed replica adds to it
BUNDLE, STAGE = "vista-input", "vista-stage"


def settings_for(protocol_name: str, scale: str, seed: int = 0,
                 inputs: VistaFields | None = None) -> VistaSettings:
    """sample.py's settings for a protocol at a scale (see the module doc); `inputs` (default:
    given_inputs()) may override the sampler and ask for --low_vram."""
    from evals.frames import frames_needed

    from repro.jobs.evalsets import scaled_protocol
    protocol = scaled_protocol(protocol_name, scale)
    if protocol.dataset == "nuscenes_mview":
        raise VistaError(f"protocol {protocol_name} is multi-view; Vista is single-view")
    width, height = vista_size(scale, protocol)
    inputs = inputs or given_inputs()
    return VistaSettings(n_conds=protocol.cond_frames,
                         n_rounds=rounds_for(frames_needed(protocol)),
                         width=width, height=height, seed=VISTA_SEED + seed,
                         low_vram=inputs.low_vram, **(inputs.sampler or {}))


def prepare(spec: RunRecord, directory: Path) -> dict[str, Any]:
    """The Vista run's job: everything it needs at its scale, checked and recorded."""
    workdir = Path(directory).parent.parent
    found = validate(spec.vista or VistaFields(), spec.scale, workdir)
    if stands_in(spec.scale):
        print(stand_in_note(found.given, spec.scale), flush=True)
    print(f"Vista {found.root} (commit {found.commit}), checkpoint {found.ckpt} (sha256 "
          f"{found.ckpt_sha256[:12]}{'' if found.ckpt_pinned else ', NOT the pinned file'}), "
          f"Python {found.python}", flush=True)
    return {"vista": found.provenance()}


def run_shard(spec: EvalRecord, directory: Path, shard: int,
              log=print) -> dict[str, Any]:
    """Sample shard `shard` of `spec.shards` with Vista (see the module doc)."""
    from evals.videoset import VideoSet
    from maskgwm.sample import record_settings, shard_dir

    from repro.jobs.evalsets import ensure_evalset
    shards = spec.shards
    vista = spec.vista
    found = validate(vista, spec.scale, Path(spec.workdir),
                     check_python=False)           # the prepare job probed it
    settings = VistaSettings(**vista.settings)
    if not found.test_double and (settings.width, settings.height) != VISTA_SIZE:
        raise VistaError(f"real Vista runs at {VISTA_SIZE[0]}x{VISTA_SIZE[1]} only, not "
                         f"{settings.width}x{settings.height} (scale {spec.scale})")
    evalset = ensure_evalset(spec.protocol, spec.scale, Path(spec.workdir))
    size = (evalset.protocol.width, evalset.protocol.height)
    bundle = export_bundle(evalset, directory / BUNDLE, settings.n_conds,
                           (settings.width, settings.height), settings.n_frames, log)
    real = VideoSet.open(evalset.real_dir)
    target = shard_dir(directory / "samples", shard, shards)
    target.mkdir(parents=True, exist_ok=True)
    record_settings(target, {"sampler": "vista", **settings.to_dict(),
                             "ingest_size": list(size)}, str(found.ckpt))
    stage_dir = directory / STAGE / f"{shard}-of-{shards}"
    staged = index_map(stage_dir)
    if staged and (stage_dir / OUT).is_dir():   # what a killed attempt left
        leftover = ingest(stage_dir / OUT, staged, real, target, settings.frames, size)
        if leftover.added:
            log(f"[{shard}/{shards}] ingested {len(leftover.added)} clips an earlier attempt "
                "left")
    mine = [entry.clip_id for i, entry in enumerate(real.clips) if i % shards == shard]
    done = set(c.clip_id for c in VideoSet.open(target).clips) \
        if (target / "manifest.json").is_file() else set()
    todo = [clip_id for clip_id in mine if clip_id not in done]
    argv = command(found.root, settings, found.python)
    if todo:
        stage(stage_dir, bundle, found.root, found.ckpt, todo)
        log(f"[{shard}/{shards}] Vista: {len(todo)} clips; cwd {stage_dir}\n  "
            + " ".join(argv))
        code = run_vista(argv, stage_dir, found.env())
        report = ingest(stage_dir / OUT, todo, real, target, settings.frames, size)
        if code != 0:
            raise VistaError(f"Vista's sample.py exited with status {code} after "
                             f"{len(report.added)} of {len(todo)} clips (see this job's log); "
                             "submitting again resumes with the remaining clips")
        check_complete(report, stage_dir / OUT)
    return {"shard": shard, "shards": shards, "clips": len(mine), "new": len(todo),
            "out": str(target), "argv": argv, "cwd": str(stage_dir), **found.provenance()}


def run_vista(argv: list[str], cwd: Path, env: dict[str, str]) -> int:
    """Run sample.py (its output goes to this job's log); its exit status."""
    return subprocess.run(argv, cwd=cwd, env={**os.environ, **env}).returncode


def plan(vista: VistaFields, scale: str, shards: int, directory: Path
         ) -> list[dict[str, Any]]:
    """Dry run: per shard, the staging directory and exact argv (nothing written)."""
    from repro.vista.environment import python
    settings = VistaSettings(**vista.settings)
    root, _ = resolve_paths(vista.checkout, vista.ckpt)
    interpreter = python(vista.python)
    if stands_in(scale):
        root, interpreter = stand_in(root)
    return [{"shard": i, "cwd": str(directory / STAGE / f"{i}-of-{shards}"),
             "argv": command(root or Path("<vista checkout>"), settings, interpreter)}
            for i in range(shards)]
