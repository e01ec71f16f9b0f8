"""The weight files real Vista loads: its checkpoint (pinned by SHA-256 and size) and the
OpenCLIP ViT-H-14 image encoder it builds at start-up (found in a local Hugging Face cache,
because a compute node without internet hangs where Vista would download it).

- Checkpoint: Vista loads `ckpts/vista.safetensors` without strict keys, so a wrong file gives
  blurry frames and a wrong table row, not an error. We accept only the published file
  (`CHECKPOINT`, from the Hugging Face LFS pointer of OpenDriveLab/Vista), or another file when
  the user passes the explicit override, which every result then records.
- CLIP: Vista's config builds `open_clip.create_model_and_transforms("ViT-H-14",
  pretrained="laion2b_s32b_b79k")`, which asks `huggingface_hub` for `CLIP_FILES` of
  `CLIP_REPO` (newer open_clip tries the safetensors file first). We look for them in a hub
  cache (`REPRO_VISTA_CLIP` = a cache folder, default the Hugging Face default cache) or take
  the file itself (`REPRO_VISTA_CLIP` = the file), laid out as a one-file hub cache under the
  work dir. Vista then runs with HF_HUB_OFFLINE=1 and HF_HUB_CACHE at that cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from evals.atomic import atomic_write_text
from evals.weights import cached_sha256

UNPINNED_ENV = "REPRO_VISTA_ALLOW_UNPINNED"   # =1: accept weight files other than the pins
CLIP_ENV = "REPRO_VISTA_CLIP"


@dataclass(frozen=True)
class Pin:
    file_name: str
    sha256: str
    size_bytes: int
    published_at: str


CHECKPOINT = Pin(
    "vista.safetensors", "1b267bb753aa5c5e4d363f6e4c864dd4e343996dedc18b5ab20af6d20be34b98",
    10_053_461_572,
    "https://huggingface.co/OpenDriveLab/Vista/blob/main/vista.safetensors (LFS pointer of "
    "commit a92d28c7b3da931ec959d587153dc45fffe570ef, 'upload model weights')")
CLIP_REPO = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
CLIP_BIN = Pin(
    "open_clip_pytorch_model.bin",
    "9a78ef8e8c73fd0df621682e7a8e8eb36c6916cb3c16b291a082ecd52ab79cc4", 0,   # size unpublished
    f"https://huggingface.co/{CLIP_REPO}/blob/main/open_clip_pytorch_model.bin")
CLIP_SAFETENSORS = "open_clip_model.safetensors"    # no published hash in our sources: recorded
CLIP_FILES = (CLIP_SAFETENSORS, CLIP_BIN.file_name)  # open_clip's lookup order
LOCAL_REVISION = "0" * 40    # the revision of a hub cache we lay out around a given file


def pin_problem(path: Path, pin: Pin, cache: Path | None) -> tuple[str, str] | None:
    """(what, fix) when `path` is not the pinned file (size first: no hashing a placeholder)."""
    size = path.stat().st_size
    fix = (f"get {pin.file_name} from {pin.published_at} (or, to score another file on "
           f"purpose, set {UNPINNED_ENV}=1 / pass --allow-unpinned; every result then says so)")
    if pin.size_bytes and size != pin.size_bytes:
        return (f"{pin.file_name}: {size} bytes, the published file has {pin.size_bytes}", fix)
    actual = cached_sha256(path, cache)
    if actual != pin.sha256:
        return (f"{pin.file_name}: SHA-256 {actual}, the published file's is {pin.sha256}", fix)
    return None


def hub_cache_dir(given: str | os.PathLike | None = None) -> Path:
    """The Hugging Face hub cache huggingface_hub would use (HF_HUB_CACHE, HF_HOME/hub, ...)."""
    if given:
        return Path(given).expanduser().resolve()
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE).expanduser().resolve()


def find_clip(cache: Path) -> Path | None:
    """The CLIP weight file open_clip would load from `cache` offline, or None."""
    from huggingface_hub import try_to_load_from_cache
    for name in CLIP_FILES:
        found = try_to_load_from_cache(CLIP_REPO, name, cache_dir=str(cache))
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


def local_hub(weight_file: Path, root: Path) -> Path:
    """A hub cache under `root` holding only `weight_file` (symlinked) as CLIP_REPO's main
    revision, so that huggingface_hub resolves it offline; returns the cache folder."""
    if weight_file.name not in CLIP_FILES:
        raise ValueError(f"{weight_file}: open_clip looks for {' or '.join(CLIP_FILES)}; "
                         "rename the file to one of those")
    key = hashlib.sha256(str(weight_file.resolve()).encode()).hexdigest()[:12]
    cache = root / f"hub-{key}"
    repo = cache / ("models--" + CLIP_REPO.replace("/", "--"))
    link = repo / "snapshots" / LOCAL_REVISION / weight_file.name
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() or Path(os.readlink(link)) != weight_file.resolve():
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.unlink(missing_ok=True)
        os.symlink(weight_file.resolve(), tmp)
        os.replace(tmp, link)             # concurrent shards: each replace is atomic
    refs = repo / "refs" / "main"
    if not refs.is_file() or refs.read_text() != LOCAL_REVISION:
        atomic_write_text(refs, LOCAL_REVISION)
    return cache


def resolve_clip(workdir: Path, given: str | None) -> tuple[Path, Path | None]:
    """(hub cache to run Vista with, the CLIP weight file in it or None when missing), from
    the weight file or hub cache folder `given` (REPRO_VISTA_CLIP or --clip; None: the
    default hub cache)."""
    if given and Path(given).expanduser().is_file():
        weight = Path(given).expanduser().resolve()
        cache = local_hub(weight, Path(workdir) / "cache" / "vista-clip")
        return cache, find_clip(cache)
    cache = hub_cache_dir(given)
    return cache, find_clip(cache)


def clip_fix(cache: Path) -> str:
    return (f"Vista builds OpenCLIP ViT-H-14 ({CLIP_REPO}) at start-up and compute nodes are "
            f"offline: on a machine with internet run `huggingface-cli download {CLIP_REPO} "
            f"{CLIP_BIN.file_name} --cache-dir {cache}`, or download {CLIP_BIN.published_at} "
            f"and set {CLIP_ENV}=/path/to/{CLIP_BIN.file_name} (a hub cache folder works too)")


def write_stand_in(path: Path, note: str) -> Path:
    """A valid safetensors file with no tensors: the test double's stand-in for a weight file
    (it is parsed, never used). Written once, atomically."""
    if path.is_file():
        return path
    header = json.dumps({"__metadata__": {"stand_in": note}}).encode()
    header += b" " * (-len(header) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(struct.pack("<Q", len(header)) + header)
    os.replace(tmp, path)
    return path
