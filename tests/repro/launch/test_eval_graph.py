"""Every evaluated run is sampled and scored by jobs in the same graph (repro/jobs/evaluation.py).

A one-run target (stage 1a filling a Table 3b cell, protocol opendv_ablation) keeps this at CI
size: local submit trains, samples (2 shards) and scores; a resubmit skips everything; a shard
killed with SIGKILL resumes without losing or duplicating clips; on the real Slurm the sample
array and the score job run after afterok dependencies. A drivewm_mview run is sampled scene
by scene (six views jointly) and scored as single-view videos through the debug executor.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evals.extractors import RANDOM_WEIGHTS_LABEL
from evals.videoset import VideoSet
from repro.jobs.evaluation import eval_state, sample_shard
from repro.jobs.state import eval_dir
from repro.jobs.evalsets import ensure_evalset, scaled_protocol
from repro.targets.jobfiles import resolve_target
from repro.report.finish import report
from repro.jobs.state import run_dir, run_state
from repro.commands.status import collect_status, format_status
from repro.launch.submit import submit

MINI_RUNS = """
[runs.base]
stage = "1a"
variant = "no-mr"
cells = ["table3b/no-mr"]
"""


@pytest.fixture(scope="module")
def graph(tmp_path_factory, make_target):
    """The mini target submitted once through the local executor."""
    root = tmp_path_factory.mktemp("evalgraph")
    target = make_target(root, "evalmini", "opendv_ablation", MINI_RUNS,
                         "one trained run, scored (test)")
    lines: list[str] = []
    evals: list = []
    started = time.monotonic()
    submit(target, "ci", "local", root / "work", echo=lines.append, evaluate=True,
           evals_out=evals)
    return {"root": root, "work": root / "work", "target": target, "lines": lines,
            "evals": evals, "seconds": time.monotonic() - started}


def check_result(work: Path, run) -> dict:
    path = eval_dir(work, run.run_id, run.protocol) / "result.json"
    assert path.is_file(), path
    result = json.loads(path.read_text())
    assert result["label"] == RANDOM_WEIGHTS_LABEL
    assert result["points"]
    for point in result["points"]:
        for metric in ("fid", "fvd"):
            assert math.isfinite(point[metric]["value"]) and point[metric]["n"] > 0
            assert point[metric]["low"] is not None
    prov = result["provenance"]
    evalset = ensure_evalset(run.protocol, "ci", work)
    assert prov["run_id"] == run.run_id and prov["protocol_hash"] == evalset.protocol.hash
    assert prov["clip_list_hash"] == evalset.clip_list_hash == result["clip_list_hash"]
    assert prov["sample_count"] == evalset.protocol.n_clips == result["n_clips"]
    assert set(prov["detector_weights"].values()) == {RANDOM_WEIGHTS_LABEL}
    assert prov["git_commit"] and prov["config_hash"] and len(prov["checkpoint_sha256"]) == 64
    return result


def test_local_submit_trains_samples_and_scores_then_skips(graph):
    work, target = graph["work"], graph["target"]
    runs = resolve_target(target, "ci")
    assert [r.name for r in runs] == ["base"]
    assert any("eval submitted" in line for line in graph["lines"]), graph["lines"]
    assert "1/1 evaluations done for evalmini (ci)" in graph["lines"], graph["lines"]
    run = runs[0]
    progress = [line for line in graph["lines"] if line.startswith("[")]
    assert [line.split(" in ")[0] for line in progress] == [
        f"[1/4] done    train base (run {run.run_id})", "[2/4] done    sample base shard 1/2",
        "[3/4] done    sample base shard 2/2", "[4/4] done    score base"], graph["lines"]
    assert "; 3 jobs left, about " in progress[0] and progress[-1].endswith("; 0 jobs left")
    logs = work / "logs" / run.run_id
    for what, suffix, bar in (("sample", "out", "shard 0/2: 100%"), ("score", "err",
                                                                      "gen clips: 100%")):
        text = "".join(p.read_text() for p in logs.glob(f"eval-*-{what}/*/*.{suffix}"))
        assert bar in text and "\r" not in text, text     # log files: plain progress lines
    assert run_state(run_dir(work, run.run_id))[0] == "done"
    check_result(work, run)
    generated = VideoSet.open(eval_dir(work, run.run_id, run.protocol) / "generated")
    assert len(generated) == 3 and all(c.frames == 25 and c.cond_frames == 1
                                       for c in generated.clips)

    rows = collect_status(work)
    text = format_status(rows)
    assert [r["state"] for r in rows] == ["done"] * 4, text      # train, 2 shards, score
    assert "base sample 1/2 opendv_ablation" in text and "base score opendv_ablation" in text

    again: list[str] = []
    submit(target, "ci", "local", work, echo=again.append, evaluate=True)
    assert any(line.strip().startswith("skipped") for line in again)
    assert any("eval skipped" in line for line in again)
    assert not any("submitted" in line for line in again), again
    assert not any(line.startswith("[") for line in again), again


def test_a_result_of_an_older_protocol_version_is_rescored(graph, tmp_path):
    """A result scored before the protocol changed is moved aside and the run re-scored (not
    skipped as done)."""
    work = tmp_path / "work"
    shutil.copytree(graph["work"], work)
    run = resolve_target(graph["target"], "ci")[0]
    path = eval_dir(work, run.run_id, run.protocol) / "result.json"
    result = json.loads(path.read_text())
    path.write_text(json.dumps({**result, "protocol_hash": "0123456789abcdef"}))
    lines: list[str] = []
    submit(graph["target"], "ci", "local", work, echo=lines.append, evaluate=True)
    assert any("re-scored: the result of protocol version 0123456789abcdef" in line
               for line in lines), lines
    aside = run_dir(work, run.run_id) / "eval-stale" / f"{run.protocol}-0123456789abcdef"
    assert (aside / "result.json").is_file()
    assert check_result(work, run)["protocol_hash"] == result["protocol_hash"]


def reported_files(lines: list[str]) -> list[tuple[str, Path]]:
    """(kind, path) of each file `report` names; every one must exist and be non-empty."""
    files = [(line.split(":", 1)[0], Path(line.split(":", 1)[1].strip())) for line in lines
             if line.startswith(("results CSV:", "table:", "plot:"))]
    for _, path in files:
        assert path.is_file() and path.stat().st_size > 0, path
    return files


def test_report_writes_the_csv_table_and_plot(graph, tmp_path, monkeypatch):
    """What `repro submit` ends with once jobs finish: collect, table and plots, non-empty."""
    monkeypatch.setenv("REPRO_WORKDIR", str(graph["work"]))
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    lines: list[str] = []
    assert report(graph["target"], "ci", echo=lines.append)
    assert {kind for kind, _ in reported_files(lines)} == {"results CSV", "table", "plot"}
    assert "\n## table3b\n" in "\n".join(lines), lines


def test_killed_sample_shard_resumes_without_duplicates(graph, tmp_path):
    """A shard killed with SIGKILL mid-way is rerun: every clip once, finished ones kept."""
    work, target = graph["work"], graph["target"]
    run = resolve_target(target, "ci")[0]
    spec = json.loads((eval_dir(work, run.run_id, run.protocol) / "spec.json").read_text())
    folder = tmp_path / "eval"
    folder.mkdir()
    # one shard and more Euler steps, so that a clip takes long enough to kill in between
    (folder / "spec.json").write_text(json.dumps({**spec, "shards": 1, "steps": 12}))
    out = folder / "samples"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "repro.jobs.evaluation", "sample",
                             str(folder / "spec.json"), "0"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            manifest = out / "manifest.json"
            if manifest.is_file() and json.loads(manifest.read_text())["clips"]:
                break
            assert proc.poll() is None, "the shard ended before it could be killed"
            time.sleep(0.05)
        else:
            pytest.fail("no clip was written in 120 s")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    before = VideoSet.open(out)
    assert 1 <= len(before) < 3, "killed after every clip was written: not mid-way"
    first = before.clips[0]
    stamp = (out / first.path).stat().st_mtime_ns
    assert run_state(folder / "sample" / "0-of-1")[0] == "running"   # left behind by the kill

    record = sample_shard(folder / "spec.json", 0)
    after = VideoSet.open(out)
    ids = [c.clip_id for c in after.clips]
    real = VideoSet.open(ensure_evalset(run.protocol, "ci", work).real_dir)
    assert sorted(ids) == sorted(c.clip_id for c in real.clips) and len(set(ids)) == len(ids)
    assert (out / first.path).stat().st_mtime_ns == stamp     # finished clips are not redone
    assert len([p for p in out.iterdir() if p.is_dir()]) == 3  # no stray clip folders
    assert record["clips"] == 3 and run_state(folder / "sample" / "0-of-1")[0] == "done"


def test_a_requeued_sample_or_score_job_is_not_failed(tmp_path):
    """submitit requeues a preempted or timed-out job and exits it with sys.exit(-1): the
    shard stays running (marked requeued), not failed."""
    from repro.jobs.state import guarded as _guarded
    with pytest.raises(SystemExit):
        _guarded(tmp_path, lambda: sys.exit(-1))
    state, details = run_state(tmp_path)
    assert state == "running" and "requeued" in details
    assert not (tmp_path / "failed.json").exists()


def test_ci_protocols_are_scaled_and_long_horizon_has_rounds():
    ablation = scaled_protocol("opendv_ablation", "ci")
    assert ablation.n_clips == 3 and (ablation.width, ablation.height) == (64, 32)
    long = scaled_protocol("opendv_long", "ci")
    assert [frames for frames, _ in long.measurement_points()] == [25, 47]
    assert scaled_protocol("opendv_long", "paper") == scaled_protocol("opendv_long", "lite")
    mview = scaled_protocol("drivewm_mview", "ci")
    assert mview.n_clips == 12 and mview.frames_per_clip == 8    # 2 scenes x 6 views


MVIEW_RUNS = """
[runs.mview]
stage = "1a"
variant = "no-mr"
cells = ["table4c/kw-r0.25"]
overrides = { "model.view_blocks" = true, "model.view_attention" = "KW" }
"""


def test_debug_submit_samples_and_scores_a_multiview_run(tmp_path, make_target):
    """drivewm_mview at ci: a stage-1a run with view blocks (a stand-in for the stage-3 chain)
    is trained, its 2 scenes x 6 views sampled scene by scene in 2 shards, and scored as 12
    single-view videos."""
    from evals.multiview import group_views
    target = make_target(tmp_path, "mview", "drivewm_mview", MVIEW_RUNS,
                         "one multi-view run, scored (test)")
    lines: list[str] = []
    submit(target, "ci", "debug", tmp_path / "work", echo=lines.append, evaluate=True)
    assert "1/1 evaluations done for mview (ci)" in lines, lines
    (run,) = resolve_target(target, "ci")
    assert run.config["model"]["view_blocks"]
    result = check_result(tmp_path / "work", run)
    evalset = ensure_evalset("drivewm_mview", "ci", tmp_path / "work")
    assert evalset.views is not None and len(evalset.views) == 6
    assert result["n_clips"] == 12
    (point,) = result["points"]
    assert point["fvd"]["n"] == 12 and point["fid"]["n"] == 12 * 2   # ci: 2 FID frames a clip
    directory = eval_dir(tmp_path / "work", run.run_id, run.protocol)
    generated = VideoSet.open(directory / "generated")
    scenes = group_views(generated.clips, evalset.views)
    assert len(scenes) == 2 and all(e.frames == 8 and e.cond_frames == 1
                                    for _, entries in scenes for e in entries)
    for shard in range(2):   # each shard holds one whole scene
        part = VideoSet.open(directory / "samples" / f"shard-{shard:03d}-of-002")
        assert len(group_views(part.clips, evalset.views)) == 1


def test_real_scale_without_data_names_the_folder(tmp_path, monkeypatch):
    from repro.jobs.evalsets import EvalSetError
    monkeypatch.delenv("REPRO_DATA_ROOT", raising=False)
    with pytest.raises(EvalSetError, match="REPRO_DATA_ROOT"):
        ensure_evalset("opendv_ablation", "paper", tmp_path)
    with pytest.raises(EvalSetError, match=str(tmp_path / "data" / "opendv")):
        ensure_evalset("opendv_ablation", "lite", tmp_path, data_root=tmp_path / "data")
    assert not (tmp_path / "evalsets" / "opendv_ablation-lite").exists()


@pytest.mark.slurm
def test_slurm_submit_samples_and_scores_after_training(graph, tmp_path, slurm_cluster,
                                                        monkeypatch):
    """The trained run is copied in (training on Slurm is tested in test_submit_slurm.py):
    the sample array and the score job run on Slurm, in dependency order; the report then
    writes a non-empty CSV, table and plot."""
    target = graph["target"]
    run = resolve_target(target, "ci")[0]
    work = tmp_path / "work"
    shutil.copytree(run_dir(graph["work"], run.run_id), run_dir(work, run.run_id),
                    ignore=shutil.ignore_patterns("eval"))
    shutil.copytree(graph["work"] / "evalsets", work / "evalsets")   # built by the local run
    lines: list[str] = []
    evals: list = []
    submit(target, "ci", "slurm", work, wait=True, partition=slurm_cluster.partition,
           echo=lines.append, evaluate=True, evals_out=evals)
    assert "1/1 evaluations done for evalmini (ci)" in lines, lines
    (entry,) = evals
    assert entry.action == "submitted" and len(entry.sample_jobs) == 2 and entry.score_job
    directory = eval_dir(work, run.run_id, run.protocol)
    assert eval_state(directory)[0] == "done"
    for shard in range(2):
        done = json.loads((directory / "sample" / f"{shard}-of-2" / "done.json").read_text())
        assert done["slurm_job_id"]
    score_done = json.loads((directory / "score" / "done.json").read_text())
    assert score_done["slurm_job_id"] == entry.score_job
    check_result(work, run)
    rows = collect_status(work)
    assert all(r["state"] == "done" for r in rows) and any(r["cluster"] == "slurm"
                                                           for r in rows)
    monkeypatch.setenv("REPRO_WORKDIR", str(work))
    monkeypatch.setenv("REPRO_RESULTS", str(tmp_path / "results"))
    lines.clear()
    assert report(target, "ci", echo=lines.append)
    assert len(reported_files(lines)) >= 3, lines
