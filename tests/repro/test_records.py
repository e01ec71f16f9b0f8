"""The records jobs read (repro/records.py): typed, versioned, and files of earlier versions
still read; a file this version cannot read is named with the fix."""
from __future__ import annotations

import json

import pytest

from repro.jobs.evaluation import eval_record
from repro.targets.jobfiles import load_target, resolve_target
from repro.records import SCHEMA_VERSION, EvalRecord, RecordError, RunRecord
from repro.launch.graph import run_record


def test_run_and_eval_records_round_trip(tmp_path):
    run = next(r for r in resolve_target(load_target("table2"), "ci") if r.stage == "vista")
    record = run_record(run, commit="abc")
    assert RunRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    assert record.vista is not None and record.schema_version == SCHEMA_VERSION
    evaluation = eval_record(record, run.protocol, tmp_path)
    assert EvalRecord.from_json(json.loads(json.dumps(evaluation.to_json()))) == evaluation
    assert evaluation.vista.settings["n_steps"] == 50
    assert evaluation.nodes[-1] == f"{run.run_id}/{run.protocol}/score"


def test_a_record_written_before_the_version_field_reads(tmp_path):
    run = next(r for r in resolve_target(load_target("table2"), "ci") if r.stage == "vista")
    old = run_record(run).to_json()
    del old["schema_version"]
    old["vista"] = {"checkout": "/opt/Vista", "ckpt": None, "python": None,
                    "allow_unpinned": "1"}                 # as the environment recorded it
    record = RunRecord.from_json(old)
    assert record.schema_version == 1 and record.vista.allow_unpinned is True


def test_unreadable_records_name_the_file_and_the_fix(tmp_path):
    run = resolve_target(load_target("table3b"), "ci")[0]
    path = tmp_path / "spec.json"
    path.write_text(json.dumps({**run_record(run).to_json(), "shard": 3}))
    with pytest.raises(RecordError, match=f"{path}: not a RunRecord; unknown fields "
                                          r"\['shard'\]: submit the target again"):
        RunRecord.read(path)
    path.write_text(json.dumps({**run_record(run).to_json(), "schema_version": 99}))
    with pytest.raises(RecordError, match="schema version 99, this code reads up to"):
        RunRecord.read(path)
