"""TEST DOUBLE of OpenDriveLab/Vista sample.py -- not Vista, no model, no checkpoint weights used.

A stand-in for CI: it takes the same command-line flags with the same defaults as Vista's
sample.py at the commit repro/vista/checkout.py names (VISTA_COMMIT), reads the same files
relative to its working directory (annos/nuScenes_val.json, data/nuscenes/<frames>,
configs/inference/vista.yaml, ckpts/vista.safetensors) and writes the same output layout:

    <save>/virtual/images/NUSCENES_{index:06d}_{frame:04d}.png   generated frames
    <save>/real/images/NUSCENES_{index:06d}_{frame:04d}.png      the first n_frames real frames
    <save>/{virtual,real}/grids/NUSCENES_{index:06d}.png          a grid of the frames

(Vista also writes <save>/{virtual,real}/videos/*.mp4; the double does not.) A clip has
n_rounds * (n_frames - 3) + 3 generated frames; frame 0 is the condition frame (Vista writes
its VAE reconstruction there). Later frames are a deterministic function of the condition
frames and --seed: shifted copies plus noise. Written with numpy and Pillow only.

Extra, for tests only: REPRO_VISTA_DOUBLE_STOP_AFTER=N makes it exit with status 3 after
writing N clips (a job killed midway).
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

VISTA_TEST_DOUBLE = True

DATA_ROOT = "data/nuscenes"
ANNO_FILE = "annos/nuScenes_val.json"
CONFIG = "configs/inference/vista.yaml"
CKPT = "ckpts/vista.safetensors"


def parse_args(**parser_kwargs):
    parser = argparse.ArgumentParser(**parser_kwargs)
    parser.add_argument("--version", type=str, default="vwm", help="model version")
    parser.add_argument("--dataset", type=str, default="NUSCENES", help="dataset name")
    parser.add_argument("--save", type=str, default="outputs", help="directory to save samples")
    parser.add_argument("--action", type=str, default="free", help="action mode")
    parser.add_argument("--n_rounds", type=int, default=1, help="number of sampling rounds")
    parser.add_argument("--n_frames", type=int, default=25, help="frames per round")
    parser.add_argument("--n_conds", type=int, default=1, help="initial condition frames")
    parser.add_argument("--seed", type=int, default=23, help="random seed")
    parser.add_argument("--height", type=int, default=576, help="target height")
    parser.add_argument("--width", type=int, default=1024, help="target width")
    parser.add_argument("--cfg_scale", type=float, default=2.5, help="guidance scale")
    parser.add_argument("--cond_aug", type=float, default=0.0, help="noise augmentation")
    parser.add_argument("--n_steps", type=int, default=50, help="sampling steps")
    parser.add_argument("--rand_gen", action="store_false", help="random or sequential")
    parser.add_argument("--low_vram", action="store_true", help="low VRAM mode")
    return parser


def load_frame(path, height, width):
    """Centre crop to the target aspect, LANCZOS resize (as Vista's load_img), uint8 HWC."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    if w / h > width / height:
        tmp = int(width / height * h)
        image = image.crop(((w - tmp) // 2, 0, (w + tmp) // 2, h))
    elif w / h < width / height:
        tmp = int(height / width * w)
        image = image.crop((0, (h - tmp) // 2, w, (h + tmp) // 2))
    return np.asarray(image.resize((width, height), resample=Image.LANCZOS), dtype=np.uint8)


def fake_rollout(conds, total, seed):
    """Frame 0 = the first condition frame; frame t a shifted copy of a condition frame plus
    seeded noise (deterministic in the condition frames and the seed)."""
    rng = np.random.default_rng(seed)
    frames = [conds[0]]
    for t in range(1, total):
        base = conds[min(t, len(conds) - 1)].astype(np.int16)
        shifted = np.roll(base, shift=t % base.shape[1], axis=1)
        noise = rng.integers(-12, 13, size=base.shape, dtype=np.int16)
        frames.append(np.clip(shifted + noise, 0, 255).astype(np.uint8))
    return frames


def save(folder, index, frames):
    os.makedirs(os.path.join(folder, "images"), exist_ok=True)
    os.makedirs(os.path.join(folder, "grids"), exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(os.path.join(folder, "images",
                                                 f"NUSCENES_{index:06}_{t:04}.png"))
    Image.fromarray(np.concatenate(frames, axis=1)).save(
        os.path.join(folder, "grids", f"NUSCENES_{index:06}.png"))


def main():
    opt, _unknown = parse_args().parse_known_args()   # Vista ignores unknown flags too
    for needed in (CONFIG, CKPT):
        assert os.path.exists(needed), needed
    if opt.dataset != "NUSCENES" or opt.action != "free":
        raise SystemExit("the test double supports --dataset NUSCENES --action free only")
    if opt.rand_gen:
        raise SystemExit("the test double only walks the manifest in order (pass --rand_gen)")
    with open(ANNO_FILE) as handle:
        samples = json.load(handle)
    stop_after = int(os.environ.get("REPRO_VISTA_DOUBLE_STOP_AFTER", "0"))
    total = opt.n_rounds * (opt.n_frames - 3) + 3
    for index, entry in enumerate(samples):
        paths = [os.path.join(DATA_ROOT, entry["frames"][t]) for t in range(opt.n_frames)]
        for path in paths:
            assert os.path.exists(path), path
        real = [load_frame(p, opt.height, opt.width) for p in paths]
        virtual = fake_rollout(real[:opt.n_conds], total, opt.seed)
        save(os.path.join(opt.save, "virtual"), index, virtual)
        save(os.path.join(opt.save, "real"), index, real)
        if stop_after and index + 1 >= stop_after:
            print(f"test double: stopping after {stop_after} clips", flush=True)
            sys.exit(3)


if __name__ == "__main__":
    main()
