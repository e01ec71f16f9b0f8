"""The one clip manifest that trainers, samplers and evaluators read.

A manifest is a list of clips; each clip has frames[t][v] (paths relative to the dataset root,
t over time, v over camera views), timestamps (microseconds), the frame rate, actions (Vista's
set, or None), and where it came from. Saved as JSON or Parquet with a schema version.
"""
from __future__ import annotations

import json
import math
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evals.atomic import atomic_open, atomic_write_json

SCHEMA_VERSION = 1
JSON_COLUMNS = ("views", "frames", "timestamps", "actions")


KMH_PER_MS = 3.6                                        # Actions.speed is m/s; CAN and Vista: km/h


class ManifestError(ValueError):
    pass


@dataclass
class Actions:
    """Vista's action set for one clip; empty lists / None where the data has none."""
    traj: list[float] = field(default_factory=list)    # (x, y) of the next 4 waypoints, 8 numbers
    cmd: int | None = None                              # 0 right, 1 left, 2 stop, 3 straight
    speed: list[float] = field(default_factory=list)    # m/s at the next 4 keyframes
    angle: list[float] = field(default_factory=list)    # steering / 780 at the next 4 keyframes
    goal: list[float] = field(default_factory=list)     # (u, v) normalised by image size
    z: float | None = None                              # goal depth in the camera frame
    proxy: bool = False                                 # speed/angle from ego poses, not CAN


@dataclass
class ClipRecord:
    clip_id: str
    dataset: str
    split: str
    scene: str
    views: list[str]
    frames: list[list[str]]                             # frames[t][v], relative to the root
    timestamps: list[int]
    fps: float
    actions: Actions | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.actions, dict):
            self.actions = Actions(**self.actions)
        if len(self.frames) != len(self.timestamps):
            raise ManifestError(f"clip {self.clip_id}: {len(self.frames)} frames but "
                                f"{len(self.timestamps)} timestamps")
        if any(len(row) != len(self.views) for row in self.frames):
            raise ManifestError(f"clip {self.clip_id}: every time step needs one frame per "
                                f"view ({len(self.views)})")
        if problem := _values_problem(self):
            raise ManifestError(f"clip {self.clip_id}: {problem}")

    @property
    def length(self) -> int:
        return len(self.frames)


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and \
        math.isfinite(value)


def _values_problem(clip: ClipRecord) -> str | None:
    """What is wrong with a clip's frame rate or action values (NaN, Inf, mistyped), or None."""
    if not _finite(clip.fps) or clip.fps <= 0:
        return f"fps {clip.fps!r} is not a positive finite number"
    actions = clip.actions
    if actions is None:
        return None
    for key in ("traj", "speed", "angle", "goal"):
        values = getattr(actions, key)
        if not isinstance(values, (list, tuple)) or not all(_finite(v) for v in values):
            return f"actions.{key} {values!r:.60} is not a list of finite numbers"
    if actions.z is not None and not _finite(actions.z):
        return f"actions.z {actions.z!r} is not a finite number"
    cmd = actions.cmd
    if cmd is not None and (not isinstance(cmd, numbers.Integral) or isinstance(cmd, bool)
                            or not 0 <= cmd <= 3):
        return f"actions.cmd {cmd!r} is not None, 0, 1, 2 or 3"
    return None


@dataclass
class ClipManifest:
    dataset: str
    root: str
    clips: list[ClipRecord]
    schema_version: int = SCHEMA_VERSION

    def save(self, path: str | Path) -> Path:
        """`.json` or `.parquet`, written atomically."""
        path = Path(path)
        rows = [asdict(clip) for clip in self.clips]
        if path.suffix == ".parquet":
            import pandas as pd
            frame = pd.DataFrame(rows, columns=list(ClipRecord.__dataclass_fields__))
            for column in JSON_COLUMNS:
                frame[column] = [json.dumps(value) for value in frame[column]]
            frame.attrs = {}
            meta = {"schema_version": str(self.schema_version), "dataset": self.dataset,
                    "root": self.root}
            table = _to_arrow(frame, meta)
            import pyarrow.parquet as pq
            with atomic_open(path, "wb") as handle:
                pq.write_table(table, handle)
        else:
            atomic_write_json(path, {"schema_version": self.schema_version,
                                     "dataset": self.dataset, "root": self.root,
                                     "clips": rows})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ClipManifest":
        path = Path(path)
        if not path.exists():
            raise ManifestError(f"{path}: manifest not found")
        if path.suffix == ".parquet":
            header, rows = _read_parquet(path)
        else:
            try:
                header = json.loads(path.read_text())
            except json.JSONDecodeError as err:
                raise ManifestError(f"{path}: not valid JSON ({err})") from None
            if not isinstance(header, dict):
                raise ManifestError(f"{path}: a {type(header).__name__}, not a manifest object "
                                    "({schema_version, dataset, root, clips})")
            rows = header.get("clips", [])
        if header.get("schema_version") != SCHEMA_VERSION:
            raise ManifestError(f"{path}: schema_version {header.get('schema_version')!r}, "
                                f"this code reads {SCHEMA_VERSION}")
        missing = [key for key in ("dataset", "root") if not isinstance(header.get(key), str)]
        if missing:
            raise ManifestError(f"{path}: header lacks {missing}; rewrite the manifest with "
                                "ClipManifest.save")
        if not isinstance(rows, list):
            raise ManifestError(f"{path}: 'clips' is a {type(rows).__name__}, not a list")
        clips = []
        for index, row in enumerate(rows):
            try:
                clips.append(ClipRecord(**row))
            except (TypeError, ManifestError) as err:
                raise ManifestError(f"{path}: clip {index}: malformed ({err})") from None
        return cls(header["dataset"], header["root"], clips)


def _read_parquet(path: Path) -> tuple[dict, list[dict]]:
    """(header, rows) of a Parquet manifest, its JSON cells decoded."""
    import pyarrow.parquet as pq
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as err:
        raise ManifestError(f"{path}: not a readable Parquet file ({err})") from None
    header = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if header.get("schema_version", "").isdigit():
        header["schema_version"] = int(header["schema_version"])
    missing = [c for c in ClipRecord.__dataclass_fields__ if c not in table.column_names]
    if missing:
        raise ManifestError(f"{path}: columns {missing} missing")
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        for column in JSON_COLUMNS:
            try:
                row[column] = json.loads(row[column])
            except (TypeError, json.JSONDecodeError) as err:
                raise ManifestError(f"{path}: clip {index} ({row['clip_id']}): column "
                                    f"{column!r} is not valid JSON ({err})") from None
    return header, rows


def _to_arrow(frame: Any, meta: dict[str, str]):
    import pyarrow as pa
    table = pa.Table.from_pandas(frame, preserve_index=False)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
