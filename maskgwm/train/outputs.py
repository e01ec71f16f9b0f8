"""Run outputs besides checkpoints: the writable-folder check at start, periodic sample videos
and the weights model.pt gets."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import torch

from maskgwm.model.dit import MaskGWMDiT
from maskgwm.train import checkpoint_files as ckpt


class OutputDirError(RuntimeError):
    """The output directory cannot be created or written."""


def _unwritable(folder: Path, rank: int) -> str | None:
    """Why `folder` cannot be created and written to, or None if it can."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{rank}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        return err.strerror or str(err)
    return None


def check_writable(out_dir: Path, rank: int = 0, cache_dir: Path | None = None) -> None:
    """Create `out_dir/checkpoints` (and `cache_dir`) and probe them, or raise OutputDirError."""
    if why := _unwritable(ckpt.checkpoint_dir(out_dir), rank):
        raise OutputDirError(f"output directory {out_dir} is not writable ({why}): choose "
                             f"another --out or fix its permissions")
    if cache_dir is not None and (why := _unwritable(cache_dir, rank)):
        raise OutputDirError(f"cache directory {cache_dir} is not writable ({why}): choose "
                             f"another --cache-dir or fix its permissions")


def write_sample(trainer) -> Path:
    """A sample video of the first clip (1 condition frame) under <out>/samples/step-N."""
    from evals.videoset import VideoSetWriter
    from maskgwm.generate import generate_clip
    from maskgwm.train.batches import read_window
    source, clip, start, n_frames = trainer.samples.clip_of(0)
    frames = read_window(source, clip, start, n_frames, trainer.config.data.width,
                         trainer.config.data.height)[:, 0]
    trainer.model.eval()
    try:
        with torch.no_grad(), trainer._autocast():
            video = generate_clip(trainer.model, trainer.vae, trainer.text.to(trainer.device),
                                  frames[:1], n_frames, seed=trainer.config.seed,
                                  steps=trainer.options.sample_steps)
    finally:
        trainer.model.train()
    folder = trainer.out / "samples" / f"step-{trainer.step:08d}"
    with VideoSetWriter(folder) as writer:
        writer.add(clip.clip_id, np.ascontiguousarray(video.permute(0, 2, 3, 1).numpy()),
                   fps=clip.fps, cond_frames=1)
    return folder


@contextlib.contextmanager
def export_weights(trainer, full_state: dict | None, ema: dict | None):
    """The model whose weights model.pt gets: the gathered FSDP state (if given), with the
    `ema` weights (whole tensors, if given) copied in."""
    if ema is None and full_state is None:
        yield
        return
    saved = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()} \
        if full_state is None else None
    target = trainer.model if full_state is None else MaskGWMDiT(
        trainer.config.model, trainer.model.preset, trainer.config.mask)
    with torch.no_grad():
        if full_state is not None:
            target.load_state_dict(full_state)
        if ema is not None:
            params = dict(target.named_parameters())
            for name, value in ema.items():
                params[name].copy_(value)
    original = trainer.model
    trainer.model = target
    try:
        yield
    finally:
        trainer.model = original
        if saved is not None:
            trainer.model.load_state_dict(saved)
