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

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _check_files(out: str, stems: list[Path]) -> None:
    for stem in stems:
        for ext, magic in (("png", PNG_MAGIC), ("pdf", b"%PDF")):
            path = stem.with_suffix(f".{ext}")
            assert path.exists() and path.stat().st_size > 1000, path
            assert path.read_bytes()[:len(magic)] == magic
            assert str(path) in out
        # atomic writes leave no temp files behind
        assert not [p for p in stem.parent.iterdir() if p.name.startswith(".")]


def test_plot_table_target(cli, isolated):
    write_results("table3a", "smoke", isolated / "work", skip=("ours",))
    res = cli("collect", "table3a", "--scale", "smoke", "--partial")
    assert res.code == 0, res.err
    res = cli("plot", "table3a", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "table3a-smoke"])


def test_plot_long_horizon(cli, isolated):
    write_results("fig7", "smoke", isolated / "work")
    assert cli("collect", "fig7", "--scale", "smoke").code == 0
    res = cli("plot", "fig7", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "fig7-smoke"])


def test_plot_without_results(cli, isolated):
    """Nothing collected yet: the paper's values alone, still a figure."""
    res = cli("plot", "table2")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "table2-paper"])


def test_plot_qualitative(cli, isolated):
    import numpy as np

    from evals.videoset import write_videoset
    from repro.jobs import load_target, resolve_target

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


def test_plot_with_seeds_uses_the_seed_mean(cli, isolated):
    import numpy as np
    import pandas as pd

    from repro.plot import _seed_mean
    from repro.table import load_ours
    write_results("fig7", "smoke", isolated / "work", seeds=2)
    assert cli("collect", "fig7", "--scale", "smoke", "--seeds", "2").code == 0
    res = cli("plot", "fig7", "--scale", "smoke")
    assert res.code == 0, res.err
    _check_files(res.out, [isolated / "results" / "plots" / "fig7-smoke"])
    ours = load_ours("fig7", isolated / "results")
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
    from repro.plot import metric_label
    ours = pd.DataFrame({"metric": ["FVD", "FID"],
                         "fvd_flavour": [fvd_flavour("i3d-400").name, ""]})
    assert metric_label("FVD", ours) == "FVD (TATS-FVD)"
    assert metric_label("FID", ours) == "FID"
    assert metric_label("FVD", ours.drop(columns="fvd_flavour")) == "FVD"   # older CSVs
