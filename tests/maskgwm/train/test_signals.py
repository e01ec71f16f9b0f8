"""The deferred preemption signal."""
from __future__ import annotations

import os
import signal
import sys

from maskgwm.train.signals import DeferredSignal


class BusyStdout:
    """stdout as a handler sees it when the signal lands inside another print."""

    def write(self, text):
        raise RuntimeError("reentrant call inside <_io.BufferedWriter name='<stdout>'>")

    def flush(self):
        pass


def test_signal_inside_a_print_only_raises_the_flag(monkeypatch):
    """The handler's own print fails when the signal interrupts another write to stdout;
    that must not end the interrupted step (no checkpoint, no requeue), only set the flag."""
    deferred = DeferredSignal(signal.SIGUSR2).install()
    try:
        monkeypatch.setattr(sys, "stdout", BusyStdout())
        os.kill(os.getpid(), signal.SIGUSR2)
        monkeypatch.undo()
        assert deferred.requested
    finally:
        deferred.restore()
