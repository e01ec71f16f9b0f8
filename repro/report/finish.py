"""The last step of a finished submission: collect the results, print and write the table, draw
the plots and write the results page of the scale, so that `repro submit smoke` ends with the
regenerated table, the plot paths and the page to open. For `all`, each member target is
collected and tabled in turn, and the page is written once."""
from __future__ import annotations

from typing import Callable

from repro.report.collect import collect
from repro.targets.jobfiles import Target, load_all_targets
from repro.report.plot import plots_dir
from repro.report.page import write_report
from repro.report.table import render_target_table, write_target_table


def report(target: Target, scale: str, seeds: int = 1,
           echo: Callable[[str], None] = print) -> bool:
    """Collect what exists (naming what is missing), then the table, the plots and the
    results page; False if nothing was collected."""
    tabled = [member for member in target.members or (target,)
              if collect_and_table(member, scale, seeds, echo)]
    if not tabled:
        return False
    targets = load_all_targets()           # the page shows every target with results
    known = {t.name for t in targets}
    targets += [member for member in tabled if member.name not in known]  # outside slurm/
    page = write_report(scale, targets, echo=echo)     # draws the plots too
    for table in target.tables():
        for path in sorted(plots_dir().glob(f"{table}-{scale}.*")):
            echo(f"plot:        {path}")
    echo(f"report:      {page}  (open it in a browser)")
    return True


def collect_and_table(target: Target, scale: str, seeds: int,
                      echo: Callable[[str], None]) -> bool:
    """Collect one target's results and print its table; False if nothing was collected."""
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
    return True
