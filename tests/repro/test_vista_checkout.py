"""Bad Vista inputs are named before anything is submitted (repro/vista/checkout.py, graph.py,
preflight.py); the test double passes the same checks as a real checkout."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from repro.jobs import load_target, resolve_target
from repro.preflight import missing_inputs
from repro.vista.checkout import (VISTA_COMMIT, VistaError, script_flags,
                                  validate)

DOUBLE = Path(__file__).resolve().parents[1] / "doubles" / "vista_checkout"


@pytest.fixture
def checkout(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "Vista"
    shutil.copytree(DOUBLE, root)
    ckpt = root / "ckpts" / "vista.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"not really a checkpoint")
    return root, ckpt


def test_the_double_has_vistas_flags_and_passes(checkout, tmp_path):
    root, ckpt = checkout
    flags = script_flags(root / "sample.py")
    assert flags["--rand_gen"]["action"] == "store_false"
    assert flags["--n_frames"]["default"] == 25 and flags["--seed"]["default"] == 23
    assert (flags["--height"]["default"], flags["--width"]["default"]) == (576, 1024)
    found = validate(root, None, tmp_path / "work")     # checkpoint defaults to ckpts/
    assert found.ckpt == ckpt.resolve() and found.test_double
    assert found.provenance()["vista_expected_commit"] == VISTA_COMMIT
    assert found.commit.startswith("unknown")            # not a git checkout of its own


def test_checkout_without_sample_py(checkout):
    root, ckpt = checkout
    (root / "sample.py").unlink()
    with pytest.raises(VistaError) as err:
        validate(root, ckpt)
    assert f"{root / 'sample.py'}" in str(err.value) and "not a Vista checkout" in str(err.value)


def test_unexpected_version_names_the_flag(checkout):
    root, ckpt = checkout
    script = root / "sample.py"
    script.write_text(script.read_text().replace('"--n_conds"', '"--num_conds"'))
    with pytest.raises(VistaError) as err:
        validate(root, ckpt)
    assert "--n_conds" in str(err.value) and "unexpected Vista version" in str(err.value)
    assert VISTA_COMMIT in str(err.value)


def test_rand_gen_must_be_store_false(checkout):
    root, ckpt = checkout
    script = root / "sample.py"
    script.write_text(script.read_text().replace(
        '"--rand_gen", action="store_false"', '"--rand_gen", action="store_true"'))
    with pytest.raises(VistaError, match="--rand_gen as store_false"):
        validate(root, ckpt)


def test_missing_checkpoint_names_path_and_source(checkout):
    root, ckpt = checkout
    ckpt.unlink()
    with pytest.raises(VistaError) as err:
        validate(root, None)
    text = str(err.value)
    assert str(ckpt) in text and "huggingface.co/OpenDriveLab/Vista" in text


def test_preflight_refuses_vista_targets_at_paper_and_ci_with_a_bad_checkout(
        checkout, monkeypatch):
    root, ckpt = checkout
    monkeypatch.delenv("REPRO_VISTA_CHECKOUT", raising=False)
    monkeypatch.delenv("REPRO_VISTA_CKPT", raising=False)
    runs = resolve_target(load_target("table1"), "paper")
    vista = [m for m in missing_inputs(runs, "paper") if "Vista" in m.what]
    assert [m.what for m in vista] == ["no Vista checkout given"]
    assert vista[0].needed_by == [("Vista sampling", "vista")]
    ci_runs = resolve_target(load_target("table1"), "ci")
    assert missing_inputs(ci_runs, "ci") == []           # no checkout at ci: left out instead
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", str(root))
    ckpt.unlink()
    assert [m.path for m in missing_inputs(ci_runs, "ci")] == [str(ckpt)]


def test_submit_leaves_vista_out_at_ci_without_a_checkout(monkeypatch):
    from repro.vista.graph import split_runs
    monkeypatch.delenv("REPRO_VISTA_CHECKOUT", raising=False)
    runs = resolve_target(load_target("table2"), "ci")
    kept, message = split_runs(runs, "ci")
    assert [r.name for r in runs if r not in kept] == ["vista"]
    assert message.startswith("NOT RUN: Vista runs vista (table2/vista-official)")
    assert split_runs(runs, "paper") == (runs, "")       # refused by preflight instead


def test_a_done_vista_run_of_another_checkpoint_is_retired(checkout, tmp_path, monkeypatch):
    """A Vista run's id does not depend on the checkpoint: a done run prepared with another
    one is moved aside (kept) so that it is prepared and evaluated again."""
    from evals.atomic import atomic_write_json
    from repro import runner
    from repro.submit import run_spec
    from repro.vista.graph import retire_if_changed
    root, ckpt = checkout
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", str(root))
    work = tmp_path / "work"
    run = next(r for r in resolve_target(load_target("table2"), "ci") if r.name == "vista")
    directory = runner.run_dir(work, run.run_id)
    directory.mkdir(parents=True)
    atomic_write_json(directory / "spec.json", run_spec(run))
    runner.execute(directory / "spec.json")     # prepare: records sample.py and checkpoint
    assert retire_if_changed(run, work) == "" and directory.is_dir()
    ckpt.write_bytes(b"another checkpoint")
    note = retire_if_changed(run, work)
    assert "was prepared with another sample.py or checkpoint" in note and "runs again" in note
    stale = list((work / "runs-stale").iterdir())
    assert not directory.exists() and len(stale) == 1 and (stale[0] / "done.json").is_file()
