"""What the results page shows of each target at one scale (a `Section`): the paper's tables
with ours beside them (table.py), the plots (plot.py, copied into the page's `assets/`), looping
videos of real and generated clips (videos.py, written into its `videos/`), what is missing or
stale with the command that mends it, and placeholders naming files that could not be made."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evals.atomic import atomic_path
from evals.videoset import VideoSet, VideoSetError, storage_name

from repro.report.collect import CollectError, csv_path, gather
from repro.report.table import (TableView, is_random, ours_at, page_notes, table_footnotes,
                                table_view)
from repro.report.videos import Video
from repro.targets.jobfiles import Target, resolve_target

CLIPS_PER_PROTOCOL = 2


@dataclass
class Problem:
    """Something missing or stale: a few words for the summary, the whole story for the
    target's section."""
    short: str
    text: str


@dataclass
class Table:
    view: TableView
    footnotes: list[str]


@dataclass
class Section:
    """What the page shows of one target at one scale."""
    target: Target
    ours: pd.DataFrame
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)       # Markdown, above the tables
    problems: list[Problem] = field(default_factory=list)   # missing / stale runs, results
    plots: list[Path] = field(default_factory=list)      # relative to the page
    videos: list[Video] = field(default_factory=list)
    missing_files: list[str] = field(default_factory=list)  # placeholders naming them

    @property
    def has_results(self) -> bool:
        return bool(len(self.ours))

    @property
    def random_weights(self) -> bool:
        return is_random(self.ours)

    def counts(self) -> tuple[int, int, int]:
        totals = [t.view.counts() for t in self.tables]
        return tuple(sum(c[i] for c in totals) for i in range(3))  # type: ignore[return-value]


def stale_rows(ours: pd.DataFrame, target: str, scale: str, root: Path | None
               ) -> list[Problem]:
    """Rows of the CSV made under another protocol version, with the commands that refresh
    them."""
    from repro.jobs.evalsets import scaled_protocol
    problems = []
    if not len(ours) or "protocol_hash" not in ours.columns:
        return problems
    for (protocol, old), _ in ours.groupby(["protocol", "protocol_hash"]):
        current = scaled_protocol(str(protocol), scale).hash
        if str(old) != current:
            problems.append(Problem(
                f"{protocol} results stale",
                f"STALE: {csv_path(target, scale, root)} holds protocol {protocol} version "
                f"{old}; the current version is {current}. Refresh: `repro submit {target} "
                f"--scale {scale}` (re-scores), then `repro collect {target} --scale {scale}`."))
    return problems


def run_problems(target: Target, scale: str, ours: pd.DataFrame, workdir: Path
                 ) -> list[Problem]:
    """Runs with no result, a stale result, or a result the CSV does not hold yet."""
    try:
        found = gather(target, scale, workdir)
    except CollectError as err:
        return [Problem("unreadable result", str(err))]
    problems = [Problem("Vista not run", found.not_run)] if found.not_run else []
    for run, path in found.missing:
        problems.append(Problem(f"{run.name} missing", (
            f"missing: {run.name} (run {run.run_id}; cells {', '.join(run.cells)}): no {path}; "
            f"`repro submit {target.name} --scale {scale}`")))
    for run, path, old in found.stale:
        problems.append(Problem(f"{run.name} stale", (
            f"stale: {run.name} (run {run.run_id}): {path} is of protocol version {old}; "
            f"`repro submit {target.name} --scale {scale}` re-scores it")))
    collected = set(ours["run_id"].astype(str)) if "run_id" in ours.columns else set()
    fresh = sorted({row["run_id"] for row in found.rows} - collected)
    if fresh:
        problems.append(Problem(f"{len(fresh)} not collected", (
            f"not collected yet: run(s) {', '.join(fresh)} have results; "
            f"`repro collect {target.name} --scale {scale} --partial`")))
    return problems


def _copy(source: Path, folder: Path) -> Path:
    """Copy `source` into `folder` atomically; the copy's path."""
    with atomic_path(folder / source.name) as tmp:
        shutil.copyfile(source, tmp)
    return folder / source.name


def add_plots(section: Section, scale: str, out: Path, root: Path | None) -> None:
    """Draw the target's plots (results/plots/) and copy them beside the page; a plot that
    cannot be drawn becomes a placeholder naming its file and the error."""
    from repro.report.plot import plot_target, plots_dir
    try:
        drawn = plot_target(section.target, scale, root)
    except (OSError, ValueError, RuntimeError) as err:
        section.missing_files += [f"{plots_dir(root) / f'{table}-{scale}.png'} ({err})"
                                  for table in section.target.tables()]
        return
    section.plots = [_copy(path, out / "assets").relative_to(out) for path in drawn]


def add_videos(section: Section, scale: str, out: Path, workdir: Path) -> None:
    """Per protocol of the target's evaluated runs, the first CLIPS_PER_PROTOCOL clips."""
    from repro.report.qualitative import clip_rows, real_set
    from repro.report.videos import write_video
    runs = [run for run in resolve_target(section.target, scale) if run.cells]
    by_protocol: dict[str, list] = {}
    for run in runs:
        by_protocol.setdefault(run.protocol, []).append(run)
    for protocol, group in by_protocol.items():
        root = real_set(workdir, protocol, scale)
        try:
            clip_ids = [entry.clip_id for entry in VideoSet.open(root).clips][:CLIPS_PER_PROTOCOL]
        except (VideoSetError, OSError):
            section.missing_files.append(f"{root} (the real clips of {protocol}; submit "
                                         f"{section.target.name} --scale {scale} to build them)")
            continue
        for clip_id in clip_ids:
            stem = (out / "videos" /
                    f"{section.target.name}-{protocol}-{storage_name(clip_id)}")
            try:
                rows = clip_rows(group, clip_id, workdir)
            except FileNotFoundError as err:
                section.missing_files.append(str(err))
                continue
            video = write_video(rows, stem, f"{protocol}: clip {clip_id} (rows: real, then "
                                f"{', '.join(name for name, _ in rows[1:])})")
            video.gif, video.mp4 = (video.gif.relative_to(out),
                                    video.mp4.relative_to(out) if video.mp4 else None)
            section.videos.append(video)


def build_section(target: Target, scale: str, out: Path, workdir: Path,
                  root: Path | None, videos: bool = True) -> Section:
    ours = ours_at(target.name, scale, root)
    section = Section(target, ours)
    if not section.has_results:
        return section
    section.notes = page_notes(target, ours, random_note=False)   # a banner instead
    section.tables = [Table(table_view(table, ours), table_footnotes(table, ours, target))
                      for table in target.tables()]
    section.problems = (stale_rows(ours, target.name, scale, root)
                        + run_problems(target, scale, ours, workdir))
    add_plots(section, scale, out, root)
    if videos:
        add_videos(section, scale, out, workdir)
    return section
