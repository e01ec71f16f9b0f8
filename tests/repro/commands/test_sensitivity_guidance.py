"""`repro eval-sensitivity` varies the sampling guidance (repro/commands/guidance.py): a set with
sampling.json is regenerated at 1.0, 2.5 and 4.0 (tiny random-weight model and VAE, ci-scale
protocol, random detectors) and scored under the base protocol; a set without one gets rows
that say it is not regenerable; a rerun reuses the regenerated sets."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals.videoset import VideoSet, write_videoset
from maskgwm.model.model_file import save_model
from maskgwm.model.text import TextConditioning
from maskgwm.model.vae import SD3VAE
from maskgwm.sample import SETTINGS_FILE, sample_videoset
from repro.jobs.evalsets import scaled_protocol
from repro.commands.guidance import (NOT_REGENERABLE, guidance_folder, guidance_rows, parse_guidance,
                            plan_regeneration, provenance_lines, regenerate, summary)
from repro.commands.sensitivity import page_markdown

GEN_GUIDANCE = 3.0        # not one of the default scales: all three are regenerated
PROTOCOL = ["--protocol", "opendv_ablation", "--scale", "ci", "--n-boot", "0"]


@pytest.fixture(scope="module")
def world(tmp_path_factory, make_tiny_model):
    """A tiny checkpoint, a real set (two 25-frame clips at 64x32, one condition frame) and
    the set sampled from it at GEN_GUIDANCE (2 steps, random VAE)."""
    root = tmp_path_factory.mktemp("guidance")
    checkpoint = save_model(root / "model.pt", make_tiny_model(), TextConditioning.null("tiny"),
                            {"resolution": [64, 32]})
    rng = np.random.default_rng(0)
    real = write_videoset(root / "real", [(f"c{i}", rng.integers(0, 256, (25, 32, 64, 3),
                                                                  dtype=np.uint8))
                                          for i in range(2)], fps=10.0, cond_frames=1).root
    gen = sample_videoset(checkpoint, SD3VAE.random(), real, root / "gen", steps=2,
                          guidance=GEN_GUIDANCE, seed=7, log=lambda _: None)
    return {"root": root, "checkpoint": checkpoint, "real": real, "gen": gen}


@pytest.fixture(scope="module")
def run(world):
    """`repro eval-sensitivity` with the default guidance scales and a page; its `--out`.
    Only the base protocol of the variants is scored (they are test_evalcmd's subject and
    the guidance rows do not depend on them): this keeps the module fast."""
    from repro.commands import sensitivity
    from repro.cli import main
    out = world["root"] / "sens.md"
    argv = ["eval-sensitivity", *PROTOCOL, "--generated", str(world["gen"]), "--reference",
            str(world["real"]), "--random-weights", "--random-vae", "--cache-dir",
            str(world["root"] / "cache"), "--out", str(out), "--name", "ours",
            "--page", str(world["root"] / "page.md")]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sensitivity, "SENSITIVITY_VARIANTS", sensitivity.SENSITIVITY_VARIANTS[:1])
        assert main(argv) == 0
    return out


def clip_files(folders) -> dict:
    """Each clip file's modification time (the manifest is rewritten on every open)."""
    return {path: path.stat().st_mtime_ns for folder in folders for path in folder.rglob("*")
            if path.is_file() and path.name not in ("manifest.json", SETTINGS_FILE)}


def settings_of(folder) -> dict:
    return json.loads((folder / SETTINGS_FILE).read_text())["settings"]


def test_three_regenerated_sets_differ_from_the_original_only_in_guidance(world, run):
    original = settings_of(world["gen"])
    for guidance in (1.0, 2.5, 4.0):
        folder = guidance_folder(run, guidance)
        assert folder == world["root"] / "sens-guidance" / f"g{guidance}"
        assert settings_of(folder) == {**original, "guidance": guidance}
        assert len(VideoSet.open(folder).clips) == 2


def test_guidance_changes_the_generated_frames(run):
    low, high = (VideoSet.open(guidance_folder(run, g)) for g in (1.0, 4.0))
    first, second = low.read(low.clips[0]), high.read(high.clips[0])
    assert np.array_equal(first[:1], second[:1])             # the real condition frame
    assert not np.array_equal(first[1:], second[1:])


def test_guidance_rows_in_table_json_and_page(world, run):
    scored = json.loads(run.with_suffix(".rows.json").read_text())
    rows = [row for row in scored["rows"] if "guidance" in row]
    assert [row["label"] for row in rows] == [f"sampling guidance {g} (regenerated)"
                                              for g in (1.0, 2.5, 4.0)]
    base = scored["rows"][0]
    sha = settings_of(world["gen"])["checkpoint_sha256"]
    for row, guidance in zip(rows, (1.0, 2.5, 4.0)):
        assert math.isfinite(row["fid"]) and math.isfinite(row["fvd"])
        assert row["d_fid"] == pytest.approx(row["fid"] - base["fid"])
        assert row["hash"] == base["hash"] and not row["reused"]
        assert {k: row["sampling"][k] for k in ("guidance", "steps", "seed",
                                                "checkpoint_sha256")} == \
            {"guidance": guidance, "steps": 2, "seed": 7, "checkpoint_sha256": sha}
    assert scored["guidance"]["sampled_with"] == GEN_GUIDANCE
    assert rows[0]["fid"] != rows[2]["fid"]
    table = run.read_text()
    assert "| sampling guidance 2.5 (regenerated) |" in table and sha in table
    page = (world["root"] / "page.md").read_text()
    assert "| sampling guidance 1.0 (regenerated) | " in page
    assert "- ours: sampled with guidance 3.0" in page and "Vista samples with 2.5" in page


def test_a_rerun_reuses_the_regenerated_sets(world, run):
    """A rerun regenerates (as the command does, through `regenerate`) into the same folders:
    no clip is sampled again."""
    plan = plan_regeneration(world["gen"], None, world["real"])
    folders = [guidance_folder(run, g) for g in (1.0, 2.5, 4.0)]
    before = clip_files(folders)
    log: list[str] = []
    for guidance, folder in zip((1.0, 2.5, 4.0), folders):
        assert regenerate(plan, guidance, folder, SD3VAE.random(), "cpu", log.append) == folder
    assert sum("0 clips generated, 2 already there" in line for line in log) == 3
    assert clip_files(folders) == before


def test_a_set_without_sampling_json_is_not_regenerable(world, tmp_path):
    plain = write_videoset(tmp_path / "vista", [(f"c{i}", VideoSet.open(world["gen"]).read(
        VideoSet.open(world["gen"]).clips[i])) for i in range(2)], fps=10.0, cond_frames=1).root
    plan = plan_regeneration(plain, None, world["real"])
    assert plan == NOT_REGENERABLE.format("no sampling.json")
    rows = guidance_rows(plan, (1.0, 2.5, 4.0), {}, plain, tmp_path / "s.md", None, None)
    assert [row["skipped"] for row in rows] == ["skipped: not regenerable (no sampling.json)"] * 3


def test_other_checkpoint_or_real_set_is_not_regenerable(world, tmp_path, make_tiny_model):
    other = save_model(tmp_path / "other.pt", make_tiny_model(seed=1),
                       TextConditioning.null("tiny"), {"resolution": [64, 32]})
    assert "is not the one the set was sampled with" in \
        plan_regeneration(world["gen"], other, world["real"])
    assert "is not the real set" in plan_regeneration(world["gen"], None, world["gen"])
    with pytest.raises(FileNotFoundError, match="--checkpoint"):
        plan_regeneration(world["gen"], tmp_path / "none.pt", world["real"])


def test_the_own_scale_is_the_set_itself(world, tmp_path):
    """The scale the set was sampled with is not regenerated; its row repeats the base row."""
    plan = plan_regeneration(world["gen"], None, world["real"])
    base = {"hash": "h", "fid": 10.0, "fvd": 100.0}
    rows = guidance_rows(plan, (GEN_GUIDANCE, 1.0), base, world["gen"], tmp_path / "s.md",
                         lambda g, folder: folder, lambda folder: (12.0, 90.0))
    assert rows[0]["reused"] and rows[0]["sampling"]["folder"] == str(world["gen"])
    assert (rows[0]["d_fid"], rows[0]["d_fvd"]) == (0.0, 0.0)
    assert "as sampled: this set, not regenerated" in rows[0]["label"]
    assert (rows[1]["d_fid"], rows[1]["d_fvd"]) == (2.0, -10.0)
    meta = {"label": "", "n_clips": 2, "fid_n": 4, "fvd_n": 2, "detectors": {}}
    page = page_markdown(scaled_protocol("opendv_ablation", "ci"), "/real", {"ours": {
        "rows": [{"label": "base protocol", **base, "d_fid": 0.0, "d_fvd": 0.0}, *rows],
        "meta": meta, "path": "/gen", "guidance": {"scales": [GEN_GUIDANCE, 1.0],
                                                   "sampled_with": GEN_GUIDANCE,
                                                   "checkpoint": "c", "real": "r"}}},
        "abc", "repro ...")
    assert "| sampling guidance 3.0 (regenerated) | 10.00 (+0.00) *as sampled* |" in page
    assert "  - guidance 3.0: the set itself; steps 2, seed 7, frames as the real clips, " \
        "window 25, 64x32, checkpoint SHA-256" in page


def test_regenerable_set_needs_a_vae_or_no_guidance(cli, world, tmp_path):
    common = ["eval-sensitivity", *PROTOCOL, "--generated", str(world["gen"]), "--reference",
              str(world["real"]), "--random-weights", "--out", str(tmp_path / "s.md")]
    result = cli(*common)
    assert result.code == 2 and "--vae DIR or --random-vae" in result.err
    assert "--guidance ''" in result.err and not (tmp_path / "s.md").exists()
    assert parse_guidance("") == () and parse_guidance(None) == (1.0, 2.5, 4.0)
    assert provenance_lines("ours", [], summary("guidance not varied", ())) == \
        ["- ours: sampling guidance not varied (`--guidance ''`)"]
    assert parse_guidance("4,2.5,4") == (4.0, 2.5)
    with pytest.raises(ValueError, match="comma-separated"):
        parse_guidance("high")
