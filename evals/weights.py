"""Detector weights: the manifest of published files, hash checks, loading, random stand-ins.

No weight file ships with the suite; users put each file in a weights directory under its
published name. Every load computes the file's SHA-256 so results can record it.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from evals.detectors import FIDInceptionV3, InceptionI3d, TorchScriptI3D

CHUNK_BYTES = 1 << 20
IGNORED_KEY_SUFFIX = "num_batches_tracked"  # absent from the official files


class WeightsError(ValueError):
    """A weight file is missing, differs from the published one, or does not fit its module."""


@dataclass(frozen=True)
class DetectorWeights:
    name: str
    file_name: str
    hash_kind: str            # "sha256" or "git-blob-sha1" (what the publisher's page shows)
    published_hash: str
    size_bytes: int | None    # None where no public source states it
    published_at: str
    used_by: tuple[str, ...]


MANIFEST = {w.name: w for w in (
    DetectorWeights(
        name="inception-2015-12-05",
        file_name="pt_inception-2015-12-05-6726825d.pth",
        hash_kind="sha256",
        published_hash="6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
        size_bytes=95_628_359,
        published_at="https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                     "pt_inception-2015-12-05-6726825d.pth (the same bytes as torch-fidelity's "
                     "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                     "weights-inception-2015-12-05-6726825d.pth; rename it)",
        used_by=("pytorch-fid", "torch-fidelity", "torchmetrics FID", "Vista protocol FID",
                 "OpenDWM FID"),
    ),
    DetectorWeights(
        name="i3d-400",
        file_name="i3d_pretrained_400.pt",
        hash_kind="git-blob-sha1",
        published_hash="a867b87ac3a9097d200598b1d48a1b890d8ec744",
        size_bytes=None,
        published_at="https://github.com/songweige/TATS/blob/main/tats/fvd/i3d_pretrained_400.pt",
        used_by=("TATS", "LVDM", "VideoGPT", "Vista-style FVD", "OpenDWM FVD"),
    ),
    DetectorWeights(
        name="i3d-torchscript",
        file_name="i3d_torchscript.pt",
        hash_kind="git-blob-sha1",
        published_hash="93daef59c7ae0e9e8f76225521407e60cbafa6aa",
        size_bytes=None,
        published_at="https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt (StyleGAN-V "
                     "src/metrics/frechet_video_distance.py; the hash is that of the copy in "
                     "https://github.com/JunyaoHu/common_metrics_on_video_quality/blob/main/"
                     "fvd/styleganv/i3d_torchscript.pt)",
        used_by=("StyleGAN-V", "common_metrics_on_video_quality", "many recent video papers"),
    ),
)}

MODULE_BUILDERS = {"inception-2015-12-05": FIDInceptionV3, "i3d-400": InceptionI3d}


def get_entry(name: str) -> DetectorWeights:
    try:
        return MANIFEST[name]
    except KeyError:
        raise ValueError(f"unknown detector '{name}' (known: {', '.join(MANIFEST)})") from None


# --- hashes -------------------------------------------------------------------------------

def file_hashes(path: Path) -> tuple[str, str]:
    """(SHA-256, git blob SHA-1) of a file, read once."""
    sha256 = hashlib.sha256()
    blob_sha1 = hashlib.sha1()
    blob_sha1.update(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            sha256.update(chunk)
            blob_sha1.update(chunk)
    return sha256.hexdigest(), blob_sha1.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_hashes(Path(path))[0]


def sidecar_cache(path: str | Path) -> Path:
    """Where `cached_sha256` keeps a checkpoint's hash beside it: `<file>.sha256.json`."""
    path = Path(path)
    return path.with_name(path.name + ".sha256.json")


def cached_sha256(path: str | Path, cache: Path | None) -> str:
    """SHA-256 of a (large) file, remembered by (path, size, mtime) in the JSON file `cache`
    (None: not remembered). A cache that cannot be read or written is recomputed or skipped:
    it only saves time (every sample shard and the score job of an evaluation name the
    checkpoint's hash; a paper-scale checkpoint is about 12 GB)."""
    import contextlib
    import json
    from evals.atomic import atomic_write_json
    path = Path(path)
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    try:
        known = json.loads(cache.read_text()) if cache is not None else {}
    except (OSError, ValueError):
        known = {}
    known = known if isinstance(known, dict) else {}
    if key not in known:
        known[key] = sha256_file(path)
        if cache is not None:
            with contextlib.suppress(OSError):
                atomic_write_json(cache, known)
    return known[key]


def git_blob_sha1_file(path: str | Path) -> str:
    """The id git gives the file's content: SHA-1 of b"blob <size>\\0" + content."""
    return file_hashes(Path(path))[1]


# --- verification -------------------------------------------------------------------------

def where_to_get(entry: DetectorWeights, destination: Path) -> str:
    return f"get {entry.file_name} from {entry.published_at} and put it at {destination}"


def resolve_path(path: str | Path, entry: DetectorWeights) -> Path:
    """`path` itself, or the entry's file inside it when `path` is a weights directory."""
    path = Path(path)
    return path / entry.file_name if path.is_dir() else path


def verify_weights(path: str | Path, name: str) -> str:
    """The file's SHA-256, after checking it against the published hash; WeightsError if not.

    `path` is the weight file or the weights directory that holds it under its published name.
    """
    entry = get_entry(name)
    path = resolve_path(path, entry)
    if not path.is_file():
        raise WeightsError(f"{name}: weights file {path} is missing: {where_to_get(entry, path)}")
    sha256, blob_sha1 = file_hashes(path)
    actual = sha256 if entry.hash_kind == "sha256" else blob_sha1
    if actual != entry.published_hash:
        size = path.stat().st_size
        expected_size = "" if entry.size_bytes is None else f" (expected {entry.size_bytes})"
        raise WeightsError(
            f"{name}: {path} is not the published file: {entry.hash_kind} expected "
            f"{entry.published_hash}, actual {actual}; size {size} bytes{expected_size}; "
            f"{where_to_get(entry, path.parent / entry.file_name)}")
    return sha256


@dataclass(frozen=True)
class WeightsRow:
    name: str
    file: Path
    present: bool
    size: int | None
    hash_kind: str
    expected_hash: str
    actual_hash: str | None
    ok: bool


def check_weights_dir(weights_dir: str | Path) -> list[WeightsRow]:
    """One row per known detector: is its file in `weights_dir`, and is it the published one."""
    rows = []
    for entry in MANIFEST.values():
        path = Path(weights_dir) / entry.file_name
        present = path.is_file()
        actual = None
        if present:
            sha256, blob_sha1 = file_hashes(path)
            actual = sha256 if entry.hash_kind == "sha256" else blob_sha1
        rows.append(WeightsRow(entry.name, path, present, path.stat().st_size if present else None,
                               entry.hash_kind, entry.published_hash, actual,
                               actual == entry.published_hash))
    return rows


# --- state dicts --------------------------------------------------------------------------

def state_dict_problems(module: nn.Module, state_dict: dict[str, Tensor]) -> list[str]:
    """Missing, unexpected and wrong-shape keys of `state_dict` for `module`, one line each."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()
                if not k.endswith(IGNORED_KEY_SUFFIX)}
    given = {k: tuple(v.shape) for k, v in state_dict.items()
             if not k.endswith(IGNORED_KEY_SUFFIX)}
    problems = [f"missing key {k} (shape {list(expected[k])})"
                for k in expected if k not in given]
    problems += [f"unexpected key {k} (shape {list(given[k])})" for k in given if k not in expected]
    problems += [f"wrong shape for {k}: file has {list(given[k])}, module needs "
                 f"{list(expected[k])}" for k in expected if k in given and given[k] != expected[k]]
    return problems


def load_official_state_dict(module: nn.Module, state_dict: dict[str, Tensor],
                             source: str = "state_dict") -> nn.Module:
    """Load every key (num_batches_tracked aside) or raise WeightsError listing each misfit."""
    problems = state_dict_problems(module, state_dict)
    if problems:
        raise WeightsError(f"{source} does not fit {type(module).__name__}: "
                           + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)
    return module


def save_state_dict_as_official(module: nn.Module, path: str | Path) -> None:
    """Save like the official files: a bare OrderedDict of CPU tensors, no num_batches_tracked."""
    state_dict = OrderedDict((k, v.detach().cpu().clone()) for k, v in module.state_dict().items()
                             if not k.endswith(IGNORED_KEY_SUFFIX))
    torch.save(state_dict, str(path))


def load_detector(name: str, weights_dir: str | Path, device: str | torch.device = "cpu",
                  verify: bool = True):
    """The detector in eval mode: FIDInceptionV3, InceptionI3d or a TorchScriptI3D wrapper."""
    entry = get_entry(name)
    path = Path(weights_dir) / entry.file_name
    if verify:
        verify_weights(path, name)
    elif not path.is_file():
        raise WeightsError(f"{name}: weights file {path} is missing: {where_to_get(entry, path)}")
    if name not in MODULE_BUILDERS:
        return TorchScriptI3D.from_file(path, device)
    state_dict = torch.load(str(path), map_location="cpu", weights_only=True)
    module = load_official_state_dict(MODULE_BUILDERS[name](), state_dict, source=str(path))
    return module.to(device).eval()


# --- random stand-ins ---------------------------------------------------------------------

def random_detector(name: str, seed: int, calibration_input: Tensor) -> nn.Module:
    """A seeded random detector with batch norm calibrated on one batch, in eval mode.

    For tests and smoke runs without weights: its features are finite and vary, but mean
    nothing. One train-mode pass normalises every layer with that batch's statistics (so
    activations stay in range) while cumulative averaging stores exactly those statistics.
    """
    if name not in MODULE_BUILDERS:
        raise ValueError(f"no random stand-in for '{name}': it is a TorchScript file without "
                         f"module code (use one of {', '.join(MODULE_BUILDERS)})")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = MODULE_BUILDERS[name]().to(calibration_input.device)
    batch_norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in batch_norms]
    for bn in batch_norms:
        bn.reset_running_stats()
        bn.momentum = None
    module.train()
    with torch.no_grad():
        module(calibration_input)
    for bn, momentum in zip(batch_norms, momenta):
        bn.momentum = momentum
    module.eval()
    with torch.no_grad():
        check_features(name, module(calibration_input))
    return module


def check_features(name: str, features: Tensor, max_abs: float = 1e4) -> None:
    """RuntimeError unless the features are finite, bounded and vary."""
    if not torch.isfinite(features).all():
        raise RuntimeError(f"random {name}: features are not finite after calibration")
    if features.abs().max() > max_abs:
        raise RuntimeError(f"random {name}: features explode (max |x| = "
                           f"{features.abs().max().item():g} > {max_abs:g})")
    varies = features.std() > 1e-6
    if features.shape[0] > 1:
        varies = varies and features.std(dim=0).max() > 1e-6
    if not varies:
        raise RuntimeError(f"random {name}: features are constant (degenerate)")
