"""Job files: the 12 targets load, run identity is shared where the paper's cells are one run,
and malformed files give errors naming the file and the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from repro.targets.jobfiles import (TARGETS, JobFileError, UnknownTarget, load_all_targets, load_target,
                        load_target_file, resolve_target)
from repro.paths import slurm_dir


def run_ids(scale: str = "paper") -> dict[str, str]:
    """`target:run` -> run id for every run of every target."""
    return {f"{t.name}:{r.name}": r.run_id
            for t in load_all_targets() for r in resolve_target(t, scale)}


def test_exactly_the_twelve_targets_exist():
    assert sorted(p.stem for p in slurm_dir().glob("*.toml")) == sorted(TARGETS)
    assert [t.name for t in load_all_targets()] == list(TARGETS)


@pytest.mark.parametrize("same", [
    ("table3a:ours", "table3b:ours", "table4b:two-branch-1", "table1:ours-1c"),
    ("table3b:time", "table4a:time-r0.25", "table5:time-r0.25"),
    ("table3b:time-row-shift", "table4a:row-shift-r0.25", "table5:row-time-r0.25"),
    ("table3b:no-mr", "table5:no-mr", "table6:no-mr-1c", "fig7:no-mr-1c"),
    ("table6:mr", "table1:maskgwm-long", "table2:maskgwm-long", "fig6:maskgwm", "fig7:mr"),
    ("table4c:kw-r0.25", "table1:maskgwm-mview"),
    ("table1:vista", "table2:vista", "fig6:vista"),
    ("table6:no-mr", "fig7:no-mr"),
])
def test_cells_that_are_one_run_share_its_id(same):
    ids = run_ids()
    assert len({ids[name] for name in same}) == 1


def test_distinct_runs_have_distinct_ids():
    ids = run_ids()
    assert ids["table1:maskgwm-long"] != ids["table1:maskgwm-long-noaction"]
    assert ids["table3b:time-row"] != ids["table3b:time-row-shift"]
    ablations = {ids[k] for k in ids if k.split(":")[0] in
                 ("table3a", "table3b", "table4a", "table4b", "table5")
                 and not k.endswith(("stage1a", "stage1b"))}
    assert len(ablations) == 20  # docs/DESIGN.md sections 3, 9.6: about 20 unique stage-1c runs


def test_run_id_depends_on_scale_and_parent():
    paper, smoke = run_ids("paper"), run_ids("smoke")
    assert paper["table3b:ours"] != smoke["table3b:ours"]
    assert smoke["table3b:ours"] == smoke["smoke:ours"]
    # same stage-2 variant, different parent (MR vs no-MR stage 1c) -> different run
    assert paper["table6:mr"] != paper["table6:no-mr"]


def test_smoke_scale_resolves_small_synthetic_configs():
    runs = resolve_target(load_target("smoke"), "smoke")
    assert {r.config["data"]["source"] for r in runs} == {"synthetic"}
    assert {r.config["model"]["preset"] for r in runs} == {"small"}
    assert all(r.resources.gpus == 0 for r in runs)


def test_unknown_target_lists_known_ones():
    with pytest.raises(UnknownTarget, match="table3b"):
        load_target("table9")


GOOD = """
[target]
title = "t"
protocol = "opendv_ablation"

[resources.paper]
nodes = 4
gpus_per_node = 8
cpus_per_task = 12
mem_gb = 512
time_hours = 24

[resources.smoke]
nodes = 1
gpus_per_node = 0
cpus_per_task = 2
mem_gb = 8
time_hours = 1

[runs.ours]
stage = "1c"
variant = "ours"
parent = "stage1b"
cells = ["table3b/ours"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return path


def test_a_valid_custom_file_loads(tmp_path):
    target = load_target_file(write(tmp_path, GOOD))
    assert [r.name for r in resolve_target(target, "ci")] == ["stage1a", "stage1b", "ours"]
    assert target.resources["paper"].tasks == 8 and target.resources["smoke"].tasks == 1
    assert target.resources["paper"].gpu_mem_gb == 80      # the paper's A800s, by default
    bigger = GOOD.replace("time_hours = 24", "time_hours = 24\ngpu_mem_gb = 141")
    assert load_target_file(write(tmp_path, bigger)).resources["paper"].gpu_mem_gb == 141
    cpu_processes = GOOD.replace("time_hours = 1", "time_hours = 1\ntasks_per_node = 2")
    assert load_target_file(write(tmp_path, cpu_processes)).resources["smoke"].tasks == 2


def test_a_child_listed_before_its_parent_still_resolves_after_it(tmp_path, make_target):
    runs = """
[runs.long]
stage = "2"
variant = "ours"
parent = "ours-1c"
cells = ["fig7/mr"]

[runs.ours-1c]
stage = "1c"
variant = "ours"
parent = "stage1b"
cells = []
"""
    target = make_target(tmp_path, "order", "opendv_long", runs, "parents listed last")
    resolved = resolve_target(target, "ci")
    assert [r.name for r in resolved] == ["stage1a", "stage1b", "ours-1c", "long"]
    assert resolved[3].parent_id == resolved[2].run_id


@pytest.mark.parametrize("change, message", [
    (("[target]", "[target]\ncolour = 'red'"), "unknown key 'colour'"),
    (('title = "t"\n', ""), "missing required key 'title'"),
    (('protocol = "opendv_ablation"', 'protocol = "fvd_2048"'), "unknown protocol 'fvd_2048'"),
    (('variant = "ours"', 'variant = "theirs"'), "unknown variant 'theirs'"),
    (('cells = ["table3b/ours"]', 'cells = ["table3b/best"]'), "'best' is not a cell of table3b"),
    (('cells = ["table3b/ours"]', 'cells = ["table9/ours"]'), "names no paper table"),
    (('parent = "stage1b"', 'parent = "stage1a"'), "starts from a stage-1b run"),
    (('parent = "stage1b"', 'parent = "nothing"'), "unknown parent 'nothing'"),
    (('parent = "stage1b"\n', ""), "missing required key 'parent'"),
    (('stage = "1c"', 'stage = "4"'), "unknown stage '4'"),
    (("[runs.ours]", "[runs.ours]\noverrides = { \"mask.ratoi\" = 0.3 }"),
     "unknown key 'mask.ratoi'"),
    (("[runs.ours]", "[runs.ours]\noverrides = { \"mask.ratio\" = \"big\" }"),
     "'mask.ratio' expects float"),
    (("[runs.ours]", "[runs.ours]\noverrides = { \"mask.token\" = \"blob\" }"),
     "'mask.token' = 'blob' is not one of"),
    (("[resources.smoke]", "[resources.huge]"), "unknown scale 'huge'"),
    (("time_hours = 24", "time_hours = 'long'"), "key 'time_hours' has the wrong type"),
    (("nodes = 1\n", ""), "missing required key 'nodes'"),
    (("[runs.ours]", "[runs.stage1b]"), "reserved for the shared base chain"),
    (("[target]", "[target\n"), "not valid TOML"),
    (("time_hours = 24", "time_hours = 24\ntasks_per_node = 4"), "one task per GPU"),
    (("mem_gb = 512", "mem_gb = -5"), "[resources.paper] mem_gb = -5: allowed 1 to 65536"),
    (("time_hours = 24", "time_hours = 1e17"), "time_hours = 1e+17: allowed 1 minute"),
    (("time_hours = 24", "time_hours = 0.001"), "time_hours = 0.001: allowed 1 minute"),
    (("gpus_per_node = 8", "gpus_per_node = -1"), "gpus_per_node = -1: allowed 0 to 64"),
    (("nodes = 4", "nodes = 0"), "nodes = 0: allowed 1 to 4096"),
    (("time_hours = 24", "time_hours = 24\ngpu_mem_gb = 0"), "gpu_mem_gb = 0: allowed 1 to 4096"),
    (("time_hours = 24", "time_hours = 24\ngpu_mem_gb = '80GB'"), "'gpu_mem_gb' has the wrong"),
    (("time_hours = 24", 'time_hours = 24\npartition = "gpu; touch x"'),
     "partition = 'gpu; touch x': use only letters, digits"),
    (("[runs.ours]", '[runs."ours; rm -rf ~"]'), "the run name = 'ours; rm -rf ~': use only"),
])
def test_malformed_files_name_file_and_key(tmp_path, change, message):
    old, new = change
    assert old in GOOD
    path = write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(JobFileError) as err:
        load_target_file(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_missing_resources_for_paper_scale(tmp_path):
    text = GOOD.split("[resources.paper]")[0] + "[resources.smoke]" + GOOD.split(
        "[resources.smoke]")[1]
    with pytest.raises(JobFileError, match=r"missing required table \[resources.paper\]"):
        load_target_file(write(tmp_path, text))


def test_seed_replicas_keep_seed_zero_and_share_parents():
    target = load_target("smoke")
    one = resolve_target(target, "ci")
    three = resolve_target(target, "ci", seeds=3)
    assert [(r.name, r.run_id) for r in three[:len(one)]] == [(r.name, r.run_id) for r in one]
    assert all(r.seed == 0 for r in one)
    leaves = [r for r in one if r.cells]
    replicas = three[len(one):]
    assert len(replicas) == 2 * len(leaves)  # shared parents (the base chain) not repeated
    assert not any(r.name.startswith("stage1") for r in replicas)
    assert len({r.run_id for r in three}) == len(three)  # every replica its own run
    by_name = {r.name: r for r in one}
    for run in replicas:
        base = by_name[run.name.rsplit("-seed", 1)[0]]
        assert run.name == f"{base.name}-seed{run.seed}" and run.seed in (1, 2)
        assert run.parent_id == base.parent_id and run.cells == base.cells
        assert run.config["seed"] == base.config["seed"] + run.seed
        assert {k: v for k, v in run.config.items() if k != "seed"} == \
            {k: v for k, v in base.config.items() if k != "seed"}
    # a replica's parent is the seed-0 parent, listed before it
    ids = [r.run_id for r in three]
    for i, run in enumerate(three):
        assert run.parent_id is None or run.parent_id in ids[:i]
    with pytest.raises(ValueError, match="seeds"):
        resolve_target(target, "ci", seeds=0)


def test_external_runs_are_not_replicated():
    runs = resolve_target(load_target("table2"), "ci", seeds=2)
    assert [r.name for r in runs if r.seed] == ["maskgwm-long-seed1"]


def test_sampling_seed_follows_the_run_seed(tmp_path):
    from maskgwm.config import get_scale
    from repro.jobs.evaluation import eval_record
    from repro.launch.graph import run_record
    for run in resolve_target(load_target("smoke"), "ci", seeds=2):
        assert eval_record(run_record(run), run.protocol, tmp_path).seed == \
            get_scale("ci").sampling.seed + run.seed  # seed 0 samples as before


def test_seeds_option_parses(cli):
    from repro.cli import build_parser
    parser = build_parser()
    for command in (["submit", "smoke"], ["collect", "smoke"], ["table", "smoke"],
                    ["plot", "fig7"], ["list", "smoke"]):
        assert parser.parse_args(command + ["--seeds", "3"]).seeds == 3
        assert parser.parse_args(command).seeds is None
    for bad in ("0", "-1", "two"):
        res = cli("submit", "smoke", "--seeds", bad)
        assert res.code == 2 and "--seeds" in res.err
    res = cli("submit", "smoke", "--scale", "ci", "--dry-run", "--seeds", "2")
    assert res.code == 0, res.err
    assert "## ours-seed1  run" in res.out and "ours-seed2" not in res.out
    assert res.out.count("## stage1a ") == 1
    res = cli("list", "smoke", "--scale", "ci", "--seeds", "2")
    assert res.code == 0 and "long-mr-seed1" in res.out


def test_printed_commands_are_shell_quoted(cli, isolated, monkeypatch):
    """What a dry run prints is what would run, even for a work folder with a space."""
    import shlex
    monkeypatch.setenv("REPRO_WORKDIR", str(isolated / "my work"))
    res = cli("submit", "table3b", "--scale", "smoke", "--dry-run")
    assert res.code == 0, res.err
    commands = [line.split("command: ", 1)[1] for line in res.out.splitlines()
                if "command: " in line]
    assert commands
    for command in commands:
        argv = shlex.split(command)
        assert argv[1:3] == ["-m", "repro.jobs.run"]
        assert argv[3].startswith(str(isolated / "my work"))
    sbatch = [shlex.split(line.strip()) for line in res.out.splitlines()
              if line.strip().startswith("sbatch ")]
    assert sbatch and all(arg.startswith("--") for line in sbatch for arg in line[1:])
    res = cli("submit", "table3b", "--dry-run", "--partition", "gpu; touch x")
    assert res.code == 2 and "use only letters, digits" in res.err


def test_all_is_every_target_but_smoke_with_each_run_once():
    from repro.targets.union import by_run
    union = load_target("all")
    members = [load_target(name) for name in TARGETS if name != "smoke"]
    assert [m.name for m in union.members] == [m.name for m in members]
    runs = resolve_target(union, "paper")
    keys = [(r.run_id, r.protocol if r.cells else "") for r in runs]
    assert len(keys) == len(set(keys))
    every = [(r.run_id, cell) for m in members for r in resolve_target(m, "paper")
             for cell in r.cells]
    merged = [(r.run_id, cell) for r in runs for cell in r.cells]
    assert sorted(merged) == sorted(every)          # each cell once, under the same run id
    seen: set[str] = set()
    for run in runs:                                 # parents before children
        assert run.parent_id is None or run.parent_id in seen
        seen.add(run.run_id)
    table1 = {r.name: r for r in resolve_target(load_target("table1"), "paper")}
    long = by_run(runs)[table1["maskgwm-long"].run_id]
    assert {e.protocol for e in long if e.cells} == {"vista_nuscenes", "waymo_zeroshot",
                                                    "opendv_long"}
    assert long[0].target == "table1" and long[0].name == "maskgwm-long"
    assert set(union.tables()) == {t for m in members for t in m.tables()}
