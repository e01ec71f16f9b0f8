"""Submit-time memory plans: chosen per run, recorded as train options, refused when no
setting fits, printed by the dry-run (flags included)."""
import dataclasses

import pytest

from maskgwm.train.memory import DoesNotFit
from repro.launch.gpumemory import chosen_options, describe
from repro.targets.jobfiles import load_target, resolve_target

def runs_with(memory: float, scale: str = "paper"):
    """table3b's base chain and its "ours" run, on GPUs of `memory` GB."""
    target = load_target("table3b")
    paper = dataclasses.replace(target.resources["paper"], gpu_mem_gb=memory)
    return resolve_target(dataclasses.replace(
        target, runs={"ours": target.runs["ours"]},
        resources={**target.resources, "paper": paper}), scale)


@pytest.fixture(autouse=True)
def no_text_file(monkeypatch):
    monkeypatch.delenv("REPRO_WEIGHTS", raising=False)    # the zeros stand-in: 8 tokens


def test_each_gpu_run_gets_the_cheapest_setting_that_fits():
    runs = runs_with(80)
    chosen = chosen_options(runs)
    by_name = {run.name: chosen[run.run_id] for run in runs}
    assert by_name["stage1a"] == {"strategy": "fsdp", "activation_checkpointing": False}
    assert by_name["ours"] == {"strategy": "fsdp", "activation_checkpointing": True}
    roomy = chosen_options(runs_with(400))
    assert {tuple(o.values()) for o in roomy.values()} == {("ddp", False)}
    assert chosen_options(runs_with(80, "smoke")) == {}      # CPU runs: no plan


def test_runs_that_cannot_fit_are_refused_with_their_numbers():
    runs = runs_with(20)
    with pytest.raises(DoesNotFit) as err:
        chosen_options(runs)
    message = str(err.value)
    assert message.startswith("1 training run(s) do not fit") and "nothing was submitted" in message
    ours = runs[-1]
    assert f"\n  ours (run {ours.run_id}): stage 1c (sd3-medium, 2 samples of 24 frames" in message
    assert "usable of 20 GB per GPU" in message and "fsdp, activation checkpointing:" in message
    line = describe(ours)
    assert line.startswith("memory per GPU: DOES NOT FIT 20 GB; submit will refuse")


def test_an_override_the_memory_cannot_take_is_refused():
    runs = runs_with(80)
    with pytest.raises(DoesNotFit, match="ours"):
        chosen_options(runs, {"activation_checkpointing": False})
    forced = chosen_options(runs, {"strategy": "fsdp", "activation_checkpointing": True})
    assert {tuple(o.values()) for o in forced.values()} == {("fsdp", True)}


def test_dry_run_prints_each_plan_and_honours_the_flags(cli):
    result = cli("submit", "table3b", "--scale", "paper", "--dry-run")
    assert result.code == 0, result.err
    lines = [line.strip() for line in result.out.splitlines() if "memory per GPU" in line]
    assert len(lines) == len(resolve_target(load_target("table3b"), "paper"))
    assert all(" of 80 GB (" in line and "8 text tokens per frame" in line for line in lines)
    assert "fsdp, activation checkpointing;" in result.out
    off = cli("submit", "table3b", "--scale", "paper", "--dry-run",
              "--no-activation-checkpointing")
    assert "DOES NOT FIT 80 GB" in off.out
    assert "# WARNING: 7 training run(s) do not fit their GPUs' memory" in off.out
    smoke = cli("submit", "smoke", "--dry-run")
    assert "memory per GPU: - (CPU run)" in smoke.out
