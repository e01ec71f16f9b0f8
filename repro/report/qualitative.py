"""`repro plot qualitative TARGET --clips ID,ID`: real and generated clips side by side.

For each clip id, reads the real clip from the evaluation set
`<workdir>/evalsets/<protocol>-<scale>/real` and each run's generated clip from
`<workdir>/runs/<run_id>/eval/<protocol>/generated` (Vista's run is one of the target's runs
where the target has one). Writes, under `results/plots/`:

    qualitative-<target>-<scale>-<clip>.gif   animated over time; rows: real, then each run
    qualitative-<target>-<scale>-<clip>.png   the same rows, columns = time (up to 8 frames)

A run without a generated clip gets a grey row saying so. Writes are atomic.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from evals.videoset import VideoSet, VideoSetError, storage_name

from repro.targets.jobfiles import Target, default_scale, load_target, resolve_target
from repro.paths import results_dir, work_dir

ROW_HEIGHT = 96
LABEL_WIDTH = 150
STRIP_COLUMNS = 8


def _resize(frame: np.ndarray, height: int = ROW_HEIGHT) -> Image.Image:
    image = Image.fromarray(frame)
    width = max(1, round(image.width * height / image.height))
    return image.resize((width, height), Image.Resampling.BILINEAR)


def _read_clip(root: Path, clip_id: str) -> np.ndarray | None:
    if not root.exists():
        return None
    try:
        videoset = VideoSet.open(root)
        return videoset.read(videoset.clip(clip_id))
    except VideoSetError:
        return None


def _label(canvas: Image.Image, y: int, text: str) -> None:
    lines = [line[:22] for line in text.split("\n")]
    ImageDraw.Draw(canvas).multiline_text((4, y + ROW_HEIGHT // 2 - 6 * len(lines)),
                                          "\n".join(lines), fill=(0, 0, 0))


def _grid(rows: list[tuple[str, np.ndarray | None]], times: list[int], width: int) -> Image.Image:
    """One image: a row per source, a column per entry of `times` (frame indices)."""
    canvas = Image.new("RGB", (LABEL_WIDTH + width * len(times), ROW_HEIGHT * len(rows)),
                       (255, 255, 255))
    for r, (name, clip) in enumerate(rows):
        y = r * ROW_HEIGHT
        _label(canvas, y, name if clip is not None else f"{name}\n(not generated)")
        for c, t in enumerate(times):
            x = LABEL_WIDTH + c * width
            if clip is None:
                canvas.paste((200, 200, 200), (x, y, x + width - 2, y + ROW_HEIGHT - 2))
                continue
            tile = _resize(clip[min(t, len(clip) - 1)])
            canvas.paste(tile.crop((0, 0, width - 2, ROW_HEIGHT - 2)), (x, y))
    return canvas


def _atomic_save(image: Image.Image, path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        image.save(tmp, format=path.suffix[1:].upper(), **kwargs)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def qualitative(target: Target, scale: str, clip_ids: list[str], workdir: Path | None = None,
                root: Path | None = None) -> list[Path]:
    workdir = workdir or work_dir()
    runs = [run for run in resolve_target(target, scale) if run.cells]
    protocol = runs[0].protocol
    real_root = workdir / "evalsets" / f"{protocol}-{scale}" / "real"
    written = []
    for clip_id in clip_ids:
        real = _read_clip(real_root, clip_id)
        if real is None:
            raise FileNotFoundError(f"{real_root}: no real clip '{clip_id}' (build the "
                                    f"evaluation set by submitting {target.name} first)")
        rows: list[tuple[str, np.ndarray | None]] = [("real", real)]
        for run in runs:
            generated = workdir / "runs" / run.run_id / "eval" / run.protocol / "generated"
            label = ", ".join(cell.split("/", 1)[1] for cell in run.cells)
            rows.append((label, _read_clip(generated, clip_id)))
        length = max(len(clip) for _, clip in rows if clip is not None)
        width = _resize(real[0]).width
        stem = f"qualitative-{target.name}-{scale}-{storage_name(clip_id)}"
        out = (root or results_dir()) / "plots"
        frames = [_grid(rows, [t], width) for t in range(length)]
        written.append(_atomic_save(frames[0], out / f"{stem}.gif", save_all=True,
                                    append_images=frames[1:], duration=100, loop=0))
        times = sorted(set(np.linspace(0, length - 1, min(STRIP_COLUMNS, length)).round()
                           .astype(int).tolist()))
        written.append(_atomic_save(_grid(rows, times, width), out / f"{stem}.png"))
    return written


def cmd_qualitative(args) -> int:
    if not args.qual_target or not args.clips:
        raise ValueError("usage: repro plot qualitative TARGET --clips ID[,ID...]")
    target = load_target(args.qual_target)
    scale = default_scale(args.qual_target, args.scale)
    clips = [c.strip() for c in args.clips.split(",") if c.strip()]
    for path in qualitative(target, scale, clips):
        print(f"written {path}")
    return 0
