"""The last step of a finished submission: collect the results, print and write the table, and
draw the plots, so that `repro submit smoke` ends with the regenerated table and plot paths."""
from __future__ import annotations

from typing import Callable

from repro.report.collect import collect
from repro.targets.jobfiles import Target
from repro.report.plot import plot_target
from repro.report.table import render_target_table, write_target_table


def report(target: Target, scale: str, seeds: int = 1,
           echo: Callable[[str], None] = print) -> bool:
    """Collect what exists (naming what is missing), then table and plots; False if nothing
    was collected."""
    result = collect(target, scale, partial=True, seeds=seeds)
    if notes := result.notes():
        echo(notes)
    if result.path is None:
        echo(f"no results to report for {target.name} ({scale})")
        return False
    table_path = write_target_table(target, scale, seeds=seeds)
    echo("")
    echo(render_target_table(target, scale, seeds=seeds).rstrip())
    echo("")
    echo(f"results CSV: {result.path}")
    echo(f"table:       {table_path}")
    for path in plot_target(target, scale, seeds=seeds):
        echo(f"plot:        {path}")
    return True
