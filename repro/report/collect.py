"""`repro collect TARGET`: our evaluated numbers of a target, as `results/<target>/<scale>.csv`.

Reads `<workdir>/runs/<run_id>/eval/<protocol>/result.json` (the dict `evals.evaluate`
writes, plus a top-level `provenance`) for every run of the target that fills paper cells,
and `<workdir>/runs/<run_id>/train/summary.json` for runs that fill a cell with a training
time (Table 4a's Time: timing.py), and writes one row per (table, cell, metric[, seconds],
seed) with the interval and provenance columns below. Paper numbers are never written here
(they stay in `results/paper/`).

Seeds (`--seeds N`, repro/targets/jobfiles.py): `seed` is the replica index s (0 = the run as
declared; s >= 1 its seed replica). Every row also carries the summary over the seeds collected for its
(table, cell, metric, seconds): `seed_mean`, `seed_std` (sample std, ddof 1; empty with one
seed) and `n_seeds`. `value`, `ci_low`, `ci_high` and `n` stay per seed.

One CSV never mixes protocol versions: all results of one protocol name must carry the same
protocol hash, and so must the CSV already on disk (otherwise nothing is written).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_text
from evals.protocols import result_fvd_flavour

from repro.targets.jobfiles import ResolvedRun, Target, resolve_target
from repro.paths import results_dir, work_dir
from repro.report.timing import TimingError, read_time_rows, summary_path

COLUMNS = ("table", "cell", "metric", "seed", "value", "ci_low", "ci_high", "n", "seed_mean",
           "seed_std", "n_seeds", "scale", "seconds", "random_weights", "run_id", "git_commit",
           "config_hash", "protocol", "protocol_hash", "clip_list_hash", "detector_sha256",
           "created", "source", "fvd_flavour", "device", "world_size", "strategy")
"""`source`: who generated the clips when not our model, e.g. "Vista (official checkpoint,
this suite's evaluation)" or "Vista TEST DOUBLE (not the official checkpoint)".
`fvd_flavour`: on FVD rows, which FVD the value is (evals.protocols.FVD_FLAVOURS), e.g.
TATS-FVD; empty on FID rows. `device` (the GPU's name, or cpu), `world_size` (training
processes: GPUs on a GPU) and `strategy`: on Time rows (timing.py), where the run trained;
they come last, so readers of older CSVs find every other column where it was."""
METRICS = (("fid", "FID"), ("fvd", "FVD"))  # result key -> spelling in the paper CSVs


class CollectError(ValueError):
    """Results that cannot be collected (missing, mixed protocol versions, unreadable)."""


@dataclass
class Collected:
    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[tuple[ResolvedRun, Path]] = field(default_factory=list)
    stale: list[tuple[ResolvedRun, Path, str]] = field(default_factory=list)  # (..., old hash)
    not_run: str = ""      # Vista runs that `repro submit` leaves out at this scale, and why
    path: Path | None = None

    def notes(self) -> str:
        """What is missing or stale, for the user ("" when complete)."""
        return "\n".join(filter(None, [self.not_run, format_missing(self.missing),
                                        format_stale(self.stale)]))


def result_path(run: ResolvedRun, root: Path | None = None) -> Path:
    """Where the evaluation of `run` under its protocol is written (the runner's contract)."""
    return (root or work_dir()) / "runs" / run.run_id / "eval" / run.protocol / "result.json"


def current_protocol_hash(run: ResolvedRun) -> str:
    """The hash of the protocol `run` is scored under at its scale, as the code defines it now
    (a result with another hash predates a protocol change)."""
    from repro.jobs.evalsets import scaled_protocol
    return scaled_protocol(run.protocol, run.scale).hash


def csv_path(target: str, scale: str, root: Path | None = None) -> Path:
    return (root or results_dir()) / target / f"{scale}.csv"


def _detector_text(result: dict[str, Any]) -> str:
    parts = []
    for det in result.get("detectors", []):
        role = det.get("role", "?")
        if det.get("random_weights"):
            seed = det.get("seed")
            parts.append(f"{role}:random-weights" + (f"(seed {seed})" if seed is not None else ""))
        else:
            parts.append(f"{role}:{det.get('weights_sha256') or 'unknown'}")
    return ";".join(parts)


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return repr(float(value))


def _seconds_text(seconds: float) -> str:
    """Seconds as the paper CSVs spell them: 10 not 10.0, 4.7 not 4.700000000000001."""
    rounded = round(float(seconds), 3)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:g}"


def rows_from_result(result: dict[str, Any], run: ResolvedRun, scale: str,
                     source: Path) -> list[dict[str, Any]]:
    """CSV rows for every cell `run` fills, from its evaluation result."""
    try:
        prov = result.get("provenance", {})
        protocol = result["protocol"]
        long_horizon = protocol.get("long_horizon") is not None
        random = bool(result.get("label")) or any(d.get("random_weights")
                                                  for d in result.get("detectors", []))
        common = {
            "scale": scale, "random_weights": random, "run_id": run.run_id,
            "git_commit": prov.get("git_commit", ""), "config_hash": prov.get("config_hash", ""),
            "protocol": protocol["name"], "protocol_hash": result["protocol_hash"],
            "clip_list_hash": result.get("clip_list_hash") or "",
            "detector_sha256": _detector_text(result), "created": result.get("created", ""),
            "source": prov.get("vista_label", ""),
        }
        flavour = result_fvd_flavour(result)["name"]
        rows = []
        for cell_id in run.cells:
            table, cell = cell_id.split("/", 1)
            for point in result["points"]:
                seconds = _seconds_text(point["seconds"]) if long_horizon else ""
                for key, name in METRICS:
                    m = point[key]
                    rows.append({"table": table, "cell": cell, "metric": name, "seed": run.seed,
                                 "value": _number(m["value"]), "ci_low": _number(m.get("low")),
                                 "ci_high": _number(m.get("high")), "n": int(m["n"]),
                                 "seconds": seconds, **common,
                                 "fvd_flavour": m.get("flavour", flavour) if key == "fvd"
                                 else ""})
    except (KeyError, TypeError, AttributeError) as err:
        raise CollectError(f"{source}: not an evaluation result ({type(err).__name__}: {err}); "
                           "re-run the evaluation") from None
    if prov.get("run_id") not in (None, run.run_id):
        raise CollectError(f"{source}: provenance says run {prov['run_id']}, expected "
                           f"{run.run_id}; re-run the evaluation")
    return rows


def _read_existing(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _check_one_hash(rows: list[dict[str, Any]], existing: list[dict[str, str]],
                    path: Path) -> None:
    hashes: dict[str, dict[str, set[str]]] = {}
    for row in rows:
        hashes.setdefault(row["protocol"], {}).setdefault(row["protocol_hash"], set()) \
            .add(row["run_id"])
    for name, by_hash in hashes.items():
        if len(by_hash) > 1:
            detail = "; ".join(f"{h}: runs {', '.join(sorted(r))}" for h, r in by_hash.items())
            raise CollectError(f"results of protocol {name} were made with different protocol "
                               f"versions ({detail}); re-evaluate the stale runs so that one "
                               f"CSV holds one version. Nothing written to {path}")
    for row in existing:
        name, old = row.get("protocol", ""), row.get("protocol_hash", "")
        new = set(hashes.get(name, {}))
        if old and new and old not in new:
            raise CollectError(f"{path} holds protocol {name} version {old}, the results now "
                               f"are version {', '.join(sorted(new))}; nothing overwritten. "
                               "Move that CSV away (or delete it) to collect the new version")


SUMMARY_KEY = ("table", "cell", "metric", "seconds")


def add_seed_summary(rows: list[dict[str, Any]]) -> None:
    """Fill `seed_mean`, `seed_std` (ddof 1) and `n_seeds` of every row from the finite values
    of all rows with its (table, cell, metric, seconds)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in SUMMARY_KEY), []).append(row)
    for group in groups.values():
        values = [float(r["value"]) for r in group if r["value"] != ""]
        mean = sum(values) / len(values) if values else math.nan
        std = (math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
               if len(values) > 1 else math.nan)
        for row in group:
            row.update(seed_mean=_number(mean), seed_std=_number(std), n_seeds=len(values))


def to_csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def gather(target: Target, scale: str, workdir: Path | None = None, seeds: int = 1
           ) -> Collected:
    """Read every result of `target` at `scale` (seeds 0..seeds-1) into rows, writing nothing.
    Vista runs that `repro submit` leaves out at this scale (no checkout) are not missing:
    their result is read if one exists, else `not_run` says why there is none."""
    from repro.vista.graph import split_runs
    out = Collected()
    runs = resolve_target(target, scale, seeds)
    submitted, why = split_runs(runs, scale)
    timed = []          # Time rows (training throughput), after the evaluations' rows
    for run in runs:
        if not run.cells:
            continue
        try:
            times = read_time_rows(run, scale, workdir)
        except TimingError as err:
            raise CollectError(str(err)) from None
        timed += times or []
        path = result_path(run, workdir)
        if times is None and run in submitted and path.exists():
            out.missing.append((run, summary_path(run, workdir)))
        if not path.exists():
            if run in submitted:
                out.missing.append((run, path))
            else:       # never submitted at this scale: not missing, not run
                out.not_run = why
            continue
        try:
            result = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise CollectError(f"{path}: unreadable result ({err}); re-run the evaluation") \
                from None
        if result.get("protocol_hash") != current_protocol_hash(run):
            out.stale.append((run, path, str(result.get("protocol_hash"))))
            continue
        out.rows += rows_from_result(result, run, scale, path)
    out.rows += timed
    return out


def collect(target: Target, scale: str, partial: bool = False, workdir: Path | None = None,
            results_root: Path | None = None, seeds: int = 1) -> Collected:
    """`gather`, then write the CSV unless results are missing (then only with `partial`, and
    only if at least one result exists)."""
    out = gather(target, scale, workdir, seeds)
    if (out.missing or out.stale) and not partial:
        return out
    if not out.rows:
        return out
    add_seed_summary(out.rows)
    path = csv_path(target.name, scale, results_root)
    _check_one_hash(out.rows, _read_existing(path), path)
    atomic_write_text(path, to_csv(out.rows),
                      hint="set REPRO_RESULTS to a writable results directory")
    out.path = path
    return out


def format_missing(missing: list[tuple[ResolvedRun, Path]]) -> str:
    if not missing:
        return ""
    lines = [f"no result yet for {len(missing)} run(s):"]
    for run, path in missing:
        lines.append(f"  {run.name} (run {run.run_id}; cells {', '.join(run.cells)}): {path}")
    return "\n".join(lines)


def format_stale(stale: list[tuple[ResolvedRun, Path, str]]) -> str:
    if not stale:
        return ""
    lines = [f"{len(stale)} result(s) were scored under an older protocol version (not "
             "collected; `repro submit` of the target re-scores them):"]
    for run, path, old in stale:
        lines.append(f"  {run.name} (run {run.run_id}): {path} has {run.protocol} version "
                     f"{old}, the current one is {current_protocol_hash(run)}")
    return "\n".join(lines)
