"""`TrainingJob`: the callable every run's job executes (submitted by submit.py). How a training
run survives preemption, time limits and requeues: training.py."""
from __future__ import annotations

from typing import Any

import submitit

from .training import defer_early


class TrainingJob(submitit.helpers.Checkpointable):
    """The callable every run's job executes: requeued with the same arguments on preemption
    or timeout (the run resumes from its newest checkpoint)."""

    def __call__(self, spec_path: str) -> dict[str, Any]:
        defer_early()
        from .runner import execute
        return execute(spec_path)
