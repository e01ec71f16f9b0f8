"""`repro eval`, `repro eval-merge`, `repro eval-sensitivity` and `repro weights check`."""
from __future__ import annotations

import argparse
from pathlib import Path

from .fsio import atomic_write_text

SENSITIVITY_VARIANTS = (
    ("base protocol", {}),
    ("FVD on the first 16 frames", {"fvd.num_frames": 16}),
    ("condition frames excluded from FVD", {"fvd.first_frame": "cond"}),
    ("condition frames counted for FID", {"fid.exclude_cond_frames": "flip"}),
    ("FID resize swapped (tf <-> torch bilinear)", {"fid.resize": "swap"}),
    ("FVD resize swapped (tf <-> torch bilinear)", {"fvd.resize": "swap"}),
    ("centre crop to a square before resizing", {"fid.crop": "center", "fvd.crop": "center"}),
    ("FVD detector: StyleGAN-V TorchScript I3D", {"fvd.detector": "i3d-torchscript"}),
)


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


def _variant(protocol, changes: dict):
    resolved = {}
    for key, value in changes.items():
        section, name = key.split(".")
        current = getattr(getattr(protocol, section), name)
        if value == "swap":
            value = "torch_bilinear" if current == "tf_bilinear" else "tf_bilinear"
        elif value == "flip":
            value = not current
        elif value == "cond":
            value = protocol.cond_frames
        resolved[key] = value
    return protocol.replace(**resolved)


def cmd_eval_sensitivity(args: argparse.Namespace) -> int:
    from evals.evaluate import evaluate
    from evals.extractors import build_extractors, rebind
    base = _protocol(args)
    weights = _weights(args)
    out = Path(args.out)
    base_extractors = build_extractors(base, weights, args.device)
    rows, base_values = [], None
    for label, changes in SENSITIVITY_VARIANTS:
        if changes.get("fvd.detector") == "i3d-torchscript" and weights is None:
            rows.append(f"| {label} | skipped: needs the real TorchScript file | | | | |")
            continue
        protocol = _variant(base, changes)
        same_detectors = protocol.fvd.detector == base.fvd.detector
        extractors = rebind(base_extractors, protocol) if same_detectors else None
        result = evaluate(protocol, args.generated, args.reference,
                          out.with_suffix(f".{protocol.hash}.json"), weights_dir=weights,
                          cache_dir=args.cache_dir, device=args.device, progress=False,
                          extractors=extractors)
        point = result["points"][0]
        values = (point["fid"]["value"], point["fvd"]["value"])
        base_values = base_values or values
        rows.append(f"| {label} | {protocol.hash} | {values[0]:.2f} | {values[1]:.2f} | "
                    f"{values[0] - base_values[0]:+.2f} | {values[1] - base_values[1]:+.2f} |")
        print(rows[-1], flush=True)
    label = result["label"] if rows else ""
    text = "\n".join([f"# Protocol sensitivity: {base.name}", "",
                      f"generated `{args.generated}`, reference `{args.reference}`"
                      + (f"; **{label}**" if label else ""), "",
                      "| variant | protocol hash | FID | FVD | Δ FID | Δ FVD |",
                      "|---|---|---|---|---|---|", *rows]) + "\n"
    atomic_write_text(out, text)
    print(f"written to {out}")
    return 0


def cmd_weights_check(args: argparse.Namespace) -> int:
    from evals.weights import check_weights_dir
    rows = check_weights_dir(args.dir)
    for row in rows:
        state = "ok" if row.ok else ("MISSING" if not row.present else "WRONG FILE")
        print(f"{state:<10} {row.name:<22} {row.file}")
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
    p.add_argument("--out", required=True, help="Markdown table to write")
    p.set_defaults(func=cmd_eval_sensitivity)

    p = sub.add_parser("weights", help="detector weight files")
    weights = p.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    q = weights.add_parser("check", help="report every detector file in DIR and its hash")
    q.add_argument("dir")
    q.set_defaults(func=cmd_weights_check)
