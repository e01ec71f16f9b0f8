"""The `repro` command-line interface: list, submit, status, table, collect, plot, report, eval,
weights, data, sample, vista."""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from evals.atomic import UnwritableError
from maskgwm.config import SCALES, ConfigError
from maskgwm.train import cli as train_cli
from maskgwm.train.options import STRATEGIES

from repro.commands.data import add_parsers as add_data_parsers
from repro.commands.evaluate import add_parsers as add_eval_parsers
from repro.targets.jobfiles import (ALL, JobFileError, Target, UnknownTarget, check_name,
                                    default_scale,
                                    load_all_targets, load_target, resolve_target)
from repro.targets.union import by_run, fan_out, owners
from repro.paths import work_dir
from repro.commands.sample import add_parsers as add_sample_parsers
from repro.launch.backends import CLUSTERS, SlurmUnavailable
from repro.launch.dryrun import dry_run
from repro.launch.submit import submit
from repro.vista.cli import add_parsers as add_vista_parsers

USER_ERRORS = (JobFileError, UnknownTarget, ConfigError, UnwritableError, SlurmUnavailable,
               ValueError, FileNotFoundError)


def positive_int(text: str) -> int:
    """argparse type of --seeds: a whole number >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def partition_name(text: str) -> str:
    """argparse type of --partition: a plain Slurm partition name."""
    try:
        return check_name("--partition", text)
    except JobFileError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_seeds_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--seeds", type=positive_int, default=None, metavar="N", help=what)


def cmd_list(args: argparse.Namespace) -> int:
    if args.target == ALL:
        return list_union(load_target(ALL), args.scale, args.seeds or 1)
    targets = [load_target(args.target)] if args.target else load_all_targets()
    seeds = args.seeds or 1
    uses: dict[str, list[str]] = defaultdict(list)
    for target in load_all_targets():
        for run in resolve_target(target, args.scale, seeds):
            uses[run.run_id] += list(run.cells) or [f"({target.name}:{run.name})"]
    for target in targets:
        runs = resolve_target(target, args.scale, seeds)
        print(f"{target.name:<8} {target.title}")
        print(f"         protocol {target.protocol}; scale {args.scale}; {target.path}"
              + (f"; {seeds} seeds (replicas <run>-seed<s>)" if seeds > 1 else ""))
        print(f"         {'run':<24} {'id':<12} {'stage':<5} {'variant':<22} {'steps':>6}  cells")
        for run in runs:
            shared = " (shared)" if len(set(uses[run.run_id])) > 1 else ""
            print(f"         {run.name:<24} {run.run_id:<12} {run.stage:<5} "
                  f"{run.variant or '-':<22} {run.steps:>6}  "
                  f"{', '.join(run.cells) or '-'}{shared}")
        print()
    print("Runs shared by several cells (trained and evaluated once):")
    for run_id, cells in uses.items():
        cells = list(dict.fromkeys(c for c in cells if not c.startswith("(")))
        if len(cells) > 1:
            print(f"  {run_id}: {', '.join(cells)}")
    return 0


def list_union(union: Target, scale: str, seeds: int) -> int:
    """`repro list all`: every run once with the targets that need it, the order the graph
    fans out in, and the GPU-hours of each run and evaluation counted once."""
    from repro.launch.dryrun import plan_hours
    runs = resolve_target(union, scale, seeds)
    print(f"{union.name:<8} {union.title}")
    print(f"         {', '.join(m.name for m in union.members)}; scale {scale}")
    print(f"         {'run':<24} {'id':<12} {'stage':<5} {'variant':<22} {'steps':>6}  "
          "cells (targets)")
    for run_id, entries in by_run(runs).items():
        run, cells = entries[0], [c for entry in entries for c in entry.cells]
        print(f"         {run.name:<24} {run_id:<12} {run.stage:<5} {run.variant or '-':<22} "
              f"{run.steps:>6}  {', '.join(cells) or '-'} ({', '.join(owners(entries))})")
    print("\nOrder (a run starts once its parent is done; siblings are independent):")
    for line in fan_out(runs):
        print(f"  {line}")
    training, sampling = plan_hours(runs)
    one_by_one = sum(sum(plan_hours(resolve_target(m, scale, seeds))) for m in union.members)
    print(f"\nEstimated GPU-hours, each run and evaluation once: {training + sampling:,.0f} "
          f"(training {training:,.0f}, sampling {sampling:,.1f}); the targets one by one "
          f"would add up to {one_by_one:,.0f} (repro/launch/estimate.py)")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    from repro.vista.inputs import given_inputs
    vista = given_inputs(args.vista_checkout, args.vista_ckpt,   # recorded by Vista runs
                         args.vista_python, args.vista_clip)
    target = load_target(args.target)
    scale = default_scale(args.target, args.scale)
    options = {key: value for key, value in (("strategy", args.strategy),
               ("activation_checkpointing", args.activation_checkpointing))
               if value is not None} or None
    if args.dry_run:
        dry_run(target, scale, work_dir(), args.partition, seeds=args.seeds or 1, vista=vista,
                train_options=options)
        return 0
    evals: list = []
    entries = submit(target, scale, args.cluster, work_dir(), wait=args.wait,
                     partition=args.partition, evals_out=evals, seeds=args.seeds or 1,
                     train_options=options, vista=vista)
    if args.cluster == "slurm" and not args.wait:
        print("submitted; follow with `repro status " + target.name + "`")
        return 0
    from repro.jobs.state import run_dir, run_state
    states = {e.run.run_id: run_state(run_dir(work_dir(), e.run.run_id)) for e in entries}
    failed = [e for e in entries if states[e.run.run_id][0] != "done"]
    for entry in failed:
        log = entry.job.stderr if entry.job else "-"
        print(f"not done: {entry.run.name} (run {entry.run.run_id}); log {log}")
    print(f"{len(entries) - len(failed)}/{len(entries)} runs done for {target.name} ({scale})")
    from repro.jobs.evaluation import eval_state
    evals_failed = [e for e in evals if eval_state(e.directory)[0] != "done"]
    if evals and not args.no_report:
        from repro.report.finish import report
        report(target, scale, seeds=args.seeds or 1)
    return 1 if failed or evals_failed else 0


def cmd_status(args: argparse.Namespace) -> int:
    from repro.commands.status import collect_status, format_status
    print(format_status(collect_status(work_dir(), args.target)))
    return 0


def members(name: str) -> list[Target]:
    """The targets a command goes through in turn: `all`'s members, else the one named."""
    target = load_target(name)
    return list(target.members) or [target]


def cmd_table(args: argparse.Namespace) -> int:
    from repro.report.table import render_target_table, write_target_table
    scale = default_scale(args.target, args.scale)
    for target in members(args.target):
        path = write_target_table(target, scale, seeds=args.seeds)
        print(render_target_table(target, scale, seeds=args.seeds), end="")
        print(f"\nwritten to {path}\n")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    scale = default_scale(args.target, args.scale)
    codes = [collect_one(target, scale, args.partial, args.seeds or 1)
             for target in members(args.target)]
    return max(codes)


def collect_one(target: Target, scale: str, partial: bool, seeds: int) -> int:
    from repro.report.collect import collect
    result = collect(target, scale, partial=partial, seeds=seeds)
    if notes := result.notes():
        print(notes, file=sys.stderr)
    if result.path is None:
        print(f"nothing written for {target.name} ({scale})"
              + ("; use --partial to collect the results that exist" if
                 (result.missing or result.stale) and result.rows else ""), file=sys.stderr)
        return 1
    runs = len({row["run_id"] for row in result.rows})
    scale_flag = f" --scale {scale}" if scale != default_scale(target.name, None) else ""
    n_seeds = len({row["seed"] for row in result.rows})
    print(f"{len(result.rows)} values from {runs} run(s)"
          + (f" ({n_seeds} seeds)" if n_seeds > 1 else "") + f" written to {result.path}; "
          f"show them with `repro table {target.name}{scale_flag}`")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if args.target == "qualitative":
        from repro.report.qualitative import cmd_qualitative
        return cmd_qualitative(args)
    from repro.report.plot import plot_target
    scale = default_scale(args.target, args.scale)
    written = [path for target in members(args.target)
               for path in plot_target(target, scale, seeds=args.seeds)]
    for path in written:
        print(f"written {path}")
    if not written:
        print(f"{args.target}: no FID/FVD table to plot", file=sys.stderr)
        return 1
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from repro.report.page import ReportError, scales_with_results, write_report
    if ALL in args.targets:
        args.targets = [m.name for m in load_target(ALL).members]
    targets = [load_target(name) for name in args.targets] or load_all_targets()
    scales = [args.scale] if args.scale else scales_with_results(targets)
    if not scales:
        print("repro report: nothing to report: no target has collected results (run `repro "
              "submit TARGET`, which collects, or `repro collect TARGET --partial`)",
              file=sys.stderr)
        return 1
    written = 0
    for scale in scales:
        out = args.out / scale if args.out and len(scales) > 1 else args.out
        try:
            path = write_report(scale, targets if args.targets else None,
                                named=bool(args.targets), out=out, videos=not args.no_videos)
        except ReportError as err:
            print(f"repro report: {err}", file=sys.stderr)
            continue
        written += 1
        print(f"report ({scale}): {path}")
    return 0 if written else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repro", description="MaskGWM reproduction suite: one job per paper table/figure.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="targets, their runs, protocols and the paper cells they fill")
    p.add_argument("target", nargs="?", help="show one target only; `all`: every run of every "
                   "target but smoke once, the order they fan out in and the GPU-hours")
    p.add_argument("--scale", choices=SCALES, default="paper", help="scale to resolve run ids at")
    add_seeds_argument(p, "also list the seed replicas of seeds 1..N-1 (default 1: none)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("submit", help="submit a target's runs (through submitit)")
    p.add_argument("target", help="a target in slurm/ (see `repro list`), or `all`: every "
                   "target but smoke, each run once")
    p.add_argument("--cluster", choices=CLUSTERS, default="local",
                   help="where to run: local processes (default), Slurm, or in-process debug")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="ci | smoke | lite | paper (default: smoke for `smoke`, else paper)")
    p.add_argument("--dry-run", action="store_true",
                   help="print Slurm options, command and GPU-hours per run; submit nothing")
    p.add_argument("--wait", action="store_true", help="with --cluster slurm: wait for all jobs")
    p.add_argument("--partition", type=partition_name, default=None,
                   help="Slurm partition (overrides the job file)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the closing collect, table, plots and results page (run when "
                   "jobs finish here)")
    p.add_argument("--strategy", choices=STRATEGIES, default=None,
                   help="multi-GPU training: ddp or fsdp (shards parameters, gradients and "
                   "optimizer state; same results); default: the cheapest that fits the GPUs' "
                   "memory (the dry-run prints each run's plan)")
    p.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction,
                   default=None, help="recompute each block's activations in backward (or "
                   "not); default: only where the memory plan needs it")
    p.add_argument("--vista-checkout", help="Vista checkout for the target's Vista run "
                   "(default $REPRO_VISTA_CHECKOUT; README: Comparing with Vista)")
    p.add_argument("--vista-ckpt", help="Vista checkpoint (default $REPRO_VISTA_CKPT, else "
                   "<checkout>/ckpts/vista.safetensors)")
    p.add_argument("--vista-python", help="the Python of Vista's environment (default "
                   "$REPRO_VISTA_PYTHON)")
    p.add_argument("--vista-clip", help="OpenCLIP ViT-H-14 weights for Vista: the file or a "
                   "hub cache folder (default $REPRO_VISTA_CLIP, else the default hub cache)")
    add_seeds_argument(p, "train and evaluate every run with paper cells with N seeds: seed 0 "
                       "is the run itself, seeds 1..N-1 replicas from the same parent "
                       "(default 1)")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="state of submitted runs, with log paths")
    p.add_argument("target", nargs="?", help="only this target's runs (`all`: every target's "
                   "but smoke)")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("table", help="the paper's table with our numbers beside it (Markdown)")
    p.add_argument("target", help="a target in slurm/, or `all` (each target in turn)")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="which of our results to show (default: smoke for `smoke`, else paper)")
    add_seeds_argument(p, "use seeds 0..N-1 of the collected results (default: all collected); "
                       "with several, ours = mean ± std and ablation rows are tested against "
                       "seed noise")
    p.set_defaults(func=cmd_table)

    p = sub.add_parser("collect", help="gather a target's evaluation results into "
                       "results/TARGET/SCALE.csv (with provenance)")
    p.add_argument("target", help="a target in slurm/, or `all` (each target in turn)")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="which runs to collect (default: smoke for `smoke`, else paper)")
    p.add_argument("--partial", action="store_true",
                   help="write the results that exist even if some runs have none yet")
    add_seeds_argument(p, "collect seeds 0..N-1 of every run (default 1), with mean, std and "
                       "n_seeds per cell")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("plot", help="figures of our numbers beside the paper's "
                       "(results/plots/, PNG and PDF); `plot qualitative TARGET --clips A,B`")
    p.add_argument("target", help="a target in slurm/ (e.g. fig6, fig7, table3a), "
                   "or `qualitative`")
    p.add_argument("qual_target", nargs="?", metavar="QUAL_TARGET",
                   help="with `qualitative`: the target whose runs to show")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="which of our results to plot (default: smoke for `smoke`, else paper)")
    p.add_argument("--clips", default=None, help="with `qualitative`: clip ids, comma-separated")
    add_seeds_argument(p, "use seeds 0..N-1 of the collected results (default: all collected)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("report", help="one results page per scale: every target's tables beside "
                       "the paper's, plots, videos, provenance (results/report/SCALE/index.html)")
    p.add_argument("targets", nargs="*", metavar="TARGET",
                   help="targets to show (default: every target with collected results)")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="one page for this scale (default: a page per scale with results)")
    p.add_argument("--out", type=Path, default=None,
                   help="folder of the page (default results/report/SCALE)")
    p.add_argument("--no-videos", action="store_true",
                   help="leave out the real-vs-generated videos (faster)")
    p.set_defaults(func=cmd_report)
    add_eval_parsers(sub)
    add_data_parsers(sub)
    add_sample_parsers(sub)
    add_vista_parsers(sub)
    train = sub.add_parser("train", help="train one stage (1a, 1b, 1c, 2, 3) into a folder")
    train_cli.add_arguments(train)
    train.set_defaults(func=train_cli.main)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open("/dev/null", "w")
        return 0
    except USER_ERRORS as err:
        print(f"repro: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"\n{interrupted_line(args, getattr(err, 'cancelled', 0))}", file=sys.stderr)
        return 130


def interrupted_line(args: argparse.Namespace, cancelled: int) -> str:
    """The one line Ctrl-C ends a command with (what stopped, how to go on)."""
    if args.command != "submit":
        return "repro: interrupted"
    queued = ("; jobs already queued on Slurm keep running (`repro status`)"
              if args.cluster == "slurm" else "")
    return (f"repro: interrupted: {cancelled} job{'' if cancelled == 1 else 's'} cancelled"
            f"{queued}; submit again to resume")


if __name__ == "__main__":
    sys.exit(main())
