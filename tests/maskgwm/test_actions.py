"""Action values and their embedding (actions.py): Vista's 19 values, none aliased over its real
range, missing fields as zero blocks, and the model's projections receiving exactly them."""
from __future__ import annotations

import math

import pytest
import torch

from maskgwm.config.schema import ModelConfig
from maskgwm.data.manifest import Actions
from maskgwm.model.actions import (ACTION_FEATURES, ACTION_FIELDS, ACTION_VALUES, EMBED_PER_VALUE,
                                   action_values, actions_present, embed_actions, embed_values,
                                   has_actions, no_actions)
from maskgwm.model.dit import MaskGWMDiT

FULL = Actions(traj=[0.4, 5.0, 0.9, 10.2, 1.5, 15.1, 2.2, 20.3], cmd=3,
               speed=[8.0, 8.5, 9.0, 9.5], angle=[0.01, -0.02, 0.03, 0.0],
               goal=[0.55, 0.6], z=20.0)


def field_slice(name: str) -> slice:
    start = 0
    for field, width in ACTION_FIELDS:
        if field == name:
            return slice(start, start + width)
        start += width
    raise KeyError(name)


def test_layout_is_vistas_19_values_in_its_units():
    assert [(n, w) for n, w in ACTION_FIELDS] == [("command", 1), ("trajectory", 8),
                                                  ("speed", 4), ("angle", 4), ("goal", 2)]
    values = action_values(FULL)
    assert len(values) == ACTION_VALUES == 19
    assert values[field_slice("command")] == [3.0]
    assert values[field_slice("trajectory")] == FULL.traj
    assert values[field_slice("speed")] == pytest.approx([v * 3.6 for v in FULL.speed])  # km/h
    assert values[field_slice("angle")] == FULL.angle
    assert values[field_slice("goal")] == FULL.goal
    assert embed_actions([FULL]).shape == (1, ACTION_FEATURES) == (1, 19 * EMBED_PER_VALUE)


def embed_one(field: str, values: list[list[float]]) -> torch.Tensor:
    """Embeddings [N, D] of clips that differ only in `field`."""
    rows = torch.tensor([action_values(FULL)] * len(values))
    rows[:, field_slice(field)] = torch.tensor(values, dtype=torch.float32)
    return embed_values(rows)


def min_pairwise_distance(embedded: torch.Tensor) -> float:
    distances = torch.cdist(embedded.double(), embedded.double())
    distances.fill_diagonal_(math.inf)
    return float(distances.min())


@pytest.mark.parametrize("field, values", [
    # speeds 0-40 m/s, 0.5 m/s apart (embedded in km/h)
    ("speed", [[3.6 * s] * 4 for s in torch.arange(0, 40.01, 0.5).tolist()]),
    # waypoints within +-100 m, 0.5 m apart
    ("trajectory", [[x] * 8 for x in torch.arange(-100, 100.01, 0.5).tolist()]),
    # steering +-780 degrees, 0.5 degrees apart (embedded as Vista does: degrees / 780)
    ("angle", [[d / 780] * 4 for d in torch.arange(-780, 780.01, 0.5).tolist()]),
    ("goal", [[g, g] for g in torch.arange(0, 1.0001, 0.01).tolist()]),
    ("command", [[c] for c in (0.0, 1.0, 2.0, 3.0)]),
])
def test_no_value_aliases_over_its_real_range(field, values):
    """The old NeRF-style bands (pi 2^k) had period 2: speeds of 3, 5 and 7 m/s embedded alike.
    Here every pair of distinct values over the real range embeds apart."""
    assert min_pairwise_distance(embed_one(field, values)) > 1e-4


def test_each_of_the_19_values_alone_changes_the_embedding():
    base = torch.tensor([action_values(FULL)])
    reference = embed_values(base)
    for index in range(ACTION_VALUES):
        perturbed = base.clone()
        perturbed[0, index] += 0.01
        changed = (embed_values(perturbed) - reference).abs()
        block = changed[0].view(ACTION_VALUES, EMBED_PER_VALUE).amax(dim=1)
        assert block[index] > 1e-4, index
        assert torch.all(block[torch.arange(ACTION_VALUES) != index] == 0), index


def test_missing_fields_embed_as_zero_blocks():
    partial = Actions(cmd=1)                          # OpenDV: a language command only
    values = action_values(partial)
    assert values[0] == 1.0 and all(math.isnan(v) for v in values[1:])
    embedded = embed_actions([partial]).view(ACTION_VALUES, EMBED_PER_VALUE)
    assert embedded[0].abs().sum() > 0 and torch.all(embedded[1:] == 0)
    invalid_goal = Actions(**{**FULL.__dict__, "z": -1.0})   # behind the camera: no goal
    assert all(math.isnan(v) for v in action_values(invalid_goal)[field_slice("goal")])
    assert torch.all(embed_actions([None]) == 0)
    present = actions_present(torch.tensor([action_values(a) for a in (FULL, partial, None)]))
    assert present.tolist() == [True, True, False]
    assert [has_actions(a) for a in (FULL, partial, None)] == present.tolist()
    assert not actions_present(no_actions(2)).any()


def test_the_models_projections_receive_embed_actions(inputs):
    """The public function is the model's exact path: what enters action_to_k and action_to_v
    of every temporal block is embed_actions of the clips' actions, on every frame."""
    torch.manual_seed(0)
    model = MaskGWMDiT(ModelConfig(preset="tiny", actions=True)).eval()
    latents, tau, text, pooled = inputs(model.preset, batch=2, frames=3, views=1)
    clips = [FULL, Actions(cmd=2, traj=[1.0] * 8)]
    seen = []
    hooks = [block.action_to_k.register_forward_hook(lambda m, args, out: seen.append(args[0]))
             for block in model.temporal_blocks]
    values = torch.tensor([action_values(a) for a in clips])
    with torch.no_grad():
        model(latents, tau, text, pooled, actions=values)
    for hook in hooks:
        hook.remove()
    assert len(seen) == model.preset.num_layers
    expected = embed_actions(clips)
    for features in seen:
        assert features.shape == (2, 3, ACTION_FEATURES)
        for frame in range(3):
            torch.testing.assert_close(features[:, frame], expected)
