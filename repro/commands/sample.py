"""`repro sample` (generate a video set from a checkpoint and a real set's condition frames) and
`repro sample-merge` (join the per-shard sets of a Slurm array)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from repro.commands.data import parse_size


def default_shard(environ=os.environ) -> tuple[int, int]:
    """(shard, shards) of a Slurm array task of consecutive ids (`--array=A-B`, shard 0 at A),
    else (0, 1). Other arrays (`--array=3,7`, `0-8:2`) do not say the shards: an error."""
    if "SLURM_ARRAY_TASK_ID" not in environ or "SLURM_ARRAY_TASK_COUNT" not in environ:
        return 0, 1
    count = int(environ["SLURM_ARRAY_TASK_COUNT"])
    low = int(environ.get("SLURM_ARRAY_TASK_MIN", 0))
    high = int(environ.get("SLURM_ARRAY_TASK_MAX", low + count - 1))
    step = int(environ.get("SLURM_ARRAY_TASK_STEP", 1))
    if high - low + 1 != count or step != 1:
        raise ValueError(f"Slurm array tasks {low}-{high} (step {step}, {count} tasks) are not "
                         "consecutive, so they do not say the shards: pass --shard and "
                         "--num-shards")
    return int(environ["SLURM_ARRAY_TASK_ID"]) - low, count


def add_vae_options(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """`--vae DIR` / `--random-vae`, as `load_vae` reads them."""
    vae = parser.add_mutually_exclusive_group(required=required)
    vae.add_argument("--vae", help="SD3 VAE: the model root or its vae/ folder")
    vae.add_argument("--random-vae", action="store_true",
                     help="a tiny random VAE (smoke runs; frames are noise)")


def load_vae(args: argparse.Namespace):
    """The SD3VAE that `--vae` / `--random-vae` (and `--device`) name."""
    from maskgwm.model.vae import SD3VAE
    if args.random_vae:
        print("WARNING: --random-vae: a random tiny VAE, the frames are noise (smoke runs only)")
        return SD3VAE.random()
    return SD3VAE.from_pretrained(args.vae, device=args.device)


def cmd_sample(args: argparse.Namespace) -> int:
    from maskgwm.sample import sample_videoset

    env_shard, env_shards = default_shard() if None in (args.shard, args.num_shards) else (0, 1)
    shard = env_shard if args.shard is None else args.shard
    shards = env_shards if args.num_shards is None else args.num_shards
    if not Path(args.checkpoint).is_file():   # before loading the (large) VAE
        raise FileNotFoundError(f"model checkpoint {args.checkpoint} not found (--checkpoint)")
    vae = load_vae(args)
    width, height = parse_size(args.size) if args.size else (None, None)
    out = sample_videoset(args.checkpoint, vae, args.real, args.out, shard=shard,
                          num_shards=shards, steps=args.steps, guidance=args.guidance,
                          seed=args.seed, frames=args.frames, width=width, height=height,
                          window=args.window, device=args.device,
                          views=args.views.split(",") if args.views else None)
    if shards > 1:
        print(f"when all {shards} shards are done: repro sample-merge "
              f"{Path(args.out) / 'shard-*'} --out MERGED --real {args.real}")
    else:
        print(f"generated set: {out}")
    return 0


def cmd_sample_merge(args: argparse.Namespace) -> int:
    from maskgwm.sample import merge_videosets

    merged = merge_videosets(args.parts, args.out, reference=args.real)
    print(f"{len(merged)} clips merged from {len(args.parts)} parts into {args.out}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate clips from a checkpoint, conditioned on the "
                                      "condition frames of a real video set")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (or trainer checkpoint)")
    p.add_argument("--real", required=True, help="real video set whose condition frames seed "
                                                 "generation (its clip ids, fps, lengths)")
    p.add_argument("--out", required=True, help="output video set (shards: OUT/shard-I-of-N)")
    add_vae_options(p)
    p.add_argument("--shard", type=int, default=None,
                   help="this shard's index (default: SLURM_ARRAY_TASK_ID, else 0)")
    p.add_argument("--num-shards", type=int, default=None,
                   help="number of shards (default: SLURM_ARRAY_TASK_COUNT, else 1)")
    p.add_argument("--steps", type=int, default=30, help="Euler steps (paper: 30)")
    p.add_argument("--guidance", type=float, default=4.0, help="CFG scale (paper: 4.0)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each clip's derives from it")
    p.add_argument("--size", default=None,
                   help="WxH when the checkpoint records no resolution (default: real size)")
    p.add_argument("--frames", type=int, default=None,
                   help="frames per clip (default: the real clip's; longer ones roll out)")
    p.add_argument("--window", type=int, default=None,
                   help="frames per window (default: the checkpoint's, else 25)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    p.add_argument("--views", default=None,
                   help="multi-view set: comma-separated camera names (clip ids <scene>/<CAM>, "
                        "as the evaluation set's evalset.json lists them); the views of a "
                        "scene are generated jointly")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sample-merge", help="join the shard sets of `repro sample` into one set")
    p.add_argument("parts", nargs="+", help="shard sets (OUT/shard-*-of-*)")
    p.add_argument("--out", required=True, help="merged video set (not one of the parts)")
    p.add_argument("--real", default=None,
                   help="the real set: keep its clip order and fail if a clip is missing")
    p.set_defaults(func=cmd_sample_merge)
