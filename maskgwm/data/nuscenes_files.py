"""nuScenes on disk: the metadata tables, opened through nuscenes-devkit after checks that turn
a missing, truncated or inconsistent table into a `NuScenesDataError` naming the file, the
record and the fix (the devkit itself raises a bare KeyError, TypeError or IndexError), and
the CAN-bus expansion's `vehicle_monitor` messages.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SKIP_BAD = ("or skip what is broken: --skip-bad on `repro data manifest` and `repro evalset "
            "build`, skip_bad=True in Python")

TABLES = ("attribute", "calibrated_sensor", "category", "ego_pose", "instance", "log", "map",
          "sample", "sample_annotation", "sample_data", "scene", "sensor", "visibility")
# Fields the devkit reads while indexing, and the references it follows there:
# (table, field, referenced table); sample_data.sample_token only for keyframes.
INDEXED_FIELDS = {"category": ("name",), "sensor": ("modality", "channel"),
                  "sample_data": ("is_key_frame",), "map": ("log_tokens", "filename")}
REFERENCES = (("instance", "category_token", "category"),
              ("sample_annotation", "instance_token", "instance"),
              ("sample_annotation", "sample_token", "sample"),
              ("calibrated_sensor", "sensor_token", "sensor"),
              ("sample_data", "calibrated_sensor_token", "calibrated_sensor"),
              ("sample_data", "sample_token", "sample"))


class NuScenesDataError(ValueError):
    """The dataset on disk is incomplete or inconsistent; the message says where and what to do."""


def open_nuscenes(dataroot: str | Path, version: str = "v1.0-trainval"):
    """`NuScenes(version, dataroot)` after checking that its tables and map files exist."""
    from nuscenes.nuscenes import NuScenes
    root = Path(dataroot)
    table_dir = root / version
    if not table_dir.is_dir():
        raise NuScenesDataError(f"{table_dir}: no such directory; extract the nuScenes "
                                f"{version} metadata archive into {root}")
    for name in TABLES:
        if not (table_dir / f"{name}.json").is_file():
            raise NuScenesDataError(f"{table_dir / f'{name}.json'}: table '{name}' is missing; "
                                    f"re-extract the nuScenes {version} metadata archive "
                                    f"into {root}")
    maps = _read_table(table_dir / "map.json", version, root)
    if problem := _records_problem("map", maps):
        raise _table_error(table_dir, version, *problem)
    for record in maps:
        if not (root / record["filename"]).is_file():
            raise NuScenesDataError(f"{root / record['filename']}: map image is missing; extract "
                                    f"the nuScenes maps into {root / 'maps'}")
    try:
        return NuScenes(version=version, dataroot=str(root), verbose=False)
    except (json.JSONDecodeError, KeyError, TypeError, IndexError):
        # the devkit does not say which table or record: find it
        tables = {name: _read_table(table_dir / f"{name}.json", version, root)
                  for name in TABLES}
        if problem := _tables_problem(tables):
            raise _table_error(table_dir, version, *problem) from None
        raise


def _read_table(path: Path, version: str, root: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise NuScenesDataError(f"{path}: not valid JSON ({err}); re-extract the nuScenes "
                                f"{version} metadata archive into {root}") from None


def _table_error(table_dir: Path, version: str, table: str, problem: str) -> NuScenesDataError:
    return NuScenesDataError(f"{table_dir / f'{table}.json'}: {problem}; the tables are corrupt "
                             f"or from different versions: re-extract the nuScenes {version} "
                             f"metadata archive into {table_dir.parent}")


def _records_problem(name: str, records) -> tuple[str, str] | None:
    """(table, what is wrong) with one table's shape and the fields the devkit indexes."""
    if not isinstance(records, list):
        return name, f"a {type(records).__name__}, not a list of records"
    if name == "map" and not records:
        return name, "no records (the devkit needs at least one map)"
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            return name, f"record {index} is a {type(record).__name__}, not an object"
        for key in ("token", *INDEXED_FIELDS.get(name, ())):
            if key not in record:
                return name, f"record {index} lacks '{key}'"
    return None


def _tables_problem(tables: dict[str, list]) -> tuple[str, str] | None:
    """The first thing that keeps the devkit from indexing these tables, or None."""
    for name, records in tables.items():
        if problem := _records_problem(name, records):
            return problem
    tokens = {name: {record["token"] for record in records} for name, records in tables.items()}
    for table, key, target in REFERENCES:
        for index, record in enumerate(tables[table]):
            if table == "sample_data" and key == "sample_token" and not record["is_key_frame"]:
                continue
            if record.get(key) not in tokens[target]:
                return table, (f"record {index} (token {record['token']}): {key} "
                               f"{record.get(key)!r} is not in {target}.json")
    mapped = {token for record in tables["map"] for token in record["log_tokens"]}
    for record in tables["log"]:
        if record["token"] not in mapped:
            return "log", f"log {record['token']} is in no map's log_tokens (map.json)"
    return None


class CanBus:
    """vehicle_monitor messages per scene through NuScenesCanBus; None where a scene has none
    (no can_bus/ folder, a blacklisted scene, no file for it, no messages). A file that is
    there but damaged is a NuScenesDataError naming it."""

    def __init__(self, dataroot: str):
        try:
            from nuscenes.can_bus.can_bus_api import NuScenesCanBus
            self.api = NuScenesCanBus(dataroot=dataroot)
        except Exception:               # the devkit raises a bare Exception without can_bus/
            self.api = None
        self.cache: dict[str, list[dict] | None] = {}

    def messages(self, scene_name: str) -> list[dict] | None:
        if scene_name not in self.cache:
            self.cache[scene_name] = self._read(scene_name)
        return self.cache[scene_name]

    def _read(self, scene_name: str) -> list[dict] | None:
        if self.api is None:
            return None
        path = Path(self.api.can_dir) / f"{scene_name}_vehicle_monitor.json"
        try:
            found = self.api.get_messages(scene_name, "vehicle_monitor", print_warnings=False)
        except ValueError as err:       # truncated or not text: json's errors
            problem = f"not valid JSON ({err})"
        except Exception:               # blacklisted scene, missing file, odd name
            return None
        else:
            problem = _messages_problem(found)
        if problem:
            raise NuScenesDataError(f"{path}: {problem}; re-extract the nuScenes CAN bus "
                                    f"expansion into {path.parent.parent} ({SKIP_BAD})")
        return found or None


def _messages_problem(messages) -> str | None:
    if not isinstance(messages, list):
        return f"a {type(messages).__name__}, not a list of messages"
    for index, message in enumerate(messages):
        for key in ("utime", "vehicle_speed", "steering"):
            value = message.get(key) if isinstance(message, dict) else None
            if type(value) not in (int, float) or not math.isfinite(value):
                return f"message {index} has {key} {value!r}, not a finite number"
    return None


def nearest_message(messages: list[dict], timestamp: int) -> dict:
    times = np.array([m["utime"] for m in messages])
    return messages[int(np.argmin(np.abs(times - timestamp)))]
