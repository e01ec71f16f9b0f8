"""The pre-submit check (repro/launch/preflight.py): lite/paper submissions refuse, before anything is
written, while weights or data are missing, and list every missing input."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from evals import weights as detector_weights
from repro.targets.jobfiles import load_target, resolve_target
from repro.launch.preflight import PreflightError, check_inputs, missing_inputs

SD3 = "stable-diffusion-3-medium-diffusers"
DETECTOR_FILES = ("pt_inception-2015-12-05-6726825d.pth", "i3d_pretrained_400.pt")


@pytest.fixture
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Empty weights, detector and data folders named by the environment variables."""
    paths = {name: tmp_path / name for name in ("weights", "detectors", "data", "work")}
    for name in ("weights", "detectors", "data"):
        paths[name].mkdir()
    monkeypatch.setenv("REPRO_WEIGHTS", str(paths["weights"]))
    monkeypatch.setenv("REPRO_DETECTOR_WEIGHTS", str(paths["detectors"]))
    monkeypatch.setenv("REPRO_DATA_ROOT", str(paths["data"]))
    monkeypatch.delenv("REPRO_EVAL", raising=False)
    return paths


def table3b_inputs(roots: dict[str, Path]) -> list[Path]:
    """Placeholders for everything table3b needs (only existence matters, bar the detectors)."""
    sd3 = roots["weights"] / SD3
    files = [sd3 / part / name for part in ("vae", "transformer")
             for name in ("config.json", "diffusion_pytorch_model.safetensors")]
    files += [roots["data"] / "opendv" / "meta" / "OpenDV-YouTube.json"]
    files += [roots["detectors"] / name for name in DETECTOR_FILES]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"placeholder " + path.name.encode())
    for folder in ("full_images", "val_images"):
        (roots["data"] / "opendv" / folder).mkdir()
    return files


def accept_placeholder_detectors(roots: dict[str, Path], monkeypatch: pytest.MonkeyPatch):
    """Make the placeholder detector files the 'published' ones."""
    for entry in list(detector_weights.MANIFEST.values()):
        path = roots["detectors"] / entry.file_name
        if path.is_file():
            sha256, blob = detector_weights.file_hashes(path)
            actual = sha256 if entry.hash_kind == "sha256" else blob
            monkeypatch.setitem(detector_weights.MANIFEST, entry.name,
                                dataclasses.replace(entry, published_hash=actual))


def test_paper_submit_refuses_and_lists_every_missing_input(cli, roots):
    result = cli("submit", "table3b", "--scale", "paper", "--cluster", "local")
    assert result.code == 2, result.out + result.err
    assert result.err.startswith("repro: error:")
    sd3 = roots["weights"] / SD3
    expected = [sd3 / "vae" / "config.json",
                sd3 / "vae" / "diffusion_pytorch_model.safetensors",
                sd3 / "transformer" / "config.json",
                sd3 / "transformer" / "diffusion_pytorch_model.safetensors",
                roots["data"] / "opendv" / "meta" / "OpenDV-YouTube.json",
                roots["data"] / "opendv" / "full_images",
                roots["data"] / "opendv" / "val_images"]
    expected += [roots["detectors"] / name for name in DETECTOR_FILES]
    for path in expected:
        assert f"missing {path}\n" in result.err, path
    assert "9 inputs" in result.err and "nothing was submitted" in result.err
    assert "training of stage1a" in result.err and "evaluation (opendv_ablation) of" in result.err
    assert "fix: download stabilityai/stable-diffusion-3-medium-diffusers" in result.err
    assert "REPRO_DATA_ROOT=" in result.err and "pytorch-fid" in result.err
    work = roots["work"]                           # REPRO_WORKDIR (the `isolated` fixture)
    assert not (work / "runs").exists() and not (work / "submissions").exists()
    assert not work.exists() or not any(work.rglob("*"))


def test_dry_run_warns_instead_of_failing(cli, roots):
    result = cli("submit", "table3b", "--scale", "lite", "--dry-run")
    assert result.code == 0, result.err
    assert "# WARNING: 9 inputs are missing or wrong" in result.out
    assert f"missing {roots['data'] / 'opendv' / 'val_images'}" in result.out


def test_placeholders_pass_and_wrong_detector_files_are_named(roots, monkeypatch):
    runs = resolve_target(load_target("table3b"), "paper")
    table3b_inputs(roots)
    missing = missing_inputs(runs, "paper", roots["work"])
    assert sorted((m.what, m.problem) for m in missing) == [
        ("i3d-400 detector weights", "wrong file"),
        ("inception-2015-12-05 detector weights", "wrong file")]
    with pytest.raises(PreflightError) as raised:
        check_inputs(runs, "paper", roots["work"])
    assert isinstance(raised.value, ValueError)
    message = str(raised.value)
    assert f"wrong file {roots['detectors'] / DETECTOR_FILES[0]}" in message
    assert detector_weights.MANIFEST["inception-2015-12-05"].published_hash in message
    accept_placeholder_detectors(roots, monkeypatch)
    assert missing_inputs(runs, "paper", roots["work"]) == []
    assert missing_inputs(resolve_target(load_target("table3b"), "lite"), "lite") == []
    check_inputs(runs, "paper", roots["work"])


def test_ci_and_smoke_never_check(monkeypatch):
    for name in ("REPRO_WEIGHTS", "REPRO_DETECTOR_WEIGHTS", "REPRO_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    for scale in ("ci", "smoke"):
        runs = resolve_target(load_target("table1"), scale)
        assert missing_inputs(runs, scale) == []
        check_inputs(runs, scale)


def test_unset_variables_say_which_to_set(monkeypatch):
    for name in ("REPRO_WEIGHTS", "REPRO_DETECTOR_WEIGHTS", "REPRO_DATA_ROOT"):
        monkeypatch.delenv(name, raising=False)
    missing = missing_inputs(resolve_target(load_target("table3b"), "paper"), "paper")
    by_what = {m.what: m for m in missing}
    assert by_what["SD3-medium VAE config"].path == f"$REPRO_WEIGHTS/{SD3}/vae/config.json"
    assert "set REPRO_WEIGHTS to the folder" in by_what["SD3-medium VAE config"].fix
    assert "set REPRO_DETECTOR_WEIGHTS (or REPRO_WEIGHTS)" in \
        by_what["i3d-400 detector weights"].fix
    assert by_what["OpenDV-2K meta file"].path.startswith("$REPRO_DATA_ROOT/opendv/")


def test_nuscenes_tables_maps_and_no_eval(roots):
    """Stage 2 mixes nuScenes in: each missing table and map image is named; with
    evaluate=False (REPRO_EVAL=0) detectors are not asked for."""
    nuscenes = roots["data"] / "nuscenes"
    tables = nuscenes / "v1.0-trainval"
    tables.mkdir(parents=True)
    (tables / "scene.json").write_text("[]")
    (tables / "map.json").write_text(json.dumps([{"filename": "maps/abc.png"}]))
    (nuscenes / "samples").mkdir()
    runs = resolve_target(load_target("table6"), "paper")
    missing = missing_inputs(runs, "paper", roots["work"], evaluate=False)
    paths = {m.path for m in missing}
    assert str(tables / "sample_data.json") in paths and str(tables / "ego_pose.json") in paths
    assert str(tables / "scene.json") not in paths and str(tables / "map.json") not in paths
    assert str(nuscenes / "maps" / "abc.png") in paths
    assert str(nuscenes / "sweeps") in paths and str(nuscenes / "samples") not in paths
    assert not any("detector" in m.what for m in missing)
    with_eval = missing_inputs(runs, "paper", roots["work"])
    assert any(m.what == "i3d-400 detector weights" for m in with_eval)


def test_finished_runs_need_nothing(roots):
    """A trained stage 1a no longer needs SD3's transformer; a built evaluation set no data."""
    from repro.jobs.evalsets import SET_FILE, evalset_dir
    from repro.jobs.state import run_dir
    runs = resolve_target(load_target("table3b"), "paper")
    stage1a = next(run for run in runs if run.stage == "1a")
    run_dir(roots["work"], stage1a.run_id).mkdir(parents=True)
    (run_dir(roots["work"], stage1a.run_id) / "done.json").write_text("{}")
    built = evalset_dir(roots["work"], "opendv_ablation", "paper")
    built.mkdir(parents=True)
    (built / SET_FILE).write_text("{}")
    whats = {m.what for m in missing_inputs(runs, "paper", roots["work"])}
    assert not any("transformer" in what for what in whats)
    assert "OpenDV-2K Val frames" not in whats and "OpenDV-2K Train frames" in whats
