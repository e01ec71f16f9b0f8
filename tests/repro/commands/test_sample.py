"""`repro sample` and `repro sample-merge` end to end (tiny model, random VAE), and their errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from evals.videoset import VideoSet, write_videoset
from maskgwm.config.schema import ModelConfig
from maskgwm.model.model_file import save_model
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.text import TextConditioning
from repro.commands.sample import default_shard


@pytest.fixture
def inputs(tmp_path):
    """(checkpoint, real set) in tmp_path: a tiny model at 64x32, two 3-frame clips."""
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny"), mask_config=None).eval()
    checkpoint = save_model(tmp_path / "model.pt", model, TextConditioning.null("tiny"),
                            {"resolution": [64, 32]})
    rng = np.random.default_rng(0)
    real = write_videoset(tmp_path / "real", [(f"c{i}", rng.integers(0, 256, (3, 32, 64, 3),
                                                                      dtype=np.uint8))
                                              for i in range(2)], fps=10.0, cond_frames=1)
    return checkpoint, real.root


def test_sample_shards_and_merge(cli, inputs, tmp_path, monkeypatch):
    checkpoint, real = inputs
    common = ["sample", "--checkpoint", str(checkpoint), "--real", str(real), "--out",
              str(tmp_path / "gen"), "--random-vae", "--steps", "2"]
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    for task in ("1", "2"):   # array ids 1-2 are shards 0 and 1
        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", task)
        result = cli(*common)
        assert result.code == 0, result.err
        assert "repro sample-merge" in result.out and "random tiny VAE" in result.out
    parts = sorted(str(p) for p in (tmp_path / "gen").glob("shard-*-of-002"))
    assert len(parts) == 2
    result = cli("sample-merge", *parts, "--out", str(tmp_path / "merged"), "--real", str(real))
    assert result.code == 0, result.err
    assert "2 clips merged from 2 parts" in result.out
    merged = VideoSet.open(tmp_path / "merged")
    assert [e.clip_id for e in merged.clips] == ["c0", "c1"]
    assert merged.read(merged.clips[0]).shape == (3, 32, 64, 3)


def test_missing_checkpoint_and_vae(cli, inputs, tmp_path):
    checkpoint, real = inputs
    result = cli("sample", "--checkpoint", str(tmp_path / "none.pt"), "--real", str(real),
                 "--out", str(tmp_path / "gen"), "--random-vae")
    assert result.code == 2 and "none.pt not found" in result.err
    assert "Traceback" not in result.err
    result = cli("sample", "--checkpoint", str(checkpoint), "--real", str(real),
                 "--out", str(tmp_path / "gen"), "--vae", str(tmp_path / "sd3"))
    assert result.code == 2 and "stable-diffusion-3-medium-diffusers" in result.err
    assert str(tmp_path / "sd3") in result.err
    result = cli("sample", "--checkpoint", str(checkpoint), "--real", str(real), "--out", "x")
    assert result.code == 2 and "--vae" in result.err


def test_corrupt_checkpoint_is_a_clear_error(cli, inputs, tmp_path):
    _, real = inputs
    (tmp_path / "bad.pt").write_text("garbage")
    result = cli("sample", "--checkpoint", str(tmp_path / "bad.pt"), "--real", str(real),
                 "--out", str(tmp_path / "gen"), "--random-vae", "--shard", "0",
                 "--num-shards", "1")
    assert result.code == 2 and "bad.pt: not a readable torch checkpoint" in result.err


def test_default_shard():
    assert default_shard({}) == (0, 1)
    assert default_shard({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4"}) == (3, 4)
    assert default_shard({"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4",
                          "SLURM_ARRAY_TASK_MIN": "1"}) == (3, 4)
    rerun = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "3",   # --array=3,7,9
             "SLURM_ARRAY_TASK_MIN": "3", "SLURM_ARRAY_TASK_MAX": "9"}
    with pytest.raises(ValueError, match="not consecutive.*--shard and --num-shards"):
        default_shard(rerun)
    with pytest.raises(ValueError, match="step 2"):                       # --array=0-8:2
        default_shard({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "5",
                       "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "8",
                       "SLURM_ARRAY_TASK_STEP": "2"})
