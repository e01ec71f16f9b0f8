"""The video-set format every producer writes and the evaluators read, and its validation.

A video set is a folder:

    <set>/manifest.json        {"schema_version", "clips": [{clip_id, frames, fps,
                                 source_clip, cond_frames, path}, ...]}
    <set>/<clip_id>/000000.png  numbered frames (PNG or JPG), one folder per clip, or
    <set>/<clip_id>.npy         one uint8 array [T, H, W, 3] per clip

Vista's output folders (`NUSCENES_{clip:06d}_{frame:04d}.png`, no manifest) are read too;
their clip ids are the manifest indices `vista-000123`. Writes are atomic per clip (a clip
folder appears complete or not at all) and the manifest is rewritten atomically, so an
interrupted writer resumes without losing or duplicating clips.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_write_json

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg")
VISTA_FRAME = re.compile(r"^NUSCENES_(\d{6})_(\d{4})\.png$")


class VideoSetError(ValueError):
    """A malformed video set; the message names the clip or file and what to do."""


@dataclass(frozen=True)
class ClipEntry:
    clip_id: str
    frames: int
    fps: float
    source_clip: str
    cond_frames: int
    path: str                     # relative to the set root: a folder or a .npy file


def check_frames(frames: np.ndarray, where: str) -> np.ndarray:
    """A clip must be uint8 [T, H, W, 3] with T >= 1."""
    if not isinstance(frames, np.ndarray):
        raise VideoSetError(f"{where}: expected a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        hint = (" (floats in [0, 1]? multiply by 255 and round)" if frames.dtype.kind == "f"
                else "")
        raise VideoSetError(f"{where}: frames must be uint8, got {frames.dtype}{hint}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        raise VideoSetError(f"{where}: expected frames [T, H, W, 3], got shape {frames.shape}")
    return frames


def _read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise VideoSetError(f"{path}: unreadable image ({err}); regenerate or remove this clip")


def _stack(images: list[np.ndarray], paths: list[Path], clip: str) -> np.ndarray:
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        first = images[0].shape
        odd = next(p for p, image in zip(paths, images) if image.shape != first)
        raise VideoSetError(f"clip {clip}: frames differ in size ({paths[0]} is "
                            f"{first[1]}x{first[0]}, {odd} is different)")
    return check_frames(np.stack(images), f"clip {clip}")


def frame_files(folder: Path) -> list[Path]:
    """The image files of a clip folder, unsorted and unchecked (what `read_frame_folder` reads)."""
    return [p for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES]


def read_frame_folder(folder: Path, expected: int | None = None) -> np.ndarray:
    """Numbered frames 000000.png ... of one clip; gaps and size changes are errors."""
    files = frame_files(folder)
    if not files:
        raise VideoSetError(f"{folder}: no frames (expected numbered .png/.jpg files)")
    try:
        files = sorted(files, key=lambda p: (int(p.stem), p.name))  # 9.png before 10.png
    except ValueError:
        raise VideoSetError(f"{folder}: frame files must be named by number, "
                            f"e.g. 000000.png") from None
    numbers = [int(p.stem) for p in files]
    twice = [(p.name, q.name) for p, q in zip(files, files[1:]) if int(p.stem) == int(q.stem)]
    if twice:
        raise VideoSetError(f"{folder}: {twice[0][0]} and {twice[0][1]} are the same frame; "
                            f"keep one file per frame")
    missing = sorted(set(range(len(numbers))) - set(numbers))
    if missing or numbers != list(range(len(numbers))):
        gap = missing[0] if missing else numbers[-1]
        raise VideoSetError(f"{folder}: frame {gap:06d} is missing (frames must be numbered "
                            f"0..T-1 without gaps)")
    if expected is not None and len(files) != expected:
        raise VideoSetError(f"{folder}: {len(files)} frames, manifest says {expected}")
    return _stack([_read_image(p) for p in files], files, folder.name)


class VideoSet:
    """A readable video set (manifest layout or Vista's flat layout)."""

    def __init__(self, root: Path, clips: list[ClipEntry], layout: str):
        self.root, self.clips, self.layout = Path(root), clips, layout
        self._vista_files: dict[str, list[Path]] = {}

    @classmethod
    def open(cls, root: str | Path, cond_frames: int = 1, fps: float = 10.0) -> "VideoSet":
        """Open a set; Vista folders take `cond_frames` and `fps` from the caller."""
        root = Path(root)
        if not root.is_dir():
            raise VideoSetError(f"{root}: not a directory")
        if (root / MANIFEST).exists():
            return cls._open_manifest(root)
        vista = sorted(p for p in root.iterdir() if VISTA_FRAME.match(p.name))
        if vista:
            return cls._open_vista(root, vista, cond_frames, fps)
        raise VideoSetError(f"{root}: no {MANIFEST} and no Vista NUSCENES_*.png frames; "
                            "see evals/videoset.py for the layout")

    @classmethod
    def _open_manifest(cls, root: Path) -> "VideoSet":
        path = root / MANIFEST
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise VideoSetError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(data, dict):
            raise VideoSetError(f"{path}: expected a JSON object with schema_version and "
                                f"clips, got a {type(data).__name__}; see evals/videoset.py")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise VideoSetError(f"{path}: schema_version {data.get('schema_version')!r}, this "
                                f"reader understands {SCHEMA_VERSION}")
        try:
            clips = [ClipEntry(**clip) for clip in data["clips"]]
        except (KeyError, TypeError) as err:
            raise VideoSetError(f"{path}: malformed clip entry ({err})") from None
        ids = [c.clip_id for c in clips]
        if len(set(ids)) != len(ids):
            raise VideoSetError(f"{path}: duplicate clip ids")
        for clip in clips:
            _check_inside(path, clip)
        return cls(root, clips, "manifest")

    @classmethod
    def _open_vista(cls, root: Path, files: list[Path], cond: int, fps: float) -> "VideoSet":
        by_clip: dict[int, list[Path]] = {}
        for path in files:
            clip, _ = VISTA_FRAME.match(path.name).groups()
            by_clip.setdefault(int(clip), []).append(path)
        videoset = cls(root, [], "vista")
        for index, paths in sorted(by_clip.items()):
            numbers = [int(VISTA_FRAME.match(p.name).group(2)) for p in paths]
            if numbers != list(range(len(numbers))):
                gap = sorted(set(range(max(numbers) + 1)) - set(numbers))[0]
                raise VideoSetError(f"{root}: NUSCENES_{index:06d}_{gap:04d}.png is missing")
            clip_id = f"vista-{index:06d}"
            videoset.clips.append(ClipEntry(clip_id, len(paths), fps, clip_id, cond, ""))
            videoset._vista_files[clip_id] = paths
        return videoset

    def __len__(self) -> int:
        return len(self.clips)

    def clip(self, clip_id: str) -> ClipEntry:
        for entry in self.clips:
            if entry.clip_id == clip_id:
                return entry
        raise VideoSetError(f"{self.root}: no clip '{clip_id}'")

    def clip_files(self, entry: ClipEntry) -> list[Path]:
        """The files `read` takes this clip from (none where it is missing): its `.npy`, the
        images of its (possibly symlinked) frame folder, or its Vista frames."""
        if self.layout == "vista":
            return list(self._vista_files[entry.clip_id])
        path = self.root / entry.path
        if path.suffix == ".npy":
            return [path] if path.is_file() else []
        return frame_files(path) if path.is_dir() else []

    def linked_from_outside(self) -> list[str]:
        """Clips whose folder or file resolves outside the set (a symlinked clip folder):
        allowed, and counted in a result's provenance, since the set's files are not all
        under its root."""
        if self.layout != "manifest":
            return []
        root = self.root.resolve()
        return [entry.clip_id for entry in self.clips
                if not (self.root / entry.path).resolve().is_relative_to(root)]

    def data_files(self) -> list[Path]:
        """Every clip file of the set (the manifest aside), sorted, each once. Anything else
        under the root (results, caches, shard bundles a user keeps there) is not clip data."""
        return sorted({path for entry in self.clips for path in self.clip_files(entry)})

    def read(self, entry: ClipEntry) -> np.ndarray:
        """The clip's frames as uint8 [T, H, W, 3], validated against the manifest."""
        if self.layout == "vista":
            paths = self._vista_files[entry.clip_id]
            return _stack([_read_image(p) for p in paths], paths, entry.clip_id)
        path = self.root / entry.path
        if not path.exists():
            raise VideoSetError(f"{path}: clip {entry.clip_id} is missing from the set")
        if path.suffix == ".npy":
            try:
                frames = np.load(path, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:   # EOFError: an empty file
                raise VideoSetError(f"{path}: unreadable array ({type(err).__name__}: {err})"
                                    ) from None
            frames = check_frames(frames, str(path))
            if len(frames) != entry.frames:
                raise VideoSetError(f"{path}: {len(frames)} frames, manifest says {entry.frames}")
            return frames
        return read_frame_folder(path, entry.frames)


def _check_inside(manifest: Path, clip: ClipEntry) -> None:
    """A clip's `path` must name a file or folder inside the set: not absolute, no `..` that
    leaves it (a symlinked clip folder inside the set is fine: linked_from_outside)."""
    if not isinstance(clip.path, str) or not clip.path:
        raise VideoSetError(f"{manifest}: clip {clip.clip_id}: path {clip.path!r} must be a "
                            "non-empty path relative to the set folder")
    relative = Path(clip.path)
    if relative.is_absolute() or os.path.normpath(clip.path).split(os.sep)[0] in ("..", ""):
        raise VideoSetError(f"{manifest}: clip {clip.clip_id}: path {clip.path!r} leaves the "
                            "set folder; a clip's path must be relative to the set and inside "
                            "it (link a clip folder into the set to use files kept elsewhere)")


def storage_name(clip_id: str) -> str:
    """A file-system-safe folder name for a clip id (dataset ids contain '/', e.g.
    `scene-0103/<token>`): unsafe characters become '_', plus a hash suffix when changed."""
    if not clip_id or clip_id.strip() != clip_id or "\n" in clip_id:
        raise VideoSetError(f"clip id {clip_id!r}: must be non-empty, one line, no edge spaces")
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", clip_id).lstrip(".")
    if safe == clip_id:
        return safe
    return f"{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


class VideoSetWriter:
    """Write clips into a set (use as a context manager). Resumable: clips in the manifest are
    kept (`clip_id in writer`); the manifest is rewritten every `flush_every` clips and on
    exit, so an interrupted writer redoes at most that many clips, never duplicates one."""

    def __init__(self, root: str | Path, image_format: str = "png", flush_every: int = 64):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.image_format = image_format
        self.flush_every = flush_every
        self._unflushed = 0
        existing = (VideoSet._open_manifest(self.root).clips
                    if (self.root / MANIFEST).exists() else [])
        self.clips = {c.clip_id: c for c in existing}

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self.clips

    def add(self, clip_id: str, frames: np.ndarray, fps: float, source_clip: str = "",
            cond_frames: int = 0, as_npy: bool = False) -> ClipEntry:
        frames = check_frames(frames, f"clip {clip_id}")
        name = storage_name(clip_id) + (".npy" if as_npy else "")
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=self.root))
        try:
            if as_npy:
                np.save(staging / "clip.npy", frames)
                os.replace(staging / "clip.npy", self.root / name)
            else:
                for index, frame in enumerate(frames):
                    Image.fromarray(frame).save(staging / f"{index:06d}.{self.image_format}")
                target = self.root / name
                if target.exists():
                    shutil.rmtree(target)
                os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        entry = ClipEntry(clip_id, len(frames), float(fps), source_clip or clip_id,
                          cond_frames, name)
        self.clips[clip_id] = entry
        self._unflushed += 1
        if self._unflushed >= self.flush_every:
            self.flush()
        return entry

    def flush(self) -> None:
        atomic_write_json(self.root / MANIFEST, {"schema_version": SCHEMA_VERSION,
                                            "clips": [asdict(c) for c in self.clips.values()]})
        self._unflushed = 0

    def __enter__(self) -> "VideoSetWriter":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.flush()


def write_videoset(root: str | Path, clips: Iterable[tuple[str, np.ndarray]], fps: float,
                   cond_frames: int = 0, as_npy: bool = False) -> VideoSet:
    """Write (clip_id, frames) pairs as a set; convenient for tests and adapters."""
    with VideoSetWriter(root) as writer:
        for clip_id, frames in clips:
            writer.add(clip_id, frames, fps, cond_frames=cond_frames, as_npy=as_npy)
    return VideoSet.open(root)
