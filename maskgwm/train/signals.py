"""The preemption signal as a flag: training stops at the next step boundary, not mid-step.

Slurm (through submitit, or `sbatch --signal=USR2@SECONDS`) and `scancel --signal=USR2` send
the preemption signal, USR2 unless SUBMITIT_PREEMPT_SIGNAL names another. Between `install()`
and `restore()`, `DeferredSignal` only sets `requested`; the trainer checks it after every
completed step (agreeing across ranks), writes a checkpoint and returns.
"""
from __future__ import annotations

import os
import signal
from typing import Any

PREEMPT_SIGNAL_ENV = "SUBMITIT_PREEMPT_SIGNAL"   # submitit's own variable (default USR2)


def preempt_signal() -> signal.Signals:
    return getattr(signal, "SIG" + os.environ.get(PREEMPT_SIGNAL_ENV, "USR2"))


class DeferredSignal:
    """Between `install()` and `restore()`, the preemption signal only sets `requested`."""

    def __init__(self, signum: signal.Signals | None = None):
        self.signum = signum or preempt_signal()
        self.requested = False
        self.original: Any = None

    def install(self) -> "DeferredSignal":
        self.original = signal.getsignal(self.signum)
        signal.signal(self.signum, self._raise_flag)
        return self

    def _raise_flag(self, signum: int, frame: object) -> None:
        self.requested = True     # first: the print below may fail inside another write
        try:        # raised here, the error would end the step the signal interrupted
            print(f"received {signal.Signals(signum).name}: checkpointing after the current "
                  f"step", flush=True)
        except (RuntimeError, OSError):   # "reentrant call inside <_io.BufferedWriter ...>"
            pass

    def restore(self) -> None:
        if self.original is not None:
            signal.signal(self.signum, self.original)
