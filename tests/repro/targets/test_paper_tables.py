"""The paper's numbers in results/paper/*.csv: layout, transcription traps, loader errors."""
from __future__ import annotations

import csv
import math
import re
from decimal import ROUND_FLOOR, Decimal

import pytest

from repro.targets import paper
from repro import paths
from repro.targets.paper import PAPER_TABLES, UnknownTable, cells, load_paper_table, metrics, variant_columns

FVD_FID = ["FVD", "FID"]

# name -> (cell ids in paper order, metrics in paper order, variant columns)
LAYOUT = {
    "table1": (
        ["drivedreamer", "magicdrive", "dive", "drivedreamer-2", "drive-wm", "maskgwm-mview",
         "drivegan", "genad", "vista", "maskgwm-long", "maskgwm-long-noaction"],
        ["FID", "FVD"],
        ["method", "multi_view", "future_layout", "protocol", "source", "ref"],
    ),
    "table2": (["vista-official", "maskgwm-long"], FVD_FID, ["method", "inference"]),
    "table3a": (
        ["p-0-1", "p-0.5-1", "fm-0-1", "fm-0-0.5", "ztau-contra", "ours"],
        FVD_FID,
        ["m_tau", "tau_range", "contrastive"],
    ),
    "table3b": (
        ["no-mr", "time", "time-row", "time-row-shift", "spatial", "ours"],
        FVD_FID,
        ["m_time", "row", "shift_att", "m_spatial", "r"],
    ),
    "table4a": (
        ["time-r0.1", "time-r0.25", "row-shift-r0.1", "row-shift-r0.25"],
        ["FVD", "Time"],
        ["row_shift_att", "r"],
    ),
    "table4b": (["shared-1", "two-branch-1", "shared-2", "two-branch-2"], FVD_FID, ["two_branch", "layers"]),
    "table4c": (["kw-r0", "kw-r0.25", "k-r0.25", "khw-r0.25"], FVD_FID, ["att_dim", "r"]),
    "table5": (
        [f"{mask}-r{r}" for r in ("0", "0.1", "0.25", "0.4") for mask in ("spatial", "time", "row-time")],
        ["FVD"],
        ["r", "mask"],
    ),
    "table6": (["no-mr", "mr"], FVD_FID, ["row_shift_att", "r"]),
    "fig6": (["maskgwm", "vista"], FVD_FID, ["series", "seconds"]),
    "fig7": (["mr", "no-mr"], FVD_FID, ["series", "seconds"]),
}

# (table, cell, metric) -> value as printed in the paper
PRINTED = {
    ("table1", "drivedreamer", "FVD"): "340.8",
    ("table1", "genad", "FVD"): "184.0",
    ("table1", "vista", "FID"): "6.9",
    ("table1", "vista", "FVD"): "89.4",
    ("table1", "maskgwm-long-noaction", "FID"): "4.0",
    ("table1", "maskgwm-long-noaction", "FVD"): "59.4",
    ("table2", "vista-official", "FVD"): "176.56",
    ("table2", "maskgwm-long", "FID"): "9.55",
    ("table3a", "p-0-1", "FVD"): "126.71",
    ("table3a", "fm-0-1", "FID"): "6.40",
    ("table3b", "time-row", "FVD"): "143.07",
    ("table3b", "no-mr", "FID"): "10.28",
    ("table4a", "row-shift-r0.1", "FVD"): "123.70",
    ("table4a", "time-r0.1", "Time"): "0.368",
    ("table4a", "row-shift-r0.25", "Time"): "0.329",
    ("table4b", "two-branch-2", "FID"): "5.60",
    ("table4c", "k-r0.25", "FVD"): "71.5",
    ("table4c", "khw-r0.25", "FID"): "8.5",
    ("table5", "spatial-r0.1", "FVD"): "125.8",
    ("table5", "time-r0.4", "FVD"): "179.1",
    ("table6", "no-mr", "FVD"): "107.2",
    ("table6", "no-mr", "FID"): "7.5",
}

TRUNCATED_REPEATS = {
    "spatial-r0": ("table3b", "no-mr"),
    "time-r0": ("table3b", "no-mr"),
    "row-time-r0": ("table3b", "no-mr"),
    "time-r0.1": ("table4a", "time-r0.1"),
    "row-time-r0.1": ("table4a", "row-shift-r0.1"),
    "spatial-r0.25": ("table3b", "spatial"),
    "time-r0.25": ("table4a", "time-r0.25"),
    "row-time-r0.25": ("table4a", "row-shift-r0.25"),
}
TRUNCATION_NOTE = re.compile(r"^truncated repeat of (\w+)/([\w.-]+) \(([\d.]+)\)$")
SAME_RUN_NOTE = re.compile(r"^same run as (.+)$")


def value(table: str, cell: str, metric: str) -> float:
    frame = load_paper_table(table)
    selected = frame[(frame["cell"] == cell) & (frame["metric"] == metric)]
    assert len(selected) == 1, (table, cell, metric)
    return float(selected["value"].iloc[0])


def raw_rows(table: str) -> list[dict[str, str]]:
    with open(paths.paper_dir() / f"{table}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def floor_one_decimal(number: float) -> Decimal:
    return Decimal(repr(number)).quantize(Decimal("0.1"), rounding=ROUND_FLOOR)


def test_every_table_has_a_csv_and_a_layout():
    assert PAPER_TABLES == tuple(LAYOUT)
    for name in PAPER_TABLES:
        assert (paths.paper_dir() / f"{name}.csv").is_file(), name


@pytest.mark.parametrize("name", PAPER_TABLES)
def test_layout_matches_the_paper(name):
    expected_cells, expected_metrics, expected_variants = LAYOUT[name]
    frame = load_paper_table(name)
    assert list(frame.columns) == ["table", "cell", *expected_variants, "metric", "value", "unit", "note"]
    assert variant_columns(frame) == expected_variants
    assert cells(name) == expected_cells
    assert metrics(name) == expected_metrics
    assert set(frame["table"]) == {name}


@pytest.mark.parametrize("name", [n for n in PAPER_TABLES if n != "fig7"])
def test_rows_are_a_full_cell_by_metric_grid_in_paper_order(name):
    expected_cells, expected_metrics, _ = LAYOUT[name]
    frame = load_paper_table(name)
    expected = [(cell, metric) for cell in expected_cells for metric in expected_metrics]
    assert list(zip(frame["cell"], frame["metric"])) == expected


def test_table1_lists_fid_before_fvd_and_table2_fvd_before_fid():
    assert metrics("table1") == ["FID", "FVD"]
    assert metrics("table2") == ["FVD", "FID"]
    assert value("table1", "maskgwm-long", "FID") == 5.6
    assert value("table1", "maskgwm-long", "FVD") == 92.5
    assert value("table2", "maskgwm-long", "FVD") == 118.83
    assert value("table2", "vista-official", "FID") == 9.76


def test_dive_fid_is_not_reported_rather_than_zero():
    frame = load_paper_table("table1")
    dive_fid = frame[(frame["cell"] == "dive") & (frame["metric"] == "FID")].iloc[0]
    assert math.isnan(dive_fid["value"])
    assert dive_fid["note"] == "not reported ('-' in the paper)"
    assert value("table1", "dive", "FVD") == 94.6
    assert frame["value"].isna().sum() == 1


def test_table1_columns_follow_the_caption():
    frame = load_paper_table("table1").drop_duplicates("cell").set_index("cell")
    for cell, row in frame.iterrows():
        assert row["protocol"] == ("drivewm_mview" if row["multi_view"] == "true" else "vista_nuscenes")
        is_ours = row["method"].startswith("MaskGWM")
        assert row["source"] == ("this paper" if is_ours else "quoted")
        assert (row["ref"] == "") == is_ours
        assert is_ours or re.fullmatch(r"\[\d+\]", row["ref"])
    assert frame.loc["maskgwm-long-noaction", "method"] == "MaskGWM-long†"
    assert frame.loc["vista", "ref"] == "[12]"
    assert list(frame.index[frame["future_layout"] == "true"]) == ["magicdrive", "dive"]


def test_table4a_has_no_fid_and_time_is_in_days_per_10k_steps():
    frame = load_paper_table("table4a")
    assert "FID" not in set(frame["metric"])
    time_rows = frame[frame["metric"] == "Time"]
    assert set(time_rows["unit"]) == {"days per 10k steps"}
    assert list(time_rows["value"]) == [0.368, 0.352, 0.357, 0.329]


def test_table4c_has_exactly_four_cells():
    frame = load_paper_table("table4c")
    assert len(cells("table4c")) == 4
    assert len(frame) == 8
    assert list(frame.drop_duplicates("cell")["att_dim"]) == ["KW", "KW", "K", "KHW"]


def test_units():
    for name in PAPER_TABLES:
        frame = load_paper_table(name)
        for metric, unit in zip(frame["metric"], frame["unit"]):
            assert unit == ("days per 10k steps" if metric == "Time" else "dimensionless"), (name, metric)


def test_values_are_kept_as_printed():
    for (table, cell, metric), printed in PRINTED.items():
        matching = [row for row in raw_rows(table) if row["cell"] == cell and row["metric"] == metric]
        assert [row["value"] for row in matching] == [printed], (table, cell, metric)
        assert value(table, cell, metric) == float(printed)


def test_table5_truncates_the_cells_it_repeats():
    frame = load_paper_table("table5").set_index("cell")
    repeated = {}
    for cell, row in frame.iterrows():
        match = TRUNCATION_NOTE.match(row["note"])
        if match:
            source_table, source_cell, quoted = match.groups()
            repeated[cell] = (source_table, source_cell)
            source_value = value(source_table, source_cell, "FVD")
            assert float(quoted) == source_value
            assert Decimal(repr(row["value"])) == floor_one_decimal(source_value), cell
        else:
            assert row["note"] == ""
    assert repeated == TRUNCATED_REPEATS
    assert floor_one_decimal(142.68) == Decimal("142.6")


def test_same_run_cells_carry_identical_values():
    checked = 0
    for name in PAPER_TABLES:
        frame = load_paper_table(name)
        for _, row in frame.iterrows():
            match = SAME_RUN_NOTE.match(row["note"])
            if not match:
                continue
            for reference in match.group(1).split(" and "):
                other_table, other_cell = reference.split("/")
                other = load_paper_table(other_table)
                other_notes = set(other.loc[other["cell"] == other_cell, "note"])
                assert any(f"{name}/{row['cell']}" in note for note in other_notes), (reference, name)
                if row["metric"] in set(other["metric"]):
                    assert value(other_table, other_cell, row["metric"]) == row["value"], (name, row["cell"])
                    checked += 1
    assert checked == 24


def test_named_shared_cells():
    for metric in FVD_FID:
        shared = {value("table3a", "ours", metric), value("table3b", "ours", metric),
                  value("table4b", "two-branch-1", metric)}
        assert len(shared) == 1
        assert value("table6", "mr", metric) == value("table1", "maskgwm-long", metric)
        assert value("table4c", "kw-r0.25", metric) == value("table1", "maskgwm-mview", metric)
    assert value("table3b", "time", "FVD") == value("table4a", "time-r0.25", "FVD")
    assert value("table3b", "time-row-shift", "FVD") == value("table4a", "row-shift-r0.25", "FVD")
    assert load_paper_table("table6").iloc[-1]["note"] == "same run as table1/maskgwm-long"


def test_figures_are_curves_with_one_stated_number():
    for name in ("fig6", "fig7"):
        frame = load_paper_table(name)
        curves = frame[frame["seconds"] == ""]
        assert curves["value"].isna().all()
        assert set(curves["note"]) == {"curve only: the text gives no numbers"}
    fig7 = load_paper_table("fig7")
    stated = fig7[fig7["value"].notna()]
    assert len(stated) == 1
    row = stated.iloc[0]
    assert (row["cell"], row["series"], row["seconds"], row["metric"], row["value"]) == (
        "no-mr", "without MR", "10", "FID", 37.7)
    assert row["note"] == "stated in Appendix 6.3"


def test_values_are_finite_and_not_negative():
    for name in PAPER_TABLES:
        numbers = load_paper_table(name)["value"].dropna()
        assert all(math.isfinite(number) and number >= 0 for number in numbers), name


def test_booleans_are_true_or_false():
    boolean_columns = {"table1": ["multi_view", "future_layout"], "table3a": ["contrastive"],
                       "table3b": ["m_time", "row", "shift_att", "m_spatial"], "table4a": ["row_shift_att"],
                       "table4b": ["two_branch"], "table6": ["row_shift_att"]}
    for name, columns in boolean_columns.items():
        frame = load_paper_table(name)
        for column in columns:
            assert set(frame[column]) <= {"true", "false"}, (name, column)


def test_unknown_table_lists_the_known_names():
    with pytest.raises(UnknownTable) as raised:
        load_paper_table("table7")
    assert isinstance(raised.value, ValueError)
    assert not isinstance(raised.value, KeyError)
    for name in PAPER_TABLES:
        assert name in str(raised.value)
    with pytest.raises(UnknownTable):
        cells("fig8")


GOOD_CSV = "table,cell,r,metric,value,unit,note\ntable6,mr,0.25,FVD,92.5,dimensionless,\n"


@pytest.mark.parametrize(
    "text, complaint",
    [
        ("table,cell,r,metric,value,unit\ntable6,mr,0.25,FVD,92.5,dimensionless\n", "columns"),
        ("cell,table,r,metric,value,unit,note\nmr,table6,0.25,FVD,92.5,dimensionless,\n", "columns"),
        ("table,cell,r,metric,value,unit,note\ntable6,mr,0.25,FVD,n/a,dimensionless,\n", "not a number"),
        ("table,cell,r,metric,value,unit,note\ntable6,mr,0.25,FVD,inf,dimensionless,\n", "not finite"),
        ("table,cell,r,metric,value,unit,note\ntable5,mr,0.25,FVD,92.5,dimensionless,\n", "'table'"),
        (GOOD_CSV + "table6,mr,0.25,FVD,92.6,dimensionless,\n", "duplicate"),
        ("table,cell,r,metric,value,unit,note\ntable6,mr,0.25,FVD,,dimensionless,\n", "without a note"),
        ("table,cell,r,metric,value,unit,note\ntable6,mr,0.25,FVD\n", "expected 7 fields"),
        (GOOD_CSV.replace("dimensionless,", "dimensionless,,extra"), "expected 7 fields"),
        ("table,cell,r,metric,value,unit,note\ntable6,,0.25,FVD,92.5,dimensionless,\n", "empty 'cell'"),
        ("table,cell,r,metric,value,unit,note\n", "no rows"),
    ],
)
def test_malformed_csv_is_a_value_error_naming_the_file(tmp_path, text, complaint):
    (tmp_path / "table6.csv").write_text(text)
    with pytest.raises(ValueError, match=re.escape(complaint)) as raised:
        load_paper_table("table6", directory=tmp_path)
    assert str(tmp_path / "table6.csv") in str(raised.value)


def test_missing_file_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="missing"):
        load_paper_table("table2", directory=tmp_path)


def test_default_directory_is_paths_paper_dir(tmp_path, monkeypatch):
    (tmp_path / "table6.csv").write_text(GOOD_CSV)
    monkeypatch.setattr(paper.paths, "paper_dir", lambda: tmp_path)
    frame = load_paper_table("table6")
    assert list(frame["value"]) == [92.5]
    assert cells("table6") == ["mr"]
