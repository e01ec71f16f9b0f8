"""Parity with independent TensorFlow references (docs/DESIGN.md section 9).

TensorFlow mirrors of the FID Inception and the I3D (tests/evals/tf_reference/), loaded with the
weights of seeded, batch-norm-calibrated random detectors, must give our float32 features to
1e-4 relative; TF's own bilinear resizes must equal our named resize methods; TF's linear algebra
must give our Frechet distance to 1e-6 relative. All TF work of this module runs in ONE
subprocess (tf_parity_script.py), so TensorFlow is imported once (~4 s) and never by evals/.

Where TensorFlow does not import, the tests skip, unless REPRO_REQUIRE_REFERENCES=1 (CI), which
makes that a failure.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from evals.frechet import frechet_distance
from evals.resize import preprocess_clips, resize_frames
from evals.weights import random_detector

SCRIPT = Path(__file__).resolve().parent / "tf_parity_script.py"
TF_MISSING_EXIT = 3
SUBPROCESS_TIMEOUT_S = 600
FEATURE_RTOL = 1e-4          # our float32 detectors vs the float64 TF mirrors
FLOAT64_FEATURE_RTOL = 1e-9  # our Inception run in float64 vs the float64 TF mirror
RESIZE_ATOL = 1e-4   # in the [0, 255] domain; tf_bilinear is float32 TF1 arithmetic exactly
# torch computes bilinear source coordinates in float32, so its weights carry ~in_size * 2^-24
# relative error: measured up to 4.9e-4 (in [0, 255]) against TF2 in float32 or float64.
TORCH_RESIZE_ATOL = 1e-3
FRECHET_RTOL = 1e-6

# (input height, width, output height, width, number of images): up, down, odd ratios.
RESIZE_CASES = ((37, 53, 299, 299, 2), (300, 301, 299, 299, 1), (64, 48, 224, 224, 2),
                (9, 7, 5, 4, 1), (23, 31, 17, 19, 3))
I3D_FRAMES = 17  # odd, and long enough that the head averages over 2 time steps


def tf_layout(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, np.ndarray]:
    """Official PyTorch tensors -> numpy in TF layout: conv OIHW -> HWIO, OIDHW -> DHWIO."""
    arrays = {}
    for key, value in state_dict.items():
        if key.endswith("num_batches_tracked") or key.startswith("fc."):
            continue
        array = value.detach().cpu().numpy()
        if array.ndim == 4:
            array = array.transpose(2, 3, 1, 0)
        elif array.ndim == 5:
            array = array.transpose(2, 3, 4, 1, 0)
        arrays[f"{prefix}/{key}"] = array
    return arrays


def random_spd(rng: np.random.Generator, dim: int, log10_range: tuple[float, float]) -> np.ndarray:
    """A random symmetric positive definite matrix with eigenvalues log-spread over a range."""
    q, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    eigenvalues = 10.0 ** rng.uniform(*log10_range, size=dim)
    return (q * eigenvalues) @ q.T


def frechet_cases() -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(1234)
    dim = 64
    s1, s2 = random_spd(rng, dim, (-1, 1)), random_spd(rng, dim, (-1, 1))
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    samples = rng.normal(size=(500, dim)) @ rng.normal(size=(dim, dim))
    sample_cov = np.cov(samples, rowvar=False)
    return [
        (mu1, s1, mu2, s2),                                           # well conditioned
        (mu1, s1, mu1 + 0.1, s1),                                      # equal covariances
        (mu1, random_spd(rng, dim, (-5, 2)), mu2, random_spd(rng, dim, (-5, 2))),  # cond 1e7
        (mu1, sample_cov, mu2, sample_cov * 1.5 + np.eye(dim)),          # feature-like
    ]


def scipy_frechet(mu1, sigma1, mu2, sigma2) -> float:
    """The pytorch-fid / TTUR formula: sqrtm of the product, real part of its trace."""
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean).real)


def smooth_images(n: int, generator: torch.Generator) -> torch.Tensor:
    """[n, 3, 299, 299] in [-1, 1]: bilinear-upsampled 16x16 noise, smooth like photographs.

    A random-weight Inception amplifies float32 round-off less on smooth input (pool3 features
    1.9e-5 - 3e-5 off their float64 values) than on pixel noise (4e-5 - 7e-5).
    """
    low = torch.rand(n, 3, 16, 16, generator=generator)
    return (F.interpolate(low, size=299, mode="bilinear", align_corners=False) * 2 - 1)


def relative_gap(ours: np.ndarray, reference: np.ndarray) -> float:
    """max |ours - reference| / max |reference|."""
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.fixture(scope="module")
def parity(tmp_path_factory, references_unavailable):
    """Our outputs and TF's, from one TF subprocess: a dict of numpy arrays.

    The subprocess starts as soon as the weights are written and works while we run our
    forward passes.
    """
    if importlib.util.find_spec("tensorflow") is None:  # before the costly part; no import
        references_unavailable(f"no TensorFlow reference: tensorflow is not installed for "
                               f"{sys.executable}")
    started = time.perf_counter()
    tmp = tmp_path_factory.mktemp("tf_parity")
    generator = torch.Generator().manual_seed(0)
    inputs: dict[str, np.ndarray] = {}

    images = smooth_images(2, generator)
    inception = random_detector("inception-2015-12-05", seed=11,
                                calibration_input=smooth_images(2, generator))
    inputs.update(tf_layout(inception.state_dict(), "inception"))
    inputs["inception_images"] = images.permute(0, 2, 3, 1).double().numpy()
    inputs["pool_probe"] = torch.randn(2, 8, 8, 5, generator=generator).double().numpy()

    clips = torch.rand(1, 3, I3D_FRAMES, 224, 224, generator=generator) * 2 - 1
    i3d = random_detector("i3d-400", seed=12,
                          calibration_input=torch.rand(1, 3, 10, 224, 224, generator=generator)
                          * 2 - 1)
    inputs.update(tf_layout(i3d.state_dict(), "i3d"))
    inputs["i3d_clips"] = clips.permute(0, 2, 3, 4, 1).numpy()
    inputs["pool3d_probe"] = torch.randn(1, 7, 14, 15, 3, generator=generator).numpy()

    for i, (h, w, out_h, out_w, n) in enumerate(RESIZE_CASES):
        inputs[f"resize{i}_images"] = torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8,
                                                    generator=generator).numpy()
        inputs[f"resize{i}_size"] = np.array([out_h, out_w])
    for i, case in enumerate(frechet_cases()):
        for key, value in zip(("mu1", "sigma1", "mu2", "sigma2"), case):
            inputs[f"frechet{i}_{key}"] = value

    inputs_path, outputs_path = tmp / "inputs.npz", tmp / "outputs.npz"
    np.savez(inputs_path, **inputs)
    tf_started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(SCRIPT), str(inputs_path), str(outputs_path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ours = {}
        with torch.no_grad():
            ours["inception_pool3"] = inception(images).numpy()
            ours["inception_pool3_f64"] = inception.double()(images[:1].double()).numpy()
            ours["i3d_logits"] = i3d(clips).numpy()
        ours_seconds = time.perf_counter() - started
        _, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    if process.returncode == TF_MISSING_EXIT:
        references_unavailable("no TensorFlow reference: ", stderr)
    if process.returncode != 0:
        pytest.fail(f"{SCRIPT.name} exited with {process.returncode}:\n{stderr[-4000:]}",
                    pytrace=False)
    inputs_path.unlink()  # ~150 MB of weights; pytest keeps its last temp folders
    with np.load(outputs_path) as data:
        tf_out = {k: data[k] for k in data.files}
    print(f"TF {tf_out['tf_version']}; ours {ours_seconds:.1f} s, all "
          f"{time.perf_counter() - started:.1f} s; TF subprocess "
          f"{time.perf_counter() - tf_started:.1f} s (" + ", ".join(
              f"{k[8:]} {float(v):.1f} s" for k, v in tf_out.items() if k.startswith("seconds_"))
          + ")")
    return {"inputs": inputs, "ours": ours, "tf": tf_out}


def test_tf_avg_pool_same_excludes_padding(parity):
    """Our mirror divides a SAME sum-pool by the count of real pixels; TF's builtin agrees."""
    assert parity["tf"]["avg_pool_gap"] < 1e-12


def test_tf_3d_pools_are_separable_2d_pools(parity):
    """The I3D mirror's float64 3-D pools (2-D pools per axis pair) equal TF's own 3-D ops."""
    assert parity["tf"]["pool3d_gap"] < 1e-6


def test_inception_pool3_matches_tf(parity):
    ours, ref = parity["ours"]["inception_pool3"], parity["tf"]["inception_pool3"]
    assert ours.shape == ref.shape == (2, 2048)
    assert np.isfinite(ref).all() and ref.std(axis=0).max() > 1e-3, "degenerate TF features"
    gap = relative_gap(ours, ref)
    row_gaps = np.linalg.norm(ours - ref, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"Inception pool3 vs TF: max gap {gap:.2e}, per-row norm gap {row_gaps.max():.2e}")
    assert gap < FEATURE_RTOL and row_gaps.max() < FEATURE_RTOL


def test_inception_pool3_matches_tf_in_float64(parity):
    """Same graph, same arithmetic precision: only round-off may differ (the structural check;
    the float32 comparison above is dominated by float32 round-off, amplified by the net)."""
    ours, ref = parity["ours"]["inception_pool3_f64"], parity["tf"]["inception_pool3"][:1]
    gap = relative_gap(ours, ref)
    print(f"Inception pool3, float64 ours vs TF: max gap {gap:.2e}")
    assert gap < FLOAT64_FEATURE_RTOL


def test_i3d_logits_match_tf(parity):
    ours, ref = parity["ours"]["i3d_logits"], parity["tf"]["i3d_logits"]
    assert ours.shape == ref.shape == (1, 400)
    assert np.isfinite(ref).all() and ref.std() > 1e-3, "degenerate TF logits"
    gap = relative_gap(ours, ref)
    print(f"I3D logits vs TF: max gap {gap:.2e}")
    assert gap < FEATURE_RTOL


@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
def test_tf_bilinear_matches_tf1_resize_bilinear(parity, case):
    images = parity["inputs"][f"resize{case}_images"]
    size = tuple(int(s) for s in parity["inputs"][f"resize{case}_size"])
    ref = parity["tf"][f"resize{case}_tf1"]  # NHWC, [0, 255]
    frames = resize_frames(images, size, "tf_bilinear").permute(0, 2, 3, 1).double().numpy()
    frames_gap = np.abs(frames * 128 + 128 - ref).max()
    clip = preprocess_clips(images[None], size, method="tf_bilinear")[0]  # [3, T, h, w]
    clip_gap = np.abs((clip.permute(1, 2, 3, 0).double().numpy() + 1) * 127.5 - ref).max()
    print(f"tf_bilinear vs TF1 resize_bilinear, case {case}: frames {frames_gap:.2e}, "
          f"clips {clip_gap:.2e}")
    assert frames_gap < RESIZE_ATOL and clip_gap < RESIZE_ATOL


@pytest.mark.parametrize("case", range(len(RESIZE_CASES)))
def test_torch_bilinear_matches_tf2_half_pixel_resize(parity, case):
    images = parity["inputs"][f"resize{case}_images"]
    size = tuple(int(s) for s in parity["inputs"][f"resize{case}_size"])
    ref = parity["tf"][f"resize{case}_tf2"]
    frames = resize_frames(images, size, "torch_bilinear").permute(0, 2, 3, 1).double().numpy()
    frames_gap = np.abs((frames + 1) * 127.5 - ref).max()
    clip = preprocess_clips(images[None], size, method="torch_bilinear")[0]
    clip_gap = np.abs((clip.permute(1, 2, 3, 0).double().numpy() + 1) * 127.5 - ref).max()
    print(f"torch_bilinear vs TF2 half-pixel, case {case}: frames {frames_gap:.2e}, "
          f"clips {clip_gap:.2e}")
    assert frames_gap < TORCH_RESIZE_ATOL and clip_gap < TORCH_RESIZE_ATOL


def test_tf_bilinear_is_not_torch_bilinear(parity):
    """The two methods really differ (else the parity tests above could not tell them apart)."""
    assert np.abs(parity["tf"]["resize0_tf1"] - parity["tf"]["resize0_tf2"]).max() > 1.0


@pytest.mark.parametrize("case", range(len(frechet_cases())))
def test_frechet_distance_matches_tf_and_scipy(parity, case):
    args = [parity["inputs"][f"frechet{case}_{k}"] for k in ("mu1", "sigma1", "mu2", "sigma2")]
    ours = frechet_distance(*args)
    for name, reference in (("tf.linalg.sqrtm", parity["tf"][f"frechet{case}_sqrtm"]),
                            ("TF-GAN svd", parity["tf"][f"frechet{case}_tfgan"]),
                            ("scipy sqrtm", scipy_frechet(*args))):
        gap = abs(ours - reference) / abs(reference)
        print(f"Frechet case {case} vs {name}: {reference!r} (ours {ours!r}), gap {gap:.2e}")
        assert gap <= FRECHET_RTOL, f"{name}: {reference!r}, ours {ours!r}"
