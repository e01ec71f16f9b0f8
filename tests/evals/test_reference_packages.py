"""Parity with the real reference packages, pytorch-fid and torch-fidelity (docs/DESIGN.md
section 9.7).

They run in a separate venv (torch 2.14.1 + torchvision 0.29.1, which our torch 2.13 env cannot
import) built by `python3 -m repro.bootstrap test`, which passes its python as REPRO_REF_PYTHON.
One subprocess (reference_packages_script.py) does all their work for this module: both packages
load the same random Inception state_dict (a seeded, batch-norm-calibrated `random_detector`,
saved in the official layout) from their torch.hub cache names, and extract features of the same
uint8 images, each with its own resize. We compare:
- pytorch-fid's features with ours under `torch_bilinear`, torch-fidelity's with ours under
  `tf_bilinear` (1e-4 relative);
- each package's FID with ours (`evals.frechet`) on our own features (1e-4 relative: the
  features may differ at float32 round-off, and torch-fidelity's FID of singular 2048-d
  covariances carries ~1e-5 round-off of its own), and each package's Frechet function with
  ours on identical, exactly equivalent low-dimensional input (1e-6 relative).

Without the reference venv the tests skip, unless REPRO_REQUIRE_REFERENCES=1 (CI), which makes
that a failure.
"""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from evals.frechet import frechet_distance
from evals.resize import resize_frames
from evals.weights import MANIFEST, load_detector, random_detector, save_state_dict_as_official

SCRIPT = Path(__file__).resolve().parent / "reference_packages_script.py"
IMPORT_FAILED_EXIT = 3
SUBPROCESS_TIMEOUT_S = 600
FEATURE_RTOL = 1e-4
FID_RTOL = 1e-4        # package FID on its features vs ours on our features
SAME_INPUT_FID_RTOL = 1e-6  # package Frechet function vs ours on identical input
N_IMAGES = 6           # per set
IMAGE_SIZE = (64, 80)  # H, W: each side resizes to 299 its own way
PACKAGES = {"pytorch_fid": "torch_bilinear", "torch_fidelity": "tf_bilinear"}


def reference_python(references_unavailable) -> Path:
    value = os.environ.get("REPRO_REF_PYTHON")
    if not value:
        references_unavailable(
            "no reference venv: " + os.environ.get(
                "REPRO_REF_PROBLEM", "REPRO_REF_PYTHON is not set (run the tests with "
                "`python3 -m repro.bootstrap test`, which builds .venv-ref and sets it)"))
    if not Path(value).is_file():
        references_unavailable(f"REPRO_REF_PYTHON={value} does not exist")
    return Path(value)


def smooth_images(n: int, generator: torch.Generator, brightness: float) -> np.ndarray:
    """uint8 [n, H, W, 3]: upsampled 8x10 noise, photograph-like smoothness, some saturation."""
    low = torch.rand(n, 3, 8, 10, generator=generator) * 1.2 - 0.1 + brightness
    images = F.interpolate(low, size=IMAGE_SIZE, mode="bicubic", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).contiguous().numpy()


def gaussian(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def relative_gap(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def compared(tmp_path_factory, references_unavailable):
    """Our features and the packages' features and FIDs for the same images and weights."""
    python = reference_python(references_unavailable)
    started = time.perf_counter()
    tmp = tmp_path_factory.mktemp("reference_packages")
    generator = torch.Generator().manual_seed(7)
    images = {"a": smooth_images(N_IMAGES, generator, 0.0),
              "b": smooth_images(N_IMAGES, generator, 0.15)}
    calibration = resize_frames(smooth_images(2, generator, 0.05), 299, "torch_bilinear")
    detector = random_detector("inception-2015-12-05", seed=3, calibration_input=calibration)
    weights_dir = tmp / "weights"
    weights_dir.mkdir()
    weights = weights_dir / MANIFEST["inception-2015-12-05"].file_name
    save_state_dict_as_official(detector, weights)
    np.savez(tmp / "images.npz", images_a=images["a"], images_b=images["b"])

    # The reference venv works while we compute our side.
    process = subprocess.Popen(
        [str(python), str(SCRIPT), str(weights), str(tmp / "images.npz"), str(tmp / "out.npz"),
         str(tmp)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ours = {}
        model = load_detector("inception-2015-12-05", weights_dir, verify=False)  # our loader
        with torch.no_grad():
            for package, method in PACKAGES.items():
                for key, batch in images.items():
                    ours[f"{package}_{key}"] = model(resize_frames(batch, 299, method)).numpy()
        ours_seconds = time.perf_counter() - started
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        weights.unlink()  # 95 MB; pytest keeps its last temp folders
    if process.returncode == IMPORT_FAILED_EXIT:
        references_unavailable("", stderr)
    if process.returncode != 0:
        pytest.fail(f"{SCRIPT.name} exited with {process.returncode}:\n{stderr[-4000:]}",
                    pytrace=False)
    with np.load(tmp / "out.npz") as data:
        packages = {k: data[k] for k in data.files}
    timings = ", ".join(f"{k[8:]} {float(v):.1f} s" for k, v in packages.items()
                        if k.startswith("seconds_"))
    print(f"{packages['versions']}; ours {ours_seconds:.1f} s, all "
          f"{time.perf_counter() - started:.1f} s; reference venv: {timings}")
    return {"ours": ours, "packages": packages}


@pytest.mark.parametrize("package", PACKAGES)
def test_features_match_package(compared, package):
    for key in ("a", "b"):
        ours, ref = compared["ours"][f"{package}_{key}"], compared["packages"][f"{package}_{key}"]
        assert ours.shape == ref.shape == (N_IMAGES, 2048)
        assert np.isfinite(ref).all() and ref.std(axis=0).max() > 1e-3, "degenerate features"
        gap = relative_gap(ours, ref)
        print(f"{package} features, set {key}, ours with {PACKAGES[package]}: gap {gap:.2e}")
        assert gap < FEATURE_RTOL


def test_resize_methods_matter(compared):
    """torch_bilinear and tf_bilinear give different features: each parity above is specific."""
    ours = compared["ours"]
    assert relative_gap(ours["pytorch_fid_a"], ours["torch_fidelity_a"]) > 100 * FEATURE_RTOL


@pytest.mark.parametrize("package", PACKAGES)
def test_fid_matches_package(compared, package):
    """The package's FID from its features vs ours from our features (full 2048-d)."""
    reference = float(compared["packages"][f"{package}_fid"])
    ours = frechet_distance(*gaussian(compared["ours"][f"{package}_a"]),
                            *gaussian(compared["ours"][f"{package}_b"]))
    gap = abs(ours - reference) / reference
    print(f"{package} FID {reference!r}, ours {ours!r}: gap {gap:.2e}")
    assert reference > 1.0 and gap < FID_RTOL


@pytest.mark.parametrize("package", PACKAGES)
def test_frechet_matches_package_on_same_input(compared, package):
    """The package's Frechet function vs ours on identical input: its features' coordinates in
    an orthonormal basis of their affine span (the same FID; see the script's docstring)."""
    packages = compared["packages"]
    reference = float(packages[f"{package}_span_fid"])
    ours = frechet_distance(*gaussian(packages[f"{package}_span_a"]),
                            *gaussian(packages[f"{package}_span_b"]))
    gap = abs(ours - reference) / reference
    print(f"{package} Frechet on span coordinates {reference!r}, ours {ours!r}: gap {gap:.2e}")
    assert gap < SAME_INPUT_FID_RTOL
