"""`repro eval`, `repro eval-merge`, `repro eval-sensitivity` and `repro weights check`."""
from __future__ import annotations

import argparse
from pathlib import Path

from evals.atomic import atomic_write_text

from repro.commands.sample import add_vae_options


def parse_shard(text: str | None) -> tuple[int, int]:
    if not text:
        return (0, 1)
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text!r}: need 0 <= I < N")
    return index, count


def _protocol(args: argparse.Namespace):
    from evals.protocols import get_protocol
    protocol = get_protocol(args.protocol)
    if args.n_boot is not None:
        protocol = protocol.replace(**{"bootstrap.n_boot": args.n_boot})
    return protocol


def _weights(args: argparse.Namespace) -> Path | None:
    if args.random_weights:
        return None
    if not args.weights_dir:
        raise ValueError("give --weights-dir DIR with the detector weights (see `repro weights "
                         "check DIR`), or --random-weights for a labelled, non-comparable run")
    return Path(args.weights_dir)


def cmd_eval(args: argparse.Namespace) -> int:
    from evals.evaluate import evaluate, format_result
    result = evaluate(_protocol(args), args.generated, args.reference, args.out,
                      weights_dir=_weights(args), clip_list=args.clip_list,
                      shard=parse_shard(args.shard), cache_dir=args.cache_dir,
                      device=args.device, progress=not args.quiet)
    if isinstance(result, Path):
        print(f"shard written to {result}; run `repro eval-merge {args.out}` when all are done")
    else:
        print(format_result(result))
        print(f"written to {args.out}")
    return 0


def cmd_eval_merge(args: argparse.Namespace) -> int:
    from evals.evaluate import format_result, merge_shards
    result = merge_shards(args.out, [Path(d) for d in args.shards] or None)
    print(format_result(result))
    print(f"written to {args.out}")
    return 0


def _sensitivity_protocol(args: argparse.Namespace):
    if not args.scale:
        return _protocol(args)
    from repro.jobs.evalsets import scaled_protocol
    base = scaled_protocol(args.protocol, args.scale)
    if args.n_boot is not None:
        base = base.replace(**{"bootstrap.n_boot": args.n_boot})
    return base


def _sensitivity_sets(args: argparse.Namespace) -> dict[str, Path]:
    sets = {args.name: Path(args.generated)}
    for item in args.also or []:
        name, _, folder = item.partition("=")
        if not folder:
            raise ValueError(f"--also {item!r}: expected NAME=DIR")
        sets[name] = Path(folder)
    return sets


def _regeneration_plans(args: argparse.Namespace, sets: dict[str, Path],
                        scales: tuple[float, ...]) -> dict:
    """Each set's Regeneration, or why it is not regenerable (`--checkpoint`: --generated's);
    without scales nothing is looked at (no checkpoint hashed)."""
    from repro.commands.guidance import plan_regeneration
    if not scales:
        return dict.fromkeys(sets, "guidance not varied")
    real = Path(args.real or args.reference)
    checkpoint = Path(args.checkpoint) if args.checkpoint else None
    return {name: plan_regeneration(folder, checkpoint if index == 0 else None, real)
            for index, (name, folder) in enumerate(sets.items())}


def _regeneration_vae(args: argparse.Namespace, plans: dict, scales: tuple[float, ...]):
    """The VAE to regenerate with; None when nothing is regenerated."""
    from repro.commands.sample import load_vae
    regenerable = [name for name, plan in plans.items() if not isinstance(plan, str)]
    if not scales or not regenerable:
        return None
    if not (args.vae or args.random_vae):
        raise ValueError(f"{', '.join(regenerable)} can be regenerated at sampling guidance "
                         f"{', '.join(map(str, scales))}: give the VAE it was sampled with "
                         "(--vae DIR or --random-vae), or --guidance '' to vary no guidance")
    return load_vae(args)


def _page_command(args: argparse.Namespace) -> str:
    import shlex
    import sys
    if args.command:
        return args.command
    if Path(sys.argv[0]).name in ("repro", "cli.py", "__main__.py"):
        return "repro " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return "repro eval-sensitivity ..."


def cmd_eval_sensitivity(args: argparse.Namespace) -> int:
    """One set: the table `--out` and its rows as JSON (OUT with .rows.json). With `--also
    NAME=DIR` (repeatable) and `--page FILE`: the same variants for every set, and a results
    page comparing them (repro/commands/sensitivity.py). Sets with sampling.json are also
    regenerated at each `--guidance` scale and scored under the base protocol
    (repro/commands/guidance.py)."""
    import json

    from evals.extractors import build_extractors

    from repro.commands.guidance import parse_guidance, summary
    from repro.jobs.state import git_commit
    from repro.commands.sensitivity import (page_markdown, score_guidance, score_variants,
                                            table_markdown)
    base = _sensitivity_protocol(args)
    weights = _weights(args)
    out = Path(args.out)
    sets = _sensitivity_sets(args)
    scales = parse_guidance(args.guidance)
    plans = _regeneration_plans(args, sets, scales)
    vae = _regeneration_vae(args, plans, scales)
    extractors = build_extractors(base, weights, args.device)
    scored = {}
    for index, (name, folder) in enumerate(sets.items()):
        stem = out if index == 0 else out.with_name(f"{out.stem}.{index}{out.suffix}")
        one = score_variants(base, folder, Path(args.reference), stem, weights,
                             args.cache_dir, args.device, extractors)
        one["rows"] += score_guidance(base, plans[name], scales, one["rows"][0], folder,
                                      Path(args.reference), stem, weights, args.cache_dir,
                                      args.device, extractors, vae)
        scored[name] = {**one, "path": str(folder), "guidance": summary(plans[name], scales)}
        atomic_write_text(stem, table_markdown(base, str(folder), args.reference, scored[name]))
        rows_json = stem.with_suffix(".rows.json")
        atomic_write_text(rows_json, json.dumps(scored[name], indent=1) + "\n")
        print(f"written to {stem} and {rows_json}")
    if args.page:
        atomic_write_text(Path(args.page), page_markdown(
            base, args.reference, scored, git_commit(), _page_command(args), args.title,
            args.banner))
        print(f"results page written to {args.page}")
    return 0


def cmd_weights_check(args: argparse.Namespace) -> int:
    from evals.weights import check_weights_dir
    if not Path(args.dir).is_dir():
        raise FileNotFoundError(f"{args.dir}: no such folder; give the folder that holds the "
                                "detector weight files (README: What you must obtain yourself)")
    rows = check_weights_dir(args.dir)
    for row in rows:
        state = "ok" if row.ok else ("WRONG FILE" if row.present else
                                     "A FOLDER" if row.file.is_dir() else "MISSING")
        print(f"{state:<10} {row.name:<22} {row.file}"
              + ("  (a folder stands where the weight file should be: put the file itself "
                 "there)" if state == "A FOLDER" else ""))
        if row.present:
            print(f"           {row.hash_kind} expected {row.expected_hash}, actual {row.actual_hash}")
    return 0 if all(row.ok for row in rows) else 1


def add_parsers(sub: argparse._SubParsersAction) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--generated", required=True, help="generated video set (folder)")
        p.add_argument("--reference", required=True,
                       help="reference video set, or a reference feature bundle folder")
        p.add_argument("--weights-dir", help="folder with the detector weight files")
        p.add_argument("--random-weights", action="store_true",
                       help="seeded random detectors (labelled: not comparable with papers)")
        p.add_argument("--cache-dir", help="cache reference features here (by content hash)")
        p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
        p.add_argument("--n-boot", type=int, help="bootstrap replicates (0: no intervals; "
                       "changes the protocol hash)")

    p = sub.add_parser("eval", help="FID, FVD and KID of a generated set under a protocol")
    p.add_argument("--protocol", required=True, help="vista_nuscenes, drivewm_mview, ...")
    common(p)
    p.add_argument("--out", required=True, help="result JSON (shards write OUT.shard-I-of-N/)")
    p.add_argument("--shard", help="I/N: score clips I, I+N, ... (merge with eval-merge)")
    p.add_argument("--clip-list", help="clip list file fixing which clips and their order")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("eval-merge", help="merge the shards of `repro eval --shard` and score")
    p.add_argument("out", help="the --out given to the shards")
    p.add_argument("shards", nargs="*", help="shard folders (default: OUT.shard-*-of-*)")
    p.set_defaults(func=cmd_eval_merge)

    p = sub.add_parser("eval-sensitivity",
                       help="score one generated set under protocol variants, as a table")
    p.add_argument("--protocol", required=True)
    common(p)
    p.add_argument("--out", required=True, help="Markdown table to write (further sets: "
                   "OUT.1.md, ...)")
    p.add_argument("--name", default="generated", help="name of --generated on the page")
    p.add_argument("--also", action="append", metavar="NAME=DIR",
                   help="another generated set scored the same way (e.g. Vista's), repeatable")
    p.add_argument("--page", help="write a results page comparing every set (Markdown)")
    p.add_argument("--scale", help="score with the protocol as scaled for this suite scale "
                   "(ci, smoke: the small synthetic evaluation sets)")
    p.add_argument("--title", help="page title")
    p.add_argument("--banner", help="a prominent note at the top of the page")
    p.add_argument("--command", help="the command shown on the page (default: this one)")
    p.add_argument("--guidance", help="sampling guidance scales at which sets with "
                   "sampling.json are regenerated and scored (default 1.0,2.5,4.0; '' for "
                   "none); other sampling settings are the set's own")
    p.add_argument("--checkpoint", help="model checkpoint to regenerate --generated with "
                   "(default: the one its sampling.json names; must be the same file)")
    p.add_argument("--real", help="real set whose condition frames seed the regeneration "
                   "(default: --reference)")
    add_vae_options(p, required=False)
    p.set_defaults(func=cmd_eval_sensitivity)

    p = sub.add_parser("weights", help="detector weight files")
    weights = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = weights.add_parser("check", help="report every detector file in DIR and its hash")
    q.add_argument("dir")
    q.set_defaults(func=cmd_weights_check)
