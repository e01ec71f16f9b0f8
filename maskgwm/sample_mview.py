"""Multi-view sampling of an evaluation video set (drivewm_mview): the views of each scene are
generated jointly by one `generate_views` call (latents [1, T, K, 16, h, w]), so the model's
view blocks see all K cameras at every step.

The real set stores each (scene, view) as one clip `<scene>/<view>` (evals/multiview.py);
`sample_scenes` groups them back into scenes and writes the generated views under the same
clip ids. Scenes, not clips, are the unit of work:

- sharding: scene i (in order of first appearance in the real set) belongs to shard
  i % num_shards;
- seeding: the noise of a scene depends only on (seed, scene id) (`clip_seed`), so shards and
  reruns do not change it;
- resuming: a scene whose K views are all in the output is skipped; a scene cut off between
  views (a killed job) is generated again and only its missing views are written (the rest
  are the same clips, by the seed).

Assumed (the paper does not say): every view keeps its own real condition frames; the views
are generated with the same text conditioning and without actions (drivewm_mview is
action-free).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from evals.multiview import group_views
from evals.progress import progress_bar
from evals.videoset import VideoSet, VideoSetError, VideoSetWriter
from maskgwm.model.text import TextConditioning
from maskgwm.model.vae import SD3VAE
from maskgwm.generate import clip_seed, condition_frames, generate_views, naming_clip


def sample_scenes(model: torch.nn.Module, vae: SD3VAE, text: TextConditioning, real: VideoSet,
                  target: Path, views: list[str], size: tuple[int, int] | None, shard: int,
                  num_shards: int, seed: int, frames: int | None, options: dict[str, Any],
                  log: Callable[[str], Any] = print) -> Path:
    """Generate the scenes of `real` that belong to `shard` into the video set `target`
    (called by maskgwm.sample.sample_videoset with `views`; `options` holds steps, guidance,
    window, batch_size and checkpoint) and return `target`."""
    scenes = group_views(real.clips, views)
    mine = [scene for index, scene in enumerate(scenes) if index % num_shards == shard]
    with VideoSetWriter(target, flush_every=1) as writer:
        todo = [(scene_id, entries) for scene_id, entries in mine
                if any(entry.clip_id not in writer for entry in entries)]
        done, skipped = 0, len(mine) - len(todo)
        bar = progress_bar(len(todo), f"shard {shard}/{num_shards}", "scene", write=log)
        for scene_id, entries in todo:
            missing = [entry for entry in entries if entry.clip_id not in writer]
            n_cond = entries[0].cond_frames
            cond = []
            for entry in entries:
                clip = real.read(entry)
                if n_cond > len(clip):
                    raise VideoSetError(f"{real.root}: clip {entry.clip_id} has {len(clip)} "
                                        f"frames but {n_cond} condition frames")
                cond.append(condition_frames(clip, n_cond, size))
            with naming_clip(real, scene_id, options["checkpoint"]):
                out = generate_views(model, vae, text, torch.stack(cond),
                                     frames or entries[0].frames, clip_seed(seed, scene_id),
                                     options["steps"], options["guidance"], options["window"],
                                     batch_size=options["batch_size"])
            for entry, clip in zip(entries, out):
                if entry in missing:
                    writer.add(entry.clip_id, clip.permute(0, 2, 3, 1).numpy(), entry.fps,
                               entry.source_clip, n_cond)
            done += 1
            bar.set_postfix_str(f"{scene_id}: {len(views)} views x {out.shape[1]} frames")
            bar.update(1)
        bar.close()
    log(f"shard {shard}/{num_shards}: {done} scenes generated, {skipped} already there; "
        f"set at {target}")
    return target
