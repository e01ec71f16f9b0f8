"""Vista runs in a target's job graph: given, skipped (ci/smoke without a checkout), or refused.

At lite and paper scale a target with a Vista run needs everything real Vista needs (a checkout,
its Python, the pinned checkpoint, the CLIP weights offline: inputs.py); `repro submit` refuses
before anything is submitted (repro/launch/preflight.py). At ci and smoke scale a Vista run without a
checkout is left out of the submission and the output says why; with one, the test double
stands in for Vista and the output says so. A Vista run's id does not depend on the checkout,
so a done run prepared with another sample.py or checkpoint than the configured one is retired
(`retire_if_changed`) and runs again.
"""
from __future__ import annotations

from pathlib import Path

from repro.records import VistaFields
from repro.vista.checkout import CHECKOUT_ENV, VistaError
from repro.vista.inputs import given_inputs, problems, stands_in, validate


def vista_runs(runs: list) -> list:
    return [run for run in runs if run.stage == "vista"]


def split_runs(runs: list, scale: str, inputs: VistaFields | None = None) -> tuple[list, str]:
    """(runs to submit, a message naming the Vista runs left out and why, or ""); `inputs`
    default to given_inputs()."""
    inputs = inputs or given_inputs()
    left_out = vista_runs(runs) if stands_in(scale) and not inputs.checkout else []
    if not left_out:
        return runs, ""
    names = ", ".join(f"{run.name} ({', '.join(run.cells) or '-'})" for run in left_out)
    return [run for run in runs if run not in left_out], (
        f"NOT RUN: Vista runs {names}: no Vista checkout given ({CHECKOUT_ENV} is not set) at "
        f"scale '{scale}'; set {CHECKOUT_ENV} (and REPRO_VISTA_CKPT) to compare with Vista "
        "(README: Comparing with Vista)")


def missing(runs: list, scale: str, workdir: Path | None = None,
            inputs: VistaFields | None = None
            ) -> list[tuple[str, str, str, list[tuple[str, str]]]]:
    """(what, path, fix, needed_by) for a target's Vista runs: at lite/paper always, at
    ci/smoke when a checkout is given."""
    runs, inputs = vista_runs(runs), inputs or given_inputs()
    if not runs or (stands_in(scale) and not inputs.checkout):
        return []
    users = list(dict.fromkeys(("Vista sampling", run.name) for run in runs))
    return [(what, path, fix, users) for what, path, fix
            in problems(inputs, scale, workdir)]


def retire_if_changed(run, workdir: Path, inputs: VistaFields | None = None) -> str:
    """For a done Vista run prepared with another sample.py or checkpoint than the configured
    ones: move its folder (with its evaluations) to <workdir>/runs-stale/ and say so, so that
    it is prepared and evaluated again; otherwise ""."""
    from repro.jobs.state import run_dir, run_state
    inputs = inputs or given_inputs()
    if run.stage != "vista" or not inputs.checkout:
        return ""
    directory = run_dir(workdir, run.run_id)
    state, record = run_state(directory)
    if state != "done":
        return ""
    try:
        now = validate(inputs, run.scale, workdir, check_python=False)
    except VistaError:
        return ""             # the preflight names what is wrong
    was = record.get("vista", {})
    if (was.get("vista_ckpt_sha256"), was.get("vista_sample_py_sha256")) == \
            (now.ckpt_sha256, now.script_sha256):
        return ""
    aside = workdir / "runs-stale" / f"{run.run_id}-{str(was.get('vista_ckpt_sha256'))[:12]}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    directory.rename(aside)
    return (f"Vista run {run.name} ({run.run_id}) was prepared with another sample.py or "
            f"checkpoint than {now.root}: its results were moved to {aside}; it runs again")
