"""Latent caching with a real (tiny, random) diffusers AutoencoderKL."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL
from PIL import Image

from maskgwm.data.latents import LatentCache, sd3_vae_encoder, vae_encoder_id
from maskgwm.data.loader import ClipDataset, Source, read_image_file
from maskgwm.data.manifest import ClipManifest, ClipRecord


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16,
                         down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                         layers_per_block=1, norm_num_groups=4).eval()


@pytest.fixture
def source(tmp_path):
    refs = []
    for t in range(6):
        ref = f"c0/{t}.png"
        (tmp_path / "c0").mkdir(exist_ok=True)
        Image.fromarray(np.full((16, 32, 3), 30 * t, np.uint8)).save(tmp_path / ref)
        refs.append([ref])
    clip = ClipRecord("c0", "synthetic", "train", "s", ["CAM_FRONT"], refs,
                      list(range(6)), 10.0)
    return Source(ClipManifest("synthetic", str(tmp_path), [clip]), tmp_path)


def test_cache_hit_equals_miss_and_skips_decoding(vae, source, tmp_path):
    cache = LatentCache(tmp_path / "cache", vae_encoder_id(vae, 1.5305, 0.0609),
                        sd3_vae_encoder(vae))
    dataset = ClipDataset([source], n_frames=4, width=32, height=16, length=3, seed=0,
                          latent_cache=cache)
    first = dataset[0]
    assert "frames" not in first and first["latents"].shape == (4, 1, 16, 8, 16)
    reads = []
    counting = dataclasses.replace(
        source, read_frame=lambda root, ref: reads.append(ref) or read_image_file(root, ref))
    again = ClipDataset([counting], 4, 32, 16, length=3, seed=0, latent_cache=cache)[0]
    assert reads == [] and torch.equal(first["latents"], again["latents"])


def test_encoder_id_changes_with_weights_and_transform(vae):
    base = vae_encoder_id(vae, 1.5305, 0.0609)
    assert base == vae_encoder_id(vae, 1.5305, 0.0609)
    assert base != vae_encoder_id(vae, 1.0, 0.0)
    with torch.no_grad():
        vae.encoder.conv_in.weight[0, 0, 0, 0] += 1.0
    assert base != vae_encoder_id(vae, 1.5305, 0.0609)


def test_damaged_entry_is_re_encoded(vae, source, tmp_path):
    cache = LatentCache(tmp_path / "cache", "vae", sd3_vae_encoder(vae))
    dataset = ClipDataset([source], 4, 32, 16, length=1, seed=0, latent_cache=cache)
    first = dataset[0]["latents"]
    path = next((tmp_path / "cache" / "vae").rglob("*.npy"))
    path.write_bytes(b"garbage")
    assert torch.equal(dataset[0]["latents"], first)
