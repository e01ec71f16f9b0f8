"""Dry run of Vista's jobs: the exact sample.py command line, its staging directory and the
Slurm parameters of the sample array (nothing is written or submitted)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from repro.vista.checkout import DOUBLE
from repro.targets.jobfiles import load_target, resolve_target
from repro.vista.plan import sample_plan



pytestmark = pytest.mark.usefixtures("clean_vista_env")
SAMPLER = ["--n_steps", "50", "--cfg_scale", "2.5", "--cond_aug", "0.0"]


def _vista(target: str, scale: str):
    return next(r for r in resolve_target(load_target(target), scale) if r.stage == "vista")


@pytest.fixture
def vista_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", "/opt/Vista")
    monkeypatch.setenv("REPRO_VISTA_CKPT", "/opt/Vista/ckpts/vista.safetensors")
    monkeypatch.setenv("REPRO_VISTA_PYTHON", "/opt/vista-env/bin/python")
    return tmp_path / "work"


def test_nuscenes_paper_plan_exact(vista_env):
    run = _vista("table1", "paper")
    plan = sample_plan(run, vista_env, partition="gpu")
    assert plan["array"] == 32
    assert plan["sbatch"] == {
        "job-name": f"table1-vista-sample-{run.run_id}", "nodes": "1", "ntasks-per-node": "1",
        "cpus-per-task": "12", "mem": "512G", "time": "0-12:00:00", "array": "0-31",
        "gpus-per-node": "1", "partition": "gpu"}
    first, last = plan["shards"][0], plan["shards"][-1]
    eval_dir = vista_env / "runs" / run.run_id / "eval" / "vista_nuscenes"
    assert first["cwd"] == str(eval_dir / "vista-stage" / "0-of-32")
    assert last["cwd"] == str(eval_dir / "vista-stage" / "31-of-32")
    assert first["argv"] == [
        "/opt/vista-env/bin/python", "/opt/Vista/sample.py", "--dataset", "NUSCENES",
        "--action", "free", "--n_frames", "25", "--n_conds", "1", "--n_rounds", "1",
        "--height", "576", "--width", "1024", "--seed", "23", *SAMPLER, "--save", "out",
        "--rand_gen"]


def test_opendv_long_paper_plan_rolls_out(vista_env, monkeypatch):
    run = _vista("fig6", "paper")
    plan = sample_plan(run, vista_env, shards=4)
    assert plan["array"] == 4 and plan["sbatch"]["array"] == "0-3"
    assert "partition" not in plan["sbatch"]
    # 3 condition frames; 7 rounds: 7 * 22 + 3 = 157 frames cover 15 s at 10 Hz
    assert plan["shards"][0]["argv"][2:] == [
        "--dataset", "NUSCENES", "--action", "free", "--n_frames", "25", "--n_conds", "3",
        "--n_rounds", "7", "--height", "576", "--width", "1024", "--seed", "23", *SAMPLER,
        "--save", "out", "--rand_gen"]
    assert plan["settings"]["n_rounds"] * 22 + 3 >= 150
    assert plan["sbatch"]["gpus-per-node"] == "1"
    monkeypatch.setenv("REPRO_VISTA_LOW_VRAM", "1")
    monkeypatch.setenv("REPRO_VISTA_SAMPLER", "n_steps=25, cfg_scale=2.0")
    plan = sample_plan(run, vista_env)
    assert plan["shards"][0]["argv"][-2:] == ["--rand_gen", "--low_vram"]
    assert plan["settings"]["n_steps"] == 25 and plan["settings"]["cfg_scale"] == 2.0
    assert "--n_steps 25 --cfg_scale 2.0 --cond_aug 0.0" in " ".join(plan["shards"][0]["argv"])


def test_a_bad_sampler_override_is_named(vista_env, monkeypatch):
    from repro.vista.checkout import VistaError
    monkeypatch.setenv("REPRO_VISTA_SAMPLER", "steps=25")
    with pytest.raises(VistaError, match="unknown setting 'steps'"):
        sample_plan(_vista("fig6", "paper"), vista_env)


def test_ci_runs_the_double_at_the_eval_sets_size(monkeypatch, tmp_path):
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", "/opt/Vista")      # a real checkout
    monkeypatch.setenv("REPRO_VISTA_PYTHON", "/opt/vista-env/bin/python")
    plan = sample_plan(_vista("fig6", "ci"), tmp_path)
    assert plan["sbatch"]["time"] == "0-00:30:00" and "gpus-per-node" not in plan["sbatch"]
    argv = plan["shards"][1]["argv"]
    assert argv[:2] == [sys.executable, str(DOUBLE / "sample.py")]
    assert argv[argv.index("--n_rounds") + 1] == "2"                 # ci: 2 rounds, 47 frames
    assert argv[argv.index("--height") + 1:argv.index("--width") + 2] == ["32", "--width", "64"]


def test_submit_dry_run_prints_the_vista_plan_and_writes_nothing(cli, isolated, monkeypatch,
                                                                 vista_checkout):
    script = vista_checkout / "sample.py"     # "real": no test-double marker
    script.write_text(script.read_text().replace("VISTA_TEST_DOUBLE = True", ""))
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", str(vista_checkout))
    res = cli("submit", "table2", "--scale", "ci", "--dry-run")
    assert res.code == 0
    assert "Vista sample array (2 shards" in res.out and "--rand_gen" in res.out
    assert (f"NOTE: Vista at scale 'ci': the TEST DOUBLE {DOUBLE / 'sample.py'} stands in in "
            f"place of {vista_checkout}; it is not Vista") in res.out
    assert f"{sys.executable} {DOUBLE / 'sample.py'} --dataset" in res.out
    assert not (isolated / "work" / "runs").exists()
    monkeypatch.delenv("REPRO_VISTA_CHECKOUT")
    res = cli("submit", "table2", "--scale", "ci", "--dry-run")
    assert "NOT RUN: Vista runs vista" in res.out
    res = cli("vista", "sample", "waymo_zeroshot", "--dry-run", "--checkout", str(DOUBLE))
    assert res.code == 0 and "--n_conds 1 --n_rounds 1 --height 576 --width 1024" in res.out
    assert "WARNING" in res.out and "Vista checkpoint" in res.out    # no ckpts/ in the double
    assert "stands in" not in res.out                                 # paper: real Vista
