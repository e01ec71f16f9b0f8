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
by whichever job needs it (repro/jobs/evalsets.py, atomic). Multi-view protocols (drivewm_mview)
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

import os
from pathlib import Path
from typing import Any

import submitit

from evals.atomic import atomic_write_json, read_json
from maskgwm.config import content_hash, get_scale

from repro.jobs.kinds import compute_device, kind_of
from repro.jobs.state import git_commit, guarded, now, run_state, shard_state_dir
from repro.records import EvalRecord, RunRecord

WEIGHTS_ENV = ("REPRO_DETECTOR_WEIGHTS", "REPRO_WEIGHTS")


def node_id(run_id: str, protocol: str, kind: str, shard: int = 0, shards: int = 1) -> str:
    return f"{run_id}/{protocol}/" + (f"sample-{shard}-of-{shards}" if kind == "sample"
                                      else "score")


def eval_record(run: RunRecord, protocol: str, workdir: Path, shards: int | None = None,
                commit: str = "") -> EvalRecord:
    """The evaluation of one run under one protocol (written to <eval>/spec.json), with what
    its run kind adds (a Vista run's checkout, checkpoint and sample.py settings)."""
    options = get_scale(run.scale).sampling
    shards = shards or options.shards
    return EvalRecord(
        run_id=run.run_id, target=run.target, name=run.name, stage=run.stage, scale=run.scale,
        protocol=protocol, config_hash=content_hash(run.config), vae_seed=run.config["seed"],
        workdir=str(Path(workdir).resolve()), steps=options.steps, guidance=options.guidance,
        shards=shards, seed=options.seed + run.config.get("seed", 0),   # + the run's seed
        submitted_from_commit=commit, **kind_of(run.stage).eval_fields(run, protocol),
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


def sample_shard(spec_path: str | Path, shard: int) -> dict[str, Any]:
    """Generate shard `shard` of a run's evaluation set with its kind's sampler."""
    spec_path = Path(spec_path)
    spec, directory = EvalRecord.read(spec_path), spec_path.parent
    return guarded(shard_state_dir(directory, shard, spec.shards),
                   lambda: kind_of(spec.stage).sample(spec, directory, shard))


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

    from repro.jobs.evalsets import ensure_evalset
    spec_path = Path(spec_path)
    spec, directory = EvalRecord.read(spec_path), spec_path.parent
    shards, kind = spec.shards, kind_of(spec.stage)

    def work() -> dict[str, Any]:
        unfinished = [i for i in range(shards)
                      if run_state(shard_state_dir(directory, i, shards))[0] != "done"]
        if unfinished:
            raise RuntimeError(f"evaluation {directory}: sample shards {unfinished} of {shards} "
                               "are not done; submit the target again")
        model = kind.model(spec, directory)
        evalset = ensure_evalset(spec.protocol, spec.scale, Path(spec.workdir))
        parts = [shard_dir(directory / "samples", i, shards) for i in range(shards)]
        generated = merge_videosets(parts, directory / "generated", reference=evalset.real_dir)
        weights = detector_weights(spec.scale)
        raw = directory / "score" / "evaluate.json"
        result = evaluate(evalset.protocol, directory / "generated", evalset.real_dir, raw,
                          weights_dir=weights, clip_list=evalset.clip_list,
                          cache_dir=Path(spec.workdir) / "cache" / "eval-reference",
                          device=compute_device(), progress=True)
        detectors = {d["role"]: d["weights_sha256"] or result["label"]
                     for d in result["detectors"]}
        result["provenance"] = {
            "git_commit": git_commit(), "run_id": spec.run_id, "target": spec.target,
            "name": spec.name, "scale": spec.scale, "config_hash": spec.config_hash,
            "protocol": evalset.protocol.name, "protocol_hash": evalset.protocol.hash,
            "clip_list_hash": evalset.clip_list_hash, "detector_weights": detectors,
            "sample_count": len(generated), **kind.provenance(spec, model),
            "scored": now()}
        atomic_write_json(directory / "result.json", result)
        points = [{"fid": p["fid"]["value"], "fvd": p["fvd"]["value"]} for p in result["points"]]
        return {"result": str(directory / "result.json"), "points": points}

    if (directory / "result.json").is_file():
        return read_json(directory / "score" / "done.json") \
            if (directory / "score" / "done.json").is_file() else {}
    return guarded(directory / "score", work)


class SampleJob(submitit.helpers.Checkpointable):
    """One sample shard; requeued on timeout/preemption (the shard resumes per clip)."""

    def __call__(self, spec_path: str, shard: int) -> dict[str, Any]:
        return sample_shard(spec_path, shard)


class ScoreJob(submitit.helpers.Checkpointable):
    """Merge and score; requeued on timeout/preemption (the merge resumes per clip)."""

    def __call__(self, spec_path: str) -> dict[str, Any]:
        return score(spec_path)


def main(argv: list[str] | None = None) -> int:
    """python -m repro.jobs.evaluation sample SPEC SHARD | score SPEC (for manual reruns)."""
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
