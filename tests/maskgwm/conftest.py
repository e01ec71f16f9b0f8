"""Shared model fixtures: a tiny random SD3 transformer and random DiT inputs for a preset."""
from __future__ import annotations

import pytest
import torch
from diffusers import SD3Transformer2DModel

from maskgwm.model.presets import get_preset


def random_inputs(preset, batch=1, frames=2, views=2, seed=0):
    """(latents [B, T, K, C, h, w], tau [B, T], text [B, 5, joint], pooled [B, pooled])."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(batch, frames, views, preset.in_channels, preset.latent_height,
                          preset.latent_width, generator=generator)
    tau = torch.rand(batch, frames, generator=generator)
    text = torch.randn(batch, 5, preset.joint_attention_dim, generator=generator)
    pooled = torch.randn(batch, preset.pooled_projection_dim, generator=generator)
    return latents, tau, text, pooled


@pytest.fixture
def inputs():
    """`random_inputs` as a fixture: inputs(preset, batch=1, frames=2, views=2, seed=0)."""
    return random_inputs


@pytest.fixture
def one_thread():
    """Tiny ops are much faster on one thread on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_sd3() -> SD3Transformer2DModel:
    """SD3's transformer at the `tiny` preset, with non-trivial random weights."""
    torch.manual_seed(0)
    model = SD3Transformer2DModel(**get_preset("tiny").sd3_config()).eval()
    with torch.no_grad():   # SD3 zero-inits nothing, but give proj_out etc. non-trivial values
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    return model
