"""What a run's own job executes: `TrainingJob`, the callable submitit pickles, and `execute`.

A run directory `<workdir>/runs/<run_id>/` holds `spec.json` (what to run), `running.json`,
then `done.json` or `failed.json` (state.py). The run's kind does the work (kinds.py): a
trained run trains into `<run>/train/` from the parent run's `train/model.pt` (preemption-safe,
training.py); a Vista run's job is a prepare step that validates the Vista checkout and
checkpoint and records their commit and SHA-256s (repro/vista/kind.py). Sampling and scoring
are separate jobs after it (evaluation.py, state under `<run>/eval/<protocol>/`).

    python -m repro.jobs.run <workdir>/runs/<run_id>/spec.json
"""
from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Any

import submitit

from evals.atomic import atomic_write_json

from repro.jobs.kinds import kind_of
from repro.jobs.state import now, provenance, run_dir, run_state
from repro.jobs.training import JobRequeued, defer_early
from repro.records import RunRecord



def execute(spec_path: str | Path) -> dict[str, Any]:
    """Run one run (the callable that submitit pickles); returns the done record."""
    spec_path = Path(spec_path)
    spec = RunRecord.read(spec_path)
    directory = spec_path.parent
    state, done = run_state(directory)
    if state == "done":
        print(f"run {spec.run_id} is already done; nothing to do", flush=True)
        return done
    if spec.parent_id:
        parent_state, _ = run_state(run_dir(directory.parent.parent, spec.parent_id))
        if parent_state != "done":
            raise RuntimeError(f"run {spec.run_id}: parent run {spec.parent_id} is "
                               f"{parent_state}, not done; submit the target again once it "
                               "has finished")
    main = _global_rank() == 0
    if main:     # a retry: the old failure is history, not this attempt's state
        (directory / "failed.json").unlink(missing_ok=True)
        atomic_write_json(directory / "running.json", {"started": now(), **provenance()})
    try:
        record = {"finished": now(), **kind_of(spec.stage).execute(spec, directory),
                  **provenance()}
    except JobRequeued as requeued:
        if main:
            atomic_write_json(directory / "running.json",
                              {"requeued": now(), "reason": str(requeued), **provenance()})
        raise
    except BaseException as err:
        if not main:
            raise
        atomic_write_json(directory / "failed.json",
                          {"finished": now(), "error": f"{type(err).__name__}: {err}",
                           "traceback": traceback.format_exc(), **provenance()})
        (directory / "running.json").unlink(missing_ok=True)
        raise
    if main:
        (directory / "failed.json").unlink(missing_ok=True)
        atomic_write_json(directory / "done.json", record)
        (directory / "running.json").unlink(missing_ok=True)
    return record


def _global_rank() -> int:
    """This process's rank in a multi-task job (only rank 0 writes the run's state files)."""
    return int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))


class TrainingJob(submitit.helpers.Checkpointable):
    """The callable every run's job executes: requeued with the same arguments on preemption
    or timeout (the run resumes from its newest checkpoint; repro/jobs/training.py)."""

    def __call__(self, spec_path: str) -> dict[str, Any]:
        defer_early()
        return execute(spec_path)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__)
        return 2
    execute(args[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
