"""FVD flavours (issue 20, point 8): each detector names its FVD, results and tables carry it."""
from __future__ import annotations

import re

import numpy as np
import pytest

from evals.evaluate import compute_result, format_result
from evals.extractors import DetectorInfo
from evals.parts import Part, PartKey
from evals.pipeline import clip_order_hash
from evals.protocols import (FVD_DETECTORS, FVD_FLAVOURS, PAPER_FVD_NOTE, PROTOCOLS, fvd_flavour,
                             get_protocol, result_fvd_flavour)
from evals.stats import FeatureStats

TATS = FVD_FLAVOURS["i3d-400"].name
STYLEGAN_V = FVD_FLAVOURS["i3d-torchscript"].name


def _result(protocol, n_clips: int = 6, dim: int = 4) -> dict:
    """compute_result on random features for `protocol`, one measurement point."""
    rng = np.random.default_rng(0)
    parts = {}
    for side, offset in (("gen", 0.5), ("ref", 0.0)):
        for metric in ("fid", "fvd"):
            stats = FeatureStats(dim, n_blocks=n_clips)
            raw = rng.normal(offset, 1.0, size=(n_clips, dim))
            for clip in range(n_clips):
                stats.update(raw[clip:clip + 1], clip, source=f"{side}{clip}")
            parts[PartKey(0, side, metric)] = Part(stats, raw, np.arange(n_clips))
    detectors = [DetectorInfo("fid", protocol.fid.detector, None, None, True, 7).to_dict(),
                 DetectorInfo("fvd", protocol.fvd.detector, None, None, True, 7).to_dict()]
    meta = {"kind": "evaluation", "protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "clip_order_hash": clip_order_hash([str(i) for i in range(n_clips)]),
            "clip_list_hash": None, "n_clips": n_clips, "detectors": detectors,
            "shard": [0, 1], "generated": {"path": "gen"}, "reference": {"path": "ref"},
            "measurement_points": protocol.measurement_points()[:1]}
    return compute_result(protocol, parts, meta)


def test_each_fvd_detector_names_its_flavour():
    assert FVD_DETECTORS == ("i3d-400", "i3d-torchscript") == tuple(FVD_FLAVOURS)
    tats = fvd_flavour("i3d-400")
    assert tats.tag == "TATS-FVD" and TATS.startswith("TATS-FVD (")
    assert "eps 1e-5" in TATS and "/(N-1)" in TATS
    assert "1e-3" in tats.note and "not the original TF FVD" in tats.note
    assert "StyleGAN-V" in STYLEGAN_V and "/(N-1)" in STYLEGAN_V and "/N" in STYLEGAN_V
    assert "divides the covariance by N, we by N-1" in FVD_FLAVOURS["i3d-torchscript"].note
    with pytest.raises(ValueError, match="unknown FVD detector 'i3d-tf'"):
        fvd_flavour("i3d-tf")
    for protocol in PROTOCOLS.values():
        assert protocol.fvd_flavour.name == TATS
    assert get_protocol("vista_nuscenes").replace(
        **{"fvd.detector": "i3d-torchscript"}).fvd_flavour.name == STYLEGAN_V


def test_the_flavour_is_not_hashed():
    """A property, not a field: hashes (and so cached features) are unchanged."""
    vista = get_protocol("vista_nuscenes")
    assert "flavour" not in str(vista.to_dict()) and vista.hash == "41a9c60ca47cea09"


def test_the_paper_note_names_the_likely_flavour_and_why_it_is_uncertain():
    assert "most likely TATS-FVD" in PAPER_FVD_NOTE
    for reason in ("modified from LVDM", "i3d_pretrained_400.pt", "never released",
                   "#9", "#60", "other FVD variants"):
        assert reason in PAPER_FVD_NOTE, reason


def test_every_result_and_point_names_its_fvd_flavour():
    result = _result(get_protocol("vista_nuscenes"))
    assert result["fvd_flavour"] == {"detector": "i3d-400", "tag": "TATS-FVD", "name": TATS,
                                     "note": FVD_FLAVOURS["i3d-400"].note}
    assert [p["fvd"]["flavour"] for p in result["points"]] == [TATS]
    text = format_result(result)
    assert f"FVD flavour: {TATS}" in text
    assert re.search(r"  TATS-FVD \d", text) and not re.search(r"(^|[^-])FVD \d", text)
    other = _result(get_protocol("vista_nuscenes").replace(**{"fvd.detector": "i3d-torchscript"}))
    assert other["points"][0]["fvd"]["flavour"] == STYLEGAN_V
    assert other["points"][0]["fvd"]["value"] == result["points"][0]["fvd"]["value"]
    older = {k: v for k, v in other.items() if k != "fvd_flavour"}     # written before flavours
    assert result_fvd_flavour(older)["name"] == STYLEGAN_V


def _table2(tmp_path, detector: str | None):
    """Render table2 with our rows collected from results under `detector` (None: no rows)."""
    from repro.report.collect import csv_path, rows_from_result, to_csv
    from repro.targets.jobfiles import load_target, resolve_target
    from repro.report.table import render_target_table
    target = load_target("table2")
    if detector is not None:
        rows = []
        for run in resolve_target(target, "smoke"):
            if run.cells:
                protocol = get_protocol(run.protocol).replace(**{"fvd.detector": detector})
                rows += rows_from_result(_result(protocol), run, "smoke", tmp_path / "r.json")
        path = csv_path("table2", "smoke", tmp_path)
        path.parent.mkdir(parents=True)
        path.write_text(to_csv(rows))
        flavours = {(r["metric"], r["fvd_flavour"]) for r in rows}
        assert flavours == {("FID", ""), ("FVD", FVD_FLAVOURS[detector].name)}
    return render_target_table(target, "smoke", tmp_path)


def test_table_footnotes_name_the_fvd_flavour(tmp_path):
    page = _table2(tmp_path / "none", None)      # nothing collected: the protocol's flavour
    assert f"FVD ours (by the protocol): {TATS}. FVD paper: most likely TATS-FVD" in page
    assert PAPER_FVD_NOTE in page
    page = _table2(tmp_path / "tats", "i3d-400")
    assert f"FVD ours: {TATS}. FVD paper: most likely TATS-FVD" in page
    page = _table2(tmp_path / "stylegan", "i3d-torchscript")   # derived from the results
    assert f"FVD ours: {STYLEGAN_V}. FVD paper" in page and f"FVD ours: {TATS}" not in page
    assert FVD_FLAVOURS["i3d-torchscript"].note in page
