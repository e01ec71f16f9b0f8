"""GPU-hour estimates for training runs at paper-like scales (printed before submitting).

Throughput is the paper's, on 32 A800 GPUs (docs/DESIGN.md sections 2 and 9):
- stage 1c: Table 4a reports 0.329-0.368 days per 10K steps; the mean, 0.3515 d, is
  0.84 h per 1K steps (~540 GPU-hours for a 20K-step ablation run);
- stages 1a + 1b: "about 3 days" for all of stage 1 leaves 72 - 20 x 0.84 = 55 h for their
  42K steps, 1.31 h per 1K steps (assumed equal for both);
- stages 2 and 3 (T = 25, and 6 views x 8 frames): not reported; assumed 1.0 h per 1K steps.
Estimates assume ideal scaling in the GPU count.

Sampling for evaluation is scaled from our own measurement (results/bench/gpu_h200.md): one
25-frame window at 512x288 with 30 Euler steps and guidance took 10.4 s on one H200 (sd3-medium,
bf16, eager). Assumed linear in the frames generated (every rollout round's window for
long-horizon protocols), the pixels per frame and the steps; attention grows faster than
linearly in tokens, so larger frames will take longer. Vista's sampler was not measured.
Scoring (detector passes) is not included.
"""
from __future__ import annotations

from evals.protocols import Protocol

PAPER_GPUS = 32
HOURS_PER_KSTEP = {"1a": 1.31, "1b": 1.31, "1c": 0.84, "2": 1.0, "3": 1.0}
MEASURED_WINDOW = {"seconds": 10.4, "frames": 25, "pixels": 512 * 288, "steps": 30}


def training_gpu_hours(stage: str, steps: int, gpus: int) -> float:
    """GPU-hours to train `steps` steps of `stage`; 0 for CPU-only or external runs."""
    if gpus == 0 or stage not in HOURS_PER_KSTEP:
        return 0.0
    return steps / 1000 * HOURS_PER_KSTEP[stage] * PAPER_GPUS


def sampling_gpu_hours(protocol: Protocol, steps: int) -> float:
    """GPU-hours to generate a protocol's clips with our sampler (module docstring)."""
    rounds = len(protocol.measurement_points())
    frames = protocol.long_horizon.window if protocol.long_horizon else protocol.frames_per_clip
    measured = MEASURED_WINDOW
    seconds = (protocol.n_clips * rounds * frames / measured["frames"]
               * protocol.width * protocol.height / measured["pixels"]
               * steps / measured["steps"] * measured["seconds"])
    return seconds / 3600
