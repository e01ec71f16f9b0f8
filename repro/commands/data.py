"""`repro data synth`, `repro data manifest` and `repro evalset build`."""
from __future__ import annotations

import argparse
from pathlib import Path

from maskgwm.data.registry import DATASETS, get_dataset, read_clips

from repro.jobs.evalsets import EVALSET_SOURCES, pick_clips, video_count

SYNTH_DATASETS = ("nuscenes", "opendv", "waymo")    # the synthetic writers (maskgwm/data/synth)


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size {text!r}: expected WxH, e.g. 160x90") from None
    return width, height


def cmd_synth(args: argparse.Namespace) -> int:
    width, height = parse_size(args.size)
    out = Path(args.out)
    if args.dataset == "nuscenes":
        from maskgwm.data.synth.nuscenes_writer import write_synthetic_nuscenes
        write_synthetic_nuscenes(out, n_scenes=args.scenes, seed=args.seed, width=width,
                                 height=height, seconds=args.seconds)
    elif args.dataset == "opendv":
        from maskgwm.data.synth.opendv_writer import write_synthetic_opendv
        write_synthetic_opendv(out, n_videos=args.scenes, seed=args.seed, width=width,
                               height=height, seconds=args.seconds)
    else:
        from maskgwm.data.synth.waymo_writer import write_synthetic_waymo
        write_synthetic_waymo(out, n_segments=args.scenes, seed=args.seed, width=width,
                              height=height, seconds=args.seconds)
    print(f"synthetic {args.dataset} written to {out} ({args.scenes} scenes, {width}x{height}, "
          f"seed {args.seed})")
    return 0


def print_skipped(skipped: list[str]) -> None:
    """What --skip-bad left out, so that nothing is dropped silently."""
    if skipped:
        print(f"skipped {len(skipped)} (--skip-bad):")
        for line in skipped:
            print(f"  {line}")


def cmd_manifest(args: argparse.Namespace) -> int:
    from maskgwm.data.manifest import ClipManifest
    skipped: list[str] = []
    clips = read_clips(args.dataset, Path(args.dataroot), args.split, args.frames, args.version,
                       args.skip_bad, skipped)
    print_skipped(skipped)
    path = ClipManifest(args.dataset, str(Path(args.dataroot).resolve()), clips).save(args.out)
    print(f"{len(clips)} clips of {args.dataset} {args.split} written to {path}")
    return 0


def cmd_evalset(args: argparse.Namespace) -> int:
    from evals.cliplist import write_clip_list
    from evals.protocols import get_protocol
    from maskgwm.data.manifest import ClipManifest

    protocol = get_protocol(args.protocol)
    if args.n_clips:
        protocol = protocol.replace(n_clips=args.n_clips)
    dataset, split, n_frames, cond = EVALSET_SOURCES[protocol.name]
    split = args.split or split
    version = args.version or get_dataset(dataset).eval_version
    skipped: list[str] = []
    clips = pick_clips(read_clips(dataset, Path(args.dataroot), split, n_frames, version,
                                  args.skip_bad, skipped), protocol)
    print_skipped(skipped)
    out = Path(args.out)
    ClipManifest(dataset, str(Path(args.dataroot).resolve()), clips).save(
        out.with_name(out.stem + ".manifest.json"))
    digest = write_clip_list(out, protocol.name, [
        {"clip_id": c.clip_id, "source_clip": c.source or c.clip_id, "frames": c.length,
         "cond_frames": cond, "fps": c.fps} for c in clips])
    videos = video_count(clips, protocol)
    note = "" if videos == protocol.n_clips else f" (the protocol asks for {protocol.n_clips})"
    print(f"{len(clips)} clips ({videos} videos){note} for {protocol.name} written to {out} "
          f"(hash {digest}); frames in {out.with_name(out.stem + '.manifest.json')}")
    return 0


def add_skip_bad(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip-bad", action="store_true",
                        help="nuScenes, OpenDV: skip broken scenes or videos (missing files, "
                        "scenes not in the version) and list them, instead of stopping")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthetic datasets and clip manifests")
    data = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    q = data.add_parser("synth", help="write a synthetic driving dataset in a real format")
    q.add_argument("dataset", choices=SYNTH_DATASETS)
    q.add_argument("out")
    q.add_argument("--scenes", type=int, default=2, help="scenes / videos / segments")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--size", default="160x90", help="frame size WxH")
    q.add_argument("--seconds", type=float, default=8.0, help="length of each scene")
    q.set_defaults(func=cmd_synth)
    q = data.add_parser("manifest", help="build a clip manifest from a dataset")
    q.add_argument("dataset", choices=list(DATASETS))
    q.add_argument("--dataroot", required=True)
    q.add_argument("--split", required=True, help="e.g. val, mini_val, Train, validation")
    q.add_argument("--frames", type=int, default=25, help="frames per clip")
    q.add_argument("--version", default="v1.0-trainval",
                   help="nuScenes version (v1.0-mini, ...) or Waymo format (v1, v2)")
    q.add_argument("--out", required=True, help=".json or .parquet")
    add_skip_bad(q)
    q.set_defaults(func=cmd_manifest)

    p = sub.add_parser("evalset", help="evaluation clip lists")
    evalset = p.add_subparsers(dest="evalset_command", required=True, metavar="ACTION")
    q = evalset.add_parser("build", help="the clip list a protocol scores, with its hash")
    q.add_argument("protocol", choices=tuple(EVALSET_SOURCES))
    q.add_argument("--dataroot", required=True)
    q.add_argument("--version", help="nuScenes version or Waymo format (default: trainval/v2)")
    q.add_argument("--split", help="override the protocol's split (e.g. mini_val)")
    q.add_argument("--n-clips", type=int, help="override the protocol's clip count (smoke)")
    q.add_argument("--out", required=True, help="clip list JSON")
    add_skip_bad(q)
    q.set_defaults(func=cmd_evalset)
