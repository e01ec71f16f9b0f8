"""`repro collect`: evaluation results of a target's runs -> results/<target>/<scale>.csv."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from evals.evaluate import compute_result
from evals.extractors import DetectorInfo
from evals.pipeline import clip_order_hash
from evals.protocols import PROTOCOLS
from evals.stats import FeatureStats
from repro.collect import COLUMNS, result_path
from repro.jobs import load_target, resolve_target

N_CLIPS, DIM = 12, 6


def _parts(n_points: int, shift: float, seed: int) -> dict:
    """Per-point gen/ref feature statistics of random features, as evals.pipeline makes them."""
    rng = np.random.default_rng(seed)
    parts = {}
    for p in range(n_points):
        for side, offset in (("gen", shift * (1 + p)), ("ref", 0.0)):
            for metric, per_clip in (("fid", 3), ("fvd", 1)):
                stats = FeatureStats(DIM, n_blocks=N_CLIPS)
                raw, clips = [], []
                for clip in range(N_CLIPS):
                    feats = rng.normal(offset, 1.0, size=(per_clip, DIM))
                    stats.update(feats, clip, source=f"{side}{clip}")
                    raw.append(feats)
                    clips.append(np.full(per_clip, clip))
                parts[f"p{p}-{side}-{metric}"] = {"stats": stats, "raw": np.concatenate(raw),
                                                   "clips": np.concatenate(clips)}
    return parts


def make_result(run, protocol_changes: dict | None = None, shift: float = 0.5,
                seed: int = 0) -> dict:
    """A result.json body for `run`, computed by evals.evaluate.compute_result."""
    protocol = PROTOCOLS[run.protocol].replace(
        n_clips=N_CLIPS, **{"bootstrap.n_boot": 20, "kid.subsets": 3, "kid.subset_size": 4},
        **(protocol_changes or {}))
    detectors = [DetectorInfo("fid", protocol.fid.detector, None, None, True, 7).to_dict(),
                 DetectorInfo("fvd", protocol.fvd.detector, None, None, True, 7).to_dict()]
    clip_ids = [f"clip{i:03d}" for i in range(N_CLIPS)]
    meta = {"kind": "evaluation", "protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "clip_order_hash": clip_order_hash(clip_ids), "clip_list_hash": "cl" + "0" * 14,
            "n_clips": N_CLIPS, "detectors": detectors, "shard": [0, 1],
            "generated": {"path": "gen", "fingerprint": "g"},
            "reference": {"path": "ref", "fingerprint": "r"}}
    n_points = len(protocol.measurement_points())
    result = compute_result(protocol, meta, _parts(n_points, shift, seed))
    result["provenance"] = {"git_commit": "abc1234", "run_id": run.run_id,
                            "config_hash": "cfg" + run.run_id, "protocol_hash": protocol.hash,
                            "clip_list_hash": meta["clip_list_hash"],
                            "detectors": "random-weights", "n": N_CLIPS}
    return result


def write_results(target_name: str, scale: str, workdir: Path, skip: tuple[str, ...] = (),
                  protocol_changes: dict | None = None) -> list:
    """result.json for every run of the target with cells (except `skip` run names)."""
    runs = [r for r in resolve_target(load_target(target_name), scale) if r.cells]
    for i, run in enumerate(runs):
        if run.name in skip:
            continue
        path = result_path(run, workdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(make_result(run, protocol_changes, shift=0.3 + 0.2 * i,
                                               seed=i), default=float))
    return runs


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_collect_writes_csv_with_provenance(cli, isolated):
    runs = write_results("table2", "smoke", isolated / "work")
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 0, res.err
    path = isolated / "results" / "table2" / "smoke.csv"
    assert str(path) in res.out
    rows = _rows(path)
    assert tuple(rows[0]) == COLUMNS
    cells = {run.cells[0].split("/")[1]: run for run in runs}
    assert {(r["cell"], r["metric"]) for r in rows} == {(c, m) for c in cells
                                                        for m in ("FID", "FVD")}
    for row in rows:
        run = cells[row["cell"]]
        assert row["table"] == "table2" and row["scale"] == "smoke"
        assert row["run_id"] == run.run_id and row["config_hash"] == "cfg" + run.run_id
        assert row["git_commit"] == "abc1234" and row["protocol"] == "waymo_zeroshot"
        assert row["random_weights"] == "True" and "random-weights" in row["detector_sha256"]
        assert row["seconds"] == ""  # not a long-horizon protocol
        assert float(row["ci_low"]) <= float(row["ci_high"])  # bootstrap FD is biased up
        assert int(row["n"]) == (N_CLIPS * 3 if row["metric"] == "FID" else N_CLIPS)
        assert len(row["protocol_hash"]) == 16 and row["clip_list_hash"]
    # no paper numbers in our results tree
    assert not (isolated / "results" / "paper").exists()


def test_long_horizon_points_have_seconds(cli, isolated):
    write_results("fig7", "smoke", isolated / "work")
    assert cli("collect", "fig7", "--scale", "smoke").code == 0
    rows = _rows(isolated / "results" / "fig7" / "smoke.csv")
    seconds = sorted({float(r["seconds"]) for r in rows})
    expected = [s for _, s in PROTOCOLS["opendv_long"].measurement_points()]
    assert seconds == sorted(round(s, 3) for s in expected)
    assert len(rows) == 2 * 2 * len(expected)


def test_missing_results_are_listed(cli, isolated):
    runs = write_results("table2", "smoke", isolated / "work", skip=("vista",))
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code != 0
    vista = next(r for r in runs if r.name == "vista")
    assert "vista" in res.err and vista.run_id in res.err and "table2/vista-official" in res.err
    assert not (isolated / "results" / "table2" / "smoke.csv").exists()
    res = cli("collect", "table2", "--scale", "smoke", "--partial")
    assert res.code == 0, res.err
    rows = _rows(isolated / "results" / "table2" / "smoke.csv")
    assert {r["cell"] for r in rows} == {"maskgwm-long"}


def test_nothing_evaluated_is_an_error(cli, isolated):
    res = cli("collect", "table2", "--scale", "smoke", "--partial")
    assert res.code != 0 and "no result yet for 2 run(s)" in res.err


def test_mixed_protocol_hashes_refused(cli, isolated):
    work = isolated / "work"
    runs = write_results("table2", "smoke", work)
    # one run re-evaluated with another protocol version
    path = result_path(runs[-1], work)
    path.write_text(json.dumps(make_result(runs[-1], {"fvd.num_frames": 16}), default=float))
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 2 and "different protocol versions" in res.err
    assert not (isolated / "results" / "table2" / "smoke.csv").exists()


def test_csv_of_another_protocol_version_not_overwritten(cli, isolated):
    work = isolated / "work"
    write_results("table2", "smoke", work)
    assert cli("collect", "table2", "--scale", "smoke").code == 0
    csv_file = isolated / "results" / "table2" / "smoke.csv"
    before = csv_file.read_bytes()
    write_results("table2", "smoke", work, protocol_changes={"fvd.num_frames": 16})
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 2 and "nothing overwritten" in res.err and str(csv_file) in res.err
    assert csv_file.read_bytes() == before
    # the same version collected again replaces the CSV
    write_results("table2", "smoke", work)
    assert cli("collect", "table2", "--scale", "smoke").code == 0


def test_table_shows_ours_beside_paper(cli, isolated):
    write_results("table2", "smoke", isolated / "work")
    assert cli("collect", "table2", "--scale", "smoke").code == 0
    res = cli("table", "table2", "--scale", "smoke")
    assert res.code == 0, res.err
    rows = _rows(isolated / "results" / "table2" / "smoke.csv")
    ours = {(r["cell"], r["metric"]): float(r["value"]) for r in rows}
    assert "random-weights detector: not comparable with published numbers" in res.out
    lines = [line for line in res.out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for line in lines[1:]:
        cols = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        for metric in ("FVD", "FID"):
            assert cols[f"{metric} paper"]  # the paper's number is there
            mine = cols[f"{metric} ours"]
            assert mine.startswith(f"{ours[(cols['cell'], metric)]:.2f}") and "[" in mine
            assert cols[f"n {metric}"] == str(N_CLIPS * 3 if metric == "FID" else N_CLIPS)
