"""Progress of a submit that runs its jobs here (local, debug): one line per finished job.

`Tracker` counts the jobs a submit expects to run (the graph's nodes not done when it starts)
and, as each job ends, says what it was, how long it took, whether it failed (with its log),
how many jobs are left and about how long they will take (`eta_s`). A node that is not run
after all (blocked by a failed parent, or finished meanwhile by an earlier submit's process)
leaves the count, so the last line reads [N/N] with 0 jobs left. The estimate uses this
submit's finished jobs only: per job left, the mean time of the finished jobs of its kind
(run, sample, score), else of all finished jobs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from statistics import fmean
from typing import Any, Callable


def eta_s(left: list[str], finished: list[tuple[str, float]]) -> float | None:
    """Seconds the jobs of kinds `left` should take, from the (kind, seconds) of the jobs
    finished so far; None before the first job finished."""
    if not finished:
        return None
    by_kind: dict[str, list[float]] = {}
    for kind, seconds in finished:
        by_kind.setdefault(kind, []).append(seconds)
    overall = fmean(seconds for _, seconds in finished)
    return sum(fmean(by_kind[kind]) if kind in by_kind else overall for kind in left)


def duration(seconds: float) -> str:
    """12 s, 9 min, 2.5 h."""
    if seconds < 59.5:
        return f"{seconds:.0f} s"
    if seconds < 3570:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class Tracker:
    """The jobs of one submit: those left (node key -> kind) and those finished."""
    echo: Callable[[str], None] = print
    left: dict[str, str] = field(default_factory=dict)
    finished: list[tuple[str, float]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.finished) + len(self.left)

    def expect(self, nodes: list[Any]) -> None:
        """Count `nodes` (graph nodes: key, kind) as jobs to run."""
        self.left.update((node.key, node.kind) for node in nodes)

    def drop(self, node: Any) -> None:
        """The node will not run in this submit."""
        self.left.pop(node.key, None)

    def ended(self, node: Any, seconds: float, failed: bool, log: str | None = None) -> None:
        self.left.pop(node.key, None)
        self.finished.append((node.kind, seconds))
        self.echo(self.line(node.label, seconds, failed, log))

    def line(self, label: str, seconds: float, failed: bool, log: str | None = None) -> str:
        what = f"{label} in {duration(seconds)}" + (f", log {log}" if failed and log else "")
        count = len(self.left)
        rest = f"{count} job{'' if count == 1 else 's'} left"
        eta = eta_s(list(self.left.values()), self.finished)
        if count and eta is not None:
            rest += f", about {duration(eta)} more (from the jobs finished so far)"
        state = "FAILED" if failed else "done"
        return f"[{len(self.finished)}/{self.total}] {state:<7} {what}; {rest}"
