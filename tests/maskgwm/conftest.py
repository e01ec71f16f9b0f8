"""Shared model fixtures: a tiny random SD3 transformer, random DiT inputs for a preset, and
what the sampling tests share (a random VAE, null text; the tiny DiT with perturbed weights,
`make_tiny_model`, is in tests/conftest.py: the repro tests sample with it too)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from diffusers import SD3Transformer2DModel

from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.presets import get_preset
from maskgwm.model.text import TextConditioning
from maskgwm.model.vae import SD3VAE


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


BLOCK_LISTS = ("transformer_blocks", "temporal_blocks", "view_blocks", "recon_spatial",
               "recon_temporal")


@contextlib.contextmanager
def recorded_block_inputs(model: MaskGWMDiT):
    """Record (block list, dtype, contiguous) of the token input of every DiT and F block
    called inside the `with`: what a compiled block's guards see."""
    seen: list[tuple[str, torch.dtype, bool]] = []

    def recorder(kind):
        def hook(module, args, kwargs):
            tokens = args[0] if args else kwargs["hidden_states"]
            seen.append((kind, tokens.dtype, tokens.is_contiguous()))
        return hook
    handles = [block.register_forward_pre_hook(recorder(kind), with_kwargs=True)
               for kind in BLOCK_LISTS for block in getattr(model, kind, [])]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


@pytest.fixture
def block_inputs():
    """`recorded_block_inputs` as a fixture: `with block_inputs(model) as seen: ...`."""
    return recorded_block_inputs


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


@pytest.fixture(scope="session")
def vae() -> SD3VAE:
    return SD3VAE.random(seed=0)


@pytest.fixture(scope="session")
def text() -> TextConditioning:
    return TextConditioning.null("tiny")
