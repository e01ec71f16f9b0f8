"""Training metrics: per-step rows in `<out>/metrics.jsonl` and `<out>/metrics.csv`, a
progress line, and the end-of-run summary numbers.

On resume, rows after the resumed step (written by the interrupted run after its last
checkpoint) are dropped, so each step appears once. The summary's throughput is computed from
those rows, so it covers the whole run across preemptions, not only the last process's steps.
"""
from __future__ import annotations

import csv
import io
import json
import resource
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from evals.atomic import atomic_write_text

COLUMNS = ("step", "loss", "flow", "contrastive", "lr", "grad_norm", "frames", "samples_per_s",
           "step_s", "data_wait_s", "branch_plain", "branch_spatial", "branch_temporal")


def read_rows(out_dir: Path, up_to: int) -> list[dict[str, Any]]:
    """The rows of `<out>/metrics.jsonl` for steps 1..`up_to`."""
    path = Path(out_dir) / "metrics.jsonl"
    rows = []
    if up_to > 0 and path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue          # a torn last line of an interrupted run
            if row.get("step", 0) <= up_to:
                rows.append(row)
    return rows


def rates(rows: list[dict[str, Any]], batch: int) -> dict[str, float]:
    """Throughput over metric rows of `batch` samples each."""
    step_s = sum(r["step_s"] for r in rows) or 1e-12
    wait_s = sum(r["data_wait_s"] for r in rows)
    return {"steps_timed": len(rows), "train_time_s": round(step_s, 4),
            "steps_per_s": len(rows) / step_s, "samples_per_s": len(rows) * batch / step_s,
            "data_wait_s": round(wait_s, 4), "data_wait_fraction": wait_s / step_s}


class MetricsWriter:
    def __init__(self, out_dir: Path, resume_step: int):
        self.jsonl, self.csv = Path(out_dir) / "metrics.jsonl", Path(out_dir) / "metrics.csv"
        rows = read_rows(out_dir, resume_step)
        # atomic: a kill while rewriting must not lose the history before the resume step
        atomic_write_text(self.jsonl, "".join(json.dumps(row) + "\n" for row in rows))
        table = io.StringIO()
        writer = csv.DictWriter(table, COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(self.flat(row) for row in rows)
        atomic_write_text(self.csv, table.getvalue())

    @staticmethod
    def flat(row: dict[str, Any]) -> dict[str, Any]:
        branches = row.get("branches", {})
        return {**row, **{f"branch_{k}": v for k, v in branches.items()}}

    def add(self, row: dict[str, Any]) -> None:
        with open(self.jsonl, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        with open(self.csv, "a", newline="") as handle:
            csv.DictWriter(handle, COLUMNS, extrasaction="ignore").writerow(self.flat(row))


class Progress:
    """tqdm on a terminal, else a line every `every` steps through `log`."""

    def __init__(self, start: int, total: int, every: int, log: Callable[[str], None],
                 enabled: bool = True):
        self.every, self.log, self.enabled, self.bar = max(1, every), log, enabled, None
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
                self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, row: dict[str, Any], total: int) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
        elif row["step"] % self.every == 0 or row["step"] == total:
            self.log(f"step {row['step']}/{total} loss {row['loss']:.5f} flow {row['flow']:.5f} "
                     f"lr {row['lr']:.3e} grad_norm {row['grad_norm']:.3f} "
                     f"{row['samples_per_s']:.2f} samples/s data_wait {row['data_wait_s']:.3f}s")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def device_name(device: torch.device) -> str:
    """The GPU's name (torch.cuda.get_device_name), or "cpu": what a run's speed was measured
    on (repro/report/timing.py turns it into Table 4a's Time)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def peak_memory(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated(device)),
                "peak_memory_kind": "torch.cuda.max_memory_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_memory_bytes": int(rss_kib) * 1024, "peak_memory_kind": "ru_maxrss (CPU)"}


class Timer:
    """Sums of step time and data wait over the steps this process ran."""

    def __init__(self):
        self.steps, self.samples, self.step_s, self.wait_s = 0, 0, 0.0, 0.0

    def add(self, step_s: float, wait_s: float, samples: int) -> None:
        self.steps += 1
        self.samples += samples
        self.step_s += step_s
        self.wait_s += wait_s

    def summary(self) -> dict[str, float]:
        total = self.step_s or 1e-12
        return {"steps_run": self.steps, "train_time_s": round(self.step_s, 4),
                "steps_per_s": self.steps / total, "samples_per_s": self.samples / total,
                "data_wait_s": round(self.wait_s, 4),
                "data_wait_fraction": self.wait_s / total}
