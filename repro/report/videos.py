"""Looping comparison videos for the results page: the real clip and each run's generated clip
(repro/report/qualitative.py's rows) as H.264 MP4, encoded by the ffmpeg that imageio-ffmpeg
ships, with a GIF of the same frames as the fallback for browsers without H.264."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from evals.atomic import atomic_path

from repro.report.qualitative import FPS, animation, save_gif


@dataclass
class Video:
    """One comparison: what it shows, and its files (mp4 None where ffmpeg failed)."""
    title: str
    gif: Path
    mp4: Path | None
    frames: int
    note: str = ""


def _even(image: Image.Image) -> np.ndarray:
    """The frame padded with white to even sides (H.264 in yuv420p needs them)."""
    width, height = image.width + image.width % 2, image.height + image.height % 2
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    canvas.paste(image, (0, 0))
    return np.asarray(canvas)


def write_mp4(frames: list[Image.Image], path: Path) -> Path:
    """Encode `frames` as H.264 MP4 (yuv420p, faststart) at `path`, atomically."""
    import imageio_ffmpeg

    arrays = [_even(frame) for frame in frames]
    height, width = arrays[0].shape[:2]
    with atomic_path(path, suffix=".mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (width, height), fps=FPS, codec="libx264", pix_fmt_out="yuv420p",
            macro_block_size=2, output_params=["-movflags", "+faststart"],
            ffmpeg_log_level="error")
        writer.send(None)
        for array in arrays:
            writer.send(np.ascontiguousarray(array))
        writer.close()
    return path


def write_video(rows: list[tuple[str, np.ndarray | None]], stem: Path, title: str) -> Video:
    """`stem`.gif always; `stem`.mp4 unless encoding fails (the note says why)."""
    frames = animation(rows)
    gif = save_gif(frames, stem.with_suffix(".gif"))
    try:
        return Video(title, gif, write_mp4(frames, stem.with_suffix(".mp4")), len(frames))
    except (ImportError, OSError, RuntimeError) as err:
        return Video(title, gif, None, len(frames), f"no MP4 ({type(err).__name__}: {err}); "
                     "GIF shown")
