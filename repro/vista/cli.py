"""`repro vista check | export | sample`: the Vista comparison by hand (README: Comparing with
Vista). `sample` runs the same jobs as a target's Vista run (same run id, same evaluation
folder), so `repro submit table1` later finds its result."""
from __future__ import annotations

import argparse
from pathlib import Path

from repro.records import VistaFields
from repro.vista.checkout import CHECKOUT_ENV, CKPT_ENV, VistaError, describe
from repro.vista.environment import PYTHON_ENV
from repro.vista.weights import CLIP_ENV, UNPINNED_ENV


def inputs_of(args: argparse.Namespace) -> VistaFields:
    """The flags, else the REPRO_VISTA_* variables (repro/vista/inputs.given_inputs)."""
    from repro.vista.inputs import given_inputs
    return given_inputs(*(getattr(args, key, None) for key in ("checkout", "ckpt", "python",
                                                                "clip")),
                        allow_unpinned=getattr(args, "allow_unpinned", False),
                        sampler=getattr(args, "sampler", None))


def vista_run(protocol: str, scale: str):
    """The Vista run of the target that scores `protocol` (table1, table2, fig6)."""
    from repro.targets.jobfiles import load_all_targets, resolve_target
    for target in load_all_targets():
        for run in resolve_target(target, scale):
            if run.stage == "vista" and run.protocol == protocol:
                return run
    raise VistaError(f"no target has a Vista run scored with protocol '{protocol}' "
                     "(Vista runs: table1 vista_nuscenes, table2 waymo_zeroshot, "
                     "fig6 opendv_long)")


def cmd_check(args: argparse.Namespace) -> int:
    """Real Vista, as lite/paper scale runs it: checkout, Python, checkpoint, CLIP weights."""
    from repro.paths import work_dir
    from repro.vista.inputs import check_report
    lines, wrong = check_report(inputs_of(args), work_dir())
    if wrong:
        print(f"Vista cannot run ({len(wrong)} problems):\n" + describe(wrong))
        return 2
    print("\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from repro.jobs.evalsets import ensure_evalset
    from repro.paths import work_dir
    from repro.vista.export import export_bundle
    from repro.vista.job import settings_for
    settings = settings_for(args.protocol, args.scale)
    evalset = ensure_evalset(args.protocol, args.scale, work_dir())
    out = export_bundle(evalset, Path(args.out), settings.n_conds,
                        (settings.width, settings.height), settings.n_frames)
    print(f"{out}: annos/nuScenes_val.json, data/nuscenes/, index_map.json "
          f"({settings.n_conds} condition frames at {settings.width}x{settings.height})")
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    inputs = inputs_of(args)
    from repro.jobs.state import git_commit
    from repro.launch.backends import backend_for
    from repro.launch.graph import evaluation, run_node
    from repro.launch.submit import Scheduler, submit_eval, submit_run
    from repro.paths import work_dir
    from repro.vista.inputs import validate
    from repro.vista.plan import echo_plan
    workdir = work_dir()
    run = vista_run(args.protocol, args.scale)
    if args.dry_run:
        print(f"# dry run: Vista run {run.run_id} ({run.target}/{run.name}), protocol "
              f"{run.protocol}, scale {args.scale} (nothing submitted)")
        echo_plan(run, workdir, args.partition, shards=args.shards, inputs=inputs)
        return 0
    validate(inputs, args.scale, workdir)   # refuse before anything is submitted
    from repro.vista.graph import retire_if_changed
    note = retire_if_changed(run, workdir, inputs)  # another checkpoint or sample.py
    if note:
        print(note)
    backend = backend_for(args.cluster, args.partition)
    backend.check()
    scheduler, commit = Scheduler(backend), git_commit()
    node = run_node(run, workdir, None, commit, vista=inputs)
    entry = submit_run(scheduler, node)
    print(f"{entry.action:>9}  Vista prepare job, run {run.run_id}"
          + (f"  job {entry.job_id}" if entry.job_id else ""))
    if not backend.queues and not node.done():
        print(f"the prepare step failed: {node.state_dir / 'failed.json'}")
        return 1
    item = submit_eval(scheduler, evaluation(run, node, workdir, commit, args.shards, inputs))
    print(f"eval {item.action}: {item.describe()}")
    return 0 if backend.queues or item.action in ("skipped", "submitted") else 1


def add_parsers(sub) -> None:
    from maskgwm.config import SCALES

    from repro.launch.backends import CLUSTERS
    vista = sub.add_parser("vista", help="compare with Vista's official checkpoint "
                           "(check, export, sample)")
    inner = vista.add_subparsers(dest="vista_command", required=True)

    def paths(p):
        p.add_argument("--checkout", help=f"Vista checkout (default ${CHECKOUT_ENV})")
        p.add_argument("--ckpt", help=f"checkpoint (default ${CKPT_ENV}, else "
                       "<checkout>/ckpts/vista.safetensors)")
        p.add_argument("--python", help=f"the Python of Vista's environment (default "
                       f"${PYTHON_ENV}, else this suite's)")
        p.add_argument("--clip", help=f"OpenCLIP ViT-H-14 weights: the file or a Hugging Face "
                       f"hub cache folder (default ${CLIP_ENV}, else the default hub cache)")
        p.add_argument("--allow-unpinned", action="store_true", help="accept a checkpoint or "
                       f"CLIP file other than the published one (${UNPINNED_ENV}=1); every "
                       "result then says so")

    p = inner.add_parser("check", help="can real Vista run here (checkout, its Python, the "
                         "pinned checkpoint, the CLIP weights offline)")
    paths(p)
    p.set_defaults(func=cmd_check)
    p = inner.add_parser("export", help="an evaluation set as Vista's manifest + frames")
    p.add_argument("protocol")
    p.add_argument("--scale", choices=SCALES, default="paper")
    p.add_argument("--out", required=True, help="folder to write (Vista's working-dir layout)")
    p.set_defaults(func=cmd_export)
    p = inner.add_parser("sample", help="run Vista's sample.py over an evaluation set "
                         "(sharded, resumable), then score it")
    p.add_argument("protocol")
    paths(p)
    p.add_argument("--scale", choices=SCALES, default="paper")
    p.add_argument("--shards", type=int, default=None)
    p.add_argument("--sampler", help="override Vista's sampler settings, e.g. "
                   "n_steps=25,cfg_scale=2.0 (default: sample.py's 50 steps, cfg 2.5, "
                   "cond_aug 0.0; recorded with the results)")
    p.add_argument("--cluster", default="local", choices=CLUSTERS)
    p.add_argument("--partition", default=None)
    p.add_argument("--dry-run", action="store_true")
    p.set_defaults(func=cmd_sample)
