"""`repro report`: the results page of a scale, from collected results (built here with
evals.evaluate.compute_result, as test_collect.py does) and real video sets."""
from __future__ import annotations

import csv
import importlib.util
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

from evals.videoset import write_videoset

_spec = importlib.util.spec_from_file_location("_repro_test_collect_site",
                                               Path(__file__).with_name("test_collect.py"))
_collect_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_collect_tests)
write_results = _collect_tests.write_results
write_summaries = _collect_tests.write_summaries


class Page(HTMLParser):
    """The parts of the page the tests look at: summary rows, table cells with classes and
    titles, and every src/href."""

    def __init__(self, text: str):
        super().__init__()
        self.refs: list[str] = []
        self.cells: list[dict] = []             # {"table", "classes", "title", "text"}
        self.summary: dict[str, list[str]] = {}
        self._table, self._summary, self._cell, self._row = None, False, None, None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("src", "href"):
            if attrs.get(key) and not attrs[key].startswith("#"):
                self.refs.append(attrs[key])
        if tag == "table":
            self._table = attrs.get("data-table")
            self._summary = "summary" in (attrs.get("class") or "")
        elif tag == "tr" and self._summary:
            self._row = []
        elif tag == "td":
            self._cell = {"table": self._table, "classes": (attrs.get("class") or "").split(),
                          "title": attrs.get("title", ""), "text": ""}

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            if self._row is not None:
                self._row.append(self._cell["text"].strip())
            elif self._table:
                self.cells.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._row:
                self.summary[self._row[0]] = self._row
            self._row = None
        elif tag == "table":
            self._table, self._summary = None, False


def _clips(work: Path, runs, generated_by: int) -> list[str]:
    """A real set for the runs' protocol and generated clips for the first `generated_by`
    runs; the clip ids."""
    rng = np.random.default_rng(0)
    clips = {cid: rng.integers(0, 255, size=(6, 24, 40, 3), dtype=np.uint8)
             for cid in ("c1", "scene/2", "c3")}
    write_videoset(work / "evalsets" / f"{runs[0].protocol}-smoke" / "real", clips.items(), 10.0)
    for run in runs[:generated_by]:
        write_videoset(work / "runs" / run.run_id / "eval" / run.protocol / "generated",
                       ((cid, 255 - f) for cid, f in clips.items()), 10.0, cond_frames=1)
    return list(clips)


def test_report_without_results_fails_and_says_what_to_run(cli, isolated):
    res = cli("report")
    assert res.code == 1 and "nothing to report" in res.err
    res = cli("report", "--scale", "smoke")
    assert res.code == 1 and "repro submit TARGET --scale smoke" in res.err
    assert not (isolated / "results" / "report").exists()


def test_page_shows_tables_counts_provenance_and_videos(cli, isolated):
    work = isolated / "work"
    runs = write_results("table3b", "smoke", work, skip=("ours",))
    assert cli("collect", "table3b", "--scale", "smoke", "--partial").code == 0
    _clips(work, [r for r in runs if r.cells], generated_by=2)
    index = isolated / "results" / "report" / "smoke" / "index.html"
    earlier = [index.parent / "videos" / "table3b-gone-clip.mp4", index.parent / "assets" /
               "table9-smoke.png"]              # an earlier page's files, not on this one
    for path in earlier:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"old")
    res = cli("report")                     # every scale with results: smoke only
    assert res.code == 0, res.err
    assert not any(path.exists() for path in earlier)
    assert res.out.strip() == f"report (smoke): {index}"
    text = index.read_text()
    page = Page(text)

    ours = [c for c in page.cells if c["table"] == "table3b" and "ours" in c["classes"]]
    assert len(ours) == 12                  # 6 rows x (FVD, FID)
    filled = [c for c in ours if c["text"]]
    assert len(filled) == 10                # the "ours" run has no result
    outside = [c for c in filled if "outside" in c["classes"]]
    _, status, with_ours, beyond, problems = page.summary["table3b"]
    assert status == "results · random-weights detectors"
    assert with_ours == "10 of 12" and int(beyond) == len(outside) and problems == "ours missing"
    for cell in filled:                     # provenance on hover: run, commit, detectors
        run_id = re.search(r"run_id (\w+)", cell["title"]).group(1)
        assert run_id in {r.run_id for r in runs}
        assert "git_commit abc1234" in cell["title"] and "random-weights" in cell["title"]
    assert "random-weights detector: not comparable" in text      # the banner
    assert "missing: ours (run" in text and "repro submit table3b --scale smoke" in text
    assert page.summary["table1"][1].startswith("not run: repro submit table1 --scale smoke")
    assert 'id="target-table1"' not in text  # not-run targets: a summary row only

    for ref in page.refs:                   # everything the page links to is beside it
        assert not re.match(r"[a-z]+:", ref), ref
        assert (index.parent / ref).is_file(), ref
    videos = sorted(p.name for p in (index.parent / "videos").iterdir())
    assert len([v for v in videos if v.endswith(".mp4")]) == 2    # CLIPS_PER_PROTOCOL
    assert len([v for v in videos if v.endswith(".gif")]) == 2
    mp4 = next(p for p in (index.parent / "videos").iterdir() if p.suffix == ".mp4")
    assert mp4.read_bytes()[4:8] == b"ftyp"
    assert {"assets/table3b-smoke.png", "assets/table3b-smoke.pdf"} <= set(page.refs)


def test_page_shows_training_time_and_its_ratio(cli, isolated):
    work = isolated / "work"
    write_results("table4a", "smoke", work)
    days = write_summaries("table4a", "smoke", work, _collect_tests.TABLE4A_RATES)
    assert cli("collect", "table4a", "--scale", "smoke").code == 0
    assert cli("report", "--scale", "smoke", "--no-videos").code == 0
    text = (isolated / "results" / "report" / "smoke" / "index.html").read_text()
    page = Page(text)
    assert "<th>n Time</th><th>Time ratio paper</th><th>Time ratio ours</th>" in text
    cells = [c for c in page.cells if c["table"] == "table4a"]
    rows = [cells[i:i + 13] for i in range(0, len(cells), 13)]   # 3 keys, 2 x 4, 2 ratios
    assert len(rows) == 4 and len(cells) == 52
    first = days["table4a/time-r0.1"]
    for row in rows:
        mine = days[f"table4a/{row[0]['text']}"]
        time, ratio = row[8], row[12]
        assert "ours" in time["classes"] and time["text"] == f"{mine:.3g}"
        assert "device NVIDIA H100 80GB HBM3; world_size 8; strategy fsdp" in time["title"]
        assert "ours" in ratio["classes"] and ratio["text"] == f"{mine / first:.3f}"
        assert row[11]["text"] and "ours" not in row[11]["classes"]    # the paper's ratio
    assert page.summary["table4a"][2] == "8 of 8"   # FVD and Time; ratios are not cells
    assert "Time ours: training days per 10K steps" in text
    assert "<td>NVIDIA H100 80GB HBM3</td>" in text    # the provenance block has the device


def test_missing_real_clips_and_stale_csv_are_shown_not_hidden(cli, isolated):
    work = isolated / "work"
    write_results("table3b", "smoke", work)
    assert cli("collect", "table3b", "--scale", "smoke").code == 0
    path = isolated / "results" / "table3b" / "smoke.csv"
    rows = list(csv.DictReader(path.open()))
    for row in rows:                        # as if scored under an older protocol version
        row["protocol_hash"] = "0ld0ld0ld0ld0ld0"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    res = cli("report", "table3b", "table1", "--scale", "smoke")
    assert res.code == 0, res.err
    text = (isolated / "results" / "report" / "smoke" / "index.html").read_text()
    assert f"STALE: {path} holds protocol opendv_ablation version 0ld0ld0ld0ld0ld0" in text
    assert "`repro collect table3b --scale smoke`" in text or \
        "repro collect table3b --scale smoke" in text
    real = work / "evalsets" / "opendv_ablation-smoke" / "real"
    assert f'class="placeholder">missing: {real}' in text
    assert "missing" in res.out and str(real) in res.out
    assert 'id="target-table1"' in text and "not run at scale smoke" in text  # named
    res = cli("report", "table1", "--scale", "smoke")
    assert res.code == 1 and "nothing to report at scale smoke" in res.err


def test_markdown_marks_paper_values_outside_our_interval(cli, isolated):
    write_results("table3b", "smoke", isolated / "work")
    assert cli("collect", "table3b", "--scale", "smoke").code == 0
    res = cli("table", "table3b", "--scale", "smoke")
    rows = [line for line in res.out.splitlines() if line.startswith("| ")][1:]
    marked = [line for line in rows if "†" in line]
    ours = list(csv.DictReader((isolated / "results" / "table3b" / "smoke.csv").open()))
    from repro.targets import paper
    ref = paper.load_paper_table("table3b")
    expected = set()
    for row in ours:
        value = ref[(ref["cell"] == row["cell"]) & (ref["metric"] == row["metric"])]["value"]
        if not float(row["ci_low"]) <= float(value.iloc[0]) <= float(row["ci_high"]):
            expected.add(row["cell"])
    assert {line.split("|")[1].strip() for line in marked} == expected
    assert expected, "random features are far from the paper's values"
    assert "`†`: the paper's value lies outside" in res.out


def test_seed_noise_marks_reach_the_page(cli, isolated):
    """Several seeds: ours is mean ± std and the row that differs from the first beyond seed
    noise is marked (the Markdown `*`), and only that one."""
    _collect_tests._seed_csv(
        isolated / "results" / "table3b" / "smoke.csv",
        {("no-mr", "FVD"): [100.0, 101.0, 102.5], ("time", "FVD"): [110.0, 111.5, 112.0],
         ("time-row", "FVD"): [101.0, 102.0, 104.0]})
    res = cli("report", "--scale", "smoke", "--no-videos")
    assert res.code == 0, res.err
    page = Page((isolated / "results" / "report" / "smoke" / "index.html").read_text())
    marked = [c["text"] for c in page.cells if "beyond-noise" in c["classes"]]
    assert len(marked) == 1 and marked[0].endswith(" *")
    assert any(c["text"].endswith("(3 seeds)") for c in page.cells if "ours" in c["classes"])


def test_a_plot_that_cannot_be_drawn_is_a_placeholder_naming_it(cli, isolated, monkeypatch):
    write_results("table3b", "smoke", isolated / "work")
    assert cli("collect", "table3b", "--scale", "smoke").code == 0

    def full_disk(fig, stem):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("repro.report.plot.save_figure", full_disk)
    res = cli("report", "--scale", "smoke", "--no-videos")
    assert res.code == 0, res.err
    text = (isolated / "results" / "report" / "smoke" / "index.html").read_text()
    png = isolated / "results" / "plots" / "table3b-smoke.png"
    assert f'class="placeholder">missing: {png} ([Errno 28] No space left on device)' in text
    assert "<img" not in text.split('id="target-table3b"')[1].split("</section>")[0]
