"""`repro table TARGET`: the paper's table with our numbers beside it, as Markdown.

Paper numbers come from `results/paper/<table>.csv`; ours from the CSVs that `repro collect`
writes under `results/<target>/` (columns `table, cell, metric, value, n, scale`, optionally
`seconds`, `ci_low`, `ci_high`, `random_weights`, `seed`). Cells we have no number for stay
blank.

Seeds: with one seed per cell (or no `seed` column) the table is ours as collected, with its
bootstrap interval. With several, ours is the mean over seeds "± sample std", and each row
of an ablation table (`ABLATION_TABLES`) gets its difference to the table's first row, marked
`*` when |difference| > 2 x the pooled std of the two rows (`NOISE_RULE`, an assumed rule).

A table with a training time (Table 4a's Time, timing.py) also gets, beside it, each row's
time over the first row's, the paper's and ours, and notes on the hardware ours was timed on.

Every table with FVD gets a footnote naming the FVD flavour of our numbers (the CSV's
`fvd_flavour`, else the protocol of the runs that fill the table; evals.protocols.FVD_FLAVOURS)
and the flavour the paper's most likely is; the page explains both once (`PAPER_FVD_NOTE`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evals.atomic import atomic_write_text
from evals.protocols import (FVD_FLAVOURS, PAPER_FVD_DETECTOR, PAPER_FVD_NOTE, fvd_flavour,
                             get_protocol)

from repro.targets import paper
from repro.targets.jobfiles import Target
from repro.paths import results_dir
from repro.report.timing import TIME, ratio_text, time_notes

OURS_REQUIRED = ("table", "cell", "metric", "value", "n", "scale")
RANDOM_WEIGHTS_NOTE = ("random-weights detector: not comparable with published numbers")
ABLATION_TABLES = ("table3a", "table3b", "table4a", "table4b", "table4c", "table5", "table6")
NOISE_FACTOR = 2.0
NOISE_RULE = ("`*` marks a difference to the first row larger than 2 x the pooled seed std "
              "of the two rows, sqrt(((n1-1) s1^2 + (n2-1) s2^2) / (n1 + n2 - 2)), with "
              "s the sample std over seeds (assumed rule; shown where both rows have >= 2 "
              "seeds)")
FORMATS = {TIME: ".3g"}    # how a metric's values print (default ".2f")
OUTSIDE_NOTE = ("`†`: the paper's value lies outside the bootstrap interval of our number "
                "(of every seed's, with several seeds).")


def load_ours(target: str, root: Path | None = None) -> pd.DataFrame:
    """Every collected result row of a target (empty frame if nothing was collected)."""
    directory = (root or results_dir()) / target
    frames = []
    for path in sorted(directory.glob("*.csv")):
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""])
        missing = [c for c in OURS_REQUIRED if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; "
                             "re-run `repro collect` for this target")
        for column in ("value", "n"):
            numbers = pd.to_numeric(frame[column], errors="coerce")
            bad = frame[column][numbers.isna()]
            if len(bad):
                raise ValueError(f"{path}: column {column} must hold numbers, row "
                                 f"{bad.index[0] + 2} has {bad.iloc[0]!r}; re-run `repro "
                                 "collect` for this target")
            frame[column] = numbers
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(OURS_REQUIRED))
    return pd.concat(frames, ignore_index=True)


def _fmt(value: float, spec: str = ".2f") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:{spec}}"


def _same(column: pd.Series, value: str) -> pd.Series:
    """Equal as text, or as numbers when both are numeric (10 == 10.0 seconds)."""
    numbers = pd.to_numeric(column, errors="coerce")
    try:
        wanted = float(value)
    except ValueError:
        return column.astype(str) == value
    return (column.astype(str) == value) | ((numbers - wanted).abs() < 1e-9)


def _lookup(ours: pd.DataFrame, key: dict[str, str]) -> list[pd.Series]:
    """The rows of `key`, the last one per seed, in seed order."""
    mask = pd.Series(True, index=ours.index)
    for column, value in key.items():
        if column in ours.columns:
            mask &= _same(ours[column], value)
    hits = ours[mask]
    if not len(hits):
        return []
    seeds = (pd.to_numeric(hits["seed"], errors="coerce").fillna(0).astype(int)
             if "seed" in hits.columns else pd.Series(0, index=hits.index))
    last = {seed: row for seed, (_, row) in zip(seeds, hits.iterrows())}
    return [last[seed] for seed in sorted(last)]


def seed_stats(rows: list[pd.Series]) -> tuple[float, float, int]:
    """(mean, sample std (ddof 1; NaN with one value), count) of the finite values."""
    values = [float(r["value"]) for r in rows if not pd.isna(r["value"])]
    if not values:
        return math.nan, math.nan, 0
    mean = sum(values) / len(values)
    std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
           if len(values) > 1 else math.nan)
    return mean, std, len(values)


def pooled_std(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    """Pooled std of two (mean, std, n) seed summaries; NaN unless both have n >= 2."""
    (_, s1, n1), (_, s2, n2) = a, b
    if n1 < 2 or n2 < 2:
        return math.nan
    return math.sqrt(((n1 - 1) * s1 ** 2 + (n2 - 1) * s2 ** 2) / (n1 + n2 - 2))


def exceeds_noise(a: tuple[float, float, int], b: tuple[float, float, int]) -> bool:
    """Whether b's mean differs from a's by more than NOISE_FACTOR pooled stds."""
    pooled = pooled_std(a, b)
    return not math.isnan(pooled) and abs(b[0] - a[0]) > NOISE_FACTOR * pooled


def filter_seeds(ours: pd.DataFrame, seeds: int | None) -> pd.DataFrame:
    """Rows of seeds 0..seeds-1 (all rows with `seeds` None; no `seed` column = seed 0)."""
    if seeds is None or "seed" not in ours.columns or not len(ours):
        return ours
    return ours[pd.to_numeric(ours["seed"], errors="coerce").fillna(0) < seeds]


def max_seeds(ours: pd.DataFrame) -> int:
    """The largest number of seeds any (table, cell, metric, seconds) has."""
    if "seed" not in ours.columns or not len(ours):
        return 1 if len(ours) else 0
    key = [c for c in ("table", "cell", "metric", "seconds") if c in ours.columns]
    return int(ours.groupby(key, dropna=False)["seed"].nunique().max())


def _ours_text(rows: list[pd.Series], stats: tuple[float, float, int],
               spec: str = ".2f") -> str:
    if len(rows) == 1:  # one seed: the value and its bootstrap interval, as collected
        mine = rows[0]
        text = _fmt(float(mine["value"]), spec)
        if "ci_low" in mine and not pd.isna(mine["ci_low"]):
            text += f" [{_fmt(mine['ci_low'], spec)}, {_fmt(mine['ci_high'], spec)}]"
        return text
    mean, std, count = stats
    return f"{_fmt(mean, spec)} ± {_fmt(std, spec)} ({count} seeds)" if count > 1 else \
        f"{_fmt(mean, spec)} ({count} seed)"


def _with_our_times(frame: pd.DataFrame, table: str, ours: pd.DataFrame) -> pd.DataFrame:
    """A curve table (Figures 6, 7) plus a blank paper row for each (cell, seconds) we
    measured that the paper has no row for, ordered by cell, then time (no time first)."""
    mine = ours[ours["table"].astype(str) == table] if len(ours) and "seconds" in ours else ours
    extra = []
    for (cell, seconds), _ in (mine.groupby(["cell", "seconds"]) if len(mine) else []):
        rows = frame[frame["cell"].astype(str) == str(cell)]
        if not len(rows) or _same(rows["seconds"], str(seconds)).any():
            continue
        added = rows.drop_duplicates("metric").copy()
        added["seconds"], added["value"] = seconds, math.nan
        extra.append(added)
    if not extra:
        return frame
    merged = pd.concat([frame, *extra], ignore_index=True)
    order = {cell: i for i, cell in enumerate(dict.fromkeys(frame["cell"]))}
    time = pd.to_numeric(merged["seconds"], errors="coerce").fillna(-1.0)
    return merged.assign(_cell=merged["cell"].map(order), _time=time) \
        .sort_values(["_cell", "_time"], kind="stable").drop(columns=["_cell", "_time"])


def source_labels(ours: pd.DataFrame, table: str) -> dict[str, str]:
    """cell -> the `source` of our rows when another model made them (Vista)."""
    if not len(ours) or "source" not in ours.columns:
        return {}
    mine = ours[(ours["table"].astype(str) == table) & ours["source"].notna()
                & (ours["source"].astype(str) != "")]
    return {str(cell): str(group["source"].iloc[0]) for cell, group in mine.groupby("cell")}


def fvd_flavours(table: str, ours: pd.DataFrame, target: Target) -> tuple[list[str], bool]:
    """The FVD flavour names of our numbers in `table`, and whether they were recorded with
    them (False: derived from the protocols of the target's runs that fill the table)."""
    if len(ours) and "fvd_flavour" in ours.columns:
        mine = ours[(ours["table"].astype(str) == table) & (ours["metric"] == "FVD")]
        names = [str(n) for n in mine["fvd_flavour"].dropna() if str(n)]
        if names:
            return list(dict.fromkeys(names)), True
    protocols = [run.protocol for run in target.runs.values()
                 if any(cell.split("/")[0] == table for cell in run.cells)]
    return list(dict.fromkeys(get_protocol(name).fvd_flavour.name
                              for name in protocols or [target.protocol])), False


def fvd_footnote(table: str, ours: pd.DataFrame, target: Target) -> str:
    """The footnote under a table with FVD: our flavour(s) and the paper's likely one."""
    names, recorded = fvd_flavours(table, ours, target)
    where = "" if recorded else " (by the protocol)"
    return (f"\nFVD ours{where}: {'; '.join(names)}. FVD paper: most likely "
            f"{fvd_flavour(PAPER_FVD_DETECTOR).tag}, uncertain (see FVD flavours above).")


def fvd_page_note(names: list[str]) -> str:
    """The page's note on FVD flavours: each of ours, and the paper's."""
    notes = [f.note for f in FVD_FLAVOURS.values() if f.name in names]
    return "\n**FVD flavours.** " + " ".join([*notes, PAPER_FVD_NOTE])


@dataclass
class Cell:
    """One table cell: its text, and for our values the paper's position against our interval
    and the provenance of the number (the HTML page shows both; Markdown shows the text)."""
    text: str
    outside: bool = False           # the paper's value lies outside every seed's interval
    rows: list[pd.Series] | None = None     # our collected rows behind the number
    beyond_noise: bool = False      # differs from the table's first row beyond seed noise


@dataclass
class TableView:
    """A paper table with ours beside it, cell by cell, plus its notes."""
    table: str
    header: list[str]
    rows: list[list[Cell]]
    notes: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)

    def counts(self) -> tuple[int, int, int]:
        """(paper cells with a value, of those with ours, of those outside our interval);
        derived columns (Time ratios) are not cells."""
        paper_cells = ours = outside = 0
        for row in self.rows:
            for metric in self.metrics:
                if row[self.header.index(f"{metric} paper")].text:
                    paper_cells += 1
                    mine = row[self.header.index(f"{metric} ours")]
                    ours += bool(mine.rows)
                    outside += mine.outside
        return paper_cells, ours, outside


def outside_interval(paper_value: float, rows: list[pd.Series]) -> bool:
    """Whether the paper's value lies outside the bootstrap interval of every seed we have."""
    if math.isnan(paper_value) or not rows:
        return False
    bounds = [(float(r["ci_low"]), float(r["ci_high"])) for r in rows
              if "ci_low" in r and not pd.isna(r["ci_low"]) and not pd.isna(r["ci_high"])]
    return bool(bounds) and all(not low <= paper_value <= high for low, high in bounds)


def table_view(table: str, ours: pd.DataFrame) -> TableView:
    frame = paper.load_paper_table(table)
    variants = paper.variant_columns(frame)
    metrics = list(dict.fromkeys(frame["metric"]))
    compare = table in ABLATION_TABLES and max_seeds(ours[ours["table"].astype(str) == table]
                                                     if len(ours) else ours) > 1
    key_columns = ["cell", *variants]
    if "seconds" in variants:
        frame = _with_our_times(frame, table, ours)
    groups = [group for _, group in frame.groupby(key_columns, sort=False, dropna=False)]
    base_cell = groups[0].iloc[0]["cell"]
    header = ["cell", *variants]
    for metric in metrics:
        header += [f"{metric} paper", f"{metric} ours", f"Δ {metric}", f"n {metric}"]
        header += [f"{metric} ratio paper", f"{metric} ratio ours"] if metric == TIME else []
        header += [f"vs {base_cell} {metric}"] if compare else []
    view = TableView(table, header, [], metrics=metrics)
    base: dict[str, tuple[float, float, int]] = {}
    first_row: dict[str, tuple[float, float]] = {}      # metric -> (paper, ours) of row one
    sources = source_labels(ours, table)
    for group in groups:
        first = group.iloc[0]
        row = [Cell(str(first[c])) for c in key_columns]
        if str(first["cell"]) in sources:      # e.g. Vista re-scored: say whose clips
            row[0].text += f" (ours: {sources[str(first['cell'])]})"
        for metric in metrics:
            hit = group[group["metric"] == metric]
            paper_value = float(hit["value"].iloc[0]) if len(hit) else math.nan
            key = {"table": table, "cell": first["cell"], "metric": metric}
            if "seconds" in variants:
                key["seconds"] = str(first["seconds"])
            mine = _lookup(ours, key)
            stats = seed_stats(mine)
            outside = outside_interval(paper_value, mine)
            diff = stats[0] - paper_value
            spec = FORMATS.get(metric, ".2f")
            row += [Cell("" if math.isnan(paper_value) else str(paper_value)),
                    Cell(_ours_text(mine, stats, spec) if mine else "", outside, mine),
                    Cell("" if math.isnan(diff) else f"{diff:+{spec}}"
                         + (" †" if outside else ""), outside),
                    Cell("" if not mine else str(int(mine[-1]["n"])))]
            if metric == TIME:
                paper_base, our_base = first_row.setdefault(metric, (paper_value, stats[0]))
                row += [Cell(ratio_text(paper_value, paper_base)),
                        Cell(ratio_text(stats[0], our_base), rows=mine)]
            if compare:
                base.setdefault(metric, stats)
                versus = stats[0] - base[metric][0]
                noisy = first["cell"] != base_cell and exceeds_noise(base[metric], stats)
                row.append(Cell("base" if first["cell"] == base_cell else
                                "" if math.isnan(versus) else
                                f"{versus:+{spec}}" + (" *" if noisy else ""),
                                beyond_noise=noisy))
        view.rows.append(row)
    if any(cell.outside for row in view.rows for cell in row):
        view.notes.append(OUTSIDE_NOTE)
    if TIME in metrics:
        view.notes += time_notes(table, ours, base_cell)
    if compare:
        view.notes.append(f"Ours: mean ± sample std over seeds. vs {base_cell}: our difference "
                          f"to the first row; {NOISE_RULE}.")
    return view


def table_markdown(table: str, ours: pd.DataFrame) -> str:
    view = table_view(table, ours)
    lines = ["| " + " | ".join(view.header) + " |", "|" + "---|" * len(view.header)]
    lines += ["| " + " | ".join(cell.text for cell in row) + " |" for row in view.rows]
    return "\n".join(lines + [f"\n{note}" for note in view.notes])


def ours_at(target: str, scale: str, results_root: Path | None = None,
            seeds: int | None = None) -> pd.DataFrame:
    """A target's collected rows at `scale`, seeds 0..seeds-1 (None: every seed collected)."""
    ours = load_ours(target, results_root)
    if "scale" in ours.columns and len(ours):
        ours = ours[ours["scale"].astype(str) == scale]
    return filter_seeds(ours, seeds)


def is_random(ours: pd.DataFrame) -> bool:
    """Whether any of these numbers was made with random-weights detectors."""
    return "random_weights" in ours.columns and bool(
        ours["random_weights"].astype(str).str.lower().isin(["true", "1"]).any())


def page_notes(target: Target, ours: pd.DataFrame, random_note: bool = True) -> list[str]:
    """Markdown notes above a target's tables: the random-weights warning, FVD flavours."""
    notes = [f"**Note: {RANDOM_WEIGHTS_NOTE}.**"] if random_note and is_random(ours) else []
    with_fvd = [t for t in target.tables() if "FVD" in paper.metrics(t)]
    if with_fvd:
        notes.append(fvd_page_note([n for t in with_fvd for n in fvd_flavours(t, ours, target)[0]])
                     .strip())
    return notes


def table_footnotes(table: str, ours: pd.DataFrame, target: Target) -> list[str]:
    """Markdown notes under one table: the FVD flavours, the paper's unreported cells."""
    notes = [fvd_footnote(table, ours, target).strip()] if "FVD" in paper.metrics(table) else []
    if paper.load_paper_table(table)["note"].str.contains("not reported").any():
        notes.append("Empty paper cells are not reported in the paper ('-').")
    return notes


def render_target_table(target: Target, scale: str, results_root: Path | None = None,
                        seeds: int | None = None) -> str:
    """The target's tables; `seeds` N uses seeds 0..N-1 of the CSV (None: all it has)."""
    ours = ours_at(target.name, scale, results_root, seeds)
    n_seeds = max_seeds(ours)
    parts = [f"# {target.title}", "",
             f"Paper values from `results/paper/`; ours: scale `{scale}`, from "
             f"`results/{target.name}/` ({len(ours)} values collected; blank = not yet run)."
             + (f" Up to {n_seeds} seeds per cell: ours = mean ± sample std over seeds."
                if n_seeds > 1 else "")]
    parts += [f"\n{note}" for note in page_notes(target, ours)]
    for table in target.tables():
        parts += ["", f"## {table}", "", table_markdown(table, ours)]
        parts += [f"\n{note}" for note in table_footnotes(table, ours, target)]
    return "\n".join(parts) + "\n"


def write_target_table(target: Target, scale: str, results_root: Path | None = None,
                       seeds: int | None = None) -> Path:
    text = render_target_table(target, scale, results_root, seeds)
    path = (results_root or results_dir()) / "tables" / f"{target.name}.md"
    atomic_write_text(path, text, hint="set REPRO_RESULTS to a writable results directory")
    return path
