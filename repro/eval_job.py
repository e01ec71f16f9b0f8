"""Sampling and scoring of a trained run: the two job kinds that follow its training job.

For a run with paper cells, scored with protocol P at scale S, the evaluation lives in
`<workdir>/runs/<run_id>/eval/<P>/`:

    spec.json                      what to sample and score (written at submit time)
    job.json                       the submitted jobs (cluster, sample job ids, score job id)
    sample/<i>-of-<n>/             state of sample shard i: running.json, done.json, failed.json
    samples/shard-<i>-of-<n>/      its generated clips (resumable per clip; maskgwm.sample)
    generated/                     the shards merged (score job)
    score/                         state of the score job (running/done/failed.json)
    result.json                    evals.evaluate's result plus `provenance` (written last,
                                   atomically)

Node ids are `<run_id>/<P>/sample-<i>-of-<n>` and `<run_id>/<P>/score`: stable across submits,
so a resubmit skips finished nodes, resumes unfinished ones and a run shared by several
targets is scored once per protocol. The evaluation set (the real clips) is built on first use
by whichever job needs it (repro/evalsets.py, atomic). Multi-view protocols (drivewm_mview)
sample the views of a scene jointly and shard by scene (maskgwm/sample_mview.py); their scores
count each (scene, view) as one video.

A Vista run (stage "vista") has the same layout: its shards run Vista's own sample.py in
`vista-stage/<i>-of-<n>/` from the bundle in `vista-input/` and ingest its PNGs into
`samples/` (repro/vista/job.py); result.json's provenance records the Vista checkout commit,
sample.py's and the checkpoint's SHA-256 (and whether it is the pinned file), the Python it ran
with and Vista's sampler settings instead of our checkpoint, and `vista_label` says whether it
was the official checkpoint, another file, or the test double.

Settings per scale are the Scale record's `sampling` (maskgwm/config/scales.toml; assumed;
paper: 30 Euler steps and CFG 4.0 as the
paper's sampling, shards are an operational choice). Detectors: ci/smoke use seeded
random-weights detectors (every number labelled); lite/paper read the weights folder from
REPRO_DETECTOR_WEIGHTS (or REPRO_WEIGHTS), falling back to labelled random detectors.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import submitit

from evals.atomic import atomic_write_json, read_json
from evals.weights import cached_sha256, sidecar_cache
from maskgwm.config import content_hash, get_scale

from .records import EvalRecord, RunRecord, VistaFields
from .runner import _now, _provenance, git_commit, run_dir, run_state

WEIGHTS_ENV = ("REPRO_DETECTOR_WEIGHTS", "REPRO_WEIGHTS")


def eval_dir(workdir: Path, run_id: str, protocol: str) -> Path:
    return run_dir(workdir, run_id) / "eval" / protocol


def shard_state_dir(directory: Path, shard: int, shards: int) -> Path:
    return directory / "sample" / f"{shard}-of-{shards}"


def node_id(run_id: str, protocol: str, kind: str, shard: int = 0, shards: int = 1) -> str:
    return f"{run_id}/{protocol}/" + (f"sample-{shard}-of-{shards}" if kind == "sample"
                                      else "score")


def eval_record(run: RunRecord, protocol: str, workdir: Path, shards: int | None = None,
                commit: str = "") -> EvalRecord:
    """The evaluation of one run under one protocol (written to <eval>/spec.json); a Vista
    run's also holds its checkout, checkpoint and sample.py settings (repro/vista/)."""
    options = get_scale(run.scale).sampling
    shards = shards or options.shards
    vista = None
    if run.stage == "vista":
        from .vista.job import settings_for
        settings = settings_for(protocol, run.scale, run.config.get("seed", 0))
        vista = dataclasses.replace(run.vista or VistaFields(), settings=settings.to_dict())
    return EvalRecord(
        run_id=run.run_id, target=run.target, name=run.name, stage=run.stage, scale=run.scale,
        protocol=protocol, config_hash=content_hash(run.config), vae_seed=run.config["seed"],
        workdir=str(Path(workdir).resolve()), steps=options.steps, guidance=options.guidance,
        shards=shards, seed=options.seed + run.config.get("seed", 0),   # + the run's seed
        vista=vista, submitted_from_commit=commit,
        nodes=[node_id(run.run_id, protocol, "sample", i, shards) for i in range(shards)]
        + [node_id(run.run_id, protocol, "score")])


def eval_state(directory: Path) -> tuple[str, dict[str, Any]]:
    """(state, details) of an evaluation: done once result.json is there."""
    if (directory / "result.json").is_file():
        return "done", read_json(directory / "result.json")
    state, details = run_state(directory / "score")
    if state == "pending" and any(run_state(d)[0] in ("running", "done", "failed")
                                  for d in (directory / "sample").glob("*-of-*")):
        failed = [d for d in (directory / "sample").glob("*-of-*")
                  if run_state(d)[0] == "failed"]
        if failed:
            return "failed", run_state(failed[0])[1]
        return "running", {}
    return state, details


def _device() -> str:
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


def _checkpoint(spec: EvalRecord) -> Path:
    run = run_dir(Path(spec.workdir), spec.run_id)
    model = run / "train" / "model.pt"
    if run_state(run)[0] != "done" or not model.is_file():
        raise RuntimeError(f"run {spec.run_id} ({spec.name}) is not trained ({model} "
                           "missing); submit the target again once training has finished")
    return model


def _guarded(state_dir: Path, work) -> dict[str, Any]:
    """Run `work()` with running/done/failed.json in `state_dir` (as runner.execute does)."""
    state, done = run_state(state_dir)
    if state == "done":
        return done
    (state_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(state_dir / "running.json", {"started": _now(), **_provenance()})
    try:
        outcome = work()
        record = {"finished": _now(), **outcome, **_provenance()}
    except SystemExit as exit_:    # submitit requeued the job (preemption, time limit)
        atomic_write_json(state_dir / "running.json",
                          {"requeued": _now(), "reason": f"exit {exit_.code} on the scheduler's "
                           "signal (requeued)", **_provenance()})
        raise
    except BaseException as err:
        import traceback
        atomic_write_json(state_dir / "failed.json",
                          {"finished": _now(), "error": f"{type(err).__name__}: {err}",
                           "traceback": traceback.format_exc(), **_provenance()})
        (state_dir / "running.json").unlink(missing_ok=True)
        raise
    (state_dir / "failed.json").unlink(missing_ok=True)
    atomic_write_json(state_dir / "done.json", record)
    (state_dir / "running.json").unlink(missing_ok=True)
    return record


def sample_shard(spec_path: str | Path, shard: int) -> dict[str, Any]:
    """Generate shard `shard` of a run's evaluation set (resumes a killed shard per clip)."""
    from maskgwm.sample import sample_videoset

    from .evalsets import ensure_evalset
    spec_path = Path(spec_path)
    spec, directory = EvalRecord.read(spec_path), spec_path.parent
    shards = spec.shards
    if spec.stage == "vista":    # Vista's own sample.py, staged per shard
        from .vista.job import run_shard
        _vista_record(spec)
        return _guarded(shard_state_dir(directory, shard, shards),
                        lambda: run_shard(spec, directory, shard))

    def work() -> dict[str, Any]:
        model = _checkpoint(spec)
        evalset = ensure_evalset(spec.protocol, spec.scale, Path(spec.workdir))
        device = _device()
        long = evalset.protocol.long_horizon
        out = sample_videoset(model, _vae(spec, device), evalset.real_dir,
                              directory / "samples", shard=shard, num_shards=shards,
                              steps=spec.steps, guidance=spec.guidance, seed=spec.seed,
                              window=long.window if long else None, device=device,
                              views=evalset.views)
        from evals.videoset import VideoSet
        return {"shard": shard, "shards": shards, "clips": len(VideoSet.open(out)),
                "out": str(out)}

    return _guarded(shard_state_dir(directory, shard, shards), work)


def detector_weights(scale: str) -> Path | None:
    if get_scale(scale).synthetic:
        return None
    for name in WEIGHTS_ENV:
        if os.environ.get(name):
            return Path(os.environ[name])
    return None


def score(spec_path: str | Path) -> dict[str, Any]:
    """Merge the sample shards and score them into <eval>/result.json (with provenance)."""
    from evals.evaluate import evaluate
    from maskgwm.sample import merge_videosets, shard_dir

    from .evalsets import ensure_evalset
    spec_path = Path(spec_path)
    spec, directory = EvalRecord.read(spec_path), spec_path.parent
    shards = spec.shards

    def work() -> dict[str, Any]:
        unfinished = [i for i in range(shards)
                      if run_state(shard_state_dir(directory, i, shards))[0] != "done"]
        if unfinished:
            raise RuntimeError(f"evaluation {directory}: sample shards {unfinished} of {shards} "
                               "are not done; submit the target again")
        model = _vista_shards_agree(spec, directory) if spec.stage == "vista" \
            else _checkpoint(spec)
        evalset = ensure_evalset(spec.protocol, spec.scale, Path(spec.workdir))
        parts = [shard_dir(directory / "samples", i, shards) for i in range(shards)]
        generated = merge_videosets(parts, directory / "generated", reference=evalset.real_dir)
        weights = detector_weights(spec.scale)
        raw = directory / "score" / "evaluate.json"
        result = evaluate(evalset.protocol, directory / "generated", evalset.real_dir, raw,
                          weights_dir=weights, clip_list=evalset.clip_list,
                          cache_dir=Path(spec.workdir) / "cache" / "eval-reference",
                          device=_device(), progress=False)
        detectors = {d["role"]: d["weights_sha256"] or result["label"]
                     for d in result["detectors"]}
        result["provenance"] = {
            "git_commit": git_commit(), "run_id": spec.run_id, "target": spec.target,
            "name": spec.name, "scale": spec.scale, "config_hash": spec.config_hash,
            "protocol": evalset.protocol.name, "protocol_hash": evalset.protocol.hash,
            "clip_list_hash": evalset.clip_list_hash, "detector_weights": detectors,
            "sample_count": len(generated), **_model_provenance(spec, model),
            "scored": _now()}
        atomic_write_json(directory / "result.json", result)
        points = [{"fid": p["fid"]["value"], "fvd": p["fvd"]["value"]} for p in result["points"]]
        return {"result": str(directory / "result.json"), "points": points}

    if (directory / "result.json").is_file():
        return read_json(directory / "score" / "done.json") \
            if (directory / "score" / "done.json").is_file() else {}
    return _guarded(directory / "score", work)


def _vista_record(spec: EvalRecord) -> dict[str, Any]:
    """The Vista run's prepare record (checkout commit, sample.py and checkpoint SHA-256)."""
    run = run_dir(Path(spec.workdir), spec.run_id)
    state, record = run_state(run)
    if state != "done" or "vista" not in record:
        raise RuntimeError(f"Vista run {spec.run_id} ({spec.name}) is {state}, not "
                           "prepared; submit the target again")
    return record["vista"]


def _vista_shards_agree(spec: EvalRecord, directory: Path) -> dict[str, Any]:
    """The prepare record, after checking every shard ran the same sample.py and checkpoint."""
    record = _vista_record(spec)
    keys = ("vista_sample_py_sha256", "vista_ckpt_sha256")
    for shard in range(spec.shards):
        done = run_state(shard_state_dir(directory, shard, spec.shards))[1]
        if any(done.get(key) != record[key] for key in keys):
            raise RuntimeError(f"sample shard {shard} of {directory} ran another Vista "
                               "sample.py or checkpoint than the run recorded; delete "
                               f"{directory} and {run_dir(Path(spec.workdir), spec.run_id)}"
                               "/done.json, then submit again")
    return record


def _model_provenance(spec: EvalRecord, model: Path | dict[str, Any]) -> dict[str, Any]:
    """What generated the clips: our checkpoint and sampling, or Vista's (repro/vista/)."""
    if spec.stage == "vista":
        settings = spec.vista.settings
        return {**model, "sampler": "vista", "sampling": {**settings, "shards": spec.shards},
                "vista_resolution": (f"{settings['width']}x{settings['height']} (the evaluation "
                                     "set's size: ci/smoke, test double)"
                                     if get_scale(spec.scale).synthetic
                                     else f"{settings['width']}x{settings['height']} (Vista's)"),
                "vista_label": vista_label(model)}
    return {"checkpoint": str(model),
            "checkpoint_sha256": cached_sha256(model, sidecar_cache(model)),
            "sampling": {k: getattr(spec, k) for k in ("steps", "guidance", "shards", "seed")},
            "vae": (f"SD3VAE.random(seed={spec.vae_seed})"
                    if get_scale(spec.scale).synthetic else "SD3 VAE")}


VISTA_LABEL = "Vista (official checkpoint, this suite's evaluation)"
VISTA_DOUBLE_LABEL = "Vista TEST DOUBLE (not the official checkpoint)"


def vista_label(record: dict[str, Any]) -> str:
    if record.get("vista_test_double"):
        return VISTA_DOUBLE_LABEL
    if not record.get("vista_ckpt_pinned"):
        return (f"Vista (checkpoint sha256 {str(record.get('vista_ckpt_sha256'))[:12]}..., NOT "
                "the published file; this suite's evaluation)")
    return VISTA_LABEL


class SampleJob(submitit.helpers.Checkpointable):
    """One sample shard; requeued on timeout/preemption (the shard resumes per clip)."""

    def __call__(self, spec_path: str, shard: int) -> dict[str, Any]:
        return sample_shard(spec_path, shard)


class ScoreJob(submitit.helpers.Checkpointable):
    """Merge and score; requeued on timeout/preemption (the merge resumes per clip)."""

    def __call__(self, spec_path: str) -> dict[str, Any]:
        return score(spec_path)


def main(argv: list[str] | None = None) -> int:
    """python -m repro.eval_job sample SPEC SHARD | score SPEC (for manual reruns)."""
    import sys
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "sample":
        sample_shard(args[1], int(args[2]))
    elif len(args) == 2 and args[0] == "score":
        score(args[1])
    else:
        print(main.__doc__)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
