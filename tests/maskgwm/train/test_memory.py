"""The memory plan: exact parameter counts, its accounting per strategy, the choice, and its
predictions against real measured steps (small preset, CPU)."""
import dataclasses
import json

import pytest
import torch

from maskgwm.config.resolve import resolve_run_config
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.presets import get_preset
from maskgwm.train import memory
from maskgwm.train.bench_memory import predict
from maskgwm.train.memory_probe import Case, measure_step
from maskgwm.train.modelsetup import set_trainable, trainable_names

RECORD = memory.__file__.rsplit("/maskgwm/", 1)[0] + "/results/bench/memory.json"


def paper(stage: str, variant: str = "ours", **overrides):
    return resolve_run_config(stage, "paper", variant, overrides)


def test_coefficients_are_the_recorded_fit():
    record = json.loads(open(RECORD).read())
    assert memory.COEFFICIENTS == record["coefficients"]
    assert memory.CUDA_ACTIVATION_SCALE == record["calibration"]["cuda_activation_scale"]
    for point in record["calibration"]["points"]:      # the H200 steps, as recorded
        assert 0.9 <= point["ratio"] <= 1.1, point


@pytest.mark.parametrize("stage, variant", [("1b", "no-mr"), ("1c", "ours"), ("3", "mview-kw")])
def test_parameter_counts_are_the_models(stage, variant):
    config = paper(stage, variant, **{"model.preset": "small"})
    model = MaskGWMDiT(config.model, get_preset("small"), config.mask)
    names = trainable_names(model, config.stage.trainable, config.mask.enabled)
    set_trainable(model, names)
    counts = memory.param_counts(config)
    assert counts.total == sum(p.numel() for p in model.parameters())
    assert counts.trainable == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert 0 < counts.largest_layer < counts.trainable


def test_fsdp_shards_the_resident_state_and_ddp_adds_its_buckets():
    config = paper("1c")
    counts = memory.param_counts(config)
    ddp, fsdp = (memory.memory_plan(config, 32, s, False) for s in ("ddp", "fsdp"))
    assert ddp.parts["optimizer"] == 8 * counts.trainable
    assert ddp.parts["ddp_buckets"] == ddp.parts["ema"] == 4 * counts.trainable
    assert fsdp.parts["optimizer"] == pytest.approx(8 * counts.trainable / 32)
    assert fsdp.parts["gathered_parameters"] == 2 * counts.total and "ddp_buckets" not in \
        {k for k, v in fsdp.parts.items() if v}
    single = memory.memory_plan(config, 1, "fsdp", False)
    assert single.strategy == "single" and single.parts["ddp_buckets"] == 0
    checkpointed = memory.memory_plan(config, 32, "fsdp", True)
    assert checkpointed.parts["activations"] < fsdp.parts["activations"] / 3
    no_ema = memory.memory_plan(paper("1c", **{"optim.ema_decay": 0.0}), 32, "ddp", False)
    assert no_ema.parts["ema"] == 0 and no_ema.total < ddp.total


def test_activations_grow_with_tokens_and_mr_never_exceeds_the_plain_path():
    config = paper("1c")
    shape = memory.StepShape.of(config, 32, text_tokens=8)
    assert shape.samples == 2 and shape.frames == 24 and shape.tokens_per_frame == 18 * 32
    longer = dataclasses.replace(shape, frames=48)
    assert memory.kept_bytes(longer, False) == pytest.approx(2 * memory.kept_bytes(shape, False))
    for branch in ("spatial", "temporal"):
        assert memory.kept_bytes(shape, False, branch) < memory.kept_bytes(shape, False, "plain")
    assert memory.kept_bytes(shape, False) == memory.kept_bytes(shape, False, "plain")


def test_the_cheapest_fitting_setting_is_chosen_and_overrides_restrict_it():
    config = paper("1c")
    plans = {s: memory.memory_plan(config, 32, *s, text_tokens=8) for s in memory.SETTINGS}
    totals = [plans[s].total / memory.GB for s in memory.SETTINGS]
    assert totals[0] > totals[1] > totals[2]          # each later setting is smaller

    def chosen(capacity, **kwargs):
        plan = memory.choose_setting(config, 32, capacity, text_tokens=8, **kwargs)
        return plan.strategy, plan.checkpointing
    assert chosen(totals[0] / 0.9 + 1) == ("ddp", False)
    assert chosen(totals[1] / 0.9 + 1) == ("fsdp", False)
    assert chosen(totals[2] / 0.9 + 1) == ("fsdp", True)
    assert chosen(1e4, strategy="fsdp") == ("fsdp", False)
    assert chosen(1e4, checkpointing=True) == ("fsdp", True)
    with pytest.raises(memory.DoesNotFit) as err:
        chosen(totals[2] / 0.9 - 1)
    message = str(err.value)
    assert "stage 1c" in message and "2 samples of 24 frames" in message
    assert f"fsdp, activation checkpointing: {totals[2]:.1f} GB" in message
    assert "gpu_mem_gb" in message


def test_the_largest_local_batch_is_the_last_that_fits():
    config = paper("1c")
    largest = memory.largest_local_batch(config, 32, 80, "fsdp", True, text_tokens=8)
    assert largest >= 2                       # the paper's 2 per GPU fit

    def total(samples):
        stage = dataclasses.replace(config.stage, batch_size=32 * samples)
        return memory.memory_plan(dataclasses.replace(config, stage=stage), 32, "fsdp", True,
                                  text_tokens=8).total
    assert total(largest) <= 72e9 < total(largest + 1)


def test_stage_1a_plans_24_single_frames_per_gpu():
    shape = memory.StepShape.of(paper("1a", "no-mr"), 32)
    assert (shape.samples, shape.frames, shape.temporal) == (24, 1, False)


@pytest.mark.parametrize("case", [
    Case("small", frames=3, latent=(36, 64), context=24),
    Case("small", frames=3, latent=(36, 64), checkpointing=True),
    Case("small", frames=3, latent=(36, 64), mr=True, branch="temporal"),
], ids=lambda case: case.label())
def test_predictions_match_measured_steps(case):
    """A real step on the CPU (bf16 autocast): the fitted plan predicts what its forward keeps
    and its peak within 15% (the checked record's range, results/bench/memory.json)."""
    torch.manual_seed(0)
    measured = measure_step(case)
    guess = predict(case, memory.COEFFICIENTS)
    assert guess["forward"] == pytest.approx(measured.forward, rel=0.15)
    assert guess["peak"] == pytest.approx(measured.peak, rel=0.15)
    assert measured.grads == 4 * measured.trainable
