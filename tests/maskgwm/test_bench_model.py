"""The model benchmark's bound and branch selection (the timings themselves are benchmarks)."""
from __future__ import annotations

import pytest

from maskgwm.model.bench_model import MR, one_of_each_branch, token_bound
from maskgwm.model.objective import ObjectiveSettings, draw_sample, sample_generator


def test_token_bound_matches_design():
    assert token_bound(24, 2, 2, 0.25) == pytest.approx(0.854, abs=1e-3)  # DESIGN.md sec. 9
    assert token_bound(12, 2, 1, 0.25) == pytest.approx(0.875)
    assert token_bound(12, 2, 1, 0.0) > 1.0


def test_one_sample_of_each_branch():
    settings = ObjectiveSettings(MR, max_cond_frames=1)
    shape, grid = (4, 1, 16, 8, 16), (4, 8)
    indices = one_of_each_branch(settings, shape, grid, seed=0)
    branches = [draw_sample(sample_generator(0, i), shape, grid, settings).branch
                for i in indices]
    assert branches == ["spatial", "temporal"]
