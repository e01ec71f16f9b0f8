"""`repro plot`: PNG and PDF figures of our collected numbers beside the paper's."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# the result-file builder of test_collect.py (tests run with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location("_repro_test_collect",
                                               Path(__file__).with_name("test_collect.py"))
_collect_tests = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_collect_tests)
write_results = _collect_tests.write_results
write_summaries = _collect_tests.write_summaries

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def capture_figures(monkeypatch) -> list[dict]:
    """What each figure that repro.report.plot saves shows, read off its axes before it is written:
    per axes its title, x tick labels, bars by legend label ((centre, height) pairs) and lines
    by label ((x, y) arrays)."""
    from matplotlib.container import BarContainer

    from repro.report import plot
    figures, save = [], plot.save_figure

    def recording_save(fig, stem):
        axes = []
        for ax in fig.axes:
            bars: dict[str, list] = {}
            for container in ax.containers:
                if isinstance(container, BarContainer):
                    bars.setdefault(container.get_label(), []).extend(
                        (p.get_x() + p.get_width() / 2, p.get_height()) for p in container)
            axes.append({"title": ax.get_title(),
                         "ticks": [t.get_text() for t in ax.get_xticklabels()],
                         "bars": bars,
                         "lines": {line.get_label(): (list(line.get_xdata()),
                                                      list(line.get_ydata()))
                                   for line in ax.get_lines()}})
        figures.append({"stem": stem, "axes": axes})
        return save(fig, stem)

    monkeypatch.setattr(plot, "save_figure", recording_save)
    return figures


def bar_heights(axes: dict, label: str, names: dict[str, str]) -> dict[str, float]:
    """{cell: height} of the bars labelled `label` ("paper", "ours"); `names` maps each cell to
    its tick label, and a bar belongs to the nearest tick (paper left of it, ours right)."""
    cell_of = {name: cell for cell, name in names.items()}
    return {cell_of[axes["ticks"][round(x)]]: h for x, h in axes["bars"].get(label, [])}


def axes_metric(axes: dict) -> str:
    return axes["title"].split(": ", 1)[1].split()[0]      # "table3a: FVD (TATS-FVD)" -> FVD


def check_bars(figure: dict, table: str, ours) -> None:
    """Every panel's paper bars are the paper's values and its bars of ours the collected CSV's
    (`ours`: the CSV rows of this table; empty: no bars of ours)."""
    from repro.targets import paper
    from repro.report.plot import _cell_labels
    ref = paper.load_paper_table(table)
    names = _cell_labels(ref)
    assert sorted(axes_metric(a) for a in figure["axes"]) == sorted(set(ref["metric"]))
    for axes in figure["axes"]:
        metric = axes_metric(axes)
        assert axes["ticks"] == [names[c] for c in dict.fromkeys(ref["cell"])]
        stated = ref[(ref["metric"] == metric) & ref["value"].notna()]
        assert bar_heights(axes, "paper", names) == pytest.approx(
            dict(zip(stated["cell"], stated["value"].astype(float))))
        mine = ours[ours["metric"] == metric] if len(ours) else ours
        expected = dict(zip(mine["cell"], mine["value"].astype(float))) if len(mine) else {}
        assert bar_heights(axes, "ours", names) == pytest.approx(expected, rel=1e-12)


def check_curves(figure: dict, table: str, ours) -> None:
    """Each line of ours is its cell's collected values against seconds, the mean over seeds
    where there are several."""
    from repro.targets import paper
    from repro.report.plot import _cell_labels
    names = _cell_labels(paper.load_paper_table(table))
    assert sorted(axes_metric(a) for a in figure["axes"]) == ["FID", "FVD"]
    for axes in figure["axes"]:
        metric = axes_metric(axes)
        mine = ours[ours["metric"] == metric]
        lines = {k: v for k, v in axes["lines"].items() if k.endswith(" (ours)")}
        assert sorted(lines) == sorted(f"{names[c]} (ours)" for c in set(mine["cell"]))
        for cell, rows in mine.groupby("cell"):
            means = rows.groupby("seconds")["value"].mean().sort_index()
            x, y = lines[f"{names[cell]} (ours)"]
            assert x == pytest.approx(list(means.index))
            assert y == pytest.approx(list(means.to_numpy()), rel=1e-12)


def _check_files(out: str, stems: list[Path]) -> None:
    for stem in stems:
        for ext, magic in (("png", PNG_MAGIC), ("pdf", b"%PDF")):
            path = stem.with_suffix(f".{ext}")
            assert path.exists() and path.stat().st_size > 1000, path
            assert path.read_bytes()[:len(magic)] == magic
            assert str(path) in out
        # atomic writes leave no temp files behind
        assert not [p for p in stem.parent.iterdir() if p.name.startswith(".")]


def test_plot_table_target(cli, isolated, monkeypatch):
    import pandas as pd
    figures = capture_figures(monkeypatch)
    write_results("table3a", "smoke", isolated / "work", skip=("ours",))
    res = cli("collect", "table3a", "--scale", "smoke", "--partial")
    assert res.code == 0, res.err
    res = cli("plot", "table3a", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "table3a-smoke"])
    ours = pd.read_csv(isolated / "results" / "table3a" / "smoke.csv")
    assert len(ours) == 10 and "ours" not in set(ours["cell"])      # the skipped run: no bar
    (figure,) = figures
    check_bars(figure, "table3a", ours)


def test_plot_table4a_has_fvd_and_time_panels(cli, isolated, monkeypatch):
    import pandas as pd
    figures = capture_figures(monkeypatch)
    write_results("table4a", "smoke", isolated / "work")
    write_summaries("table4a", "smoke", isolated / "work", _collect_tests.TABLE4A_RATES)
    assert cli("collect", "table4a", "--scale", "smoke").code == 0
    res = cli("plot", "table4a", "--scale", "smoke")
    assert res.code == 0, res.err
    ours = pd.read_csv(isolated / "results" / "table4a" / "smoke.csv")
    (figure,) = figures
    assert [axes_metric(a) for a in figure["axes"]] == ["FVD", "Time"]
    check_bars(figure, "table4a", ours)        # the paper's days beside ours, per cell


def test_plot_long_horizon(cli, isolated, monkeypatch):
    import pandas as pd
    figures = capture_figures(monkeypatch)
    write_results("fig7", "smoke", isolated / "work")
    assert cli("collect", "fig7", "--scale", "smoke").code == 0
    res = cli("plot", "fig7", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "fig7-smoke"])
    ours = pd.read_csv(isolated / "results" / "fig7" / "smoke.csv")
    (figure,) = figures
    check_curves(figure, "fig7", ours)


def test_plot_without_results(cli, isolated, monkeypatch):
    """Nothing collected yet: the paper's values alone, still a figure."""
    import pandas as pd
    figures = capture_figures(monkeypatch)
    res = cli("plot", "table2")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "table2-paper"])
    (figure,) = figures
    check_bars(figure, "table2", pd.DataFrame())


def test_plot_qualitative(cli, isolated):
    import numpy as np

    from evals.videoset import write_videoset
    from repro.targets.jobfiles import load_target, resolve_target

    work = isolated / "work"
    runs = [r for r in resolve_target(load_target("table2"), "smoke") if r.cells]
    rng = np.random.default_rng(0)
    clips = {cid: rng.integers(0, 255, size=(5, 24, 40, 3), dtype=np.uint8)
             for cid in ("c1", "scene/2")}
    write_videoset(work / "evalsets" / f"{runs[0].protocol}-smoke" / "real", clips.items(), 10.0)
    # only the first run has generated its clips; the other gets a "not generated" row
    write_videoset(work / "runs" / runs[0].run_id / "eval" / runs[0].protocol / "generated",
                   ((cid, 255 - f) for cid, f in clips.items()), 10.0, cond_frames=1)
    res = cli("plot", "qualitative", "table2", "--scale", "smoke", "--clips", "c1,scene/2")
    assert res.code == 0, res.err
    gifs = sorted((isolated / "results" / "plots").glob("qualitative-table2-smoke-*.gif"))
    pngs = sorted((isolated / "results" / "plots").glob("qualitative-table2-smoke-*.png"))
    assert len(gifs) == 2 and len(pngs) == 2
    from PIL import Image
    with Image.open(gifs[0]) as gif:
        assert gif.n_frames == 5
        assert gif.height == 96 * (1 + len(runs))  # real + one row per run
    assert pngs[0].read_bytes()[:8] == PNG_MAGIC
    res = cli("plot", "qualitative", "table2", "--scale", "smoke", "--clips", "nope")
    assert res.code == 2 and "no real clip 'nope'" in res.err


def test_plot_with_seeds_uses_the_seed_mean(cli, isolated, monkeypatch):
    import numpy as np
    import pandas as pd

    from repro.report.plot import _seed_mean
    from repro.report.table import load_ours
    figures = capture_figures(monkeypatch)
    write_results("fig7", "smoke", isolated / "work", seeds=2)
    assert cli("collect", "fig7", "--scale", "smoke", "--seeds", "2").code == 0
    res = cli("plot", "fig7", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "fig7-smoke"])
    ours = load_ours("fig7", isolated / "results")
    assert ours.groupby(["cell", "metric", "seconds"])["seed"].nunique().eq(2).all()
    check_curves(figures[0], "fig7", ours)          # the lines are the means over both seeds
    mine = ours[(ours["cell"] == "mr") & (ours["metric"] == "FVD")]
    assert sorted(set(mine["seed"])) == [0, 1]
    summary = _seed_mean(mine.assign(_s=mine["seconds"].astype(float)), "_s")
    for _, row in summary.iterrows():
        values = mine[np.isclose(mine["seconds"].astype(float), row["_s"])]["value"]
        assert row["value"] == pytest.approx(values.mean())
        assert row["ci_high"] - row["value"] == pytest.approx(values.std(ddof=1))
    assert isinstance(summary, pd.DataFrame) and len(summary) == mine["seconds"].nunique()
    res = cli("plot", "table3b", "--scale", "smoke", "--seeds", "2")  # paper values only
    assert res.code == 0, res.err


def test_fvd_axes_name_the_flavour():
    import pandas as pd

    from evals.protocols import fvd_flavour
    from repro.report.plot import metric_label
    ours = pd.DataFrame({"metric": ["FVD", "FID"],
                         "fvd_flavour": [fvd_flavour("i3d-400").name, ""]})
    assert metric_label("FVD", ours) == "FVD (TATS-FVD)"
    assert metric_label("FID", ours) == "FID"
    assert metric_label("FVD", ours.drop(columns="fvd_flavour")) == "FVD"   # older CSVs
