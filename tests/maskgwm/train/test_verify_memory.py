"""The GPU memory check's step, run on the CPU at ci shapes: the record's fields, and the plan
within 10% of the measured peak where the step is the plan's (FSDP)."""
import json

import pytest
import torch

from maskgwm.train import verify_memory
from maskgwm.train.verify_memory import stage_config, verify_stage


@pytest.mark.parametrize("stage, variant", [("1c", "ours"), ("3", "mview-kw")])
def test_fsdp_steps_are_predicted_within_ten_percent(stage, variant):
    config = stage_config(stage, variant, "ci", "small")
    for checkpointing in (False, True):
        row = verify_stage(config, 32, 80, 8, torch.device("cpu"), "fsdp", checkpointing)
        assert (row["strategy"], row["activation_checkpointing"]) == ("fsdp", checkpointing)
        assert 0.9 <= row["ratio"] <= 1.1, row
        assert row["plan"]["gathered_parameters"] > 0


def test_the_record_lists_every_stage(tmp_path):
    out = tmp_path / "memory_gpu.json"
    verify_memory.main(["--scale", "ci", "--preset", "tiny", "--device", "cpu",
                        "--out", str(out)])
    record = json.loads(out.read_text())
    assert [row["stage"] for row in record["stages"]] == ["1a", "1b", "1c", "2", "3"]
    for row in record["stages"]:
        assert {"stage", "strategy", "activation_checkpointing", "predicted_gb",
                "measured_gb"} <= set(row)
        assert row["measured_gb"] > 0
    assert record["capacity_gb"] == 80 and record["produced_by"].startswith(
        "python -m maskgwm.train.verify_memory")
