"""The datasets this suite reads, one record each: the folder under REPRO_DATA_ROOT, what to
put there, the splits and versions its readers open for training and for evaluation, whether
clips are six-camera, the files a reader opens first (checked before a submission,
repro/launch/preflight.py), and the reader itself (`read_clips`). Used by the trainer, `repro data`,
the evaluation sets and the preflight."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

NUSCENES_VERSION = "v1.0-trainval"


@dataclass(frozen=True)
class Dataset:
    name: str
    folder: str                    # under REPRO_DATA_ROOT
    contents: str                  # what to put in the folder
    eval_version: str              # what its reader opens for an evaluation split
    train_split: str | None = None     # None: not a training source
    train_version: str | None = None
    multi_view: bool = False

    def read_clips(self, root: Path, split: str, n_frames: int, version: str,
                   skip_bad: bool = False, skipped: list[str] | None = None):
        """ClipRecords of one split, through the dataset's reader. `skip_bad` (nuScenes,
        OpenDV): skip broken scenes or videos instead of stopping, each appended to `skipped`
        as "what: why"."""
        skipped = skipped if skipped is not None else []
        if self.name in ("nuscenes", "nuscenes_mview"):
            from nuscenes.utils.splits import create_splits_scenes

            from maskgwm.data.nuscenes import ClipReport, mview_clips, open_nuscenes, vista_clips
            splits = create_splits_scenes()
            if split not in splits:
                raise ValueError(f"unknown nuScenes split '{split}' (known: "
                                 f"{', '.join(splits)})")
            nusc = open_nuscenes(root, version)
            reader = mview_clips if self.multi_view else vista_clips
            report = ClipReport()
            clips = reader(nusc, splits[split], n_frames=n_frames, split=split, report=report,
                           skip_bad=skip_bad)
            skipped += report.skipped
            return clips
        if self.name == "opendv":
            from maskgwm.data.opendv import scan_opendv
            scan = scan_opendv(root, split, n_frames, skip_bad=skip_bad)
            skipped += [f"{video}: {why}" for video, why in scan.skipped.items()]
            return scan.clips
        if skip_bad:
            raise ValueError("--skip-bad applies to nuScenes and OpenDV; Waymo's reader stops "
                             "at the first broken segment")
        from maskgwm.data.waymo import waymo_clips
        return waymo_clips(root, version, n_frames, split=split)

    def first_files(self, root: Path, split: str, version: str, present: bool
                    ) -> list[tuple[str, Path, str]]:
        """(what, path, kind) of the files and folders its reader opens first; kind is
        'file', 'dir' or 'glob'. `present`: the data root exists (then nuScenes' tables and
        map images are listed one by one)."""
        if self.name == "opendv":
            from maskgwm.data.opendv import IMAGE_DIRS, META_PATH
            return [("OpenDV-2K meta file", root / META_PATH, "file"),
                    (f"OpenDV-2K {split} frames", root / IMAGE_DIRS[split.lower()], "dir")]
        if self.name == "waymo":
            from maskgwm.data.waymo import V2_DIR
            return [(f"Waymo {version} {split} front-camera segments",
                     root / V2_DIR / "*.parquet", "glob")]
        from maskgwm.data.nuscenes import TABLES
        tables = root / version
        needs = [(f"nuScenes {version} tables", tables, "dir")]
        if present and tables.is_dir():
            needs = [(f"nuScenes {version} table {name}", tables / f"{name}.json", "file")
                     for name in TABLES]
            try:
                needs += [("nuScenes map image", root / record["filename"], "file")
                          for record in json.loads((tables / "map.json").read_text())]
            except (OSError, ValueError, KeyError, TypeError):
                pass                # a missing map.json is listed above; a bad one the reader
        needs.append(("nuScenes camera keyframes", root / "samples", "dir"))
        if not self.multi_view:     # single-view clips follow CAM_FRONT through the sweeps
            needs.append(("nuScenes camera sweeps", root / "sweeps", "dir"))
        return needs


_NUSCENES = ("nuScenes v1.0-trainval: the v1.0-trainval/ tables, maps/, samples/ and sweeps/ "
             "(and can_bus/ for actions)")
DATASETS = {d.name: d for d in (
    Dataset("opendv", "opendv", "OpenDV-2K (OpenDV-YouTube) as DriveAGI's scripts extract it: "
            "meta/OpenDV-YouTube.json, full_images/ (Train) and val_images/ (Val)",
            eval_version="v2", train_split="Train", train_version="v1"),
    Dataset("nuscenes", "nuscenes", _NUSCENES, eval_version=NUSCENES_VERSION,
            train_split="train", train_version=NUSCENES_VERSION),
    Dataset("nuscenes_mview", "nuscenes", _NUSCENES, eval_version=NUSCENES_VERSION,
            train_split="train", train_version=NUSCENES_VERSION, multi_view=True),
    Dataset("waymo", "waymo", "the Waymo Open Dataset v2 validation split: "
            "camera_image/<segment>.parquet", eval_version="v2"),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)})") from None


class DataRootError(FileNotFoundError):
    """A dataset's folder is not under the data root; the message says what to put where."""


def dataset_root(name: str, data_root: Path | None, needed_by: str) -> Path:
    """<data_root>/<folder> of dataset `name`, or DataRootError naming the folder, what it
    holds and what needs it."""
    dataset = get_dataset(name)
    if data_root is None:
        raise DataRootError(f"{needed_by} needs a data root (--data-root or REPRO_DATA_ROOT) "
                            f"holding {dataset.folder}/: {dataset.contents}")
    root = Path(data_root) / dataset.folder
    if not root.is_dir():
        raise DataRootError(f"{root} is missing: put {dataset.contents} there ({needed_by})")
    return root


def read_clips(dataset: str, root: Path, split: str, n_frames: int, version: str,
               skip_bad: bool = False, skipped: list[str] | None = None):
    """ClipRecords of one dataset split, through its reader (`Dataset.read_clips`)."""
    return get_dataset(dataset).read_clips(root, split, n_frames, version, skip_bad, skipped)
