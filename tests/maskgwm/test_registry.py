"""One dataset registry (maskgwm/data/registry.py) serves the trainer, `repro data`, the
evaluation sets and the preflight."""
from __future__ import annotations

import pytest

from maskgwm.data.registry import DATASETS, get_dataset
from maskgwm.train.batches import TRAIN_DATASETS
from repro.jobs.evalsets import EVALSET_SOURCES


def test_every_dataset_a_protocol_or_the_trainer_reads_is_registered():
    assert {dataset for dataset, *_ in EVALSET_SOURCES.values()} <= set(DATASETS)
    assert set(TRAIN_DATASETS) == {"opendv", "nuscenes", "nuscenes_mview"}
    assert get_dataset("nuscenes_mview").folder == get_dataset("nuscenes").folder == "nuscenes"
    assert [d.name for d in DATASETS.values() if d.multi_view] == ["nuscenes_mview"]
    assert (get_dataset("opendv").train_split, get_dataset("waymo").train_split) == ("Train", None)
    with pytest.raises(ValueError, match="unknown dataset 'kitti'"):
        get_dataset("kitti")


def test_first_files_follow_each_reader(tmp_path):
    single = get_dataset("nuscenes").first_files(tmp_path, "val", "v1.0-trainval", False)
    multi = get_dataset("nuscenes_mview").first_files(tmp_path, "val", "v1.0-trainval", False)
    assert [what for what, _, _ in single] == ["nuScenes v1.0-trainval tables",
                                              "nuScenes camera keyframes",
                                              "nuScenes camera sweeps"]
    assert [what for what, _, _ in multi] == [what for what, _, _ in single][:2]
    ((what, path, kind),) = get_dataset("waymo").first_files(tmp_path, "validation", "v2", True)
    assert kind == "glob" and path.name == "*.parquet"
