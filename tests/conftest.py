"""Session-wide fixtures: the real single-node Slurm that `.ci/slurm-up` starts, and the tiny
DiT with perturbed weights that the sampling tests (tests/maskgwm, tests/repro) share.

Tests that need it are skipped when Slurm is unreachable, unless REPRO_REQUIRE_SLURM=1 (set by
`.ci/run`), which turns that into a failure.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

import pytest

SINFO_TIMEOUT_S = 20
USABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing"}


@dataclasses.dataclass(frozen=True)
class SlurmCluster:
    partition: str
    node: str
    cpus: int


def query_slurm() -> SlurmCluster:
    """The default partition and its first usable node, from sinfo; RuntimeError saying why not."""
    if shutil.which("sinfo") is None:
        raise RuntimeError("`sinfo` is not on PATH (run .ci/slurm-up to install and start Slurm)")
    cmd = ["sinfo", "-h", "-N", "-o", "%P|%N|%c|%T"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=SINFO_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"the Slurm controller did not answer `sinfo` in {SINFO_TIMEOUT_S} s")
    if out.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {out.stderr.strip()}")
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    rows.sort(key=lambda row: not row[0].endswith("*"))  # the default partition first
    for partition, node, cpus, state in rows:
        if state in USABLE_NODE_STATES:
            return SlurmCluster(partition.rstrip("*"), node, int(cpus))
    raise RuntimeError(f"no usable Slurm node; sinfo says: {out.stdout.strip() or 'no nodes'}")


@pytest.fixture(scope="session")
def slurm_cluster() -> SlurmCluster:
    try:
        return query_slurm()
    except RuntimeError as err:
        reason = str(err)
    if os.environ.get("REPRO_REQUIRE_SLURM") == "1":
        pytest.fail(f"REPRO_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(f"no Slurm: {reason}")


@pytest.fixture(scope="session")
def slurm_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder for submitit's pickles and logs; on one machine the node sees every local path."""
    return tmp_path_factory.mktemp("slurm")


def perturbed_tiny_model(seed: int = 0, **config):
    """A `tiny` MaskGWMDiT whose zero-initialised blocks get small random weights, so frames
    (and views) interact, and guidance changes what is sampled."""
    import torch

    from maskgwm.config.schema import ModelConfig
    from maskgwm.model.dit import MaskGWMDiT
    torch.manual_seed(seed)
    model = MaskGWMDiT(ModelConfig(preset="tiny", **config), mask_config=None).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    return model


@pytest.fixture(scope="session")
def make_tiny_model():
    """`perturbed_tiny_model` as a fixture: make_tiny_model(seed=0, **ModelConfig fields)."""
    return perturbed_tiny_model


@pytest.fixture
def patch_scale(monkeypatch: pytest.MonkeyPatch):
    """Change one scale's record for a test (restored after it):
    patch_scale("paper", sampling={"shards": 2}) or patch_scale("ci", train={...})."""
    import dataclasses

    from maskgwm.config.scales import all_scales

    def patch(name: str, sampling: dict | None = None, train: dict | None = None) -> None:
        scale = all_scales()[name]
        if sampling:
            scale = dataclasses.replace(scale, sampling=dataclasses.replace(scale.sampling,
                                                                            **sampling))
        if train is not None:
            scale = dataclasses.replace(scale, train=train)
        monkeypatch.setitem(all_scales(), name, scale)
    return patch
