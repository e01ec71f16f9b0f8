"""SD3VAE: loading layouts and errors, shapes, SD3's latent transform, batching."""
from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from maskgwm.data.latents import sd3_vae_encoder
from maskgwm.model.vae import SD3_SCALING, SD3_SHIFT, SD3VAE


@pytest.fixture(scope="module")
def vae() -> SD3VAE:
    return SD3VAE.random(seed=0)


@pytest.fixture(scope="module")
def sd3_root(tmp_path_factory, vae):
    root = tmp_path_factory.mktemp("sd3")
    vae.vae.save_pretrained(root / "vae")
    return root


def frames(n=3, height=32, width=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, height, width), dtype=torch.uint8, generator=generator)


def test_random_vae_shapes_and_config(vae):
    assert (vae.scaling, vae.shift, vae.downsample) == (SD3_SCALING, SD3_SHIFT, 8)
    latents = vae.encode(frames())
    assert latents.shape == (3, 16, 4, 8) and latents.dtype == torch.float32
    decoded = vae.decode(latents)
    assert decoded.shape == (3, 3, 32, 64) and decoded.dtype == torch.uint8
    assert torch.equal(SD3VAE.random(seed=0).encode(frames()), latents)


def test_transform_matches_manual_and_latent_cache(vae):
    x = frames()
    with torch.no_grad():
        mean = vae.vae.encode(x.float() / 127.5 - 1).latent_dist.mean
    expected = (mean - SD3_SHIFT) * SD3_SCALING
    assert torch.allclose(vae.encode(x), expected, atol=1e-6)
    assert torch.allclose(sd3_vae_encoder(vae.vae)(x), expected, atol=1e-6)
    with torch.no_grad():
        image = vae.vae.decode(expected / SD3_SCALING + SD3_SHIFT).sample
    manual = ((image + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    assert torch.equal(vae.decode(expected), manual)


def test_batching_does_not_change_results(vae):
    x = frames(5)
    latents = vae.encode(x, batch_size=5)
    assert torch.allclose(vae.encode(x, batch_size=2), latents, atol=1e-5)
    assert torch.equal(vae.decode(latents, batch_size=2)[:1], vae.decode(latents[:1]))


def test_posterior_mean_and_std_in_latent_units(vae):
    """encode is the posterior mean (data.vae_latent = "mean"); encode_posterior adds the
    posterior std scaled like the latents, for data.vae_latent = "sample"."""
    x = frames()
    mean, std = vae.encode_posterior(x)
    torch.testing.assert_close(mean, vae.encode(x))
    with torch.no_grad():
        raw = vae.vae.encode(x.float() / 127.5 - 1).latent_dist.std
    torch.testing.assert_close(std, raw * SD3_SCALING)
    assert (std > 0).all() and vae.encode_posterior(x, with_std=False)[1] is None


def test_size_and_dtype_errors(vae):
    with pytest.raises(ValueError, match="divisible by 8"):
        vae.encode(frames(height=36))
    with pytest.raises(ValueError, match="uint8"):
        vae.encode(frames().float())
    with pytest.raises(ValueError, match="16"):
        vae.decode(torch.zeros(1, 4, 4, 8))


@pytest.mark.parametrize("sub", ["", "vae"])
def test_from_pretrained_root_or_vae_folder(sd3_root, vae, sub):
    loaded = SD3VAE.from_pretrained(sd3_root / sub if sub else sd3_root)
    assert (loaded.scaling, loaded.shift) == (SD3_SCALING, SD3_SHIFT)
    assert torch.equal(loaded.encode(frames()), vae.encode(frames()))


def test_missing_files_name_the_file(tmp_path, sd3_root):
    with pytest.raises(FileNotFoundError, match="stable-diffusion-3-medium-diffusers"):
        SD3VAE.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "vae").mkdir()
    with pytest.raises(FileNotFoundError, match=r"vae/config\.json"):
        SD3VAE.from_pretrained(tmp_path)
    (tmp_path / "vae" / "config.json").write_text((sd3_root / "vae" / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors.*place it"):
        SD3VAE.from_pretrained(tmp_path)


def test_wrong_latent_channels(tmp_path):
    four = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                         layers_per_block=1, norm_num_groups=4)
    four.save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="4 latent channels, expected 16"):
        SD3VAE.from_pretrained(tmp_path)
