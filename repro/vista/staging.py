"""One shard's working directory for Vista's `sample.py`, and the exact command line.

Vista reads everything relative to its working directory and names outputs by manifest index,
with no clip-range option (docs/DESIGN.md section 6). So each shard attempt runs in

    <stage>/annos/nuScenes_val.json   the shard's clips not yet ingested (a subset manifest)
    <stage>/index_map.json            {"clip_ids": [...]}: subset index -> our clip id
    <stage>/data/nuscenes             -> the bundle's data/nuscenes (export.py)
    <stage>/configs                   -> <checkout>/configs
    <stage>/ckpts/vista.safetensors   -> the checkpoint
    <stage>/out/                      --save (emptied before each attempt: indices change)

and the command is `<Vista's python> <checkout>/sample.py ...` with cwd = <stage> (Python puts
the script's folder first on sys.path, so Vista's own modules import from the checkout), in an
environment where the CLIP weights come from a local hub cache only (inputs.VistaSetup.env).
The `--save` folder must not contain "real": sample.py rescales generated frames as real ones
when its save path does.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evals.atomic import atomic_write_json

from repro.vista.checkout import CONFIG, DEFAULT_CKPT, SCRIPT
from repro.vista.export import ANNO, DATA, INDEX_MAP, VISTA_WINDOW, frames_written

OUT = "out"


@dataclass(frozen=True)
class VistaSettings:
    """What we pass to sample.py, every flag explicitly (so the checkout's defaults cannot
    change a run unseen). The sampler defaults are sample.py's at VISTA_COMMIT."""
    n_conds: int
    n_rounds: int
    width: int
    height: int
    seed: int = 23                    # sample.py's default, re-set before every clip
    n_frames: int = VISTA_WINDOW
    low_vram: bool = False
    n_steps: int = 50
    cfg_scale: float = 2.5
    cond_aug: float = 0.0

    @property
    def frames(self) -> int:
        """Frames Vista writes per clip."""
        return frames_written(self.n_rounds, self.n_frames)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def command(checkout: Path, settings: VistaSettings, python: str) -> list[str]:
    """The exact argv (run with cwd = the staging directory)."""
    argv = [python, str(Path(checkout) / SCRIPT),
            "--dataset", "NUSCENES", "--action", "free",
            "--n_frames", str(settings.n_frames), "--n_conds", str(settings.n_conds),
            "--n_rounds", str(settings.n_rounds), "--height", str(settings.height),
            "--width", str(settings.width), "--seed", str(settings.seed),
            "--n_steps", str(settings.n_steps), "--cfg_scale", str(settings.cfg_scale),
            "--cond_aug", str(settings.cond_aug),
            "--save", OUT, "--rand_gen"]   # store_false: walk the manifest once, in order
    return argv + (["--low_vram"] if settings.low_vram else [])


def _link(target: Path, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        link.unlink()
    os.symlink(target, link)


def stage(directory: Path, bundle: Path, checkout: Path, ckpt: Path,
          clip_ids: list[str]) -> Path:
    """(Re)build the staging directory for `clip_ids` (a subset of the bundle's clips, in
    bundle order); the previous attempt's output folder is removed. Returns `directory`."""
    directory = Path(directory)
    entries = json.loads((bundle / ANNO).read_text())
    index = {clip_id: i for i, clip_id in
             enumerate(json.loads((bundle / INDEX_MAP).read_text())["clip_ids"])}
    unknown = [c for c in clip_ids if c not in index]
    if unknown:
        raise ValueError(f"clips {unknown[:3]} are not in the Vista bundle {bundle}")
    shutil.rmtree(directory / OUT, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_json(directory / ANNO, [entries[index[c]] for c in clip_ids])
    atomic_write_json(directory / INDEX_MAP, {"clip_ids": list(clip_ids)})
    _link((bundle / DATA).resolve(), directory / DATA)
    _link((Path(checkout) / Path(CONFIG).parts[0]).resolve(), directory / Path(CONFIG).parts[0])
    _link(Path(ckpt).resolve(), directory / DEFAULT_CKPT)
    return directory


def index_map(directory: Path) -> list[str]:
    path = Path(directory) / INDEX_MAP
    return json.loads(path.read_text())["clip_ids"] if path.is_file() else []
