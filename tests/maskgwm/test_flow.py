"""Rectified flow: sign conventions end to end, diffusers' schedule, condition frames, rollouts."""
from __future__ import annotations

import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler

from maskgwm.model.flow import (
    condition_mask, conditioned_inputs, euler_sample, euler_window_generator, flow_loss,
    frame_timesteps, guided_velocity, noisy_latents, rollout, rollout_length, rollout_rounds,
    sample_tau, tau_schedule)


def point_mass_velocity(target: torch.Tensor):
    """Exact velocity (c - eps) for data z_0 = c: eps = (z - (1 - tau) c) / tau."""
    def velocity(latents, per_frame_tau):
        tau = per_frame_tau.reshape(*per_frame_tau.shape, *([1] * (latents.dim() - 2)))
        eps = (latents - (1 - tau) * target) / tau.clamp_min(1e-8)
        return target - eps
    return velocity


def gaussian_velocity(mean: float, std: float):
    """Exact E[z_0 - eps | z_tau] for z_0 ~ N(mean, std^2) elementwise."""
    def velocity(latents, per_frame_tau):
        tau = per_frame_tau.reshape(*per_frame_tau.shape, *([1] * (latents.dim() - 2)))
        variance = (1 - tau) ** 2 * std ** 2 + tau ** 2
        centred = latents - (1 - tau) * mean
        expected_z0 = mean + (1 - tau) * std ** 2 / variance * centred
        expected_eps = tau / variance * centred
        return expected_z0 - expected_eps
    return velocity


# ---- sign conventions ----

def test_exact_point_mass_velocity_recovers_target_from_noise():
    target = torch.randn(2, 5, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    sample = euler_sample(point_mass_velocity(target), target.shape, steps=30, guidance=1.0,
                          generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(sample, target, atol=1e-4, rtol=1e-4)


def test_exact_gaussian_velocity_gives_target_distribution():
    """Euler converges to N(2, 0.5^2); 30 shifted steps still undershoot the std (~0.455)."""
    for steps, shift, std_tolerance in [(300, 1.0, 0.01), (30, 3.0, 0.06)]:
        sample = euler_sample(gaussian_velocity(2.0, 0.5), (20000, 1, 1), steps=steps,
                              guidance=1.0, shift=shift, generator=torch.Generator().manual_seed(0))
        assert abs(sample.mean().item() - 2.0) < 0.02
        assert abs(sample.std().item() - 0.5) < std_tolerance


class TinyVelocityNet(torch.nn.Module):
    """v = a(tau) + b(tau) z, with a and b from an MLP on (tau, log tau): enough for one clip.

    Nothing fixes the sign: a and b are learned from flow_loss alone.
    """

    def __init__(self, numel: int, hidden: int = 64):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2, hidden), torch.nn.SiLU(),
            torch.nn.Linear(hidden, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, numel + 1))

    def forward(self, latents, per_frame_tau):
        tau = per_frame_tau[:, -1:]
        out = self.net(torch.cat([tau, tau.log()], dim=1))
        offset, scale = out[:, :-1].reshape(latents.shape), out[:, -1]
        return offset + scale.reshape(-1, *([1] * (latents.dim() - 1))) * latents


def test_model_trained_with_flow_loss_regenerates_its_clip(one_thread):
    torch.manual_seed(0)
    clip = torch.randn(1, 4, 2, 3, 3)  # [B, T, C, h, w]
    model = TinyVelocityNet(clip.numel())
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    batch = 32
    for _ in range(300):
        z0 = clip.expand(batch, *clip.shape[1:])
        eps = torch.randn(z0.shape, generator=generator)
        tau = sample_tau(batch, generator)
        loss = flow_loss(model(noisy_latents(z0, eps, tau), tau[:, None].expand(batch, 4)),
                         z0, eps)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    shape = (4, *clip.shape[1:])
    sample = euler_sample(model, shape, steps=30, guidance=1.0,
                          generator=torch.Generator().manual_seed(5))
    error = (sample - clip).pow(2).mean().item()
    assert error < 0.05 * clip.var().item(), error
    flipped = euler_sample(lambda z, t: -model(z, t), shape, steps=30, guidance=1.0,
                           generator=torch.Generator().manual_seed(5))
    assert (flipped - clip).pow(2).mean().item() > clip.var().item()


# ---- diffusers ----

@pytest.mark.parametrize("shift", [1.0, 3.0])
def test_schedule_matches_diffusers(shift):
    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(30)
    ours = tau_schedule(30, shift)
    assert ours.shape == scheduler.sigmas.shape == (31,)
    torch.testing.assert_close(ours, scheduler.sigmas, atol=1e-6, rtol=0)
    torch.testing.assert_close(ours[:-1] * 1000, scheduler.timesteps, atol=2e-4, rtol=0)
    assert ours[0] == 1.0 and ours[-1] == 0.0


def test_sampler_matches_diffusers_steps_with_negated_velocity():
    """diffusers' model predicts eps - z_0 = -G: feeding it -G reproduces our trajectory."""
    velocity = gaussian_velocity(1.0, 0.7)
    shape = (8, 3, 2, 2)
    ours = euler_sample(velocity, shape, steps=30, guidance=1.0,
                        generator=torch.Generator().manual_seed(3))
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(30)
    latents = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    for timestep in scheduler.timesteps:
        tau = (timestep / 1000).expand(shape[0], shape[1])
        diffusers_output = -velocity(latents, tau)
        latents = scheduler.step(diffusers_output, timestep, latents).prev_sample
    torch.testing.assert_close(ours, latents, atol=1e-4, rtol=1e-4)


# ---- tau, loss, condition frames ----

def test_logit_normal_tau_in_open_interval_and_seeded():
    tau = sample_tau(100000, torch.Generator().manual_seed(0))
    assert tau.min() > 0 and tau.max() < 1
    assert abs(tau.median().item() - 0.5) < 0.01  # sigmoid of a zero-mean normal
    torch.testing.assert_close(tau, sample_tau(100000, torch.Generator().manual_seed(0)))
    assert not torch.equal(tau, sample_tau(100000, torch.Generator().manual_seed(1)))
    shifted = sample_tau(100000, torch.Generator().manual_seed(0), mean=1.0)
    assert shifted.median() > 0.7


def test_noisy_latents_endpoints_and_per_frame_tau():
    z0, eps = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    torch.testing.assert_close(noisy_latents(z0, eps, torch.zeros(2)), z0)
    torch.testing.assert_close(noisy_latents(z0, eps, torch.ones(2)), eps)
    per_frame = torch.tensor([[0.0, 0.5, 1.0]]).expand(2, 3)
    mixed = noisy_latents(z0, eps, per_frame)
    torch.testing.assert_close(mixed[:, 1], 0.5 * (z0[:, 1] + eps[:, 1]))


def test_condition_frames_have_timestep_zero_and_clean_latents():
    z0, eps = torch.randn(3, 5, 2, 2, 2), torch.randn(3, 5, 2, 2, 2)
    tau = torch.tensor([0.2, 0.5, 0.9])
    z_tau, per_frame_tau, loss_mask = conditioned_inputs(z0, eps, tau, torch.tensor([0, 1, 3]))
    assert per_frame_tau.shape == loss_mask.shape == (3, 5)
    assert torch.equal(per_frame_tau[2], torch.tensor([0.0, 0.0, 0.0, 0.9, 0.9]))
    assert torch.equal(per_frame_tau[0], torch.full((5,), 0.2))
    assert torch.equal(z_tau[2, :3], z0[2, :3]) and torch.equal(z_tau[1, :1], z0[1, :1])
    torch.testing.assert_close(z_tau[2, 3:], noisy_latents(z0, eps, tau)[2, 3:])
    assert torch.equal(loss_mask, ~condition_mask(3, 5, torch.tensor([0, 1, 3])))
    assert torch.equal(frame_timesteps(tau, condition_mask(3, 5, 2))[:, :2], torch.zeros(3, 2))


def test_loss_ignores_condition_frames():
    z0, eps = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    _, _, loss_mask = conditioned_inputs(z0, eps, torch.rand(2), 2)
    prediction = (z0 - eps).clone().requires_grad_(True)
    with torch.no_grad():
        prediction[:, 2:] += 1.0  # error 1 on every non-condition element
    perturbed = prediction.detach().clone()
    perturbed[:, :2] += 100.0  # any error on condition frames
    torch.testing.assert_close(flow_loss(prediction, z0, eps, loss_mask), torch.tensor(1.0))
    torch.testing.assert_close(flow_loss(perturbed, z0, eps, loss_mask), torch.tensor(1.0))
    flow_loss(prediction, z0, eps, loss_mask).backward()
    assert torch.equal(prediction.grad[:, :2], torch.zeros(2, 2, 3))
    none_selected = flow_loss(prediction, z0, eps, torch.zeros(2, 4, dtype=torch.bool))
    assert none_selected.item() == 0.0 and none_selected.requires_grad
    torch.testing.assert_close(flow_loss(prediction, z0, eps), torch.tensor(0.5))


def test_condition_frames_stay_exactly_given_through_sampling():
    cond = torch.randn(2, 3, 2, 4, 4)
    seen_taus = []

    def velocity(latents, per_frame_tau):
        seen_taus.append(per_frame_tau.clone())
        assert torch.equal(latents[:, :3], cond)
        return torch.randn_like(latents) * 10  # deliberately moves every frame

    sample = euler_sample(velocity, (2, 8, 2, 4, 4), steps=5, guidance=1.0, cond_latents=cond,
                          cond_frames=3, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sample[:, :3], cond)
    assert len(seen_taus) == 5
    assert all(torch.equal(t[:, :3], torch.zeros(2, 3)) for t in seen_taus)
    assert all((t[:, 3:] > 0).all() for t in seen_taus)


def test_unconditional_pass_sees_zeroed_condition_frames_and_guides():
    cond = torch.randn(1, 2, 3)
    unconditional_inputs = []

    def conditional(latents, per_frame_tau):
        return torch.ones_like(latents)

    def unconditional(latents, per_frame_tau):
        unconditional_inputs.append(latents.clone())
        return torch.zeros_like(latents)

    start = euler_sample(conditional, (1, 4, 3), steps=1, guidance=1.0, cond_latents=cond,
                         generator=torch.Generator().manual_seed(0))
    guided = euler_sample(conditional, (1, 4, 3), steps=1, guidance=4.0, cond_latents=cond,
                          generator=torch.Generator().manual_seed(0), uncond_fn=unconditional)
    assert torch.equal(unconditional_inputs[0][:, :2], torch.zeros(1, 2, 3))
    # one step from tau = 1 to 0 moves by v: guided v = 0 + 4 (1 - 0) = 4, conditional alone 1
    torch.testing.assert_close(guided[:, 2:] - start[:, 2:], torch.full((1, 2, 3), 3.0))


def test_guidance_one_equals_conditional_velocity_alone():
    v_cond, v_uncond = torch.randn(3, 4), torch.randn(3, 4)
    assert guided_velocity(v_cond, v_uncond, 1.0) is v_cond
    torch.testing.assert_close(guided_velocity(v_cond, v_uncond, 4.0),
                               v_uncond + 4.0 * (v_cond - v_uncond))
    velocity = gaussian_velocity(0.0, 1.0)
    calls = []
    no_guidance = euler_sample(velocity, (2, 3, 4), guidance=1.0,
                               uncond_fn=lambda z, t: calls.append(1) or z * 0,
                               generator=torch.Generator().manual_seed(0))
    plain = euler_sample(velocity, (2, 3, 4), guidance=1.0,
                         generator=torch.Generator().manual_seed(0))
    assert not calls and torch.equal(no_guidance, plain)


def test_sampling_is_deterministic_by_generator():
    velocity = gaussian_velocity(0.5, 0.3)
    first = euler_sample(velocity, (2, 3, 4), generator=torch.Generator().manual_seed(7))
    again = euler_sample(velocity, (2, 3, 4), generator=torch.Generator().manual_seed(7))
    other = euler_sample(velocity, (2, 3, 4), generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)


# ---- rollout ----

def test_rollout_lengths():
    assert [rollout_length(k) for k in (1, 2, 3)] == [25, 47, 69]
    assert [rollout_rounds(n) for n in (1, 25, 26, 47, 48, 69)] == [1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("rounds", [1, 2, 4])
def test_rollout_frames_and_first_frames(rounds):
    first = torch.randn(2, 3, 2, 2, 2)
    conditions = []

    def generate_window(cond_latents, generator):
        conditions.append(cond_latents.clone())
        fresh = torch.randn(2, 25 - cond_latents.shape[1], 2, 2, 2, generator=generator)
        return torch.cat([cond_latents, fresh], dim=1)

    total = rollout_length(rounds)
    video = rollout(generate_window, first, total, window=25, cond=3, seed=0)
    assert video.shape == (2, 25 + 22 * (rounds - 1), 2, 2, 2)
    assert len(conditions) == rounds
    assert torch.equal(video[:, :3], first)
    for k, condition in enumerate(conditions[1:], start=1):  # the last 3 frames so far
        end = rollout_length(k)
        assert torch.equal(condition, video[:, end - 3:end])
    assert rollout(generate_window, first, total - 5, seed=0).shape[1] == total - 5


def test_rollout_with_euler_windows_is_seeded_and_keeps_first_frame():
    first = torch.randn(1, 1, 2, 2, 2)
    generate = euler_window_generator(gaussian_velocity(0.0, 0.5), (2, 2, 2), window=6,
                                      steps=4, guidance=2.0)
    video = rollout(generate, first, 14, window=6, cond=2, seed=3)
    assert video.shape == (1, 14, 2, 2, 2)
    assert torch.equal(video[:, :1], first)
    assert torch.equal(video, rollout(generate, first, 14, window=6, cond=2, seed=3))
    assert not torch.equal(video, rollout(generate, first, 14, window=6, cond=2, seed=4))
