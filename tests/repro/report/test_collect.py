"""`repro collect`: evaluation results of a target's runs -> results/<target>/<scale>.csv."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evals.evaluate import compute_result
from evals.extractors import DetectorInfo
from evals.parts import Part, PartKey
from evals.pipeline import clip_order_hash
from repro.jobs.evalsets import scaled_protocol
from evals.stats import FeatureStats
from repro.report.collect import COLUMNS, result_path
from repro.targets.jobfiles import load_target, resolve_target

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
                parts[PartKey(p, side, metric)] = Part(stats, np.concatenate(raw),
                                                       np.concatenate(clips))
    return parts


def make_result(run, protocol_changes: dict | None = None, shift: float = 0.5,
                seed: int = 0) -> dict:
    """A result.json body for `run`, computed by evals.evaluate.compute_result."""
    protocol = scaled_protocol(run.protocol, run.scale)   # what the code scores under now
    if protocol_changes:                                   # an older (or newer) version
        protocol = protocol.replace(**protocol_changes)
    detectors = [DetectorInfo("fid", protocol.fid.detector, None, None, True, 7).to_dict(),
                 DetectorInfo("fvd", protocol.fvd.detector, None, None, True, 7).to_dict()]
    clip_ids = [f"clip{i:03d}" for i in range(N_CLIPS)]
    meta = {"kind": "evaluation", "protocol": protocol.to_dict(), "protocol_hash": protocol.hash,
            "clip_order_hash": clip_order_hash(clip_ids), "clip_list_hash": "cl" + "0" * 14,
            "n_clips": N_CLIPS, "detectors": detectors, "shard": [0, 1],
            "generated": {"path": "gen", "fingerprint": "g"},
            "reference": {"path": "ref", "fingerprint": "r"},
            "measurement_points": protocol.measurement_points()}
    result = compute_result(protocol, _parts(len(meta["measurement_points"]), shift, seed), meta)
    result["provenance"] = {"git_commit": "abc1234", "run_id": run.run_id,
                            "config_hash": "cfg" + run.run_id, "protocol_hash": protocol.hash,
                            "clip_list_hash": meta["clip_list_hash"],
                            "detectors": "random-weights", "n": N_CLIPS}
    return result


def write_results(target_name: str, scale: str, workdir: Path, skip: tuple[str, ...] = (),
                  protocol_changes: dict | None = None, seeds: int = 1) -> list:
    """result.json for every run of the target with cells (except `skip` run names), for
    seeds 0..seeds-1."""
    runs = [r for r in resolve_target(load_target(target_name), scale, seeds) if r.cells]
    for i, run in enumerate(runs):
        if run.name in skip:
            continue
        path = result_path(run, workdir)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(make_result(run, protocol_changes, shift=0.3 + 0.2 * i,
                                               seed=i), default=float))
    return runs


def write_summaries(target_name: str, scale: str, workdir: Path, steps_per_s: dict[str, float],
                    device_name: str = "NVIDIA H100 80GB HBM3", world_size: int = 8,
                    strategy: str = "fsdp") -> dict[str, float]:
    """train/summary.json and done.json, as a finished training run leaves them, for each run
    named in `steps_per_s`; returns {cell id: days per 10K steps}."""
    runs = {r.name: r for r in resolve_target(load_target(target_name), scale)}
    days = {}
    for name, rate in steps_per_s.items():
        run = runs[name]
        folder = workdir / "runs" / run.run_id
        (folder / "train").mkdir(parents=True, exist_ok=True)
        (folder / "train" / "summary.json").write_text(json.dumps({
            "status": "done", "config_hash": "cfg" + run.run_id, "world_size": world_size,
            "device": "cuda:0", "device_name": device_name, "strategy": strategy,
            "global_batch": 64, "steps_timed": 400, "steps_per_s": rate,
            "train_time_s": 400 / rate}))
        (folder / "done.json").write_text(json.dumps({"finished": "2025-01-02T03:04:05+00:00",
                                                      "git_commit": "def5678"}))
        days.update({cell: 10000 / rate / 86400 for cell in run.cells})
    return days


TABLE4A_RATES = {"time-r0.1": 0.30, "time-r0.25": 0.32, "row-shift-r0.1": 0.31,
                 "row-shift-r0.25": 0.35}


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
    expected = [s for _, s in scaled_protocol("opendv_long", "smoke").measurement_points()]
    assert seconds == sorted(round(s, 3) for s in expected)
    assert len(rows) == 2 * 2 * len(expected)
    table = cli("table", "fig7", "--scale", "smoke").out
    for second in seconds:   # our measurement points get rows of their own, paper cells blank
        assert sum(f"| {second:g} |" in line for line in table.splitlines()) == 2, table


def test_missing_results_are_listed(cli, isolated, monkeypatch):
    runs = write_results("table2", "smoke", isolated / "work", skip=("vista",))
    # no Vista checkout: submit leaves the Vista run out, so collect does not wait for it
    monkeypatch.delenv("REPRO_VISTA_CHECKOUT", raising=False)
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 0 and "NOT RUN: Vista runs vista" in res.err
    assert {r["cell"] for r in _rows(isolated / "results" / "table2" / "smoke.csv")} == \
        {"maskgwm-long"}
    (isolated / "results" / "table2" / "smoke.csv").unlink()
    monkeypatch.setenv("REPRO_VISTA_CHECKOUT", str(isolated / "vista"))   # now it is due
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
    assert res.code != 0 and "no result yet for 1 run(s)" in res.err   # Vista: not run


def test_results_of_an_older_protocol_version_are_not_collected(cli, isolated):
    work = isolated / "work"
    runs = write_results("table2", "smoke", work)
    # one run was scored before the protocol changed (here: another FVD frame count)
    path = result_path(runs[-1], work)
    path.write_text(json.dumps(make_result(runs[-1], {"fvd.num_frames": 8}), default=float))
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 1 and "scored under an older protocol version" in res.err
    assert str(path) in res.err and "re-scores them" in res.err
    assert not (isolated / "results" / "table2" / "smoke.csv").exists()


def test_csv_of_another_protocol_version_not_overwritten(cli, isolated, monkeypatch):
    work = isolated / "work"
    write_results("table2", "smoke", work)
    assert cli("collect", "table2", "--scale", "smoke").code == 0
    csv_file = isolated / "results" / "table2" / "smoke.csv"
    before = csv_file.read_bytes()
    # the code's protocol changes, and the runs are re-scored under the new version
    import repro.jobs.evalsets as evalsets
    scaled = evalsets.scaled_protocol
    monkeypatch.setattr(evalsets, "scaled_protocol", lambda name, scale: scaled(
        name, scale).replace(**{"fvd.num_frames": 8}))
    write_results("table2", "smoke", work, protocol_changes={"fvd.num_frames": 8})
    res = cli("collect", "table2", "--scale", "smoke")
    assert res.code == 2 and "nothing overwritten" in res.err and str(csv_file) in res.err
    assert csv_file.read_bytes() == before
    csv_file.unlink()                 # moved away: the new version is collected
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


def test_a_non_numeric_value_in_our_csv_is_named(cli, isolated):
    write_results("table2", "smoke", isolated / "work")
    assert cli("collect", "table2", "--scale", "smoke").code == 0
    path = isolated / "results" / "table2" / "smoke.csv"
    rows = path.read_text().splitlines()
    header = rows[0].split(",")
    cells = rows[1].split(",")
    cells[header.index("value")] = "abc"
    path.write_text("\n".join([rows[0], ",".join(cells), *rows[2:]]) + "\n")
    res = cli("table", "table2", "--scale", "smoke")
    assert res.code == 2 and f"{path}: column value must hold numbers, row 2 has 'abc'" in res.err


def test_collect_seeds_summarises_mean_std_and_count(cli, isolated):
    runs = write_results("table2", "smoke", isolated / "work", seeds=3)
    assert sorted(r.seed for r in runs) == [0, 0, 1, 2]  # the Vista run is not replicated
    res = cli("collect", "table2", "--scale", "smoke", "--seeds", "3")
    assert res.code == 0, res.err
    assert "(3 seeds)" in res.out
    rows = _rows(isolated / "results" / "table2" / "smoke.csv")
    assert tuple(rows[0]) == COLUMNS
    ids = {(r.cells[0], r.seed): r.run_id for r in runs}
    groups: dict = {}
    for row in rows:
        assert row["run_id"] == ids[(f"table2/{row['cell']}", int(row["seed"]))]
        groups.setdefault((row["cell"], row["metric"]), []).append(row)
    assert {k: len(v) for k, v in groups.items()} == {
        ("maskgwm-long", "FID"): 3, ("maskgwm-long", "FVD"): 3,
        ("vista-official", "FID"): 1, ("vista-official", "FVD"): 1}
    for group in groups.values():
        values = np.array([float(r["value"]) for r in group])
        for row in group:
            assert int(row["n_seeds"]) == len(values)
            assert float(row["seed_mean"]) == pytest.approx(values.mean(), rel=1e-12)
            if len(values) > 1:
                assert float(row["seed_std"]) == pytest.approx(values.std(ddof=1), rel=1e-12)
            else:
                assert row["seed_std"] == ""
    assert len({r["value"] for r in groups[("maskgwm-long", "FVD")]}) == 3


def test_collect_seeds_lists_missing_replicas(cli, isolated):
    write_results("table2", "smoke", isolated / "work")  # seed 0 only
    res = cli("collect", "table2", "--scale", "smoke", "--seeds", "2")
    assert res.code == 1 and "maskgwm-long-seed1" in res.err
    assert cli("collect", "table2", "--scale", "smoke", "--seeds", "2", "--partial").code == 0
    rows = _rows(isolated / "results" / "table2" / "smoke.csv")
    assert {r["seed"] for r in rows} == {"0"} and {r["n_seeds"] for r in rows} == {"1"}


def _seed_csv(path: Path, values: dict) -> None:
    """A collected CSV with the given per-seed values {(cell, metric): [v0, v1, ...]}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        for (cell, metric), vals in values.items():
            for seed, v in enumerate(vals):
                writer.writerow({"table": "table3b", "cell": cell, "metric": metric,
                                 "seed": seed, "value": v, "n": 12, "scale": "smoke",
                                 "random_weights": False, "protocol": "opendv_ablation"})


def _table_columns(out: str) -> list[dict[str, str]]:
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
            for line in lines[1:]]


def test_table_marks_differences_beyond_seed_noise(cli, isolated):
    from repro.report.table import pooled_std
    base, big, small = [100.0, 101.0, 102.5], [110.0, 111.5, 112.0], [101.0, 102.0, 104.0]
    _seed_csv(isolated / "results" / "table3b" / "smoke.csv",
              {("no-mr", "FVD"): base, ("time", "FVD"): big, ("time-row", "FVD"): small,
               ("no-mr", "FID"): [5.0, 5.1, 5.2], ("time", "FID"): [5.05, 5.1, 5.2]})
    pooled = pooled_std((0, np.std(base, ddof=1), 3), (0, np.std(big, ddof=1), 3))
    assert pooled == pytest.approx(np.sqrt((np.var(base, ddof=1) + np.var(big, ddof=1)) / 2))
    res = cli("table", "table3b", "--scale", "smoke")
    assert res.code == 0, res.err
    rows = {r["cell"]: r for r in _table_columns(res.out)}
    assert rows["no-mr"]["vs no-mr FVD"] == "base"
    mean, std = np.mean(big), np.std(big, ddof=1)
    assert rows["time"]["FVD ours"] == f"{mean:.2f} ± {std:.2f} (3 seeds)"
    assert rows["time"]["vs no-mr FVD"] == f"{mean - np.mean(base):+.2f} *"   # 10 > 2 pooled
    diff = np.mean(small) - np.mean(base)
    assert rows["time-row"]["vs no-mr FVD"] == f"{diff:+.2f}"                 # 1.17 < 2 pooled
    assert not rows["time"]["vs no-mr FID"].endswith("*")
    assert rows["spatial"]["vs no-mr FVD"] == "" and rows["spatial"]["FVD ours"] == ""
    assert "2 x the pooled seed std" in res.out
    # --seeds 1: seed 0 only, the table as without seeds (no comparison column)
    res = cli("table", "table3b", "--scale", "smoke", "--seeds", "1")
    assert res.code == 0 and "vs no-mr" not in res.out and "±" not in res.out
    rows = {r["cell"]: r for r in _table_columns(res.out)}
    assert rows["time"]["FVD ours"] == f"{big[0]:.2f}"


def test_collect_turns_training_throughput_into_table4a_time(cli, isolated):
    work = isolated / "work"
    write_results("table4a", "smoke", work)
    days = write_summaries("table4a", "smoke", work, TABLE4A_RATES)
    assert cli("collect", "table4a", "--scale", "smoke").code == 0
    rows = _rows(isolated / "results" / "table4a" / "smoke.csv")
    # the new provenance columns come last: older readers find the others where they were
    assert tuple(rows[0]) == COLUMNS and COLUMNS[-3:] == ("device", "world_size", "strategy")
    assert COLUMNS.index("fvd_flavour") == 23
    times = {f"table4a/{r['cell']}": r for r in rows if r["metric"] == "Time"}
    assert set(times) == set(days)              # one Time row per Time cell
    for cell, row in times.items():
        assert float(row["value"]) == pytest.approx(days[cell], rel=1e-12)
        assert row["ci_low"] == row["ci_high"] == "" and row["n"] == "400"
        assert (row["device"], row["world_size"], row["strategy"]) == \
            ("NVIDIA H100 80GB HBM3", "8", "fsdp")
        assert row["git_commit"] == "def5678" and row["config_hash"] == "cfg" + row["run_id"]
        assert row["random_weights"] == "False" and row["protocol"] == ""
    res = cli("table", "table4a", "--scale", "smoke")
    assert res.code == 0, res.err
    table = {r["cell"]: r for r in _table_columns(res.out)}
    first = days["table4a/time-r0.1"]
    paper_ratios = {"time-r0.1": "1.000", "time-r0.25": "0.957", "row-shift-r0.1": "0.970",
                    "row-shift-r0.25": "0.894"}
    for cell, row in table.items():
        mine = days[f"table4a/{cell}"]
        assert row["Time ours"] == f"{mine:.3g}" and row["n Time"] == "400"
        assert row["Time ratio paper"] == paper_ratios[cell]
        assert row["Time ratio ours"] == f"{mine / first:.3f}"
    assert "measured on 8 x NVIDIA H100 80GB HBM3 (fsdp)" in res.out
    assert "Mixed hardware" not in res.out and "CPU timing" not in res.out
    # one run timed on another GPU kind: the table says so, naming the cell
    write_summaries("table4a", "smoke", work, {"time-r0.25": 0.32}, device_name="NVIDIA A100")
    assert cli("collect", "table4a", "--scale", "smoke").code == 0
    res = cli("table", "table4a", "--scale", "smoke")
    assert "**Mixed hardware**" in res.out and "time-r0.25: 8 x NVIDIA A100 (fsdp)" in res.out


def test_a_run_without_its_training_summary_is_missing(cli, isolated):
    work = isolated / "work"
    write_results("table4a", "smoke", work)
    write_summaries("table4a", "smoke", work,
                    {k: v for k, v in TABLE4A_RATES.items() if k != "time-r0.25"})
    res = cli("collect", "table4a", "--scale", "smoke")
    assert res.code == 1 and "summary.json" in res.err and "time-r0.25" in res.err
    assert cli("collect", "table4a", "--scale", "smoke", "--partial").code == 0
    rows = _rows(isolated / "results" / "table4a" / "smoke.csv")
    assert {r["cell"] for r in rows if r["metric"] == "Time"} == \
        {"time-r0.1", "row-shift-r0.1", "row-shift-r0.25"}
    broken = work / "runs" / rows[0]["run_id"] / "train" / "summary.json"
    broken.write_text("{}")                          # no throughput in it
    res = cli("collect", "table4a", "--scale", "smoke", "--partial")
    assert res.code == 2 and f"{broken}: no training throughput" in res.err
