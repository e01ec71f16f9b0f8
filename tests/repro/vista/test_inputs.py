"""Everything real Vista needs is checked before anything is submitted (repro/vista/inputs.py,
checkout.py, environment.py, weights.py): `repro vista check` fails with one clear message per
problem; at ci/smoke scale the test double stands in and the output says so."""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from repro.targets.jobfiles import load_target, resolve_target
from repro.launch.preflight import missing_inputs
from repro.vista.checkout import DOUBLE, VISTA_COMMIT, VistaError, script_flags
from repro.vista.inputs import given_inputs, validate
from repro.vista.weights import CHECKPOINT, CLIP_REPO, Pin, pin_problem

pytestmark = pytest.mark.usefixtures("clean_vista_env")


@pytest.fixture
def real_setup(vista_checkout: Path, tmp_path: Path, clean_vista_env) -> Path:
    """A checkout, a checkpoint file (not the published one: allowed explicitly) and CLIP
    weights given as a file; this suite's Python can import what the double imports."""
    ckpt = vista_checkout / "ckpts" / "vista.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"25 bytes, not the weights")
    clip = tmp_path / "clip" / "open_clip_model.safetensors"
    clip.parent.mkdir()
    clip.write_bytes(b"stand-in")
    clean_vista_env.setenv("REPRO_VISTA_CHECKOUT", str(vista_checkout))
    clean_vista_env.setenv("REPRO_VISTA_CLIP", str(clip))
    clean_vista_env.setenv("REPRO_VISTA_ALLOW_UNPINNED", "1")
    return vista_checkout


def _problems(res) -> list[str]:
    return [line for line in res.out.splitlines() if line.startswith("  - ")]


def test_check_passes_and_records_what_would_run(cli, real_setup):
    res = cli("vista", "check")
    assert res.code == 0, res.out
    assert f"vista_python: {sys.executable}" in res.out
    assert "vista_ckpt_pinned: False" in res.out and CHECKPOINT.sha256 in res.out
    assert "open_clip_model.safetensors" in res.out and "imports 8 of Vista's modules" in res.out


def test_check_fails_for_the_suites_python_without_vistas_packages(cli, real_setup):
    script = real_setup / "sample.py"       # the first import of Vista's real sample.py
    script.write_text(script.read_text().replace(
        "import argparse\n", "import argparse\n\nfrom pytorch_lightning import seed_everything\n",
        1))
    res = cli("vista", "check")
    assert res.code == 2 and len(_problems(res)) == 1, res.out
    assert "`from pytorch_lightning import seed_everything` fails with ModuleNotFoundError" \
        in res.out
    assert "requirements.txt" in res.out and "REPRO_VISTA_PYTHON" in res.out
    res = cli("vista", "check", "--python", str(real_setup / "no-such-python"))
    assert res.code == 2 and "no such interpreter" in res.out


def test_check_fails_for_a_placeholder_checkpoint(cli, real_setup, clean_vista_env):
    clean_vista_env.delenv("REPRO_VISTA_ALLOW_UNPINNED")
    res = cli("vista", "check")
    assert res.code == 2 and len(_problems(res)) == 1, res.out
    assert (f"vista.safetensors: 25 bytes, the published file has {CHECKPOINT.size_bytes}"
            in res.out)
    assert "huggingface.co/OpenDriveLab/Vista" in res.out and "--allow-unpinned" in res.out


def test_a_file_of_the_right_size_is_checked_by_hash(tmp_path):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 64)
    pin = Pin("w.bin", "0" * 64, 64, "https://example.org/w.bin")
    what, fix = pin_problem(weights, pin, tmp_path / "hashes.json")
    assert what == f"w.bin: SHA-256 {hashlib.sha256(b'x' * 64).hexdigest()}, the published " \
        f"file's is {'0' * 64}" and "https://example.org/w.bin" in fix
    assert pin_problem(weights, Pin("w.bin", hashlib.sha256(b"x" * 64).hexdigest(), 64, ""),
                       None) is None


def test_check_fails_without_clip_weights_and_says_how_to_prefetch(cli, real_setup, tmp_path,
                                                                  clean_vista_env):
    empty = tmp_path / "empty-hub"
    empty.mkdir()
    clean_vista_env.setenv("REPRO_VISTA_CLIP", str(empty))       # a hub cache without them
    res = cli("vista", "check")
    assert res.code == 2 and len(_problems(res)) == 1, res.out
    assert f"laion2b_s32b_b79k) in a local hub cache: missing or wrong: {empty}" in res.out
    assert f"huggingface-cli download {CLIP_REPO} open_clip_pytorch_model.bin --cache-dir " \
        f"{empty}" in res.out


def test_clip_bin_is_checked_against_its_published_hash(cli, real_setup, tmp_path,
                                                       clean_vista_env):
    clip = tmp_path / "open_clip_pytorch_model.bin"
    clip.write_bytes(b"truncated download")
    clean_vista_env.setenv("REPRO_VISTA_CLIP", str(clip))
    clean_vista_env.delenv("REPRO_VISTA_ALLOW_UNPINNED")
    res = cli("vista", "check", "--ckpt", str(clip))    # (any checkpoint: two problems)
    assert res.code == 2
    assert "open_clip_pytorch_model.bin: SHA-256 " in res.out
    assert "9a78ef8e8c73fd0df621682e7a8e8eb36c6916cb3c16b291a082ecd52ab79cc4" in res.out


def test_checkout_without_sample_py(vista_checkout):
    (vista_checkout / "sample.py").unlink()
    with pytest.raises(VistaError) as err:
        validate(given_inputs(vista_checkout), "ci")
    assert f"{vista_checkout / 'sample.py'}" in str(err.value)
    assert "not a Vista checkout" in str(err.value)


def test_unexpected_version_names_the_flag(vista_checkout):
    script = vista_checkout / "sample.py"
    script.write_text(script.read_text().replace('"--n_conds"', '"--num_conds"'))
    with pytest.raises(VistaError) as err:
        validate(given_inputs(vista_checkout), "ci")
    assert "--n_conds" in str(err.value) and "unexpected Vista version" in str(err.value)
    assert VISTA_COMMIT in str(err.value)


def test_rand_gen_must_be_store_false(vista_checkout):
    script = vista_checkout / "sample.py"
    script.write_text(script.read_text().replace(
        '"--rand_gen", action="store_false"', '"--rand_gen", action="store_true"'))
    with pytest.raises(VistaError, match="--rand_gen as store_false"):
        validate(given_inputs(vista_checkout), "ci")


def test_the_double_has_vistas_flags(tmp_path):
    flags = script_flags(DOUBLE / "sample.py")
    assert flags["--rand_gen"]["action"] == "store_false"
    assert flags["--n_frames"]["default"] == 25 and flags["--seed"]["default"] == 23
    assert (flags["--height"]["default"], flags["--width"]["default"]) == (576, 1024)
    assert (flags["--n_steps"]["default"], flags["--cfg_scale"]["default"],
            flags["--cond_aug"]["default"]) == (50, 2.5, 0.0)


def test_at_ci_the_double_stands_in_for_a_real_checkout(vista_checkout, tmp_path):
    script = vista_checkout / "sample.py"     # "real": no test-double marker
    script.write_text(script.read_text().replace("VISTA_TEST_DOUBLE = True", ""))
    setup = validate(given_inputs(vista_checkout), "ci", tmp_path / "work")  # no checkpoint
    assert setup.root == DOUBLE and setup.given == vista_checkout and setup.standing_in
    assert setup.python == sys.executable and setup.test_double
    prov = setup.provenance()
    assert prov["vista_standing_in"] is True and prov["vista_ckpt_pinned"] is False
    with pytest.raises(VistaError, match="Vista checkpoint"):
        validate(given_inputs(vista_checkout), "lite", tmp_path / "work")   # real Vista there


def test_preflight_refuses_vista_targets_at_paper_and_ci_with_a_bad_checkout(
        vista_checkout, clean_vista_env):
    runs = resolve_target(load_target("table1"), "paper")
    vista = [m for m in missing_inputs(runs, "paper") if "Vista" in m.what]
    assert [m.what for m in vista] == ["no Vista checkout given"]
    assert vista[0].needed_by == [("Vista sampling", "vista")]
    ci_runs = resolve_target(load_target("table1"), "ci")
    assert missing_inputs(ci_runs, "ci") == []           # no checkout at ci: left out instead
    clean_vista_env.setenv("REPRO_VISTA_CHECKOUT", str(vista_checkout))
    assert missing_inputs(ci_runs, "ci") == []           # the double stands in: no weights
    (vista_checkout / "sample_utils.py").unlink()
    assert [m.path for m in missing_inputs(ci_runs, "ci")] == \
        [str(vista_checkout / "sample_utils.py")]


def test_submit_leaves_vista_out_at_ci_without_a_checkout():
    from repro.vista.graph import split_runs
    runs = resolve_target(load_target("table2"), "ci")
    kept, message = split_runs(runs, "ci")
    assert [r.name for r in runs if r not in kept] == ["vista"]
    assert message.startswith("NOT RUN: Vista runs vista (table2/vista-official)")
    assert split_runs(runs, "paper") == (runs, "")       # refused by preflight instead


def test_a_done_vista_run_of_another_sample_py_is_retired(vista_checkout, tmp_path,
                                                         clean_vista_env):
    """A Vista run's id does not depend on the checkout: a done run prepared with another
    sample.py is moved aside (kept) so that it is prepared and evaluated again."""
    from evals.atomic import atomic_write_json
    from repro.jobs import run as runner
    from repro.jobs.state import run_dir
    from repro.launch.graph import run_record
    from repro.vista.graph import retire_if_changed
    clean_vista_env.setenv("REPRO_VISTA_CHECKOUT", str(vista_checkout))
    work = tmp_path / "work"
    run = next(r for r in resolve_target(load_target("table2"), "ci") if r.name == "vista")
    directory = run_dir(work, run.run_id)
    directory.mkdir(parents=True)
    atomic_write_json(directory / "spec.json", run_record(run).to_json())
    runner.execute(directory / "spec.json")     # prepare: records sample.py and checkpoint
    assert retire_if_changed(run, work) == "" and directory.is_dir()
    script = vista_checkout / "sample.py"
    script.write_text(script.read_text() + "\n# edited\n")
    note = retire_if_changed(run, work)
    assert "was prepared with another sample.py or checkpoint" in note and "runs again" in note
    stale = list((work / "runs-stale").iterdir())
    assert not directory.exists() and len(stale) == 1 and (stale[0] / "done.json").is_file()


def test_flags_travel_as_fields_not_environment_variables(cli, clean_vista_env, vista_checkout):
    """`--vista-checkout` reaches the Vista run's plan while the process environment stays as
    it was: the flags are carried by the run's VistaFields, not set as REPRO_VISTA_*."""
    import os
    before = dict(os.environ)
    res = cli("submit", "table2", "--scale", "ci", "--dry-run",
              "--vista-checkout", str(vista_checkout))
    assert res.code == 0, res.out + res.err
    assert f"{vista_checkout / 'sample.py'}" in res.out
    assert dict(os.environ) == before


def test_given_inputs_take_flags_before_the_environment(clean_vista_env, tmp_path):
    from repro.vista.checkout import VistaError
    clean_vista_env.setenv("REPRO_VISTA_CHECKOUT", str(tmp_path / "from-env"))
    clean_vista_env.setenv("REPRO_VISTA_SAMPLER", "n_steps=25")
    clean_vista_env.setenv("REPRO_VISTA_ALLOW_UNPINNED", "1")
    found = given_inputs()
    assert found.checkout == str(tmp_path / "from-env") and found.sampler == {"n_steps": 25}
    assert found.ckpt == str(tmp_path / "from-env" / "ckpts" / "vista.safetensors")
    assert found.allow_unpinned and not found.low_vram
    flagged = given_inputs(tmp_path / "flag", sampler="cfg_scale=2.0", low_vram=True)
    assert flagged.checkout == str(tmp_path / "flag") and flagged.sampler == {"cfg_scale": 2.0}
    assert flagged.low_vram
    with pytest.raises(VistaError, match="unknown setting 'steps'"):
        given_inputs(sampler="steps=3")
