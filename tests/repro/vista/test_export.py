"""Vista's inputs are prepared with Vista's own crop rule: `int()` of the target-aspect width or
height, one pixel narrower than our rounding for some source shapes (repro/vista/export.py,
maskgwm/data/loader.crop_resize(rule="vista"), checked against the double's copy of Vista's
load_img)."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from maskgwm.data.loader import crop_resize, read_image_file
from repro.vista.checkout import DOUBLE
from repro.vista.export import VISTA_SIZE, cond_frames

# (width, height) of sources: nuScenes CAM_FRONT, Waymo FRONT, OpenDV at 1080p, and shapes
# where int() and round() crop differently at Vista's 1024x576
SHAPES = [(1600, 900), (1920, 1280), (1920, 1080), (1001, 563), (1280, 721), (641, 480)]


def _vista_load_img():
    spec = importlib.util.spec_from_file_location("vista_double_sample", DOUBLE / "sample.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load_img


def _vista_uint8(load_img, path: Path) -> np.ndarray:
    width, height = VISTA_SIZE
    return np.rint((load_img(str(path), height, width) + 1.0) / 2.0 * 255.0).astype(np.uint8)


@pytest.mark.parametrize("shape", SHAPES)
def test_export_prepares_frames_as_vistas_load_img(tmp_path, shape):
    rng = np.random.default_rng(sum(shape))
    frame = rng.integers(0, 255, (shape[1], shape[0], 3), dtype=np.uint8)
    Image.fromarray(frame).save(tmp_path / "f.png")
    clip = SimpleNamespace(frames=[["f.png"]])
    (ours,) = cond_frames(clip, tmp_path, read_image_file, 1, VISTA_SIZE)
    np.testing.assert_array_equal(ours, _vista_uint8(_vista_load_img(), tmp_path / "f.png"))


def test_the_two_rules_differ_for_some_shapes():
    """Why the rule matters: our rounding keeps one more column for these sources."""
    differ = []
    for width, height in SHAPES:
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, ::2] = 255                       # alternating columns: a shift shows
        if not np.array_equal(crop_resize(frame, *VISTA_SIZE),
                              crop_resize(frame, *VISTA_SIZE, rule="vista")):
            differ.append((width, height))
    assert (1001, 563) in differ and (1600, 900) not in differ and (1920, 1080) not in differ
