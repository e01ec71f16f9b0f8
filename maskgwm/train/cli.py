"""`repro train STAGE` (also `python -m maskgwm.train STAGE`): resolve a run config and train.

    repro train STAGE [--preset VARIANT] [--scale smoke|paper|ci|lite] [--resume] [--out DIR]
                      [--data-root DIR] [--weights DIR] [--parent CKPT] [--steps N] ...

The config comes from `maskgwm.config.resolve.resolve_run_config` (as
`repro.targets.jobfiles` resolves a run's); VARIANT is a name in maskgwm/config/variants.toml
(default: no-mr for 1a/1b, ours for 1c/2/3). Without --resume, an --out that already holds checkpoints is an error. The preemption
signal (USR2, or $SUBMITIT_PREEMPT_SIGNAL; e.g. `sbatch --signal=USR2@120`) stops training at
the next step boundary with a checkpoint; the command then exits with status 3, and the same
command with --resume continues.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from maskgwm.config.resolve import STAGES, resolve_run_config, variant_names
from maskgwm.config.scales import SCALES
from maskgwm.train.options import STRATEGIES
from maskgwm.train.signals import DeferredSignal

DEFAULT_VARIANT = {"1a": "no-mr", "1b": "no-mr", "1c": "ours", "2": "ours", "3": "ours"}
KNOWN_ERRORS = ("ConfigError", "OutputDirError", "DataSetupError", "ModelSetupError",
                "CheckpointMismatchError", "DistributedError", "CheckpointMismatch",
                "FileNotFoundError", "TextConditioningError", "TrainingDivergedError",
                "CheckpointWriteError")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="training stage (docs/DESIGN.md section 2)")
    parser.add_argument("--preset", "--variant", dest="variant", choices=variant_names(),
                        help="model variant (default: no-mr for 1a/1b, ours for 1c/2/3)")
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the newest checkpoint in --out")
    parser.add_argument("--out", help="run folder (default: work/train/STAGE-VARIANT-SCALE)")
    parser.add_argument("--data-root", help="real datasets: <root>/opendv, <root>/nuscenes "
                        "(default: $REPRO_DATA_ROOT)")
    parser.add_argument("--weights", help="weights root with stable-diffusion-3-medium-"
                        "diffusers/ (default: $REPRO_WEIGHTS)")
    parser.add_argument("--parent", help="the previous stage's model.pt or checkpoint")
    parser.add_argument("--steps", type=int, help="override stage.steps")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="config override, e.g. --set mask.ratio=0.4 (repeatable)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers")
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--keep-last", type=int, default=3)
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--sample-every", type=int, default=0)
    parser.add_argument("--strategy", choices=STRATEGIES, default="ddp",
                        help="with several processes: ddp, or fsdp (FSDP2 sharding)")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="regional torch.compile of the DiT and F blocks (GPU speed; the "
                        "first steps compile)")
    parser.add_argument("--ema", type=float, default=None, metavar="DECAY",
                        help="EMA decay of the weights, 0 for none (sets optim.ema_decay; "
                        "default 0.9999 with Vista's warm-up)")
    parser.add_argument("--device", help="torch device (default: cuda:LOCAL_RANK or cpu)")
    parser.add_argument("--cache-dir", help="synthetic data and latent cache "
                        "(default: OUT/cache)")


def parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def main(args: argparse.Namespace) -> int:
    from maskgwm.train.checkpoint_files import list_checkpoints
    from maskgwm.train.options import TrainOptions
    from maskgwm.train.trainer import Trainer
    try:
        variant = args.variant or DEFAULT_VARIANT[args.stage]
        overrides = parse_overrides(args.set)
        if args.steps is not None:
            overrides["stage.steps"] = args.steps
        if args.ema is not None:
            overrides["optim.ema_decay"] = args.ema
        config = resolve_run_config(args.stage, args.scale, variant, overrides, args.seed,
                                    "command line")
        out = Path(args.out or f"work/train/{args.stage}-{variant}-{args.scale}")
        if not args.resume and list_checkpoints(out):
            print(f"error: {out / 'checkpoints'} already holds checkpoints: pass --resume to "
                  f"continue that run, or choose another --out", file=sys.stderr)
            return 2
        if args.resume and not list_checkpoints(out) and not (out / "model.pt").is_file():
            print(f"note: --resume, but {out / 'checkpoints'} holds no checkpoint: starting at "
                  f"step 0", file=sys.stderr)
        options = TrainOptions(checkpoint_every=args.checkpoint_every, keep_last=args.keep_last,
                               log_every=args.log_every, sample_every=args.sample_every,
                               workers=args.workers, strategy=args.strategy,
                               activation_checkpointing=args.activation_checkpointing,
                               compile=args.compile, device=args.device,
                               cache_dir=args.cache_dir)
        trainer = Trainer(config, out, parent_checkpoint=args.parent, data_root=args.data_root,
                          weights_root=args.weights, options=options)
        deferred = DeferredSignal().install()
        try:
            result = trainer.run(stop=lambda: deferred.requested)
        finally:
            deferred.restore()
    except Exception as err:  # noqa: BLE001 - known errors become one line
        if type(err).__name__ not in KNOWN_ERRORS and not isinstance(err, ValueError):
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, float)}))
    if result["status"] == "interrupted":
        print(f"stopped at step {result['step']} on {deferred.signum.name} (checkpoint: "
              f"{result['checkpoint'] or 'none yet'}); run the same command with --resume to "
              f"continue", file=sys.stderr)
        return 3
    return 0


def run_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m maskgwm.train",
                                     description="train one MaskGWM stage")
    add_arguments(parser)
    return main(parser.parse_args(argv))
