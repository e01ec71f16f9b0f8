"""`repro report`: one static results page per scale, `results/report/<scale>/index.html`.

For every target with collected results at the scale (or the targets named) a section
(site.py), then the protocol-sensitivity page and the benchmark records, as HTML (html.py).
Plots and videos lie beside the page, so the folder opens from disk, without a server or
network, and can be moved as a whole.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from evals.atomic import atomic_write_text
from maskgwm.config import SCALES

from repro.paths import repo_root, results_dir, work_dir
from repro.report.html import render_page
from repro.report.site import Section, build_section
from repro.report.table import load_ours
from repro.targets.jobfiles import Target, load_all_targets


class ReportError(ValueError):
    """Nothing at all can be reported."""


def scales_with_results(targets: list[Target], root: Path | None = None) -> list[str]:
    """The scales at which any of `targets` has collected results, in SCALES order."""
    found = set()
    for target in targets:
        ours = load_ours(target.name, root)
        if len(ours) and "scale" in ours.columns:
            found |= set(ours["scale"].astype(str))
    return [scale for scale in SCALES if scale in found]


def bench_records() -> list[tuple[str, dict]]:
    """(file name, record) of every benchmark JSON of the checkout (results/bench)."""
    records = []
    for path in sorted((repo_root() / "results" / "bench").glob("*.json")):
        try:
            records.append((path.name, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as err:
            records.append((path.name, {"error": f"unreadable: {err}"}))
    return records


def remove_unshown(out: Path, sections: list[Section]) -> list[Path]:
    """Remove the plots and videos beside the page that it no longer shows (an earlier page's,
    e.g. of clips or targets since gone); returns them."""
    shown = {out / path for section in sections for path in section.plots}
    shown |= {out / path for section in sections for video in section.videos
              for path in (video.gif, video.mp4) if path}
    removed = [path for folder in ("assets", "videos") if (out / folder).is_dir()
               for path in (out / folder).iterdir() if path.is_file() and path not in shown]
    for path in removed:
        path.unlink()
    return removed


def report_dir(scale: str, root: Path | None = None) -> Path:
    return (root or results_dir()) / "report" / scale


def write_report(scale: str, targets: list[Target] | None = None, named: bool = False,
                 out: Path | None = None, workdir: Path | None = None, root: Path | None = None,
                 videos: bool = True, echo: Callable[[str], None] = print) -> Path:
    """Write the page of `scale` for `targets` (None: every job file in slurm/); `named`:
    the user named them, so each gets a section even without results (else a summary row).
    ReportError when none of them has results at this scale."""
    out = out or report_dir(scale, root)
    workdir = workdir or work_dir()
    sections = [build_section(t, scale, out, workdir, root, videos)
                for t in targets or load_all_targets()]
    if not any(s.has_results for s in sections):
        raise ReportError(f"nothing to report at scale {scale}: no collected results of "
                          f"{', '.join(s.target.name for s in sections) if named else 'any target'}"
                          f" under {root or results_dir()}; `repro submit TARGET --scale "
                          f"{scale}` collects them (or `repro collect TARGET --scale "
                          f"{scale} --partial`)")
    if not named:       # those with results first; the others are listed as not run
        sections = [s for s in sections if s.has_results] + \
            [s for s in sections if not s.has_results]
    pages = [folder / "sensitivity" / "README.md"
             for folder in (root or results_dir(), repo_root() / "results")]
    sensitivity = next((candidate for candidate in pages if candidate.is_file()), None)
    page = render_page(scale, sections, sensitivity, bench_records(), named=named)
    path = out / "index.html"
    atomic_write_text(path, page, hint="set REPRO_RESULTS or --out to a writable folder")
    remove_unshown(out, sections)
    for section in sections:
        for missing in section.missing_files:
            echo(f"report: {section.target.name}: missing {missing}")
    return path
