"""GPU paths (skipped without CUDA): the model on CUDA agrees with CPU, bf16 autocast stays
close to fp32, the MR training step runs in bf16 with finite gradients, shifted and masked
temporal attention agree on the GPU kernels, sampling is deterministic by seed, and compiled
blocks match eager ones."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model.attention import attention
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.flow import euler_sample
from maskgwm.model.masks import (masked_attention_mask, masked_temporal_attention, row_mask,
                                 shifted_temporal_attention)
from maskgwm.model.objective import ObjectiveSettings, training_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
OURS = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)

def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())

@pytest.fixture(scope="module")
def model_and_inputs():
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny", view_blocks=True), mask_config=OURS).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.02)
    p = model.preset
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 2, p.in_channels, p.latent_height, p.latent_width, generator=g)
    tau = torch.rand(2, 4, generator=g)
    text = torch.randn(2, 5, p.joint_attention_dim, generator=g)
    pooled = torch.randn(2, p.pooled_projection_dim, generator=g)
    return model, (latents, tau, text, pooled)

def test_cuda_forward_matches_cpu_and_bf16_stays_close(model_and_inputs):
    model, inputs = model_and_inputs
    with torch.no_grad():
        cpu = model(*inputs)
        gpu_model = model.to("cuda")
        cuda_inputs = [x.cuda() for x in inputs]
        gpu = gpu_model(*cuda_inputs)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            half = gpu_model(*cuda_inputs)
    model.to("cpu")
    assert relative_error(gpu.cpu(), cpu) < 1e-3      # TF32 matmuls may be on
    assert gpu.dtype == torch.float32
    assert half.dtype == torch.bfloat16   # the head's proj_out is a Linear: autocast runs it in bf16
    assert torch.isfinite(half).all() and relative_error(half, gpu) < 3e-2

def test_bf16_mr_training_step_has_finite_gradients(model_and_inputs):
    model, (latents, _, text, pooled) = model_and_inputs
    model = model.to("cuda").train()
    settings = ObjectiveSettings(OURS, max_cond_frames=1)
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        terms = training_loss(model, latents.cuda(), text.cuda(), pooled.cuda(), range(2), 0,
                              settings)
    terms.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    model.to("cpu").eval()
    assert torch.isfinite(terms.loss) and grads
    assert all(torch.isfinite(g).all() for g in grads)

def test_compiled_blocks_match_eager_on_cuda(model_and_inputs):
    """--compile on the GPU (inductor/triton, bf16 autocast): the MR step's loss and gradients
    stay at the eager ones (written without a GPU lent; run by scripts/gpu_checks.sh)."""
    import copy
    model, (latents, _, text, pooled) = model_and_inputs
    settings = ObjectiveSettings(OURS, max_cond_frames=1)

    def loss_and_gradients(m):
        m.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            terms = training_loss(m, latents.cuda(), text.cuda(), pooled.cuda(), range(2), 0,
                                  settings)
        terms.loss.backward()
        return float(terms.loss), torch.cat([p.grad.float().flatten()
                                             for p in m.parameters() if p.grad is not None])
    eager = copy.deepcopy(model).cuda().train()
    compiled = copy.deepcopy(model).cuda().train()
    assert compiled.compile_blocks() > 0
    loss, gradients = loss_and_gradients(eager)
    compiled_loss, compiled_gradients = loss_and_gradients(compiled)
    assert abs(compiled_loss - loss) <= 2e-2 * abs(loss)
    assert relative_error(compiled_gradients, gradients) < 5e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_shifted_equals_masked_temporal_attention_on_gpu(dtype):
    g = torch.Generator().manual_seed(0)
    batch, frames, height, width, heads, dim = 2, 25, 6, 16, 4, 64
    keep = row_mask(batch, frames, height, width, 0.25, g,
                    cond_frames=torch.ones(batch, dtype=torch.long)).cuda()
    # one row mask shared by all frames: shifted and masked attention must agree exactly
    keep = keep[:, 1:2].expand_as(keep).contiguous()
    q, k, v = [torch.randn(batch, frames, height, width, heads, dim, generator=g)
               .to("cuda", dtype) for _ in range(3)]
    shifted = shifted_temporal_attention(q, k, v, keep)
    masked = masked_temporal_attention(q, k, v, keep, attn_mask=masked_attention_mask(keep))
    visible = keep[..., None, None].expand_as(shifted)
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    torch.testing.assert_close(shifted[visible].float(), masked[visible].float(),
                               atol=tol, rtol=tol)

def test_sdpa_flash_kernel_matches_math_on_the_packed_layout():
    """torch's own FlashAttention kernel (what backend 'sdpa' uses for unmasked bf16 on a
    Hopper GPU) on the shifted temporal layout [B H Wk, heads, T, d]."""
    g = torch.Generator().manual_seed(0)
    q, k, v = [torch.randn(2 * 18 * 24, 8, 25, 64, generator=g).to("cuda", torch.bfloat16)
               for _ in range(3)]
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        flash = F.scaled_dot_product_attention(q, k, v)
    with sdpa_kernel(SDPBackend.MATH):
        math = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    torch.testing.assert_close(flash.float(), math, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(attention(q, k, v, backend="sdpa"), flash)

def test_cuda_sampling_is_deterministic_by_seed(model_and_inputs):
    model, (latents, _, text, pooled) = model_and_inputs
    gpu_model = model.to("cuda")
    text, pooled, cond = text[:1].cuda(), pooled[:1].cuda(), latents[:1, :1].cuda()

    def velocity(z, tau):
        return gpu_model(z, tau, text, pooled, cond_frames=tau == 0)

    def sample(seed):
        return euler_sample(velocity, tuple(latents[:1].shape), steps=3, guidance=4.0,
                            cond_latents=cond, cond_frames=1,
                            generator=torch.Generator().manual_seed(seed), device="cuda")
    with torch.no_grad():
        a, b, c = sample(0), sample(0), sample(1)
    model.to("cpu")
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :1], cond)


def test_trainer_runs_a_bf16_mr_stage_on_cuda(tmp_path):
    """The trainer's CUDA path end to end: frames encoded by the VAE on the GPU (the random
    VAE of the ci scale included), bf16 autocast, the MR objective, fused AdamW."""
    from maskgwm.config.resolve import resolve_run_config
    from maskgwm.train.options import TrainOptions
    from maskgwm.train.trainer import Trainer

    config = resolve_run_config("1c", "ci", "ours", {"stage.steps": 2})
    trainer = Trainer(config, tmp_path / "run",
                      options=TrainOptions(workers=0, checkpoint_every=0,
                                           cache_dir=str(tmp_path / "cache")))
    assert trainer.run()["status"] == "done"
    assert trainer.device.type == "cuda"
