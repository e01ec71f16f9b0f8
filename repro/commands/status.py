"""`repro status`: the state of every submitted run, and of the sample shards and score job of
its evaluations, from their state files and from Slurm; `repro status all` shows the runs of
every target but smoke, each once, under its own target."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from evals.atomic import read_json

from repro.jobs.state import process_alive, run_dir, run_state
from repro.launch.backends import slurm_states
from repro.launch.graph import targets_of
from repro.targets.jobfiles import ALL, load_target


def wanted(target: str | None) -> set[str] | None:
    """The target names whose runs to show: one, every member of `all`, or None (any)."""
    if target != ALL:
        return {target} if target else None
    return {member.name for member in load_target(ALL).members}


def label(target: str | None, job: dict[str, Any]) -> str:
    """The target a row is shown under: the one asked for, else the run's own."""
    return target if target and target != ALL else job.get("target")


def collect_status(workdir: Path, target: str | None = None) -> list[dict[str, Any]]:
    """One row per submitted run (optionally of one target, or of `all`), oldest submission
    first."""
    rows, names = [], wanted(target)
    for job_file in sorted((workdir / "runs").glob("*/job.json"), key=lambda p: p.stat().st_mtime):
        job = read_json(job_file)
        if names is not None and not names & set(targets_of(job)):
            continue
        state, details = run_state(job_file.parent)
        state = _local_state(job, state, details)
        blocked = _blocked(workdir, job) if state in ("pending", "failed") else ""
        rows.append({"run_id": job_file.parent.name, "target": label(target, job),
                     "name": job.get("name"), "scale": job.get("scale"),
                     "cluster": job.get("cluster"), "job_id": job.get("job_id") or "-",
                     "state": "blocked" if blocked else state,
                     "error": blocked or details.get("error", ""),
                     "stdout": job.get("stdout"), "stderr": job.get("stderr")})
    rows += _eval_rows(workdir, target)
    live = slurm_states([r["job_id"] for r in rows if r["cluster"] == "slurm"
                         and r["state"] in ("pending", "running")])
    for row in rows:
        if row["cluster"] == "slurm" and row["state"] in ("pending", "running"):
            row["state"] = live.get(row["job_id"], "").lower() or "lost"
    return rows


def _blocked(workdir: Path, job: dict[str, Any]) -> str:
    """Why a local submit left a run or evaluation blocked (job.json "blocked"), while the run
    it waits for is still not done; else ""."""
    if not job.get("blocked") or run_state(run_dir(workdir, job["waits_for"]))[0] == "done":
        return ""
    return job["blocked"]


def _local_state(job: dict[str, Any], state: str, details: dict[str, Any]) -> str:
    """A local or debug job whose process is gone (killed hard) left running.json: lost."""
    if job.get("cluster") != "slurm" and state == "running" and \
            process_alive(details) is False:
        return "lost"
    return state


def format_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no submitted runs found"
    lines = [f"{'state':<10} {'target:name':<34} {'run':<12} {'scale':<6} {'cluster':<7} job"]
    for row in rows:
        lines.append(f"{row['state']:<10} {row['target'] + ':' + row['name']:<34} "
                     f"{row['run_id']:<12} {row['scale']:<6} {row['cluster']:<7} {row['job_id']}")
        if row["state"] == "blocked":
            reason = row["error"] or "its parent run failed"
            lines.append(f"           {reason}: fix that, then submit again")
        if row["state"] in ("failed", "lost"):
            reason = row["error"] or "the job ended without writing a result"
            lines.append(f"           {reason}")
            lines.append(f"           log: {row['stderr']}  (stdout: {row['stdout']})")
    return "\n".join(lines)


def _eval_rows(workdir: Path, target: str | None) -> list[dict[str, Any]]:
    """One row per sample shard and one per score job of every submitted evaluation."""
    from repro.jobs.evaluation import eval_state
    from repro.jobs.state import shard_state_dir
    rows, names = [], wanted(target)
    for job_file in sorted((workdir / "runs").glob("*/eval/*/job.json"),
                           key=lambda p: p.stat().st_mtime):
        job = read_json(job_file)
        if names is not None and not names & set(targets_of(job)):
            continue
        directory, run_id = job_file.parent, job_file.parents[2].name
        base = {"run_id": run_id, "target": label(target, job),
                "scale": job.get("scale"),
                "cluster": job.get("cluster"), "stdout": job.get("logs"),
                "stderr": job.get("logs")}
        blocked = _blocked(workdir, job)
        if blocked:     # its training run is not done: no shard nor score job
            rows.append({**base, "name": f"{job.get('name')} score {job.get('protocol')}",
                         "job_id": "-", "state": "blocked", "error": blocked})
            continue
        shards = int(job.get("shards", 0))
        jobs = job.get("sample_jobs", {})
        for shard in range(shards):
            state, details = run_state(shard_state_dir(directory, shard, shards))
            rows.append({**base, "name": f"{job.get('name')} sample {shard}/{shards} "
                                         f"{job.get('protocol')}",
                         "job_id": jobs.get(str(shard), "-"),
                         "state": _local_state(job, state, details),
                         "error": details.get("error", "")})
        state, details = eval_state(directory)
        if state == "running" and not run_state(directory / "score")[0] == "running":
            state = "pending"     # shards still sampling: the score job waits
        rows.append({**base, "name": f"{job.get('name')} score {job.get('protocol')}",
                     "job_id": job.get("score_job") or "-",
                     "state": state if state in ("done", "failed", "running") else "pending",
                     "error": details.get("error", "") if state == "failed" else ""})
    return rows
