"""`repro status`: the state of every submitted run, from its run directory and from Slurm."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .fsio import read_json
from .runner import run_state
from .submit import slurm_states


def collect_status(workdir: Path, target: str | None = None) -> list[dict[str, Any]]:
    """One row per submitted run (optionally of one target), oldest submission first."""
    rows = []
    for job_file in sorted((workdir / "runs").glob("*/job.json"), key=lambda p: p.stat().st_mtime):
        job = read_json(job_file)
        if target and job.get("target") != target:
            continue
        state, details = run_state(job_file.parent)
        rows.append({"run_id": job_file.parent.name, "target": job.get("target"),
                     "name": job.get("name"), "scale": job.get("scale"),
                     "cluster": job.get("cluster"), "job_id": job.get("job_id"),
                     "state": state, "error": details.get("error", ""),
                     "stdout": job.get("stdout"), "stderr": job.get("stderr")})
    live = slurm_states([r["job_id"] for r in rows if r["cluster"] == "slurm"
                         and r["state"] in ("pending", "running")])
    for row in rows:
        if row["cluster"] == "slurm" and row["state"] in ("pending", "running"):
            row["state"] = live.get(row["job_id"], "").lower() or "lost"
    return rows


def format_status(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no submitted runs found"
    lines = [f"{'state':<10} {'target:name':<34} {'run':<12} {'scale':<6} {'cluster':<7} job"]
    for row in rows:
        lines.append(f"{row['state']:<10} {row['target'] + ':' + row['name']:<34} "
                     f"{row['run_id']:<12} {row['scale']:<6} {row['cluster']:<7} {row['job_id']}")
        if row["state"] == "blocked":
            lines.append("           its parent run failed: fix that, then submit again")
        if row["state"] in ("failed", "lost"):
            reason = row["error"] or "the job ended without writing a result"
            lines.append(f"           {reason}")
            lines.append(f"           log: {row['stderr']}  (stdout: {row['stdout']})")
    return "\n".join(lines)
