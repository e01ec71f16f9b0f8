"""A training run that survives preemption, time limits and requeues: `run_training`, which
repro/jobs/run.py calls inside the submitted job (its `TrainingJob`).

submitit's Slurm jobs handle the preemption/timeout signal (USR2 by default; Slurm sends it
`slurm_signal_delay_s` before the time limit, and `scancel --signal=USR2` sends it at will) by
calling the job's `checkpoint()` and requeueing the job. Called straight from the signal
handler, that would save the model in the middle of an optimizer step. `DeferredSignal`
therefore replaces the handler with one that only raises a flag; the trainer checks the flag
after every completed step (agreeing across ranks), writes a checkpoint, returns, and only then
is submitit's own handler called, which calls `TrainingJob.checkpoint` (resubmit the same
call) and requeues. The requeued job resumes from that checkpoint, so no step is lost or
repeated. A hard requeue (`scontrol requeue`, a node failure) resumes from the last periodic
checkpoint instead.

Outside submitit (the local executor, `repro train`) the same signal stops training at a step
boundary with a checkpoint, and the run fails with a message saying how to resume.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from maskgwm.train import signals

from repro.records import RunRecord

FOLLOWER_WAIT_S = 60.0   # how long ranks other than 0 wait for rank 0's requeue to end them


class TrainingInterrupted(RuntimeError):
    """Training stopped at a step boundary on a signal, with no scheduler to requeue it."""


class JobRequeued(SystemExit):
    """The job checkpointed and was requeued (or, on a rank other than 0, is about to be):
    this process exits; the run is not failed."""

    def __init__(self, message: str):
        super().__init__(-1)
        self.message = message

    def __str__(self) -> str:
        return self.message


class DeferredSignal(signals.DeferredSignal):
    """The trainer's deferred preemption signal, handed over to submitit after the
    checkpoint."""

    def hand_over(self, step: int) -> None:
        """Give the signal to the handler it replaced (submitit: checkpoint and requeue, then
        exit); without one, raise TrainingInterrupted."""
        self.restore()
        if callable(self.original):
            message = f"checkpointed at step {step} and requeued on {self.signum.name}"
            try:
                self.original(self.signum, None)
            except SystemExit:       # submitit requeued the job and exits
                raise JobRequeued(message) from None
            # A rank other than 0: rank 0 requeues the job, which ends this task. Exiting
            # first (non-zero) could make srun (--kill-on-bad-exit) kill rank 0 before that.
            time.sleep(FOLLOWER_WAIT_S)
            raise JobRequeued(message)
        raise TrainingInterrupted(f"training stopped at step {step} on "
                                  f"{self.signum.name} with a checkpoint; run it again "
                                  f"(repro submit / repro train --resume) to continue")


def run_training(spec: RunRecord, directory: Path, parent_dir: Path | None
                 ) -> dict[str, Any]:
    """Train the run of `spec` into `directory`/train, from the parent run's model. Synthetic
    data and latents are cached for all runs in `<workdir>/cache` (written atomically)."""
    from maskgwm.train.options import TrainOptions, config_from_dict
    from maskgwm.train.trainer import Trainer

    config = config_from_dict(spec.config, where=f"run {spec.run_id}")
    options = TrainOptions(**{"cache_dir": str(directory.parent.parent / "cache"),
                              **spec.train_options})
    parent = None
    if parent_dir is not None:
        parent = parent_dir / "train" / "model.pt"
        if not parent.is_file():
            raise FileNotFoundError(f"run {spec.run_id}: the parent run's model {parent} "
                                    "is missing; submit the target again to retrain it")
    trainer = Trainer(config, directory / "train", parent_checkpoint=parent, options=options)
    deferred = _EARLY_DEFERRAL or DeferredSignal().install()
    try:
        result = trainer.run(stop=lambda: deferred.requested)
    finally:
        deferred.restore()
    if result["status"] == "interrupted":
        deferred.hand_over(result["step"])
    return result


_EARLY_DEFERRAL: DeferredSignal | None = None
"""Installed by `defer_early` before anything heavy is imported, so a signal that arrives while
the job starts up is also deferred to the first step boundary."""


def defer_early() -> None:
    """Defer the preemption signal from now on (TrainingJob, first thing in the job);
    `run_training` takes the deferral over."""
    global _EARLY_DEFERRAL
    _EARLY_DEFERRAL = DeferredSignal().install()
