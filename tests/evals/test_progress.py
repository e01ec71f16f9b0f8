"""Progress bars (evals/progress.py): tqdm on a terminal; in a log file, plain lines at most
once per interval plus a last one, never carriage returns."""
from __future__ import annotations

import io
import sys

from tqdm import tqdm

from evals.progress import LineBar, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_bar_writes_at_most_a_line_per_interval_and_a_last_one():
    clock, lines = Clock(), []
    bar = LineBar(18, "gen clips", "clip", every_s=30.0, write=lines.append, clock=clock)
    with bar:
        for i in range(18):          # one clip every 7 s: a line after 35 s, 70 s, 105 s
            clock.now += 7.0
            bar.set_postfix_str(f"clip-{i}")
            bar.update(1)
    assert [line.split("|")[2].split()[0] for line in lines] == ["5/18", "10/18", "15/18",
                                                                 "18/18"]
    assert not any("\r" in line or "\n" in line for line in lines)
    assert lines[0].startswith("gen clips:  28%") and "[00:35<01:31" in lines[0]
    assert "clip-4" in lines[0] and "clip-17" in lines[-1] and lines[-1].isascii()
    bar.close()
    assert len(lines) == 4                  # closed once


def test_a_line_bar_without_news_since_its_last_line_ends_without_repeating_it():
    clock, lines = Clock(), []
    bar = LineBar(2, "x", "clip", every_s=0.0, write=lines.append, clock=clock)
    bar.update(1)
    bar.update(1)
    bar.close()
    assert len(lines) == 2 and "2/2" in lines[-1]


def test_off_a_terminal_progress_bar_writes_plain_lines_to_stderr(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress_bar(3, "ref clips", "clip") as bar:
        bar.update(2)
        bar.update(1)
    assert isinstance(bar, LineBar)
    assert "\r" not in log.getvalue()
    assert log.getvalue().splitlines() == [log.getvalue().strip()] and "3/3" in log.getvalue()


def test_on_a_terminal_progress_bar_is_tqdm(monkeypatch):
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress_bar(3, "gen clips", "clip") as bar:
        assert isinstance(bar, tqdm) and not bar.disable
        bar.update(3)
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()


def test_a_disabled_bar_shows_nothing(monkeypatch):
    for stream in (Terminal(), io.StringIO()):
        monkeypatch.setattr(sys, "stderr", stream)
        written = []
        with progress_bar(3, "gen clips", "clip", enabled=False, write=written.append) as bar:
            bar.update(3)
        assert stream.getvalue() == "" and written == []
