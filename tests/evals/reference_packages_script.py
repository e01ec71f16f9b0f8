"""Features and FIDs from the real reference packages, run with the reference venv's python.

    $REPRO_REF_PYTHON reference_packages_script.py WEIGHTS.pth IMAGES.npz OUTPUTS.npz WORKDIR

Runs in the separate venv that `repro.bootstrap` builds (torch 2.14.1 + torchvision 0.29.1,
pytorch-fid, torch-fidelity; docs/DESIGN.md sections 7 and 9). It imports nothing of this
repository.

WEIGHTS.pth is an Inception state_dict in the official layout. Each package finds it the way it
finds the published file offline, through torch.hub's cache under $TORCH_HOME (set here to
WORKDIR/torch_home before torch is imported):
- pytorch-fid: `fid_inception_v3()` calls load_state_dict_from_url(FID_WEIGHTS_URL), which uses
  hub/checkpoints/pt_inception-2015-12-05-6726825d.pth when present;
- torch-fidelity: `FeatureExtractorInceptionV3(feature_extractor_weights_path=None)` calls
  load_state_dict_from_url(URL_INCEPTION_V3), i.e. hub/checkpoints/
  weights-inception-2015-12-05-6726825d.pth (its `feature_extractor_weights_path` option, or
  torch-fidelity's own `--feature-extractor-weights-path`, would take any path instead).

IMAGES.npz holds `images_a`, `images_b`: uint8 [n, H, W, 3]. OUTPUTS.npz gets, per package
(`pytorch_fid`, `torch_fidelity`): `<package>_a`, `<package>_b` (features [n, 2048]),
`<package>_fid` (the FID the package computes from them), `<package>_span_a`, `_span_b` and
`_span_fid` (see below), plus `versions` and `seconds_*` timings.

FIDs. With n < d samples the covariances are singular. Writing both feature sets in an
orthonormal basis of their affine span (2n - 1 coordinates) is an isometry: it keeps the means'
distance, the traces and Tr((S1 S2)^(1/2)), so the FID is unchanged exactly. `_span_*` are
those coordinates and `_span_fid` the package's own Frechet function on them: the same FID,
with none of the round-off that the package's general-matrix method picks up on a singular
2048 x 2048 product (torch-fidelity's full-size value is 8.5e-6 off the exact one here).
- torch-fidelity `_fid`: `fid_features_to_statistics` + `fid_statistics_to_metric` on the full
  2048-d features (np.linalg.eigvals of S1 S2, ~3 s), as the package runs it.
- pytorch-fid `_fid` = `_span_fid`: its `calculate_frechet_distance` (scipy.linalg.sqrtm of
  S1 S2) takes 12-37 s at d = 2048 here, so it only runs on the span coordinates.

Exit status 3 with a one-line reason on stderr when the packages do not import.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

IMPORT_FAILED_EXIT = 3
PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"


def place_weights(weights: Path, workdir: Path) -> Path:
    """Link the weights under both packages' torch.hub cache names; return TORCH_HOME."""
    torch_home = workdir / "torch_home"
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for name in (PYTORCH_FID_FILE, TORCH_FIDELITY_FILE):
        link = checkpoints / name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(weights.resolve())
    return torch_home


def affine_span_coordinates(a, b):
    """a, b [n, d] -> their coordinates [n, k] in an orthonormal basis of their affine span."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    origin = a[0]
    basis, _ = np.linalg.qr((np.concatenate([a, b])[1:] - origin).T)  # [d, 2n - 1]
    return (a - origin) @ basis, (b - origin) @ basis


def gaussian(features):
    """pytorch-fid's calculate_activation_statistics: mean and np.cov (ddof 1)."""
    import numpy as np

    return np.mean(features, axis=0), np.cov(features, rowvar=False)


def main(weights: str, images_path: str, outputs_path: str, workdir: str) -> int:
    start = time.perf_counter()
    os.environ["TORCH_HOME"] = str(place_weights(Path(weights), Path(workdir)))
    try:
        import numpy as np
        import torch
        import torchvision
        import pytorch_fid
        from pytorch_fid.fid_score import calculate_frechet_distance
        from pytorch_fid.inception import InceptionV3
        import torch_fidelity
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric
    except Exception as err:
        print(f"the reference packages do not import: {type(err).__name__}: {err}",
              file=sys.stderr)
        return IMPORT_FAILED_EXIT
    out = {"versions": np.array(f"torch {torch.__version__}, torchvision "
                                f"{torchvision.__version__}, pytorch-fid "
                                f"{pytorch_fid.__version__}, torch-fidelity "
                                f"{torch_fidelity.__version__}"),
           "seconds_import": np.float64(time.perf_counter() - start)}
    with np.load(images_path) as data:
        sets = {"a": data["images_a"], "b": data["images_b"]}

    # pytorch-fid: its dataset gives ToTensor() images, x / 255 in [0, 1]; InceptionV3 resizes
    # them with torch bilinear to 299 and maps them to 2x - 1.
    t0 = time.perf_counter()
    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    with torch.no_grad():
        for key, images in sets.items():
            # contiguous NCHW, as its dataset's stacked ToTensor() images are (a channels-last
            # view would route the convolutions through other kernels: other round-off)
            batch = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float() / 255
            out[f"pytorch_fid_{key}"] = model(batch)[0].squeeze(-1).squeeze(-1).numpy()
    span_a, span_b = affine_span_coordinates(out["pytorch_fid_a"], out["pytorch_fid_b"])
    out["pytorch_fid_span_a"], out["pytorch_fid_span_b"] = span_a, span_b
    out["pytorch_fid_fid"] = out["pytorch_fid_span_fid"] = np.float64(
        calculate_frechet_distance(*gaussian(span_a), *gaussian(span_b)))
    out["seconds_pytorch_fid"] = np.float64(time.perf_counter() - t0)

    # torch-fidelity: uint8 NCHW in; its own TF1-style resize and (x - 128) / 128 inside.
    t0 = time.perf_counter()
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"]).eval()
    stats = {}
    with torch.no_grad():
        for key, images in sets.items():
            features = model(torch.from_numpy(images).permute(0, 3, 1, 2).contiguous())[0]
            out[f"torch_fidelity_{key}"] = features.numpy()
            stats[key] = fid_features_to_statistics(features.cpu())
    out["torch_fidelity_fid"] = np.float64(
        fid_statistics_to_metric(stats["a"], stats["b"], False)["frechet_inception_distance"])
    span_a, span_b = affine_span_coordinates(out["torch_fidelity_a"], out["torch_fidelity_b"])
    out["torch_fidelity_span_a"], out["torch_fidelity_span_b"] = span_a, span_b
    out["torch_fidelity_span_fid"] = np.float64(fid_statistics_to_metric(
        fid_features_to_statistics(torch.from_numpy(span_a)),
        fid_features_to_statistics(torch.from_numpy(span_b)), False)["frechet_inception_distance"])
    out["seconds_torch_fidelity"] = np.float64(time.perf_counter() - t0)

    out["seconds_total"] = np.float64(time.perf_counter() - start)
    np.savez(outputs_path, **out)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
