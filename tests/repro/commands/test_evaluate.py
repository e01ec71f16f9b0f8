"""`repro eval`, `eval-merge`, `eval-sensitivity` and `weights check` from the command line."""
from __future__ import annotations

import json

import numpy as np
import pytest

from evals.videoset import write_videoset


def clip(seed: int, noise: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    texture = np.kron(rng.integers(0, 256, (4, 6, 3)), np.ones((8, 8, 1)))
    frames = np.stack([np.roll(texture, 4 * t, axis=1) for t in range(25)])
    return np.clip(frames + noise * rng.normal(size=frames.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-sets")
    write_videoset(root / "ref", [(f"c{i}", clip(i)) for i in range(2)], fps=10)
    write_videoset(root / "gen", [(f"c{i}", clip(i, 50)) for i in range(2)], fps=10,
                   cond_frames=1)
    return root


def test_eval_needs_weights_or_an_explicit_random_choice(cli, sets, tmp_path):
    result = cli("eval", "--protocol", "opendv_ablation", "--generated", str(sets / "gen"),
                 "--reference", str(sets / "ref"), "--out", str(tmp_path / "r.json"))
    assert result.code == 2 and "--weights-dir" in result.err and "--random-weights" in result.err


def test_eval_with_missing_weights_names_the_file(cli, sets, tmp_path):
    result = cli("eval", "--protocol", "opendv_ablation", "--generated", str(sets / "gen"),
                 "--reference", str(sets / "ref"), "--out", str(tmp_path / "r.json"),
                 "--weights-dir", str(tmp_path))
    assert result.code == 2
    assert "pt_inception-2015-12-05-6726825d.pth" in result.err and str(tmp_path) in result.err
    assert not (tmp_path / "r.json").exists()


def test_weights_check_reports_every_file(cli, tmp_path):
    (tmp_path / "i3d_pretrained_400.pt").write_bytes(b"not the weights")
    result = cli("weights", "check", str(tmp_path))
    assert result.code == 1
    lines = result.out.splitlines()
    assert any(l.startswith("MISSING") and "inception-2015-12-05" in l for l in lines)
    assert any(l.startswith("WRONG FILE") and "i3d-400" in l for l in lines)
    assert "a867b87ac3a9097d200598b1d48a1b890d8ec744" in result.out


def test_weights_check_names_a_folder_in_place_of_a_file(cli, tmp_path):
    (tmp_path / "i3d_pretrained_400.pt").mkdir()    # e.g. an unpacked archive
    result = cli("weights", "check", str(tmp_path))
    line = next(l for l in result.out.splitlines() if "i3d-400" in l)
    assert result.code == 1 and line.startswith("A FOLDER") and "put the file itself" in line
    result = cli("weights", "check", str(tmp_path / "nowhere"))
    assert result.code == 2 and "nowhere: no such folder" in result.err


def test_eval_sharded_and_merged_from_the_cli(cli, sets, tmp_path):
    out = tmp_path / "r.json"
    base = ["--protocol", "opendv_ablation", "--generated", str(sets / "gen"), "--reference",
            str(sets / "ref"), "--random-weights", "--n-boot", "0", "--quiet",
            "--cache-dir", str(sets / "cache")]
    for shard in ("0/2", "1/2"):
        result = cli("eval", *base, "--out", str(out), "--shard", shard)
        assert result.code == 0 and "eval-merge" in result.out
    merged = cli("eval-merge", str(out))
    assert merged.code == 0 and "FID" in merged.out and "random-weights" in merged.out
    saved = json.loads(out.read_text())
    assert saved["n_clips"] == 2 and saved["points"][0]["fvd"]["n"] == 2
    assert saved["points"][0]["fid"]["n"] == 12        # 6 random generated frames per clip


def test_eval_sensitivity_table(cli, sets, tmp_path):
    out = tmp_path / "sensitivity.md"
    result = cli("eval-sensitivity", "--protocol", "opendv_ablation", "--generated",
                 str(sets / "gen"), "--reference", str(sets / "ref"), "--random-weights",
                 "--n-boot", "0", "--cache-dir", str(sets / "cache"), "--out", str(out))
    assert result.code == 0, result.err
    rows = [l for l in out.read_text().splitlines() if l.startswith("| ") and "---" not in l]
    assert len(rows) == 12                               # header + 8 variants + 3 guidance
    assert "| base protocol |" in rows[1] and "+0.00 | +0.00 |" in rows[1]
    assert "skipped: needs the real TorchScript file" in rows[8]
    assert rows[9:] == [f"| sampling guidance {g} (regenerated) | skipped: not regenerable "
                        "(no sampling.json) | | | | |" for g in (1.0, 2.5, 4.0)]
    assert "random-weights detector" in out.read_text()
    assert "sampling guidance rows skipped: not regenerable" in out.read_text()
