"""`repro plot qualitative TARGET --clips ID,ID`: real and generated clips side by side.

For each clip id, reads the real clip from the evaluation set
`<workdir>/evalsets/<protocol>-<scale>/real` and each run's generated clip from
`<workdir>/runs/<run_id>/eval/<protocol>/generated` for each of the target's runs scored under
the protocol of its first run (Vista's run is one of them where the target has one). The
results page (repro/report/site.py) animates the same rows as MP4. Writes, under `results/plots/`:

    qualitative-<target>-<scale>-<clip>.gif   animated over time; rows: real, then each run
    qualitative-<target>-<scale>-<clip>.png   the same rows, columns = time (up to 8 frames)

A run without a generated clip gets a grey row saying so. Writes are atomic.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from evals.atomic import atomic_path
from evals.videoset import VideoSet, VideoSetError, storage_name

from repro.targets.jobfiles import (ResolvedRun, Target, default_scale, load_target,
                                    resolve_target)
from repro.paths import results_dir, work_dir

ROW_HEIGHT = 96
LABEL_WIDTH = 150
STRIP_COLUMNS = 8
FPS = 10


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
    with atomic_path(path, suffix=path.suffix) as tmp:
        image.save(tmp, format=path.suffix[1:].upper(), **kwargs)
    return path


def real_set(workdir: Path, protocol: str, scale: str) -> Path:
    """The evaluation set whose real clips a protocol's runs are compared with."""
    return workdir / "evalsets" / f"{protocol}-{scale}" / "real"


def clip_rows(runs: list[ResolvedRun], clip_id: str, workdir: Path
              ) -> list[tuple[str, np.ndarray | None]]:
    """("real", the real clip), then (cells, generated clip or None) per run; all runs share
    one protocol and scale. FileNotFoundError when the real clip is missing."""
    run = runs[0]
    root = real_set(workdir, run.protocol, run.scale)
    real = _read_clip(root, clip_id)
    if real is None:
        raise FileNotFoundError(f"{root}: no real clip '{clip_id}' (build the evaluation set "
                                f"by submitting {run.target} first)")
    rows: list[tuple[str, np.ndarray | None]] = [("real", real)]
    for run in runs:
        generated = workdir / "runs" / run.run_id / "eval" / run.protocol / "generated"
        rows.append((", ".join(cell.split("/", 1)[1] for cell in run.cells),
                     _read_clip(generated, clip_id)))
    return rows


def _extent(rows: list[tuple[str, np.ndarray | None]]) -> tuple[int, int]:
    """(the longest clip's length, a tile's width): rows[0] is the real clip (clip_rows)."""
    length = max(len(clip) for _, clip in rows if clip is not None)
    return length, _resize(rows[0][1][0]).width


def animation(rows: list[tuple[str, np.ndarray | None]]) -> list[Image.Image]:
    """One image per time step: a row per source, the longest clip's length (a shorter
    clip holds its last frame)."""
    length, width = _extent(rows)
    return [_grid(rows, [t], width) for t in range(length)]


def strip(rows: list[tuple[str, np.ndarray | None]]) -> Image.Image:
    """The rows at up to STRIP_COLUMNS evenly spaced time steps."""
    length, width = _extent(rows)
    times = sorted(set(np.linspace(0, length - 1, min(STRIP_COLUMNS, length)).round()
                       .astype(int).tolist()))
    return _grid(rows, times, width)


def save_gif(frames: list[Image.Image], path: Path) -> Path:
    return _atomic_save(frames[0], path, save_all=True, append_images=frames[1:],
                        duration=1000 // FPS, loop=0)


def qualitative(target: Target, scale: str, clip_ids: list[str], workdir: Path | None = None,
                root: Path | None = None) -> list[Path]:
    workdir = workdir or work_dir()
    runs = [run for run in resolve_target(target, scale) if run.cells]
    runs = [run for run in runs if run.protocol == runs[0].protocol]
    written = []
    for clip_id in clip_ids:
        rows = clip_rows(runs, clip_id, workdir)
        stem = f"qualitative-{target.name}-{scale}-{storage_name(clip_id)}"
        out = (root or results_dir()) / "plots"
        written.append(save_gif(animation(rows), out / f"{stem}.gif"))
        written.append(_atomic_save(strip(rows), out / f"{stem}.png"))
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
