"""The paper's own numbers (Tables 1-6, Figures 6-7), read from `results/paper/<name>.csv`.

Each CSV holds one row per table cell and metric, with the columns
`table, cell, <variant columns>, metric, value, unit, note`. `value` is the number as
printed; an empty value is a cell the paper does not give (NaN here, and `note` says why).
These are the paper's numbers, kept apart from ours; see `results/paper/README.md`.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

from repro import paths

PAPER_TABLES = (
    "table1", "table2", "table3a", "table3b", "table4a", "table4b", "table4c",
    "table5", "table6", "fig6", "fig7",
)
LEADING_COLUMNS = ("table", "cell")
TRAILING_COLUMNS = ("metric", "value", "unit", "note")


class UnknownTable(ValueError):
    """A table name that is not one of `PAPER_TABLES`."""

    def __init__(self, name: str):
        super().__init__(f"unknown paper table {name!r}; known tables: {', '.join(PAPER_TABLES)}")
        self.name = name


def _csv_path(name: str, directory: str | Path | None) -> Path:
    if name not in PAPER_TABLES:
        raise UnknownTable(name)
    return Path(directory if directory is not None else paths.paper_dir()) / f"{name}.csv"


def _parse_value(text: str, path: Path, line: int) -> float:
    if text == "":
        return math.nan
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{path}: line {line}: value {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{path}: line {line}: value {text!r} is not finite")
    return number


def _check_field_counts(path: Path) -> None:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    width = len(rows[0]) if rows else 0
    ragged_lines = [line for line, row in enumerate(rows[1:], start=2) if len(row) != width]
    if ragged_lines:
        raise ValueError(f"{path}: expected {width} fields like the header on line(s) {ragged_lines}")


def _validate(frame: pd.DataFrame, name: str, path: Path) -> None:
    columns = list(frame.columns)
    if (len(columns) < len(LEADING_COLUMNS) + len(TRAILING_COLUMNS)
            or tuple(columns[:2]) != LEADING_COLUMNS or tuple(columns[-4:]) != TRAILING_COLUMNS):
        raise ValueError(
            f"{path}: columns must be {', '.join(LEADING_COLUMNS)}, <variants>, "
            f"{', '.join(TRAILING_COLUMNS)}; found {', '.join(columns)}")
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    wrong_table = sorted(set(frame["table"]) - {name})
    if wrong_table:
        raise ValueError(f"{path}: column 'table' must be {name!r} on every row; found {wrong_table}")
    for column in ("cell", "metric", "unit"):
        blank_lines = [i + 2 for i in frame.index[frame[column] == ""]]
        if blank_lines:
            raise ValueError(f"{path}: empty {column!r} on line(s) {blank_lines}")
    key = columns[1:-3]
    duplicated = frame.duplicated(subset=key, keep=False)
    if duplicated.any():
        raise ValueError(f"{path}: duplicate rows for {', '.join(key)} on line(s) "
                         f"{[i + 2 for i in frame.index[duplicated]]}")


def load_paper_table(name: str, directory: str | Path | None = None) -> pd.DataFrame:
    """One paper table as a DataFrame: `value` is float (NaN where the paper has none),
    every other column a string (check marks are "true"/"false").

    `directory` defaults to `repro.paths.paper_dir()`. Raises `UnknownTable` for a name
    not in `PAPER_TABLES` and `ValueError` naming the file for a malformed CSV."""
    path = _csv_path(name, directory)
    if not path.is_file():
        raise ValueError(f"{path}: paper table file is missing")
    try:
        _check_field_counts(path)
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot be parsed as CSV: {error}") from None
    _validate(frame, name, path)
    frame["value"] = [_parse_value(text, path, i + 2) for i, text in enumerate(frame["value"])]
    missing_note = frame["value"].isna() & (frame["note"] == "")
    if missing_note.any():
        raise ValueError(f"{path}: empty value without a note on line(s) "
                         f"{[i + 2 for i in frame.index[missing_note]]}")
    return frame


def variant_columns(frame: pd.DataFrame) -> list[str]:
    """The columns between `cell` and `metric`: what distinguishes the table's cells."""
    columns = list(frame.columns)
    return columns[columns.index("cell") + 1:columns.index("metric")]


def cells(name: str, directory: str | Path | None = None) -> list[str]:
    """The table's cell ids, each once, in the paper's order."""
    return list(dict.fromkeys(load_paper_table(name, directory)["cell"]))


def metrics(name: str, directory: str | Path | None = None) -> list[str]:
    """The table's metrics, each once, in the paper's column order."""
    return list(dict.fromkeys(load_paper_table(name, directory)["metric"]))
