"""Export -> Vista (its TEST DOUBLE, repro/vista/double) -> ingest -> score -> table, at ci
scale, checked for content (each clip comes back under its own id); resuming a killed shard; an
output folder with a missing frame; the double's empty-manifest loop is never reached."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evals.videoset import VideoSet, write_videoset
from repro.vista.checkout import DOUBLE, VistaError
from repro.vista.ingest import check_complete, frame_file, ingest

DOUBLE_LABEL = "Vista TEST DOUBLE (not the official checkpoint)"


@pytest.fixture(autouse=True)
def vista_env(clean_vista_env: pytest.MonkeyPatch) -> None:
    clean_vista_env.setenv("REPRO_VISTA_CHECKOUT", str(DOUBLE))


def closest_real_clip(generated: VideoSet, real: VideoSet) -> list[str]:
    """For each generated clip, the real clip whose frame 0 is nearest to its frame 0."""
    firsts = {c.clip_id: real.read(c)[0].astype(np.float64) for c in real.clips}
    return [min(firsts, key=lambda k: np.mean((generated.read(c)[0] - firsts[k]) ** 2))
            for c in generated.clips]


def test_export_sample_ingest_score_table(cli, isolated):
    res = cli("vista", "sample", "vista_nuscenes", "--scale", "ci", "--cluster", "debug")
    assert res.code == 0, res.out + res.err
    run_dirs = list((isolated / "work" / "runs").iterdir())
    assert len(run_dirs) == 1
    directory = run_dirs[0] / "eval" / "vista_nuscenes"
    bundle = json.loads((directory / "vista-input" / "annos" / "nuScenes_val.json").read_text())
    assert len(bundle) == 3 and all(len(e["frames"]) == 25 for e in bundle)
    assert all(e["traj"] == [] and e["speed"] == [] for e in bundle)   # no actions
    result = json.loads((directory / "result.json").read_text())
    prov = result["provenance"]
    assert prov["vista_test_double"] is True and prov["vista_label"] == DOUBLE_LABEL
    assert prov["sampler"] == "vista" and prov["sampling"]["n_conds"] == 1
    assert prov["vista_sample_py_sha256"] and prov["vista_ckpt_sha256"]
    assert prov["sample_count"] == 3
    real = VideoSet.open(isolated / "work" / "evalsets" / "vista_nuscenes-ci" / "real")
    generated = VideoSet.open(directory / "generated")
    assert [c.clip_id for c in generated.clips] == [c.clip_id for c in real.clips]
    clip = generated.clips[0]
    assert generated.read(clip).shape == real.read(real.clip(clip.clip_id)).shape
    ids = [c.clip_id for c in generated.clips]
    assert closest_real_clip(generated, real) == ids        # each clip under its own id
    first = generated.read(clip)[0]                         # a reconstruction, not a copy
    assert not np.array_equal(first, real.read(real.clip(clip.clip_id))[0])
    assert prov["sampling"]["n_steps"] == 50 and prov["sampling"]["cfg_scale"] == 2.5
    assert prov["sampling"]["cond_aug"] == 0.0 and prov["vista_ckpt_pinned"] is False
    assert cli("collect", "table1", "--scale", "ci", "--partial").code == 0
    table = cli("table", "table1", "--scale", "ci").out
    row = next(line for line in table.splitlines() if line.startswith("| vista"))
    assert f"vista (ours: {DOUBLE_LABEL})" in row and "| 89.4 |" in row   # paper value beside


def _shard_spec(workdir: Path, shards: int = 1):
    """The evaluation record of a Vista run's shard (only what run_shard reads matters)."""
    import dataclasses

    from repro.records import EvalRecord
    from repro.vista.inputs import given_inputs
    from repro.vista.job import settings_for
    vista = dataclasses.replace(given_inputs(),
                                settings=settings_for("vista_nuscenes", "ci").to_dict())
    return EvalRecord(run_id="vista-test", target="table1", name="vista", stage="vista",
                      scale="ci", protocol="vista_nuscenes", config_hash="", vae_seed=0,
                      workdir=str(workdir), steps=0, guidance=0.0, shards=shards, seed=0,
                      vista=vista)


def test_killed_shard_reruns_only_the_remaining_clips(isolated, monkeypatch):
    import repro.vista.job as job
    spec, directory = _shard_spec(isolated / "work"), isolated / "eval"
    real_run = job.run_vista

    def killed_after_vista(argv, cwd, env):   # Vista wrote 2 clips, then the job died
        monkeypatch.setenv("REPRO_VISTA_DOUBLE_STOP_AFTER", "2")
        real_run(argv, cwd, env)
        raise KeyboardInterrupt("job killed before ingesting")

    monkeypatch.setattr(job, "run_vista", killed_after_vista)
    with pytest.raises(KeyboardInterrupt):
        job.run_shard(spec, directory, 0)
    samples, stage = directory / "samples", directory / "vista-stage" / "0-of-1"
    assert not (samples / "manifest.json").exists()          # nothing ingested yet
    first = json.loads((stage / "index_map.json").read_text())["clip_ids"]
    assert len(first) == 3
    monkeypatch.setattr(job, "run_vista", real_run)
    monkeypatch.delenv("REPRO_VISTA_DOUBLE_STOP_AFTER")
    record = job.run_shard(spec, directory, 0)
    assert record["new"] == 1                                 # 2 recovered from out/, 1 rerun
    assert json.loads((stage / "index_map.json").read_text())["clip_ids"] == first[2:]
    assert len(json.loads((stage / "annos" / "nuScenes_val.json").read_text())) == 1
    assert [c.clip_id for c in VideoSet.open(samples).clips] == first
    monkeypatch.setattr(job, "run_vista", None)      # all ingested: Vista is not started
    assert job.run_shard(spec, directory, 0)["new"] == 0


def test_content_check_fails_for_a_permuted_clip_order(tmp_path):
    """The check above has teeth: clips ingested under each other's ids are caught."""
    rng = np.random.default_rng(1)
    clips = [(f"scene-{i}/tok", rng.integers(0, 255, (3, 8, 16, 3), dtype=np.uint8))
             for i in range(3)]
    real = write_videoset(tmp_path / "real", clips, fps=10.0, cond_frames=1)
    rolled = [(clip_id, frames) for (clip_id, _), (_, frames) in
              zip(clips, clips[1:] + clips[:1])]
    swapped = write_videoset(tmp_path / "gen", rolled, fps=10.0, cond_frames=1)
    assert closest_real_clip(real, real) == [c for c, _ in clips]
    assert closest_real_clip(swapped, real) != [c.clip_id for c in swapped.clips]


def test_the_double_loops_forever_on_an_empty_manifest(isolated):
    """As Vista's get_sample does: the suite's own guard (never start Vista without clips)
    is what keeps a shard from hanging, not the script."""
    import subprocess

    from repro.vista.inputs import given_inputs, validate
    setup = validate(given_inputs(DOUBLE), "ci", isolated / "work")
    stage_dir = isolated / "stage"
    (stage_dir / "annos").mkdir(parents=True)
    (stage_dir / "annos" / "nuScenes_val.json").write_text("[]")
    (stage_dir / "ckpts").mkdir()
    (stage_dir / "ckpts" / "vista.safetensors").symlink_to(setup.ckpt)
    (stage_dir / "configs").symlink_to(DOUBLE / "configs")
    import os
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run([setup.python, str(DOUBLE / "sample.py"), "--rand_gen"], cwd=stage_dir,
                       env={**os.environ, **setup.env()}, timeout=5, capture_output=True)


def test_vista_failure_midway_keeps_finished_clips(isolated, monkeypatch):
    import repro.vista.job as job
    spec, directory = _shard_spec(isolated / "work"), isolated / "eval"
    monkeypatch.setenv("REPRO_VISTA_DOUBLE_STOP_AFTER", "1")
    with pytest.raises(VistaError, match="exited with status 3 after 1 of 3 clips"):
        job.run_shard(spec, directory, 0)
    monkeypatch.delenv("REPRO_VISTA_DOUBLE_STOP_AFTER")
    assert job.run_shard(spec, directory, 0)["new"] == 2
    stage = directory / "vista-stage" / "0-of-1"
    assert len(json.loads((stage / "index_map.json").read_text())["clip_ids"]) == 2


def test_other_shard_count_keeps_the_clips_of_an_unfinished_evaluation(cli, isolated,
                                                                       monkeypatch):
    """Vista stops after one clip per shard (ci: 2 shards, 3 clips); `--shards 3` then keeps
    the 2 shards already started and samples only the missing clip."""
    monkeypatch.setenv("REPRO_VISTA_DOUBLE_STOP_AFTER", "1")
    cli("vista", "sample", "vista_nuscenes", "--scale", "ci", "--cluster", "debug")
    monkeypatch.delenv("REPRO_VISTA_DOUBLE_STOP_AFTER")
    again = cli("vista", "sample", "vista_nuscenes", "--scale", "ci", "--cluster", "debug",
                "--shards", "3")
    assert again.code == 0 and "kept the 2 shards" in again.out, again.out + again.err
    (run,) = (isolated / "work" / "runs").iterdir()
    directory = run / "eval" / "vista_nuscenes"
    assert (directory / "result.json").is_file()
    assert sorted(p.name for p in (directory / "sample").iterdir()) == ["0-of-2", "1-of-2"]
    new = sum(json.loads((d / "done.json").read_text())["new"]
              for d in (directory / "sample").iterdir() if (d / "done.json").exists())
    assert new == 1


def test_another_sample_py_is_sampled_again(cli, isolated, vista_checkout, monkeypatch):
    import hashlib
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", str(vista_checkout))
    assert cli("vista", "sample", "vista_nuscenes", "--scale", "ci", "--cluster",
               "debug").code == 0
    script = vista_checkout / "sample.py"
    script.write_text(script.read_text() + "\n# another version\n")
    again = cli("vista", "sample", "vista_nuscenes", "--scale", "ci", "--cluster", "debug")
    assert again.code == 0 and "its results were moved to" in again.out, again.out + again.err
    (run,) = (isolated / "work" / "runs").iterdir()
    result = json.loads((run / "eval" / "vista_nuscenes" / "result.json").read_text())
    assert result["provenance"]["vista_sample_py_sha256"] == \
        hashlib.sha256(script.read_bytes()).hexdigest()


def test_missing_frame_names_the_clip_and_file(tmp_path):
    rng = np.random.default_rng(0)
    real = write_videoset(tmp_path / "real", [
        (f"scene-{i}/tok", rng.integers(0, 255, (25, 8, 16, 3), dtype=np.uint8))
        for i in range(2)], fps=10.0, cond_frames=1)
    out = tmp_path / "out"
    frame_file(out, 0, 0).parent.mkdir(parents=True)
    from PIL import Image
    for index in range(2):
        for t in range(25):
            if (index, t) != (1, 7):
                Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(frame_file(out, index, t))
    report = ingest(out, ["scene-0/tok", "scene-1/tok"], real, tmp_path / "gen", 25, (16, 8))
    assert report.added == ["scene-0/tok"]
    with pytest.raises(VistaError) as err:
        check_complete(report, out)
    assert "scene-1/tok" in str(err.value) and "NUSCENES_000001_0007.png" in str(err.value)
    assert [c.clip_id for c in VideoSet.open(tmp_path / "gen").clips] == ["scene-0/tok"]


def test_one_shard_exports_the_bundle_the_others_wait(tmp_path, monkeypatch):
    from repro.vista.export import _Lock
    monkeypatch.setattr(_Lock, "POLL_S", 0.01)
    done = tmp_path / "export.json"
    first, second = _Lock(tmp_path / "b.lock"), _Lock(tmp_path / "b.lock")
    assert first.acquire(done.is_file, print)
    calls = []

    def finished() -> bool:     # the first shard finishes while the second waits
        calls.append(1)
        if len(calls) == 3:
            done.write_text("{}")
            first.release()
        return done.is_file()
    assert not second.acquire(finished, print) and not (tmp_path / "b.lock").exists()
    stale = _Lock(tmp_path / "c.lock")
    (tmp_path / "c.lock").touch()
    import os
    os.utime(tmp_path / "c.lock", (0, 0))                   # its builder died long ago
    assert stale.acquire(lambda: False, print) and stale.held


VISTA_RUNS = """
[runs.vista]
stage = "vista"
cells = ["table1/vista"]
"""


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_prepare_then_vista_array_then_score(tmp_path, slurm_cluster, make_target):
    """On the real single-node Slurm: the prepare job, the sample array (each task runs the
    double in its staging directory) and the score job, in dependency order."""
    from repro.jobs.state import eval_dir
    from repro.targets.jobfiles import resolve_target
    from repro.launch.submit import submit
    target = make_target(tmp_path, "vistaonly", "vista_nuscenes", VISTA_RUNS,
                         "a Vista run only (test)")
    work, lines, evals = tmp_path / "work", [], []
    submit(target, "ci", "slurm", work, wait=True, partition=slurm_cluster.partition,
           echo=lines.append, evaluate=True, evals_out=evals)
    assert "1/1 evaluations done for vistaonly (ci)" in lines, lines
    (run,) = resolve_target(target, "ci")
    spec = json.loads((work / "runs" / run.run_id / "spec.json").read_text())
    assert spec["vista"]["checkout"] == str(DOUBLE)
    directory = eval_dir(work, run.run_id, "vista_nuscenes")
    for shard in range(2):
        done = json.loads((directory / "sample" / f"{shard}-of-2" / "done.json").read_text())
        assert done["slurm_job_id"] and done["vista_test_double"] is True
    result = json.loads((directory / "result.json").read_text())
    assert result["provenance"]["vista_label"] == DOUBLE_LABEL
