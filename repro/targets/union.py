"""Working with a union target's runs (`all`, repro/targets/jobfiles.py: `union_target`,
`resolve_union`): a run shared by several members is one entry per protocol it is scored
under, so the graph groups entries by run id (one training node per run), collects the
targets that need it, and prints the order in which the runs fan out.
"""
from __future__ import annotations

from repro.targets.jobfiles import TARGETS, ResolvedRun


def by_run(runs: list[ResolvedRun]) -> dict[str, list[ResolvedRun]]:
    """Entries grouped by run id, in first-seen order (a run's training is its first entry)."""
    groups: dict[str, list[ResolvedRun]] = {}
    for run in runs:
        groups.setdefault(run.run_id, []).append(run)
    return groups


def owners(entries: list[ResolvedRun]) -> list[str]:
    """Every target that needs one of these entries, each once, in TARGETS order."""
    names = {name for run in entries for name in run.owners}
    rank = {name: i for i, name in enumerate(TARGETS)}
    return sorted(names, key=lambda name: (rank.get(name, len(rank)), name))


def fan_out(runs: list[ResolvedRun]) -> list[str]:
    """The runs as a tree of parents and children, each run once with the targets that need
    it: the order in which the graph can run them (a child starts once its parent is done;
    siblings are independent)."""
    groups = by_run(runs)
    children: dict[str | None, list[str]] = {}
    for run_id, entries in groups.items():
        children.setdefault(entries[0].parent_id, []).append(run_id)
    lines: list[str] = []

    def visit(run_id: str, depth: int) -> None:
        run = groups[run_id][0]
        lines.append(f"{'  ' * depth}{run.name} (stage {run.stage}, run {run_id}): "
                     f"{', '.join(owners(groups[run_id]))}")
        for child in children.get(run_id, []):
            visit(child, depth + 1)

    for root in children.get(None, []):
        visit(root, 0)
    return lines
