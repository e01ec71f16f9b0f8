"""Model checkpoints: bit-identical round trip, trainer-style nesting, clear errors; text files."""
from __future__ import annotations

import pytest
import torch

from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.model_file import CheckpointError, load_model, model_checkpoint, save_model
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.presets import get_preset
from maskgwm.model.text import TextConditioning, TextConditioningError

TINY = get_preset("tiny")


def tiny_model(seed: int = 0, **config) -> MaskGWMDiT:
    torch.manual_seed(seed)
    model = MaskGWMDiT(ModelConfig(preset="tiny", **config), mask_config=None).eval()
    with torch.no_grad():   # zero-initialised new blocks would hide a load that skipped them
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


def random_text(tokens: int = 5) -> TextConditioning:
    generator = torch.Generator().manual_seed(1)
    return TextConditioning(torch.randn(1, tokens, TINY.joint_attention_dim, generator=generator),
                            torch.randn(1, TINY.pooled_projection_dim, generator=generator))


def outputs(model, text, inputs):
    latents, tau, _, _ = inputs(TINY, batch=2, frames=3, views=1)
    t = text.expand(2)
    with torch.no_grad():
        return model(latents, tau, t.encoder_hidden_states, t.pooled_projections,
                     cond_frames=torch.tensor([[True, False, False]] * 2))


@pytest.mark.parametrize("config", [{}, {"actions": True, "view_blocks": True}])
def test_round_trip_is_bit_identical(tmp_path, inputs, config):
    model, text = tiny_model(**config), random_text()
    path = save_model(tmp_path / "model.pt", model, text, {"resolution": [128, 64], "step": 7})
    loaded, loaded_text, extra = load_model(path, preset="tiny")
    assert extra == {"resolution": [128, 64], "step": 7}
    assert loaded.model_config == model.model_config and loaded.action_dim == model.action_dim
    assert torch.equal(loaded_text.encoder_hidden_states, text.encoder_hidden_states)
    assert torch.equal(outputs(loaded, loaded_text, inputs), outputs(model, text, inputs))
    assert not list(tmp_path.glob(".*.tmp"))   # atomic write left no temporary file


def test_mask_config_round_trip(tmp_path):
    mask = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)
    model = MaskGWMDiT(ModelConfig(preset="tiny"), mask_config=mask)
    loaded, _, _ = load_model(save_model(tmp_path / "m.pt", model, TextConditioning.null(TINY)))
    assert loaded.mask_config == mask
    assert set(loaded.state_dict()) == set(model.state_dict())


def test_trainer_checkpoint_is_accepted(tmp_path, inputs):
    model, text = tiny_model(), random_text()
    path = tmp_path / "trainer.pt"
    torch.save({"model": model_checkpoint(model, text, {"step": 3}), "optimizer": {}, "step": 3},
               path)
    loaded, loaded_text, extra = load_model(path)
    assert extra["step"] == 3
    assert torch.equal(outputs(loaded, loaded_text, inputs), outputs(model, text, inputs))


def test_other_preset_error(tmp_path):
    path = save_model(tmp_path / "m.pt", tiny_model(), random_text())
    with pytest.raises(CheckpointError, match=r"m\.pt: a checkpoint of preset 'tiny', "
                                              r"expected preset 'small'"):
        load_model(path, preset="small")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_model(tmp_path / "nothing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=r"bad\.pt: not a readable torch checkpoint"):
        load_model(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format None, expected "
                                              r"'maskgwm-model/1'"):
        load_model(other)


def test_state_dict_mismatch_names_keys(tmp_path):
    data = model_checkpoint(tiny_model(), random_text())
    data["state_dict"].pop("proj_out.bias")
    data["state_dict"]["extra.weight"] = torch.zeros(1)
    data["state_dict"]["proj_out.weight"] = torch.zeros(3, 3)
    torch.save(data, tmp_path / "m.pt")
    with pytest.raises(CheckpointError) as err:
        load_model(tmp_path / "m.pt")
    message = str(err.value)
    assert "missing keys (1): proj_out.bias" in message
    assert "unexpected keys (1): extra.weight" in message
    assert "proj_out.weight: expected (64, 64), found (3, 3)" in message


def test_text_conditioning_null_load_expand(tmp_path):
    null = TextConditioning.null("sd3-medium", tokens=4)
    assert null.encoder_hidden_states.shape == (1, 4, 4096)
    assert null.pooled_projections.shape == (1, 2048) and not null.pooled_projections.any()
    text = random_text()
    torch.save(text.state_dict(), tmp_path / "text.pt")
    from safetensors.torch import save_file
    save_file(text.state_dict(), str(tmp_path / "text.safetensors"))
    for name in ("text.pt", "text.safetensors"):
        loaded = TextConditioning.load(tmp_path / name, preset="tiny")
        assert torch.equal(loaded.pooled_projections, text.pooled_projections)
    batch = text.expand(3)
    assert batch.encoder_hidden_states.shape == (3, 5, 32)
    assert batch.pooled_projections.shape == (3, 32)
    with pytest.raises(TextConditioningError, match=r"encoder_hidden_states must be "
                                                    r"\[1, L, 128\] \(preset 'small'\)"):
        TextConditioning.load(tmp_path / "text.pt", preset="small")
    torch.save({"pooled_projections": torch.zeros(1, 32)}, tmp_path / "half.pt")
    with pytest.raises(TextConditioningError, match="missing encoder_hidden_states"):
        TextConditioning.load(tmp_path / "half.pt")
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        TextConditioning.load(tmp_path / "absent.pt")
