"""Action conditioning (paper Sec. 3.1, "following Vista"): the 19 action values of a clip and
their sinusoidal embedding, the features the temporal blocks' cross-attention projects into
its keys and values.

Layout (Vista's five action inputs, configs/inference/vista.yaml; each value in the units
Vista's embedders receive):
    command     1  Vista's command 0-3 (0 right, 1 left, 2 stop, 3 straight)
    trajectory  8  (x, y) of the next 4 waypoints, metres (Vista's traj[2:])
    speed       4  km/h at the next 4 keyframes (the CAN bus unit; Vista's speed[1:])
    angle       4  steering wheel degrees / 780 at the next 4 keyframes (Vista's angle[1:] / 780)
    goal        2  the goal point in the 1600x900 front image, divided by the image size
Each value gets a 128-d timestep-style embedding (cos and sin at frequencies 1 down to 1/10000,
as Vista's `ConcatTimestepEmbedderND`), and the 19 embeddings are concatenated: [19 * 128].
The highest frequency is 1 rad per unit, so no value aliases over its real range (speeds to
150 km/h, waypoints within +-100 m, angles +-1, goal in [0, 1]; the lowest band's period is
about 63,000 units).

A field the clip does not have (no CAN data, an invalid goal, OpenDV's clips with a language
command only) is NaN in `action_values` and embeds as zeros, as Vista's conditioner fills a
missing action with a zero embedding. A clip with no field at all has no actions: with
`model.missing_actions = "drop"` the model gives it the dropped-action path, in training and
sampling alike (`actions_present`, blocks.TemporalBlock.kept_actions).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from diffusers.models.embeddings import get_timestep_embedding

from maskgwm.data.manifest import KMH_PER_MS, Actions

ACTION_FIELDS = (("command", 1), ("trajectory", 8), ("speed", 4), ("angle", 4), ("goal", 2))
ACTION_VALUES = sum(width for _, width in ACTION_FIELDS)        # 19
EMBED_PER_VALUE = 128                                           # Vista's action_emb_dim
ACTION_FEATURES = ACTION_VALUES * EMBED_PER_VALUE               # 2432
MAX_PERIOD = 10000.0


def _field(values: Sequence[float], width: int, present: bool = True) -> list[float]:
    """`width` numbers, or NaN x width when the field is absent or has the wrong length."""
    values = list(values)
    if not present or len(values) < width:
        return [math.nan] * width
    return [float(v) for v in values[:width]]


def action_values(actions: Actions | None) -> list[float]:
    """A clip's 19 action values in the layout of the module docstring, NaN where missing."""
    if actions is None:
        return [math.nan] * ACTION_VALUES
    goal_valid = len(actions.goal) == 2 and (actions.z is None or actions.z > 0)
    return (_field([actions.cmd] if actions.cmd is not None else [], 1)
            + _field(actions.traj, 8)
            + _field([v * KMH_PER_MS for v in actions.speed], 4)
            + _field(actions.angle, 4)
            + _field(actions.goal, 2, goal_valid))


def no_actions(batch: int, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """[batch, 19] of NaN: samples without actions."""
    return torch.full((batch, ACTION_VALUES), math.nan, device=device, dtype=dtype)


def has_actions(actions: Actions | None) -> bool:
    """Whether a clip has at least one action value (else its 19 values are all NaN)."""
    return not all(math.isnan(v) for v in action_values(actions))


def actions_present(values: torch.Tensor) -> torch.Tensor:
    """[B] bool from values [B, (T,) 19]: True where a sample has at least one action value."""
    present = ~torch.isnan(values)
    return present.flatten(1).any(dim=1)


def embed_values(values: torch.Tensor) -> torch.Tensor:
    """Action values [..., 19] (NaN = missing) -> features [..., 19 * 128], missing values'
    blocks zero. Computed in float32 whatever the input dtype."""
    if values.shape[-1] != ACTION_VALUES:
        raise ValueError(f"actions must have {ACTION_VALUES} values on the last axis "
                         f"({', '.join(f'{n} {w}' for n, w in ACTION_FIELDS)}), "
                         f"got shape {list(values.shape)}")
    values = values.float()
    missing = torch.isnan(values)    # values are finite otherwise (manifest.ClipRecord checks)
    flat = torch.where(missing, torch.zeros_like(values), values).reshape(-1)
    embedded = get_timestep_embedding(flat, EMBED_PER_VALUE, flip_sin_to_cos=True,
                                      downscale_freq_shift=0, max_period=MAX_PERIOD)
    embedded = embedded.view(*values.shape, EMBED_PER_VALUE)
    embedded = embedded.masked_fill(missing[..., None], 0.0)
    return embedded.flatten(-2)


def embed_actions(actions: Sequence[Actions | None]) -> torch.Tensor:
    """Clips' actions -> [B, 19 * 128]: exactly the features the model's action projections
    receive for these clips (the model embeds the packed values with `embed_values`)."""
    return embed_values(torch.tensor([action_values(a) for a in actions], dtype=torch.float32))
