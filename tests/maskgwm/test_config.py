"""Run configs: the paper's stage settings, scales, variants and override validation."""
from __future__ import annotations

import re

import pytest

from maskgwm.config import (STAGES, ConfigError, RunConfig, content_hash, resolve_run_config,
                            to_dict, variant_names)
from maskgwm.config.schema import apply_overrides


@pytest.mark.parametrize("stage, steps, batch, frames", [
    ("1a", 18000, 768, [1]), ("1b", 24000, 64, [16, 20, 24]), ("1c", 20000, 64, [16, 20, 24]),
    ("2", 20000, 64, [25]), ("3", 6000, 64, [8]),
])
def test_paper_stages_match_the_paper(stage, steps, batch, frames):
    config = resolve_run_config(stage, "paper", "no-mr")
    assert (config.stage.steps, config.stage.batch_size, config.data.frames) == \
        (steps, batch, frames)
    assert (config.data.width, config.data.height) == (512, 288)
    assert config.optim.lr == 5e-5 and config.optim.warmup_steps == 1000
    assert config.model.preset == "sd3-medium"


def test_stage_specific_settings():
    assert resolve_run_config("2", "paper", "ours").data.mix == {"nuscenes": 0.5, "opendv": 0.5}
    assert resolve_run_config("2", "paper", "ours").model.actions
    assert not resolve_run_config("2", "paper", "ours-no-action").model.actions
    mview = resolve_run_config("3", "paper", "mview-kw")
    assert mview.data.views == 6 and mview.model.view_blocks and mview.mask.view_rows


def test_paper_fidelity_readings_are_resolved_config_fields():
    """Every reading where the paper is silent is a field of the resolved config (so a run's id
    changes with it), with the defaults docs/DESIGN.md section 9.8 gives reasons for."""
    config = resolve_run_config("2", "paper", "ours")
    assert config.model.missing_actions == "drop"              # action-free clips: dropped path
    assert (config.flow.logit_mean, config.flow.logit_std, config.flow.shift) == (0.0, 1.0, 3.0)
    assert (config.optim.ema_decay, config.optim.ema_warmup) == (0.9999, True)
    assert config.optim.grad_clip == 1.0 and config.data.vae_latent == "mean"
    assert config.mask.recon_order == "spatial_first"
    assert config.mask.contrastive_negatives == "global"
    assert resolve_run_config("3", "paper", "mview-kw").model.cameras == 6
    # Every override error quotes the key and value, so matching the key alone passes for any
    # reason; each match below is the reason for that value.
    for key, value, reason in (
            ("model.missing_actions", "skip", "'model.missing_actions' = 'skip' is not one of "
                                              "drop, zeros"),
            ("data.vae_latent", "mode", "'data.vae_latent' = 'mode' is not one of mean, sample"),
            ("mask.recon_order", "random", "'mask.recon_order' = 'random' is not one of "
                                           "spatial_first, temporal_first"),
            ("optim.ema_decay", 1.0, "'optim.ema_decay' = 1.0 must be in [0, 1)"),
            ("flow.shift", 0.0, "'flow.shift' must be positive"),
            ("model.cameras", 3, "'model.cameras' = 3 must be 0 (no camera embedding) or at "
                                 "least data.views = 6")):
        with pytest.raises(ConfigError, match=re.escape(reason)):
            resolve_run_config("3", "paper", "mview-kw", {key: value})


def test_total_paper_steps_per_stage_group():
    steps = {s: resolve_run_config(s, "paper", "no-mr").stage.steps for s in STAGES}
    assert steps["1a"] + steps["1b"] + steps["1c"] == 62000   # "Stage 1 for total 62K steps"


def test_ours_is_the_papers_mr_setting():
    mask = resolve_run_config("1c", "paper", "ours").mask
    assert mask.enabled and mask.ratio == 0.25
    assert (mask.spatial, mask.temporal, mask.row, mask.shift) == (True, True, True, True)
    assert not resolve_run_config("1c", "paper", "no-mr").mask.enabled


def test_every_variant_resolves_at_every_scale():
    for variant in variant_names():
        for scale in ("ci", "smoke", "lite", "paper"):
            resolve_run_config("1c", scale, variant)


def test_single_branch_variants_set_the_branch_probability():
    spatial = resolve_run_config("1c", "paper", "spatial-r0.4").mask
    time = resolve_run_config("1c", "paper", "time-r0.4").mask
    assert (spatial.spatial, spatial.temporal, spatial.spatial_prob) == (True, False, 1.0)
    assert (time.spatial, time.temporal, time.spatial_prob, time.row) == (False, True, 0.0, False)


def test_overrides_reject_unknown_keys_and_wrong_types():
    config = RunConfig()
    apply_overrides(config, {"mask.ratio": 0.4, "model": {"view_attention": "K"}}, "x")
    assert config.mask.ratio == 0.4 and config.model.view_attention == "K"
    with pytest.raises(ConfigError, match="unknown key 'mask.ration'"):
        apply_overrides(config, {"mask.ration": 0.4}, "here.toml")
    with pytest.raises(ConfigError, match="here.toml: key 'stage.steps' expects int"):
        apply_overrides(config, {"stage.steps": 1.5}, "here.toml")
    with pytest.raises(ConfigError, match="expects bool"):
        apply_overrides(config, {"mask.row": 1}, "here.toml")
    with pytest.raises(ConfigError, match="is a value, not a table"):
        apply_overrides(config, {"mask.ratio.x": 1}, "here.toml")


def test_invalid_values_are_rejected():
    with pytest.raises(ConfigError, match=re.escape("'mask.ratio' = 1.0 must be in [0, 1)")):
        resolve_run_config("1c", "paper", "ours", {"mask.ratio": 1.0})
    with pytest.raises(ConfigError, match="need 0 <= mask.tau_min <= mask.tau_max <= 1"):
        resolve_run_config("1c", "paper", "ours", {"mask.tau_min": 0.8, "mask.tau_max": 0.2})
    with pytest.raises(ConfigError, match="unknown variant"):
        resolve_run_config("1c", "paper", "nope")
    with pytest.raises(ConfigError, match="unknown scale"):
        resolve_run_config("1c", "huge", "ours")


def test_content_hash_is_stable_and_sensitive():
    a = to_dict(resolve_run_config("1c", "paper", "ours"))
    b = to_dict(resolve_run_config("1c", "paper", "ours"))
    assert content_hash(a, None) == content_hash(b, None)
    b["mask"]["ratio"] = 0.1
    assert content_hash(a, None) != content_hash(b, None)
    assert content_hash(a, "parent1") != content_hash(a, "parent2")
