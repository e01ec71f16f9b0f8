"""Time the README's main job, `repro submit smoke` (local executor, smoke scale), and write its
benchmark record (target: within 30 minutes on the 2-core development machine).

    python scripts/bench_smoke.py [--target smoke] [--scale smoke] [--out results/bench/smoke.json]

The submit runs with this interpreter and this checkout's code in fresh temporary REPRO_WORKDIR
and REPRO_RESULTS folders (under TMPDIR; the smoke job's work folder takes about 3 GB; removed
afterwards unless --keep). Wall time, user and system CPU and peak RSS cover the job and the
processes it waited for, as `/usr/bin/time` reports them (os.wait4). The record adds each
run's training time (<workdir>/runs/<id>/train/summary.json), when each evaluation finished, and
its provenance (evals.commit.bench_provenance, checked by tests/test_bench_freshness.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evals.atomic import atomic_write_json, read_json  # noqa: E402
from evals.commit import bench_provenance  # noqa: E402
from maskgwm.config.scales import get_scale  # noqa: E402

TARGET_S = 30 * 60
MEASURES = ("maskgwm/", "evals/", "repro/", "slurm/", "scripts/bench_smoke.py")


def run_timed(command: list[str], env: dict[str, str]):
    """(exit status, wall seconds, rusage of the child and the descendants it waited for)."""
    start = time.perf_counter()
    child = subprocess.Popen(command, cwd=REPO, env=env)
    try:
        _, status, usage = os.wait4(child.pid, 0)
    except BaseException:
        child.wait()      # Ctrl-C reaches the job too; its local executor cancels
        raise
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, time.perf_counter() - start, usage


def submission(workdir: Path, target: str, scale: str) -> dict:
    """The submit's record of what it ran (repro/launch/submit.py), or an empty one."""
    found = sorted((workdir / "submissions").glob(f"*-{target}-{scale}.json"))
    return read_json(found[-1]) if found else {"runs": [], "evaluations": []}


def training_runs(workdir: Path, runs: list[dict]) -> dict:
    """Per run name: its stage, steps and summed step time, from its training summary."""
    out = {}
    for run in runs:
        path = workdir / "runs" / run["run_id"] / "train" / "summary.json"
        if path.is_file():
            summary = read_json(path)
            out[run["name"]] = {"stage": summary["stage"], "steps": summary["step"],
                                "train_time_s": summary["train_time_s"]}
    return out


def evaluations(records: list[dict]) -> dict:
    """When each scored evaluation finished (seconds after the first), its sample counts and
    the detector weights it used (from its score/done.json and result.json)."""
    finished, counts, detectors = [], {}, set()
    for record in records:
        folder = Path(record["dir"])
        if not (folder / "score" / "done.json").is_file():
            continue
        when = dt.datetime.fromisoformat(read_json(folder / "score" / "done.json")["finished"])
        finished.append((when, record["name"], record["protocol"]))
        result = read_json(folder / "result.json")
        counts[f"{record['name']}/{record['protocol']}"] = {
            "clips": result["n_clips"],
            **{f"{metric}_n_per_point": [(point.get(metric) or {}).get("n")
                                         for point in result["points"]]
               for metric in ("fid", "fvd")}}
        detectors.update(
            f"{d['role']}: {d['name']}, " + (f"random weights (seed {d['seed']})"
                                             if d["random_weights"] else
                                             f"weights SHA-256 {d['weights_sha256']}")
            for d in result["detectors"])
    finished.sort()
    return {"evaluations_finished_s_after_first": [
                [name, protocol, (when - finished[0][0]).total_seconds()]
                for when, name, protocol in finished],
            "sample_count": counts, "detector_weights": sorted(detectors)}


def folder_bytes(folder: Path) -> int:
    return sum((Path(root) / name).lstat().st_size
               for root, _, files in os.walk(folder) for name in files)


def machine() -> dict:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "memory_gib": round(memory / 2**30, 1), "python": platform.python_version(),
            "load_average_1m_at_start": round(os.getloadavg()[0], 2)}


def bench(target: str, scale: str, folder: Path, note: str, argv: list[str] | None) -> dict:
    provenance = bench_provenance("scripts/bench_smoke.py", MEASURES, argv)
    workdir, results = folder / "work", folder / "results"
    command = [sys.executable, "-m", "repro.cli", "submit", target, "--scale", scale]
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "REPRO_WORKDIR": str(workdir), "REPRO_RESULTS": str(results),
           "PYTHONPATH": path}
    started, host = dt.datetime.now(dt.timezone.utc), machine()
    status, wall, usage = run_timed(command, env)
    submitted = submission(workdir, target, scale)
    runs = training_runs(workdir, submitted["runs"])
    scored = evaluations(submitted["evaluations"])
    protocols = Counter(e["protocol"] for e in submitted["evaluations"])
    settings = get_scale(scale)
    size = folder_bytes(workdir)
    return {
        "what": f"`repro submit {target} --scale {scale}` (local executor; the README's main job "
                f"is `python3 -m repro.bootstrap smoke`, which runs `repro submit smoke`): "
                f"{len(submitted['runs'])} training runs, {len(submitted['evaluations'])} "
                "evaluations, then collect, table and plots",
        "target": "must finish within 30 minutes on the 2-core machine (issue 8)",
        "command": f"REPRO_WORKDIR={workdir} REPRO_RESULTS={results} {shlex.join(command)}",
        **provenance,
        "machine": host,
        "date": started.date().isoformat(),
        "started": started.isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
        "wall": f"{int(wall // 60)}:{wall % 60:05.2f}",
        "user_cpu_s": round(usage.ru_utime, 2),
        "system_cpu_s": round(usage.ru_stime, 2),
        "max_rss_kib": usage.ru_maxrss,
        "exit_status": status,
        "meets_target": status == 0 and wall <= TARGET_S,
        "training_runs": runs,
        "training_step_time_sum_s": round(sum(r["train_time_s"] for r in runs.values()), 1),
        "evaluations_finished_s_after_first": scored["evaluations_finished_s_after_first"],
        "workdir_size": f"{size / 1e9:.2f} GB (apparent size of its files)",
        "workdir_bytes": size,
        "settings": {"scale": scale, "stages": settings.stages, "train": settings.train,
                     "sampling": dataclasses.asdict(settings.sampling),
                     "evalset": settings.evalset and dataclasses.asdict(settings.evalset)},
        "note": note,
        "protocols": [f"{name} ({count} runs)" for name, count in protocols.items()],
        "detector_weights": scored["detector_weights"],
        "sample_count": scored["sample_count"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="smoke")
    parser.add_argument("--scale", default="smoke")
    parser.add_argument("--out", default=str(REPO / "results" / "bench" / "smoke.json"))
    parser.add_argument("--note", default="", help="what else the record should say")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work and results folders (their path is printed)")
    args = parser.parse_args(argv)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{args.target}-{args.scale}-"))
    try:
        record = bench(args.target, args.scale, folder, args.note, argv)
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    atomic_write_json(args.out, record)
    print(f"{args.target} ({args.scale}): exit {record['exit_status']}, wall {record['wall']}, "
          f"user {record['user_cpu_s']} s, system {record['system_cpu_s']} s, max RSS "
          f"{record['max_rss_kib']} KiB, {record['workdir_size']}; meets the 30-minute target: "
          f"{record['meets_target']} -> {args.out}")
    return record["exit_status"]


if __name__ == "__main__":
    raise SystemExit(main())
