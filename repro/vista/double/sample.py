"""TEST DOUBLE of OpenDriveLab/Vista sample.py -- not Vista: no model, no learned weights.

It stands in for Vista at ci/smoke scale and in CI (repro/vista/inputs.py) and differs from the
real script (VISTA_COMMIT in repro/vista/checkout.py) only where it must:

- Same: the command-line flags and defaults (parsed with parse_known_args); the files read
  relative to the working directory (annos/nuScenes_val.json, data/nuscenes/<frames>,
  configs/inference/vista.yaml, ckpts/vista.safetensors, parsed as safetensors); the CLIP
  weights looked up through huggingface_hub as open_clip does (it refuses to run unless
  HF_HUB_OFFLINE=1, where real Vista would try the network); the centre crop with int()
  and LANCZOS resize; the walk over the manifest (with --rand_gen: in order, then stop; an
  empty manifest loops forever, as Vista's get_sample does); the seed re-set per clip; the
  output order per clip (virtual videos, grids, images, then the same for real); the file
  names; generated frames as floats in [0, 1] truncated to 8 bits with astype(uint8); frame 0
  a reconstruction of the condition frame, not a copy; the "real" rescaling rule keyed on the
  save path.
- Different: frames after frame 0 are shifted copies of the condition frames plus seeded noise;
  videos are GIFs (Vista writes MP4 with imageio), grids are one row of frames; CPU only.

Extra, for tests only: REPRO_VISTA_DOUBLE_STOP_AFTER=N makes it exit with status 3 after
writing N clips (a job killed midway).
"""
import argparse
import json
import os
import struct
import sys
import time

import numpy as np
from PIL import Image

VISTA_TEST_DOUBLE = True

DATA_ROOT = "data/nuscenes"
ANNO_FILE = "annos/nuScenes_val.json"
CONFIG = "configs/inference/vista.yaml"
CKPT = "ckpts/vista.safetensors"
CLIP_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


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


def init_model():
    """What Vista's model build touches: the config, the checkpoint, the CLIP weights."""
    assert os.path.exists(CONFIG), CONFIG
    with open(CKPT, "rb") as handle:              # a safetensors file: 8-byte header length
        (length,) = struct.unpack("<Q", handle.read(8))
        json.loads(handle.read(length))
    if os.environ.get("HF_HUB_OFFLINE") != "1":
        raise SystemExit("test double: HF_HUB_OFFLINE is not 1; real Vista would try to "
                         f"download {CLIP_REPO} here and hang on an offline node")
    from huggingface_hub import hf_hub_download
    for name in CLIP_FILES:
        try:
            return hf_hub_download(CLIP_REPO, name)
        except Exception as err:   # noqa: BLE001 - open_clip tries the next file name too
            last = err
    raise SystemExit(f"test double: no CLIP weights in the hub cache: {last}")


def get_sample(selected_index, num_frames):
    with open(ANNO_FILE) as handle:
        all_samples = json.load(handle)
    total_length = len(all_samples)
    while selected_index >= total_length:          # Vista's loop: forever on an empty file
        selected_index -= total_length
        time.sleep(0.01)
    paths = []
    for index in range(num_frames):
        path = os.path.join(DATA_ROOT, all_samples[selected_index]["frames"][index])
        assert os.path.exists(path), path
        paths.append(path)
    return paths, selected_index, total_length


def load_img(path, height, width):
    """Vista's load_img: centre crop to the target aspect with int(), LANCZOS; [-1, 1]."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    if w / h > width / height:
        tmp = int(width / height * h)
        image = image.crop(((w - tmp) // 2, 0, (w + tmp) // 2, h))
    elif w / h < width / height:
        tmp = int(height / width * w)
        image = image.crop((0, (h - tmp) // 2, w, (h + tmp) // 2))
    image = image.resize((width, height), resample=Image.LANCZOS)
    return np.asarray(image, dtype=np.float32) / 255.0 * 2.0 - 1.0


def fake_rollout(conds, total, seed):
    """Frames in [0, 1]: frame 0 the condition frame smoothed (a reconstruction, as Vista's
    VAE decodes it), frame t a shifted condition frame plus seeded noise."""
    rng = np.random.default_rng(seed)
    first = (conds[0] + 1.0) / 2.0
    frames = [(first + np.roll(first, 1, axis=0) + np.roll(first, 1, axis=1)) / 3.0]
    for t in range(1, total):
        base = (conds[min(t, len(conds) - 1)] + 1.0) / 2.0
        noise = rng.normal(0.0, 0.04, size=base.shape)
        frames.append(np.clip(np.roll(base, t % base.shape[1], axis=1) + noise, 0.0, 1.0))
    return np.stack(frames)


def to_uint8(samples, save_path):
    """Vista's perform_save_locally: [-1, 1] under a path containing "real", else [0, 1]."""
    scaled = 255.0 * (samples + 1.0) / 2.0 if "real" in save_path else 255.0 * samples
    return scaled.astype(np.uint8)


def save(save_path, samples, mode, index):
    folder = os.path.join(save_path, mode)
    os.makedirs(folder, exist_ok=True)
    frames = to_uint8(samples, save_path)
    if mode == "videos":
        images = [Image.fromarray(frame) for frame in frames]
        images[0].save(os.path.join(folder, f"NUSCENES_{index:06}.gif"), save_all=True,
                       append_images=images[1:], duration=100)
    elif mode == "grids":
        Image.fromarray(np.concatenate(list(frames), axis=1)).save(
            os.path.join(folder, f"NUSCENES_{index:06}.png"))
    else:
        for t, frame in enumerate(frames):
            Image.fromarray(frame).save(os.path.join(folder, f"NUSCENES_{index:06}_{t:04}.png"))


def main():
    opt, _unknown = parse_args().parse_known_args()
    if opt.dataset != "NUSCENES" or opt.action != "free":
        raise SystemExit("the test double supports --dataset NUSCENES --action free only")
    if opt.rand_gen:
        raise SystemExit("the test double only walks the manifest in order (pass --rand_gen)")
    init_model()
    stop_after = int(os.environ.get("REPRO_VISTA_DOUBLE_STOP_AFTER", "0"))
    total = opt.n_rounds * (opt.n_frames - 3) + 3
    sample_index, written = 0, 0
    while sample_index >= 0:
        paths, sample_index, length = get_sample(sample_index, opt.n_frames)
        images = np.stack([load_img(p, opt.height, opt.width) for p in paths])
        samples = fake_rollout(images[:opt.n_conds], total, opt.seed)
        virtual, real = os.path.join(opt.save, "virtual"), os.path.join(opt.save, "real")
        for mode in ("videos", "grids", "images"):
            save(virtual, samples, mode, sample_index)
        for mode in ("videos", "grids", "images"):
            save(real, images, mode, sample_index)
        written += 1
        if stop_after and written >= stop_after:
            print(f"test double: stopping after {stop_after} clips", flush=True)
            sys.exit(3)
        sample_index += 1
        if length <= sample_index:
            sample_index = -1


if __name__ == "__main__":
    main()
