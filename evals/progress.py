"""Progress of long loops (clips scored, clips or scenes sampled): a tqdm bar on a terminal,
plain lines in a log file.

`progress_bar` gives tqdm when stderr is a terminal. Otherwise (a job's log file) it gives a
`LineBar`: the same `update` / `set_postfix_str` / `close` interface and context manager, which
writes tqdm's meter as one ASCII line at most every `every_s` seconds and once more at the end,
so that a log never fills with carriage-return updates.
"""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from tqdm import tqdm


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class LineBar:
    """tqdm's interface, written as a plain line through `write` now and then."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "it",
                 every_s: float = 30.0, write: Callable[[str], Any] = _to_stderr,
                 clock: Callable[[], float] = time.monotonic):
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.write, self.clock = write, clock
        self.n, self.postfix, self.closed = 0, "", False
        self.start = self.last = clock()
        self.written: tuple[int, str] | None = None     # (n, postfix) of the last line

    def update(self, n: int = 1) -> None:
        self.n += n
        now = self.clock()
        if now - self.last >= self.every_s:
            self._line(now)

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self.postfix = s

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.written != (self.n, self.postfix):
                self._line(self.clock())

    def format(self, now: float) -> str:
        return tqdm.format_meter(self.n, self.total, now - self.start, prefix=self.desc,
                                 ascii=True, unit=self.unit, postfix=self.postfix or None)

    def _line(self, now: float) -> None:
        self.last, self.written = now, (self.n, self.postfix)
        self.write(self.format(now))

    def __enter__(self) -> "LineBar":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True,
                 every_s: float = 30.0, write: Callable[[str], Any] | None = None) -> Any:
    """tqdm on a terminal (stderr), else a `LineBar` writing through `write` (default:
    stderr); `enabled` False: a bar that shows nothing."""
    if not enabled:
        return tqdm(total=total, disable=True)
    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    return LineBar(total, desc, unit, every_s, write or _to_stderr)
