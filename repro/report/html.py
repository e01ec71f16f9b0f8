"""The results page as HTML: one self-contained file (styles and the one script inline) that
links only to files beside it, readable at a phone's width (wide tables scroll in their box).
Markdown notes and pages (the sensitivity page) are converted with Python-Markdown."""
from __future__ import annotations

import datetime as dt
import json
from html import escape
from pathlib import Path

import markdown
import pandas as pd

from repro.report.site import Section, Table
from repro.report.table import OUTSIDE_NOTE, RANDOM_WEIGHTS_NOTE
from repro.report.videos import Video

PROVENANCE = ("run_id", "seed", "n", "git_commit", "config_hash", "protocol", "protocol_hash",
              "clip_list_hash", "detector_sha256", "source", "created", "device", "world_size",
              "strategy")
STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:1200px;padding:0 12px;
color:#1a1a1a}
h1{font-size:1.6em}h2{margin-top:2em;border-bottom:1px solid #ccc}
h1,h2,h3,p{overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}
.ours-table td{text-align:right}.ours-table td:first-child{text-align:left}
td.outside,td.beyond-noise{background:#fde2e1}td.ours{background:#eef5ff}
td.ours.outside{background:#fde2e1}
.banner{background:#7a0000;color:#fff;padding:8px 12px;font-weight:bold;margin:8px 0}
.problem{background:#fff4d6;border-left:4px solid #d4a000;padding:4px 8px;margin:4px 0;
overflow-wrap:anywhere}
.placeholder{border:2px dashed #b00;color:#b00;padding:12px;margin:8px 0;
overflow-wrap:anywhere}
.notrun{color:#666}
figure{margin:8px 0}img,video{max-width:100%;height:auto}
.videos{display:flex;flex-wrap:wrap;gap:12px}.videos figure{max-width:min(100%,420px)}
figcaption{font-size:.85em;color:#444;overflow-wrap:anywhere}
details{margin:4px 0}pre{overflow-x:auto;font-size:.8em}
code{overflow-wrap:anywhere}
"""
SCRIPT = """
function gifInstead(source){var video=source.parentNode,img=document.createElement('img');
img.src=video.dataset.gif;img.alt=video.title;video.replaceWith(img);}
"""


def md(text: str) -> str:
    """Markdown to HTML; every table in a box of its own that scrolls sideways."""
    html = markdown.markdown(text, extensions=["tables"])
    return html.replace("<table>", '<div class="scroll"><table>').replace(
        "</table>", "</table></div>")


def _text(value) -> str:
    """A CSV field as written (a count read back as 8.0 is 8)."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def provenance_text(rows: list[pd.Series]) -> str:
    """Where a number comes from, one line per seed (the hover text of a cell)."""
    lines = []
    for row in rows:
        lines.append("; ".join(f"{key} {_text(row[key])}" for key in PROVENANCE
                               if key in row and not pd.isna(row[key]) and str(row[key])))
    return "\n".join(lines)


def table_html(table: Table) -> str:
    view = table.view
    head = "".join(f"<th>{escape(name)}</th>" for name in view.header)
    body = []
    for row in view.rows:
        cells = []
        for name, cell in zip(view.header, row):
            classes = [c for c, on in (("ours", name.endswith(" ours")),
                                       ("outside", cell.outside),
                                       ("beyond-noise", cell.beyond_noise)) if on]
            attrs = f' class="{" ".join(classes)}"' if classes else ""
            if cell.rows:
                attrs += f' title="{escape(provenance_text(cell.rows))}"'
            cells.append(f"<td{attrs}>{escape(cell.text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    notes = [*view.notes, *table.footnotes]
    return (f'<h3 id="table-{escape(view.table)}">{escape(view.table)}</h3>'
            f'<div class="scroll"><table class="ours-table" data-table="{escape(view.table)}">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></div>"
            + "".join(md(note) for note in notes) + provenance_html(view))


def provenance_html(view) -> str:
    """Each run's provenance behind the table, once per (run, seed): the fields of all its rows
    (an evaluation's and a training time's) together."""
    seen: dict[tuple, dict] = {}
    for row in view.rows:
        for cell in row:
            for ours in cell.rows or []:
                merged = seen.setdefault((str(ours.get("run_id")), str(ours.get("seed"))), {})
                for key in PROVENANCE:
                    if not merged.get(key) and key in ours and not pd.isna(ours[key]):
                        merged[key] = _text(ours[key])
    if not seen:
        return ""
    keys = [k for k in PROVENANCE if k != "n"]
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = "".join("<tr>" + "".join(f"<td>{escape(r.get(k, ''))}</td>" for k in keys)
                   + "</tr>" for r in seen.values())
    return (f"<details><summary>provenance of our numbers in {escape(view.table)}</summary>"
            f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody>'
            "</table></div></details>")


def video_html(video: Video) -> str:
    caption = escape(video.title) + f' · <a href="{escape(str(video.gif))}">GIF</a>' \
        + (f" · {escape(video.note)}" if video.note else "")
    if video.mp4 is None:
        media = f'<img src="{escape(str(video.gif))}" alt="{escape(video.title)}">'
    else:
        media = (f'<video autoplay loop muted playsinline title="{escape(video.title)}"'
                 f' data-gif="{escape(str(video.gif))}"><source src="{escape(str(video.mp4))}"'
                 ' type="video/mp4" onerror="gifInstead(this)"></video>')
    return f"<figure>{media}<figcaption>{caption}</figcaption></figure>"


def plots_html(plots: list[Path]) -> str:
    parts = []
    for png in [p for p in plots if p.suffix == ".png"]:
        pdf = png.with_suffix(".pdf")
        link = f' · <a href="{escape(str(pdf))}">PDF</a>' if pdf in plots else ""
        parts.append(f'<figure><img src="{escape(str(png))}" alt="{escape(png.stem)}">'
                     f"<figcaption>{escape(png.name)}{link}</figcaption></figure>")
    return "".join(parts)


def section_html(section: Section, scale: str) -> str:
    target = section.target
    head = f'<section id="target-{escape(target.name)}"><h2>{escape(target.name)}: ' \
           f"{escape(target.title)}</h2>"
    if not section.has_results:
        return (head + f'<p class="notrun">not run at scale {escape(scale)}: '
                f"{not_run_command(section, scale)}</p></section>")
    parts = [head]
    if section.random_weights:
        parts.append(f'<div class="banner">{escape(RANDOM_WEIGHTS_NOTE)}</div>')
    parts += [f'<div class="problem">{escape(p.text)}</div>' for p in section.problems]
    parts += [md(note) for note in section.notes]
    parts += [table_html(table) for table in section.tables]
    parts.append(plots_html(section.plots))
    if section.videos:
        parts.append('<div class="videos">' + "".join(video_html(v) for v in section.videos)
                     + "</div>")
    parts += [f'<div class="placeholder">missing: {escape(m)}</div>'
              for m in section.missing_files]
    return "".join(parts) + "</section>"


def not_run_command(section: Section, scale: str) -> str:
    return (f"<code>repro submit {escape(section.target.name)} --scale {escape(scale)}</code>")


def summary_html(sections: list[Section], scale: str, shown: set[str]) -> str:
    rows = []
    for s in sections:
        name = escape(s.target.name)
        if s.target.name in shown:
            name = f'<a href="#target-{name}">{name}</a>'
        if not s.has_results:
            rows.append(f'<tr class="notrun"><td>{name}</td><td>not run: '
                        f"{not_run_command(s, scale)}</td><td></td><td></td><td></td></tr>")
            continue
        paper_cells, ours, outside = s.counts()
        flags = " · random-weights detectors" if s.random_weights else ""
        rows.append(f"<tr><td>{name}</td><td>results{escape(flags)}</td>"
                    f"<td>{ours} of {paper_cells}</td><td>{outside}</td>"
                    f"<td>{escape('; '.join(p.short for p in s.problems)) or 'none'}</td></tr>")
    return ("<h2>Summary</h2><div class=\"scroll\"><table class=\"summary\"><thead><tr>"
            "<th>target</th><th>status</th><th>paper cells with ours</th>"
            "<th>paper outside our interval</th><th>missing or stale</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>" + md(OUTSIDE_NOTE))


def bench_html(records: list[tuple[str, dict]]) -> str:
    parts = ["<h2 id=\"benchmarks\">Benchmarks (results/bench)</h2>"]
    for name, record in records:
        scalars = {k: v for k, v in record.items()
                   if isinstance(v, (str, int, float, bool)) and k not in ("what", "note")}
        rows = "".join(f"<tr><td>{escape(k)}</td><td>{escape(_short(v))}</td></tr>"
                       for k, v in scalars.items())
        parts.append(f"<h3>{escape(name)}</h3><p>{escape(str(record.get('what', '')))}</p>"
                     f'<div class="scroll"><table><tbody>{rows}</tbody></table></div>'
                     f"<details><summary>the whole record</summary><pre>"
                     f"{escape(json.dumps(record, indent=1))}</pre></details>")
    return "".join(parts)


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render_page(scale: str, sections: list[Section], sensitivity: Path | None,
                bench: list[tuple[str, dict]], named: bool = False) -> str:
    """The page; targets without results get a section of their own only when `named`
    (asked for by name), else just their summary row."""
    from repro.jobs.state import git_commit
    random = any(s.random_weights for s in sections)
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    body = [f"<h1>MaskGWM reproduction: results at scale {escape(scale)}</h1>",
            f"<p>Written {escape(stamp)} by <code>repro report</code> at commit "
            f"<code>{escape(git_commit())}</code>. Paper numbers from results/paper; ours "
            "from results/&lt;target&gt;. Hover a number of ours (or open a table's "
            "provenance) for where it comes from.</p>"]
    if random:
        body.append(f'<div class="banner">Some numbers below: {escape(RANDOM_WEIGHTS_NOTE)}'
                    "</div>")
    shown = [s for s in sections if named or s.has_results]
    body.append(summary_html(sections, scale, {s.target.name for s in shown}))
    body += [section_html(s, scale) for s in shown]
    if sensitivity:
        body.append('<h2 id="sensitivity">Protocol sensitivity</h2>'
                    + md(sensitivity.read_text()))
    body.append(bench_html(bench))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>MaskGWM reproduction ({escape(scale)})</title><style>{STYLE}</style>"
            f"<script>{SCRIPT}</script></head><body>{''.join(body)}</body></html>\n")
