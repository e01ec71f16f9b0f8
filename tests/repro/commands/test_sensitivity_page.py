"""The sensitivity results page (repro/commands/sensitivity.py): every protocol choice per set, the
largest moves and the provenance, from scored variants (no detectors run here)."""
from __future__ import annotations

from evals.protocols import get_protocol
from repro.commands.sensitivity import SENSITIVITY_VARIANTS, SKIPPED, page_markdown


def _scored(shift: float) -> dict:
    rows = []
    for i, (label, _) in enumerate(SENSITIVITY_VARIANTS):
        if "TorchScript" in label:
            rows.append({"label": label, "skipped": SKIPPED})
            continue
        fid, fvd = 10.0 + i * shift, 100.0 - i * shift
        rows.append({"label": label, "hash": f"h{i}", "fid": fid, "fvd": fvd,
                     "d_fid": fid - 10.0, "d_fvd": fvd - 100.0})
    return {"rows": rows, "path": f"/sets/{shift}", "meta": {
        "label": "random-weights detector: not comparable with published numbers",
        "n_clips": 3, "fid_n": 6, "fvd_n": 3,
        "detectors": {"fid": "random-weights", "fvd": "random-weights"}}}


def test_page_lists_every_choice_for_every_set_with_provenance():
    base = get_protocol("vista_nuscenes")
    text = page_markdown(base, "/real", {"ours": _scored(1.0), "Vista": _scored(2.0)},
                         "abc123", "repro eval-sensitivity ...", banner="DEMONSTRATION ONLY")
    lines = text.splitlines()
    assert "> **DEMONSTRATION ONLY**" in lines
    assert lines[4] == ("| protocol choice | ours: FID (Δ) | ours: FVD (Δ) | Vista: FID (Δ) "
                        "| Vista: FVD (Δ) |")
    assert "| FVD on the first 16 frames | 11.00 (+1.00) | 99.00 (-1.00) | 12.00 (+2.00) | "\
        "98.00 (-2.00) |" in lines
    rows = sum(line.startswith("| ") for line in lines)
    assert rows == 1 + len(SENSITIVITY_VARIANTS)             # header + one row per choice
    assert "- Vista: FID +12.00 (centre crop to a square before resizing); FVD -12.00 " \
        "(centre crop to a square before resizing)" in lines
    assert f"(hash `{base.hash}`)" in text and "`abc123`" in text
    assert "- FVD flavour of the base protocol: TATS-FVD (I3D port" in text
    assert "3 clips, FID on 6 frames, FVD on 3 videos" in text and "random-weights" in text
