"""Training time as a number of ours: Table 4a's "Time" (training days per 10K steps), read from
each run's `<workdir>/runs/<run_id>/train/summary.json`.

The trainer records its throughput over every step of the run, preemptions included
(`steps_per_s`, `steps_timed`), the process count (`world_size`), the device and its name and
the strategy (maskgwm/train/trainer.py). A run fills each of its cells for which the paper
gives a Time with 10000 / steps_per_s / 86400 days on the job's own devices: no interval, n =
the steps timed. Absolute time depends on the hardware, so tables also show each row's time as
a ratio to the table's first row (ours beside the paper's), label CPU timings, and say when one
table's times come from different hardware.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from repro.paths import work_dir
from repro.targets import paper
from repro.targets.jobfiles import ResolvedRun


class TimingError(ValueError):
    """A training summary that cannot be read; collect reports it as a CollectError."""


TIME = "Time"
STEPS = 10_000
HARDWARE = ("device", "world_size", "strategy")     # the CSV columns that say where it ran
PAPER_HARDWARE = "32 A800 GPUs"


def days_per_10k(steps_per_s: float) -> float:
    return STEPS / steps_per_s / 86_400


def time_cells(run: ResolvedRun) -> list[str]:
    """The run's cells for which the paper gives a training time."""
    found = []
    for cell_id in run.cells:
        table, cell = cell_id.split("/", 1)
        frame = paper.load_paper_table(table)
        if ((frame["cell"] == cell) & (frame["metric"] == TIME)).any():
            found.append(cell_id)
    return found


def summary_path(run: ResolvedRun, root: Path | None = None) -> Path:
    """Where a run's trainer writes its summary (the trainer's contract)."""
    return (root or work_dir()) / "runs" / run.run_id / "train" / "summary.json"


def device_of(summary: dict[str, Any]) -> str:
    """The GPU's name as recorded, else "cpu" (a summary from before names were recorded that
    ran on a GPU says so)."""
    if summary.get("device_name"):
        return str(summary["device_name"])
    device = str(summary.get("device", "cpu"))
    return "cpu" if device.startswith("cpu") else f"{device} (name not recorded)"


def rows_from_summary(summary: dict[str, Any], run: ResolvedRun, scale: str, source: Path,
                      done: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """A Time row per Time cell of `run`, from its summary.json (and done.json, for the commit
    and the time it finished)."""
    try:
        value, steps = days_per_10k(float(summary["steps_per_s"])), int(summary["steps_timed"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise TimingError(f"{source}: no training throughput ({type(err).__name__}: {err}); "
                           f"train the run again (delete {source.parent})") from None
    done = done or {}
    common = {"metric": TIME, "seed": run.seed, "value": repr(value), "ci_low": "",
              "ci_high": "", "n": steps, "scale": scale, "seconds": "", "random_weights": False,
              "run_id": run.run_id, "git_commit": done.get("git_commit", ""),
              "config_hash": summary.get("config_hash", ""), "protocol": "",
              "protocol_hash": "", "clip_list_hash": "", "detector_sha256": "",
              "created": done.get("finished", ""), "source": "", "fvd_flavour": "",
              "device": device_of(summary), "world_size": summary.get("world_size", ""),
              "strategy": summary.get("strategy", "")}
    return [{"table": cell_id.split("/", 1)[0], "cell": cell_id.split("/", 1)[1], **common}
            for cell_id in time_cells(run)]


def read_time_rows(run: ResolvedRun, scale: str, root: Path | None = None
                   ) -> list[dict[str, Any]] | None:
    """The Time rows of `run` ([] when it fills no Time cell), None when it has not finished
    training (no summary.json)."""
    if not time_cells(run):
        return []
    path = summary_path(run, root)
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        done_file = path.parent.parent / "done.json"
        done = json.loads(done_file.read_text()) if done_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as err:
        raise TimingError(f"{path}: unreadable training summary ({err}); train the run "
                           f"again (delete {path.parent})") from None
    return rows_from_summary(summary, run, scale, path, done)


def ratio_text(value: float, base: float) -> str:
    """`value` / `base` to three decimals ("" when either is missing)."""
    if pd.isna(value) or pd.isna(base) or not base:
        return ""
    return f"{value / base:.3f}"


def hardware(row: pd.Series) -> str:
    """Where one Time row was measured, in words."""
    device, world = str(row.get("device", "")), row.get("world_size", "")
    count = int(float(world)) if str(world) not in ("", "nan") else 1
    strategy = str(row.get("strategy", "")) if str(row.get("strategy", "")) != "nan" else ""
    where = (f"CPU, {count} process" + ("es" if count > 1 else "") if device == "cpu"
             else f"{count} x {device}")
    return where + (f" ({strategy})" if strategy and strategy != "single" else "")


def time_notes(table: str, ours: pd.DataFrame, base_cell: str) -> list[str]:
    """The notes under a table with our Time: how it is measured and on what, a CPU label, and
    a warning when its rows come from different hardware."""
    if not len(ours) or "device" not in ours.columns:
        return []
    mine = ours[(ours["table"].astype(str) == table) & (ours["metric"] == TIME)]
    if not len(mine):
        return []
    where = {str(cell): hardware(row) for cell, row in
             mine.drop_duplicates("cell", keep="last").set_index("cell").iterrows()}
    kinds = list(dict.fromkeys(where.values()))
    scales = ", ".join(dict.fromkeys(mine["scale"].astype(str)))
    notes = [f"Time ours: training days per 10K steps, 10000 / steps_per_s / 86400 from each "
             f"run's train/summary.json (every step timed; n = steps timed; no interval), "
             f"measured on {'; '.join(kinds)} at scale {scales}; the paper's on "
             f"{PAPER_HARDWARE}. Absolute times depend on the hardware: `Time ratio` is each "
             f"row's time over the first row's ({base_cell}), comparable across clusters."]
    if any(kind.startswith("CPU") for kind in kinds):
        notes.append(f"**CPU timing at scale {scales}**: our Time is CPU time of a small model, "
                     "not comparable with the paper's GPU days; only its ratios are, loosely.")
    if len(kinds) > 1:
        notes.append("**Mixed hardware**: our Time values in this table were measured on "
                     "different devices or settings (" + "; ".join(
                         f"{cell}: {kind}" for cell, kind in where.items()) + "); neither "
                     "the times nor their ratios compare across those rows. Train them on one "
                     "kind of device to compare.")
    return notes
