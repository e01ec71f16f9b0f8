"""Trainer at the ci scale (tiny preset, 64x32, synthetic data): exact resume, checkpoints,
the parent-checkpoint chain, actions, EMA, compile, data roots and SD3 inflation."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from evals.weights import sha256_file
from maskgwm.config.resolve import resolve_run_config
from maskgwm.config.schema import OptimConfig
from maskgwm.model.model_file import load_model
from maskgwm.train.checkpoint_files import CheckpointMismatchError, list_checkpoints
from maskgwm.train.modelsetup import ModelSetupError
from maskgwm.train.options import run_hash
from maskgwm.train.trainer import Trainer, ema_decay_at


def test_resume_is_exact_bit_for_bit(tmp_path, kit):
    cfg = kit.config(**{"stage.steps": 4, "stage.batch_size": 2})
    full = Trainer(cfg, tmp_path / "full", options=kit.options()).run()
    assert full["status"] == "done" and full["step"] == 4
    out = tmp_path / "resumed"
    early = Trainer(cfg, out, options=kit.options()).run(lambda: True)
    assert early == {"status": "interrupted", "step": 0, "checkpoint": None}  # nothing to save
    trainer = Trainer(cfg, out, options=kit.options(workers=1))
    first = trainer.run(lambda: trainer.step >= 2)
    assert first == {"status": "interrupted", "step": 2,
                     "checkpoint": str(out / "checkpoints" / "step-00000002.pt")}
    assert not (out / "model.pt").exists()
    second = Trainer(cfg, out, options=kit.options()).run()
    assert second["status"] == "done" and second["step"] == 4
    assert kit.losses(out) == kit.losses(tmp_path / "full")          # exact, every step once
    assert len(set(kit.losses(out).values())) == 4
    a, b = kit.final_state(out), kit.final_state(tmp_path / "full")
    assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((out / "summary.json").read_text())
    # throughput over the whole run (the metric rows); steps_run: this process's steps
    assert summary["steps_run"] == 2 and summary["steps_timed"] == 4
    assert 0 <= summary["data_wait_fraction"] <= 1 and summary["steps_per_s"] > 0
    # the model's hash, remembered beside it for the sample shards (evals.weights)
    assert summary["model_sha256"] == sha256_file(out / "model.pt")
    assert summary["model_sha256"] in (out / "model.pt.sha256.json").read_text()
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("step,loss,flow")
    # model.pt and summary.json lost: re-exported from the last checkpoint, no step trained,
    # the summary still describes the whole run
    (out / "model.pt").unlink()
    (out / "summary.json").unlink()
    again = Trainer(cfg, out, options=kit.options()).run()
    assert again["status"] == "done" and again["step"] == 4
    redone = json.loads((out / "summary.json").read_text())
    assert redone["steps_run"] == 0
    assert {k: redone[k] for k in ("steps_timed", "steps_per_s", "train_time_s")} == \
        {k: summary[k] for k in ("steps_timed", "steps_per_s", "train_time_s")}
    assert torch.equal(kit.final_state(out)[next(iter(a))], a[next(iter(a))])


def test_keep_last(tmp_path, kit):
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 4})
    Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=1, keep_last=2)).run()
    assert [step for step, _ in list_checkpoints(tmp_path)] == [4, 3]
    data = torch.load(tmp_path / "checkpoints" / "step-00000004.pt", weights_only=True)
    assert {"model", "optimizer", "scheduler", "ema", "rng", "step", "data", "config",
            "config_hash"} <= set(data)
    assert data["config_hash"] == run_hash(cfg)
    model, _, extra = load_model(tmp_path / "checkpoints" / "step-00000004.pt")
    assert extra["step"] == 4
    dropped = Trainer(cfg, tmp_path / "dropped", options=kit.options(checkpoint_every=1, drop_checkpoints_when_done=True)).run()
    assert dropped["status"] == "done" and not list_checkpoints(tmp_path / "dropped")
    a, b = load_model(dropped["model"])[0].state_dict(), kit.final_state(tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_config_hash_mismatch_is_an_error(tmp_path, kit):
    Trainer(kit.config("1a", "no-mr"), tmp_path, options=kit.options()).run()
    other = kit.config("1a", "no-mr", **{"optim.lr": 1e-4})
    with pytest.raises(CheckpointMismatchError, match=r"config hash .*config\.optim\.lr: "
                                                      r"5e-05 -> 0\.0001"):
        Trainer(other, tmp_path, options=kit.options()).run()
    with pytest.raises(CheckpointMismatchError,     # EMA is in the hash too, and said
                       match=r"config\.optim\.ema_decay: 0\.9999 -> 0\.9\)"):
        Trainer(kit.config("1a", "no-mr", **{"optim.ema_decay": 0.9}), tmp_path,
                options=kit.options()).run()


def test_parent_chain_1a_1b_1c(tmp_path, kit):
    opts = kit.options()
    Trainer(kit.config("1a", "no-mr"), tmp_path / "1a", options=opts).run()
    parent_a = load_model(tmp_path / "1a" / "model.pt")[0].state_dict()

    b = Trainer(kit.config("1b", "no-mr"), tmp_path / "1b", tmp_path / "1a" / "model.pt",
                options=opts)
    b.setup()
    state = {k: v.clone() for k, v in b.model.state_dict().items()}
    assert all(torch.equal(state[k], v) for k, v in parent_a.items())
    new = [k for k in state if k.startswith("temporal_blocks.")]
    assert new and all(not state[k].any() for k in new if "to_out" in k or "proj_out" in k)
    trainable = {n for n, p in b.model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in b.model.named_parameters()
                         if n.startswith("temporal_blocks.")}
    b.run()
    after_b = load_model(tmp_path / "1b" / "model.pt")[0].state_dict()
    assert all(torch.equal(after_b[k], v) for k, v in parent_a.items())   # spatial frozen
    assert any(not torch.equal(after_b[k], state[k]) for k in new)

    parent_b = tmp_path / "1b" / "checkpoints" / "step-00000002.pt"    # a trainer checkpoint
    c = Trainer(kit.config("1c", "ours"), tmp_path / "1c", parent_b, options=opts)
    c.setup()
    state = {k: v.clone() for k, v in c.model.state_dict().items()}
    raw_b = load_model(parent_b)[0].state_dict()      # the raw weights; model.pt holds the EMA
    assert all(torch.equal(state[k], v) for k, v in raw_b.items())
    assert any(k.startswith("recon_spatial.") for k in state)
    assert any(k.startswith("recon_temporal.") for k in state)
    assert all(p.requires_grad for p in c.model.parameters())
    assert c.run()["status"] == "done"


def test_parent_that_does_not_fit_is_a_clear_error(tmp_path, kit):
    opts = kit.options()
    Trainer(kit.config("1b", "no-mr"), tmp_path / "1b", options=opts).run()
    data = torch.load(tmp_path / "1b" / "model.pt", weights_only=True)
    key = next(k for k in data["state_dict"] if k.startswith("temporal_blocks.0.attn."))
    del data["state_dict"][key]
    torch.save(data, tmp_path / "broken.pt")
    with pytest.raises(ModelSetupError, match="not newly added"):
        Trainer(kit.config("1c", "ours"), tmp_path / "1c", tmp_path / "broken.pt",
                options=opts).setup()
    data = torch.load(tmp_path / "1b" / "model.pt", weights_only=True)
    data["preset"] = "small"
    torch.save(data, tmp_path / "small.pt")
    with pytest.raises(ModelSetupError, match="preset 'small'"):
        Trainer(kit.config("1c", "ours"), tmp_path / "1c2", tmp_path / "small.pt",
                options=opts).setup()


def test_actions_ema_activation_checkpointing_and_samples(tmp_path, kit):
    cfg = kit.config("2", "ours", **{"stage.steps": 2})
    plain = Trainer(cfg, tmp_path / "plain", options=kit.options()).run()
    assert plain["status"] == "done"
    checked = Trainer(cfg, tmp_path / "ac", options=kit.options(activation_checkpointing=True, sample_every=2, sample_steps=2)).run()
    assert checked["status"] == "done"
    a, b = kit.losses(tmp_path / "plain"), kit.losses(tmp_path / "ac")
    assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a)
    summary = json.loads((tmp_path / "plain" / "summary.json").read_text())
    assert "actions" in summary["provenance"]["data"]["actions"]
    assert summary["activation_checkpointing"] is False
    assert json.loads((tmp_path / "ac" / "summary.json").read_text())[
        "activation_checkpointing"] is True
    ema_model = kit.final_state(tmp_path / "ac")
    ckpt = torch.load(tmp_path / "ac" / "checkpoints" / "step-00000002.pt", weights_only=True)
    raw = ckpt["model"]["state_dict"]
    changed = [k for k in ckpt["ema"] if not torch.equal(ema_model[k], raw[k])]
    assert changed and all(torch.equal(ema_model[k], ckpt["ema"][k]) for k in ckpt["ema"])
    samples = list((tmp_path / "ac" / "samples" / "step-00000002").iterdir())
    assert any(p.name == "manifest.json" or p.suffix == ".json" for p in samples)


def test_ema_follows_vistas_warm_up(tmp_path, kit):
    """optim.ema_decay (default 0.9999, on: Vista trains with EMA) with Vista's warm-up: update n
    uses min(decay, (1 + n) / (10 + n)); model.pt holds the EMA weights."""
    assert ema_decay_at(OptimConfig(), 1) == pytest.approx(2 / 11)
    assert ema_decay_at(OptimConfig(), 10 ** 6) == 0.9999
    assert ema_decay_at(OptimConfig(ema_decay=0.5, ema_warmup=False), 1) == 0.5
    cfg = kit.config("1a", "no-mr", **{"stage.steps": 2})
    Trainer(cfg, tmp_path, options=kit.options(checkpoint_every=1, keep_last=0)).run()
    first, second = (torch.load(tmp_path / "checkpoints" / f"step-0000000{s}.pt",
                                weights_only=True) for s in (1, 2))
    decay = 3 / 12
    for name, ema in second["ema"].items():
        expected = decay * first["ema"][name] + (1 - decay) * second["model"]["state_dict"][name]
        torch.testing.assert_close(ema, expected)
    assert all(torch.equal(kit.final_state(tmp_path)[k], v) for k, v in second["ema"].items())


@pytest.mark.slow
def test_compiled_blocks_train_like_eager(tmp_path, kit, monkeypatch):
    """--compile (regional torch.compile, inductor on the CPU) gives the eager per-step losses
    and weights, with MR branches mixed in the steps; checkpoints keep the eager names; the
    compiled kernels are kept in the cache folder (for requeued jobs)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "")   # restored after the test, unset in it
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    cfg = kit.config(**{"stage.steps": 3, "stage.batch_size": 4})
    Trainer(cfg, tmp_path / "eager", options=kit.options()).run()
    Trainer(cfg, tmp_path / "compiled", options=kit.options(compile=True)).run()
    a, b = kit.losses(tmp_path / "eager"), kit.losses(tmp_path / "compiled")
    assert a.keys() == b.keys() == {1, 2, 3} and all(abs(a[k] - b[k]) < 1e-5 for k in a)
    eager, compiled = kit.final_state(tmp_path / "eager"), kit.final_state(tmp_path / "compiled")
    assert eager.keys() == compiled.keys()
    assert max(float((eager[k] - compiled[k]).abs().max()) for k in eager) < 1e-5
    summary = json.loads((tmp_path / "compiled" / "summary.json").read_text())
    assert summary["provenance"]["compiled_blocks"] > 0
    assert any(path.is_file() for path in (Path(kit.cache_dir) / "inductor").rglob("*"))


def test_real_data_roots(tmp_path, kit, monkeypatch):
    from maskgwm.data.synth.opendv_writer import write_synthetic_opendv
    from maskgwm.train.batches import DataSetupError
    monkeypatch.delenv("REPRO_DATA_ROOT", raising=False)
    cfg = kit.config("1a", "no-mr", **{"data.source": "real"})
    with pytest.raises(DataSetupError, match="REPRO_DATA_ROOT"):
        Trainer(cfg, tmp_path / "a", options=kit.options()).run()
    with pytest.raises(DataSetupError, match=r"opendv is missing: put OpenDV-2K"):
        Trainer(cfg, tmp_path / "b", data_root=tmp_path / "data",
                options=kit.options()).run()
    write_synthetic_opendv(tmp_path / "data" / "opendv", n_videos=2, width=64, height=32)
    monkeypatch.setenv("REPRO_DATA_ROOT", str(tmp_path / "data"))
    result = Trainer(cfg, tmp_path / "c", options=kit.options(cache=str(tmp_path / "cache"))).run()
    assert result["status"] == "done"
    assert list((tmp_path / "cache" / "manifests").glob("opendv-Train-1-*.json"))


def test_batch_not_divisible_by_processes(tmp_path, kit, monkeypatch):
    from maskgwm.train.distributed import DistributedError
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DistributedError, match="not divisible by the 2 processes"):
        Trainer(kit.config("1c", "ours", **{"stage.batch_size": 3}), tmp_path,
                options=kit.options())


def test_stage_1a_at_lite_scale_inflates_sd3_and_uses_its_vae(tmp_path, kit, tiny_sd3, monkeypatch):
    from maskgwm.model.vae import SD3VAE
    weights = tmp_path / "weights"
    root = weights / "stable-diffusion-3-medium-diffusers"
    tiny_sd3.save_pretrained(root / "transformer")
    SD3VAE.random(3).vae.save_pretrained(root / "vae")
    text = {"encoder_hidden_states": torch.randn(1, 5, 32),
            "pooled_projections": torch.randn(1, 32)}
    torch.save(text, weights / "text_embeddings.pt")
    cfg = resolve_run_config("1a", "lite", "no-mr", {
        "model.preset": "tiny", "data.source": "synthetic", "data.width": 64,
        "data.height": 32, "stage.steps": 1, "stage.batch_size": 1})
    monkeypatch.delenv("REPRO_WEIGHTS", raising=False)
    with pytest.raises(ModelSetupError, match="--weights"):
        Trainer(cfg, tmp_path / "none", options=kit.options()).setup()
    monkeypatch.setenv("REPRO_WEIGHTS", str(weights))
    trainer = Trainer(cfg, tmp_path / "run", options=kit.options())
    trainer.setup()
    state, sd3 = trainer.model.state_dict(), tiny_sd3.state_dict()
    assert all(torch.equal(state[k], v) for k, v in sd3.items())
    assert "SD3 VAE" in trainer.provenance["vae"] and "SD3 transformer" in \
        trainer.provenance["model"]["init"]
    assert torch.equal(trainer.text.encoder_hidden_states, text["encoder_hidden_states"])
    assert trainer.run()["status"] == "done"
