"""`repro table TARGET`: the paper's table with our numbers beside it, as Markdown.

Paper numbers come from `results/paper/<table>.csv`; ours from the CSVs that `repro collect`
writes under `results/<target>/` (columns `table, cell, metric, value, n, scale`, optionally
`seconds`, `ci_low`, `ci_high`, `random_weights`). Cells we have no number for stay blank.
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import paper
from .fsio import atomic_write_text
from .jobs import Target
from .paths import results_dir

OURS_REQUIRED = ("table", "cell", "metric", "value", "n", "scale")
RANDOM_WEIGHTS_NOTE = ("random-weights detector: not comparable with published numbers")


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
        frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=list(OURS_REQUIRED))
    return pd.concat(frames, ignore_index=True)


def _fmt(value: float, digits: int = 2) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def _same(column: pd.Series, value: str) -> pd.Series:
    """Equal as text, or as numbers when both are numeric (10 == 10.0 seconds)."""
    numbers = pd.to_numeric(column, errors="coerce")
    try:
        wanted = float(value)
    except ValueError:
        return column.astype(str) == value
    return (column.astype(str) == value) | ((numbers - wanted).abs() < 1e-9)


def _lookup(ours: pd.DataFrame, key: dict[str, str]) -> pd.Series | None:
    mask = pd.Series(True, index=ours.index)
    for column, value in key.items():
        if column in ours.columns:
            mask &= _same(ours[column], value)
    hits = ours[mask]
    return hits.iloc[-1] if len(hits) else None


def table_markdown(table: str, ours: pd.DataFrame) -> str:
    frame = paper.load_paper_table(table)
    variants = paper.variant_columns(frame)
    metrics = list(dict.fromkeys(frame["metric"]))
    header = ["cell", *variants]
    for metric in metrics:
        header += [f"{metric} paper", f"{metric} ours", f"Δ {metric}", f"n {metric}"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    key_columns = ["cell", *variants]
    for _, group in frame.groupby(key_columns, sort=False):
        first = group.iloc[0]
        row = [str(first[c]) for c in key_columns]
        for metric in metrics:
            hit = group[group["metric"] == metric]
            paper_value = float(hit["value"].iloc[0]) if len(hit) else math.nan
            key = {"table": table, "cell": first["cell"], "metric": metric}
            if "seconds" in variants:
                key["seconds"] = str(first["seconds"])
            mine = _lookup(ours, key)
            ours_value = float(mine["value"]) if mine is not None else math.nan
            ours_text = _fmt(ours_value)
            if mine is not None and "ci_low" in mine and not pd.isna(mine["ci_low"]):
                ours_text += f" [{_fmt(mine['ci_low'])}, {_fmt(mine['ci_high'])}]"
            paper_text = "" if math.isnan(paper_value) else str(paper_value)
            diff = ours_value - paper_value
            row += [paper_text, ours_text, "" if math.isnan(diff) else f"{diff:+.2f}",
                    "" if mine is None else str(int(mine["n"]))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def render_target_table(target: Target, scale: str, results_root: Path | None = None) -> str:
    ours = load_ours(target.name, results_root)
    if "scale" in ours.columns and len(ours):
        ours = ours[ours["scale"].astype(str) == scale]
    parts = [f"# {target.title}", "",
             f"Paper values from `results/paper/`; ours: scale `{scale}`, from "
             f"`results/{target.name}/` ({len(ours)} values collected; blank = not yet run)."]
    if "random_weights" in ours.columns and ours["random_weights"].astype(str).str.lower() \
            .isin(["true", "1"]).any():
        parts.append(f"\n**Note: {RANDOM_WEIGHTS_NOTE}.**")
    for table in target.tables():
        parts += ["", f"## {table}", "", table_markdown(table, ours)]
        notes = paper.load_paper_table(table)["note"]
        if notes.str.contains("not reported").any():
            parts.append("\nEmpty paper cells are not reported in the paper ('-').")
    return "\n".join(parts) + "\n"


def write_target_table(target: Target, scale: str, results_root: Path | None = None) -> Path:
    text = render_target_table(target, scale, results_root)
    path = (results_root or results_dir()) / "tables" / f"{target.name}.md"
    atomic_write_text(path, text, hint="set REPRO_RESULTS to a writable results directory")
    return path
