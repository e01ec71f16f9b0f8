"""The `repro` command: list, table, submit --dry-run, status, and its one-line errors."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repro.targets.jobfiles import TARGETS


@pytest.mark.parametrize("command", ["list", "submit", "status", "table"])
def test_every_subcommand_has_help(cli, command):
    result = cli(command, "--help")
    assert result.code == 0
    assert "usage: repro " + command in result.out


def test_console_script_is_installed():
    script = shutil.which("repro", path=str(Path(sys.executable).parent))
    assert script, "the `repro` console script is not installed next to this python"
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "submit" in out.stdout


def test_list_shows_all_targets_and_shared_runs(cli):
    result = cli("list")
    assert result.code == 0
    shown = re.findall(r"^(\S+)\s+(?:Table|Figure|Smoke)", result.out, flags=re.M)
    assert shown == list(TARGETS)
    shared = result.out.split("Runs shared by several cells")[1]
    ours = next(line for line in shared.splitlines() if "table3b/ours" in line)
    assert "table3a/ours" in ours and "table4b/two-branch-1" in ours


def test_table3b_prints_six_rows_with_paper_values(cli, isolated):
    result = cli("table", "table3b")
    assert result.code == 0
    rows = [line for line in result.out.splitlines() if line.startswith("| ")][1:]
    assert [row.split("|")[1].strip() for row in rows] == [
        "no-mr", "time", "time-row", "time-row-shift", "spatial", "ours"]
    header = result.out.splitlines()[[i for i, l in enumerate(result.out.splitlines())
                                       if l.startswith("| cell")][0]]
    assert "FVD paper" in header and "FID paper" in header
    assert "| 105.52 |" in rows[-1] and "| 5.69 |" in rows[-1]
    written = (isolated / "results" / "tables" / "table3b.md").read_text()
    assert "| ours |" in written


def test_table_shows_collected_numbers_beside_the_papers(cli, isolated):
    ours = isolated / "results" / "table6"
    ours.mkdir(parents=True)
    (ours / "collected.csv").write_text(
        "table,cell,metric,value,n,scale,ci_low,ci_high,random_weights\n"
        "table6,mr,FVD,100.0,5369,paper,95.5,104.5,true\n")
    result = cli("table", "table6")
    row = next(line for line in result.out.splitlines() if line.startswith("| mr "))
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[3:7] == ["92.5", "100.00 [95.50, 104.50]", "+7.50 †", "5369"]  # 92.5 < 95.5
    assert "random-weights detector" in result.out
    assert cli("table", "table6", "--scale", "smoke").out.count("100.00") == 0


def test_unknown_target_is_a_one_line_error(cli):
    for command in (["table", "nope"], ["submit", "nope"], ["list", "nope"]):
        result = cli(*command)
        assert result.code == 2
        assert result.err.count("\n") == 1 and "unknown target 'nope'" in result.err
        assert "table3b" in result.err


def test_unknown_cluster_is_rejected(cli):
    result = cli("submit", "smoke", "--cluster", "kubernetes")
    assert result.code == 2 and "invalid choice" in result.err


def test_unwritable_results_dir_fails_cleanly(cli, isolated, monkeypatch):
    blocker = isolated / "not-a-dir"
    blocker.write_text("a file where the results directory should be")
    monkeypatch.setenv("REPRO_RESULTS", str(blocker))
    result = cli("table", "table3b")
    assert result.code == 2
    assert result.err.startswith("repro: error: cannot write") and "REPRO_RESULTS" in result.err
    assert result.out == ""


def test_dry_run_prints_slurm_parameters_and_writes_nothing(cli, isolated):
    result = cli("submit", "table3b", "--dry-run", "--partition", "gpu")
    assert result.code == 0
    assert result.out.count("sbatch ") == 8          # stage1a, stage1b and six 1c runs
    assert "--nodes=4" in result.out and "--gpus-per-node=8" in result.out
    assert "--partition=gpu" in result.out
    assert "--dependency=afterok:<job of stage1b>" in result.out
    assert "-m repro.jobs.run" in result.out
    total = float(re.search(r"total estimated GPU-hours.*?: ([\d,]+)", result.out)
                  .group(1).replace(",", ""))
    per_run = [float(x.replace(",", "")) for x in
               re.findall(r"estimated GPU-hours: ([\d,]+)\n", result.out)]
    sampling = [float(x) for x in
                re.findall(r"estimated sampling GPU-hours: ([\d.]+) \(", result.out)]
    # 3000 OpenDV clips of 25 frames at 512x288, 30 steps: 3000 windows of 10.4 s (H200)
    assert sampling == [pytest.approx(3000 * 10.4 / 3600, abs=0.05)] * 6
    assert total == pytest.approx(sum(per_run) + sum(sampling), abs=len(per_run))
    assert 6 * 500 < total < 6 * 600 + 2000           # six ~540 GPU-h runs plus the base chain
    assert not (isolated / "work").exists()


def test_dry_run_warns_when_a_sample_shard_outlasts_its_time_limit(cli, isolated, patch_scale):
    patch_scale("paper", sampling={"shards": 2})
    result = cli("submit", "table3b", "--dry-run")
    assert result.code == 0
    assert result.out.count("estimated sampling GPU-hours: 8.7 (4.33 per shard; time limit "
                            "12 h)") == 6 and "WARNING: a sample shard" not in result.out
    patch_scale("paper", sampling={"sample_hours": 4})
    result = cli("submit", "table3b", "--dry-run")
    assert result.out.count("WARNING: a sample shard may need 4.3 h, over its 4 h limit") == 6


def test_submit_to_slurm_without_slurm_says_so(cli, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    result = cli("submit", "smoke", "--cluster", "slurm", "--scale", "ci")
    assert result.code == 2 and "Slurm" in result.err and "--cluster local" in result.err


def test_status_without_submissions(cli):
    result = cli("status")
    assert result.code == 0 and "no submitted runs" in result.out


def _dry_run(name: str, work: Path) -> tuple[float, str]:
    from repro.launch.dryrun import dry_run
    from repro.targets.jobfiles import load_target
    lines: list[str] = []
    total = dry_run(load_target(name), "paper", work, echo=lines.append)
    return total, "\n".join(lines)


def test_dry_run_of_all_counts_each_run_and_evaluation_once(cli, isolated):
    from repro.launch.dryrun import gpu_hours, sampling_hours
    from repro.targets.jobfiles import load_target, resolve_target
    work = isolated / "work"
    total, text = _dry_run("all", work)
    members = [name for name in TARGETS if name != "smoke"]
    trainings: dict = {}        # run id -> (a run, the targets that train it)
    evaluations: dict = {}      # (run id, protocol) -> (a run, the targets that score it)
    for name in members:
        for run in resolve_target(load_target(name), "paper"):
            trainings.setdefault(run.run_id, (run, set()))[1].add(name)
            if run.cells:
                evaluations.setdefault((run.run_id, run.protocol), (run, set()))[1].add(name)
    headers = re.findall(r"^## \S+  run (\w+) ", text, flags=re.M)
    assert sorted(headers) == sorted(trainings) and len(headers) == len(set(headers))
    shared = re.findall(r"^  (\w+): ", cli("list").out.split("Runs shared by several")[1],
                        flags=re.M)
    assert len(shared) >= 8 and all(headers.count(run_id) == 1 for run_id in shared)
    once = (sum(gpu_hours(run) for run, _ in trainings.values())
            + sum(sampling_hours(run) for run, _ in evaluations.values()))
    assert total == pytest.approx(once)
    # the targets one by one count a shared run (and evaluation) once per target that has it
    one_by_one = sum(_dry_run(name, work)[0] for name in members)
    repeated = (sum((len(t) - 1) * gpu_hours(run) for run, t in trainings.values())
                + sum((len(t) - 1) * sampling_hours(run) for run, t in evaluations.values()))
    assert repeated > 0 and one_by_one == pytest.approx(total + repeated)
    # the fan-out: the base chain, then the 20 stage-1c runs of Tables 3a-5 under stage 1b
    assert re.search(r"^#   stage1a .*\n#     stage1b \(stage 1b", text, flags=re.M)
    assert len(re.findall(r"^#       \S+ \(stage 1c, ", text, flags=re.M)) == 20
    assert "cells table3a/ours, table3b/ours, table4b/two-branch-1\n   needed by table1, " \
        "table2, table3a, table3b, table4b, table4c, table6, fig6, fig7" in text
    assert not work.exists()


def test_list_all_shows_each_run_once_with_its_targets(cli):
    result = cli("list", "all")
    assert result.code == 0, result.err
    ids = re.findall(r"^ {9}\S+\s+([0-9a-f]{12}) ", result.out, flags=re.M)
    assert len(ids) == len(set(ids)) == 30      # 29 trained runs and the Vista run
    ours = next(line for line in result.out.splitlines() if "table3b/ours" in line)
    assert "table3a/ours" in ours and "(table1, table2, table3a, table3b" in ours
    once, one_by_one = (float(x.replace(",", "")) for x in re.search(
        r"each run and evaluation once: ([\d,]+) .* add up to ([\d,]+)", result.out).groups())
    assert 0 < once < one_by_one
    assert "stage1b (stage 1b" in result.out.split("Order")[1]
