"""What a Vista run will submit, without submitting: the sample array's Slurm parameters and,
per shard, the staging directory and the exact `sample.py` command line (dry runs)."""
from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Any, Callable

from repro.records import VistaFields
from repro.vista.checkout import describe
from repro.vista.inputs import given_inputs, problems, stand_in_note, stands_in


def sample_plan(run, workdir: Path, partition: str | None = None, shards: int | None = None,
                inputs: VistaFields | None = None) -> dict[str, Any]:
    """{"sbatch": {...}, "array": N, "shards": [{"shard", "cwd", "argv"}], "settings": {...}};
    `inputs` default to given_inputs()."""
    from maskgwm.config import get_scale

    from repro.jobs.state import eval_dir
    from repro.launch.backends import sbatch_options
    from repro.launch.shapes import eval_shape
    from repro.vista.job import plan, settings_for
    inputs = inputs or given_inputs()
    shards = shards or get_scale(run.scale).sampling.shards
    sbatch = {**sbatch_options(eval_shape(run, workdir, "sample"), None, partition),
              "array": f"0-{shards - 1}"}
    settings = settings_for(run.protocol, run.scale, run.config.get("seed", 0), inputs)
    vista = dataclasses.replace(inputs, settings=settings.to_dict())
    return {"sbatch": sbatch, "array": shards, "settings": settings.to_dict(),
            "shards": plan(vista, run.scale, shards, eval_dir(workdir, run.run_id, run.protocol))}


def echo_plan(run, workdir: Path, partition: str | None, echo: Callable[[str], None] = print,
              shards: int | None = None, inputs: VistaFields | None = None) -> dict[str, Any]:
    from repro.launch.backends import sbatch_command
    inputs = inputs or given_inputs()
    found = sample_plan(run, workdir, partition, shards, inputs)
    if stands_in(run.scale):
        given = Path(inputs.checkout) if inputs.checkout else None
        echo(f"   NOTE: {stand_in_note(given, run.scale)}")
    echo(f"   Vista sample array ({found['array']} shards, afterok on the prepare job): "
         f"{sbatch_command(found['sbatch'])}")
    first = found["shards"][0]
    echo(f"   shard 0 of {found['array']}: cd {shlex.quote(str(first['cwd']))} && "
         f"{shlex.join(first['argv'])}")
    wrong = problems(inputs, run.scale, workdir)
    if wrong:
        echo("   WARNING: Vista cannot run as configured:\n" + describe(wrong))
    return found
