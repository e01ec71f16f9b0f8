"""GPU-hour estimates for training runs at paper-like scales (printed before submitting).

Throughput is the paper's, on 32 A800 GPUs (DESIGN.md sections 2 and 9):
- stage 1c: Table 4a reports 0.329-0.368 days per 10K steps; the mean, 0.3515 d, is
  0.84 h per 1K steps (~540 GPU-hours for a 20K-step ablation run);
- stages 1a + 1b: "about 3 days" for all of stage 1 leaves 72 - 20 x 0.84 = 55 h for their
  42K steps, 1.31 h per 1K steps (assumed equal for both);
- stages 2 and 3 (T = 25, and 6 views x 8 frames): not reported; assumed 1.0 h per 1K steps.
Sampling and evaluation are not included. Estimates assume ideal scaling in the GPU count.
"""
from __future__ import annotations

PAPER_GPUS = 32
HOURS_PER_KSTEP = {"1a": 1.31, "1b": 1.31, "1c": 0.84, "2": 1.0, "3": 1.0}


def training_gpu_hours(stage: str, steps: int, gpus: int) -> float:
    """GPU-hours to train `steps` steps of `stage`; 0 for CPU-only or external runs."""
    if gpus == 0 or stage not in HOURS_PER_KSTEP:
        return 0.0
    return steps / 1000 * HOURS_PER_KSTEP[stage] * PAPER_GPUS
