"""The model benchmark's bound and branch selection (the timings themselves are benchmarks)."""
from __future__ import annotations

import pytest

from maskgwm.model.bench_model import MR, alternating_branches, token_bound
from maskgwm.model.objective import ObjectiveSettings, draw_sample, sample_generator


def test_token_bound_matches_design():
    assert token_bound(24, 2, 2, 0.25) == pytest.approx(0.854, abs=1e-3)  # docs/DESIGN.md sec. 9
    assert token_bound(12, 2, 1, 0.25) == pytest.approx(0.875)
    assert token_bound(12, 2, 1, 0.0) > 1.0


@pytest.mark.parametrize("count", [2, 3, 4])
def test_samples_alternate_between_the_branches(count):
    settings = ObjectiveSettings(MR, max_cond_frames=1)
    shape, grid = (4, 1, 16, 8, 16), (4, 8)
    indices = alternating_branches(settings, shape, grid, seed=0, count=count)
    branches = [draw_sample(sample_generator(0, i), shape, grid, settings).branch
                for i in indices]
    assert len(set(indices)) == count
    assert branches == ["spatial", "temporal", "spatial", "temporal"][:count]


def test_shared_passes_dispatch_fewer_ops_than_one_pass_per_branch():
    """The MR step in shared passes (mixed_forward) issues fewer ATen calls, i.e. fewer GPU
    kernel launches, than the same loss computed one sample (branch) at a time."""
    import torch

    from maskgwm.config.schema import ModelConfig
    from maskgwm.model.bench_model import dispatched_ops
    from maskgwm.model.dit import MaskGWMDiT
    from maskgwm.model.objective import training_loss
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny"), mask_config=MR)
    p = model.preset
    z0 = torch.randn(2, 4, 1, p.in_channels, p.latent_height, p.latent_width)
    text, pooled = torch.randn(2, 8, p.joint_attention_dim), torch.randn(2, p.pooled_projection_dim)
    settings = ObjectiveSettings(MR, max_cond_frames=1)
    grid = (p.latent_height // p.patch_size, p.latent_width // p.patch_size)
    indices = alternating_branches(settings, tuple(z0.shape[1:]), grid, seed=0)

    def shared():
        training_loss(model, z0, text, pooled, indices, 0, settings).loss.backward()

    def per_branch():
        sum(training_loss(model, z0[i:i + 1], text[i:i + 1], pooled[i:i + 1], indices[i:i + 1],
                          0, settings).loss for i in range(2)).backward()
    assert dispatched_ops(shared) < 0.8 * dispatched_ops(per_branch)
