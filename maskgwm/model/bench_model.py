"""Model benchmarks: one training step with MR vs without, and sampling time per clip.

    python -m maskgwm.model.bench_model --out results/bench/model.json

Training step: the same model (built with MR blocks) and the same batch (`--batch`, default 2),
timed with the MR objective (r = 0.25, M_spatial + row-wise M_time with shift; the samples
alternate between the branches) and with MR off (every sample on the plain path); forward,
loss, backward and an AdamW step, timed
back to back in rounds (warm-up, then the median over rounds of the per-round ratio). Memory:
on CUDA the peak allocated bytes; on CPU (where torch keeps no allocator statistics) the bytes
of the tensors autograd saves for backward, which is what grows a training step's peak
(distinct storages counted once). The token-count bound ((L - d)(1 - r) + d + n_F) / L
(docs/DESIGN.md section 9) is recorded beside both ratios, with L, d and n_F. Sampling: seconds for
one clip (30 Euler steps with guidance, so two model passes per step) at the given latent size.
FLOPs per step come from torch.utils.flop_counter; with them, achieved TFLOP/s and (on a GPU
with a known peak) MFU. On a GPU: `--preset sd3-medium --frames 8` measures the paper's model
in bf16. With `--compile` the same model is also timed eagerly in the same rounds
(`torch.compiler.set_stance("force_eager")`), so `compiled_vs_eager_step_time_ratio` and the
eager MFU come from one run. The attention comparison of shifted vs masked temporal attention
is measured in the same run by `bench_attention` and copied under
`row_shift_vs_masked_attention_speedup`.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from evals.atomic import atomic_write_json
from evals.commit import bench_provenance
from maskgwm.config.schema import MaskConfig, ModelConfig
from maskgwm.model import bench_attention
from maskgwm.model.dit import MaskGWMDiT
from maskgwm.model.flow import euler_sample
from maskgwm.model.objective import (ObjectiveSettings, draw_sample, sample_generator,
                                     training_loss)

MR = MaskConfig(ratio=0.25, spatial=True, temporal=True, row=True, shift=True)
MEASURES = bench_attention.MEASURES + (
    "maskgwm/model/bench_model.py", "maskgwm/model/dit.py", "maskgwm/model/blocks.py",
    "maskgwm/model/reconstruction.py", "maskgwm/model/objective.py", "maskgwm/model/flow.py",
    "maskgwm/model/actions.py", "maskgwm/config/schema.py")
DENSE_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "A800": 312.0}


def token_bound(layers: int, decoder_layers: int, recon_layers: int, ratio: float) -> float:
    return ((layers - decoder_layers) * (1 - ratio) + decoder_layers + recon_layers) / layers


def alternating_branches(settings: ObjectiveSettings, frame_shape, grid, seed: int,
                         count: int = 2) -> list[int]:
    """`count` sample indices whose draws take the spatial and the temporal branch in turn
    (spatial first)."""
    found: dict[str, list[int]] = {"spatial": [], "temporal": []}
    for index in range(100 * count + 1000):
        branch = draw_sample(sample_generator(seed, index), frame_shape, grid, settings).branch
        if branch in found:
            found[branch].append(index)
        if len(found["spatial"]) >= (count + 1) // 2 and len(found["temporal"]) >= count // 2:
            return [found[("spatial", "temporal")[i % 2]][i // 2] for i in range(count)]
    raise RuntimeError(f"not {count} samples alternating between the branches in "
                       f"{100 * count + 1000} draws")


def timed_rounds(steps: dict, rounds: int) -> dict[str, list[float]]:
    """One warm-up each, then `rounds` rounds running the steps back to back (the order
    rotating between rounds); per round each step's wall-clock seconds and, for every step
    but "full", its wall-clock and CPU-time ratio to "full" in the same round."""
    for run in steps.values():
        run()
    names = list(steps)
    out: dict[str, list[float]] = {}
    for index in range(rounds):
        wall, cpu = {}, {}
        for name in names[index % len(names):] + names[:index % len(names)]:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            steps[name]()
            wall[name] = time.perf_counter() - start_wall
            cpu[name] = time.process_time() - start_cpu
        for name in names:
            out.setdefault(f"{name}_seconds", []).append(wall[name])
            if name != "full":
                out.setdefault(f"{name}_vs_full_wall", []).append(wall[name] / wall["full"])
                out.setdefault(f"{name}_vs_full_cpu", []).append(cpu[name] / cpu["full"])
    return out


def step_flops(step) -> int:
    """Floating-point operations of one step (matmuls and attention, forward and backward), as
    torch.utils.flop_counter counts them."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def dispatched_ops(step) -> int:
    """ATen operator calls of one step (forward, backward, optimiser): on a GPU nearly every
    one is a kernel launch, so this counts launches on any device (the GPU step is
    launch-bound, results/bench/gpu_h200.md)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.calls += 1
            return func(*args, **(kwargs or {}))
    with Count() as counter:
        step()
    return counter.calls


def mfu(achieved_tflops: float, device: torch.device, peak_tflops: float | None) -> dict:
    """Model FLOPs utilisation against the device's dense bf16 peak (given, or known by name)."""
    if peak_tflops is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak_tflops = next((peak for key, peak in DENSE_BF16_TFLOPS.items() if key in name), None)
    if peak_tflops is None:
        return {"mfu": None, "note": "peak unknown for this device (pass --peak-tflops)"}
    return {"mfu": round(achieved_tflops / peak_tflops, 4), "peak_tflops": peak_tflops}


def saved_activation_bytes(step) -> int:
    """Bytes of the distinct storages autograd saves for backward during `step()`."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        step()
    return sum(storages.values())


def peak_memory(step, device: torch.device) -> tuple[int, str, int | None]:
    """(bytes the ratio compares, what they are, total peak on CUDA). On CUDA: the step's peak
    above what was resident before it (weights, optimiser state, last gradients), i.e. what
    the step's tokens cost; the total peak is returned too."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        resident = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return (peak - resident, "cuda max_memory_allocated during the step minus "
                "memory_allocated before it", peak)
    return saved_activation_bytes(step), "bytes saved for backward (CPU)", None


def bench_training_step(preset: str, frames: int, latent: tuple[int, int], repeats: int,
                        device: torch.device, dtype: torch.dtype, compiled: bool = False,
                        batch: int = 2) -> dict:
    torch.manual_seed(0)
    with torch.device(device):   # initialised where it runs (a 2B model is slow to init on CPU)
        model = MaskGWMDiT(ModelConfig(preset=preset), mask_config=MR)
    if compiled:   # the warm-up round compiles (one run of each step)
        model.compile_blocks()
    p = model.preset
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(batch, frames, 1, p.in_channels, *latent, generator=generator).to(device)
    text = torch.randn(batch, 8, p.joint_attention_dim, generator=generator).to(device)
    pooled = torch.randn(batch, p.pooled_projection_dim, generator=generator).to(device)
    grid = (latent[0] // p.patch_size, latent[1] // p.patch_size)
    with_mr = ObjectiveSettings(MR, max_cond_frames=1)
    without = dataclasses.replace(with_mr, mask=MaskConfig())
    indices = alternating_branches(with_mr, tuple(z0.shape[1:]), grid, seed=0, count=batch)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=device.type == "cuda")

    def step(settings: ObjectiveSettings, per_sample: bool = False):
        def run():   # per_sample: the same loss with one pass per sample (so per branch)
            optimiser.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                if per_sample:
                    loss = sum(training_loss(model, z0[i:i + 1], text[i:i + 1],
                                             pooled[i:i + 1], indices[i:i + 1], 0,
                                             settings).loss for i in range(batch)) / batch
                else:
                    loss = training_loss(model, z0, text, pooled, indices, 0, settings).loss
            loss.backward()
            optimiser.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
        return run
    def eager():   # FLOPs are the same compiled or not; the CPU memory measure hooks autograd
        return torch.compiler.set_stance("force_eager") if compiled else contextlib.nullcontext()

    def eagerly(run):
        def eager_run():
            with eager():
                run()
        return eager_run
    steps = {"mr": step(with_mr), "full": step(without),
             "mr_per_branch": step(with_mr, per_sample=True)}
    if compiled:   # the same model run eagerly: a same-run baseline for what compiling gains
        steps.update(mr_eager=eagerly(step(with_mr)), full_eager=eagerly(step(without)))
    times = timed_rounds(steps, repeats)
    with eager() if device.type == "cpu" else contextlib.nullcontext():
        memory_mr, how, total_mr = peak_memory(step(with_mr), device)
        memory_full, _, total_full = peak_memory(step(without), device)
    with eager():
        flops = {name: step_flops(step(settings)) for name, settings in
                 (("mr", with_mr), ("full", without))}
        ops = {"mr": dispatched_ops(step(with_mr)), "full": dispatched_ops(step(without)),
               "mr_per_branch": dispatched_ops(step(with_mr, per_sample=True))}
    bound = token_bound(p.num_layers, MR.decoder_layers, MR.recon_layers, MR.ratio)
    time_ratio = statistics.median(times["mr_vs_full_wall"])
    memory_ratio = memory_mr / memory_full
    return {
        "mr_vs_full_step_time_ratio": round(time_ratio, 4),
        "mr_vs_full_step_time_ratio_cpu_time": round(
            statistics.median(times["mr_vs_full_cpu"]), 4),
        "ratio_statistic": "median over rounds of (MR step / full step) timed back to back; "
                           "cpu_time: the same with process CPU time (less sensitive to "
                           "other processes on a shared machine)",
        "mr_vs_mr_per_branch_step_time_ratio": round(statistics.median(
            m / b for m, b in zip(times["mr_seconds"], times["mr_per_branch_seconds"])), 4),
        "mr_per_branch": "the MR step as before mixed_forward: one DiT pass per branch (here "
                         "per sample, batch 1 each); the ratio shows what sharing the passes "
                         "saves",
        **({"compiled_vs_eager_step_time_ratio": {name: round(statistics.median(
            c / e for c, e in zip(times[f"{name}_seconds"], times[f"{name}_eager_seconds"])), 4)
            for name in ("mr", "full")}} if compiled else {}),
        "mr_vs_full_peak_memory_ratio": round(memory_ratio, 4),
        "mr_token_bound": round(bound, 4),
        "within_1.05x_of_bound": {"time": time_ratio <= 1.05 * bound,
                                  "memory": memory_ratio <= 1.05 * bound},
        "bound_terms": {"L": p.num_layers, "d": MR.decoder_layers, "n_F": MR.recon_layers,
                        "r": MR.ratio},
        "rounds": times, "peak_memory_bytes": {"mr": memory_mr, "full": memory_full},
        "memory_measure": how,
        "total_peak_memory_bytes": {"mr": total_mr, "full": total_full},
        "parameters": sum(x.numel() for x in model.parameters()),
        "flops_per_step": flops,
        "aten_ops_per_step": ops,
        "achieved_tflops": {name: round(flops[base] / statistics.median(
            times[f"{name}_seconds"]) / 1e12, 4) for name in steps
            if (base := name.removesuffix("_eager")) in flops},
        "shapes": {"preset": preset, "batch": batch, "frames": frames, "views": 1,
                   "latent": list(latent), "tokens_per_frame": grid[0] * grid[1],
                   "branches": "spatial and row-wise temporal samples in turn",
                   "dtype": str(dtype),
                   "compiled": compiled},
    }


def bench_sampling(preset: str, frames: int, latent: tuple[int, int], steps: int,
                   device: torch.device, compiled: bool = False) -> dict:
    torch.manual_seed(0)
    with torch.device(device):
        model = MaskGWMDiT(ModelConfig(preset=preset)).eval()
    if compiled:
        model.compile_blocks()
    p = model.preset
    text = torch.zeros(1, 8, p.joint_attention_dim, device=device)
    pooled = torch.zeros(1, p.pooled_projection_dim, device=device)

    def velocity(z, tau):   # as maskgwm.generate: bf16 autocast on a GPU, fp32 Euler state
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return model(z, tau, text, pooled, cond_frames=tau == 0).float()
    cond = torch.zeros(1, 1, 1, p.in_channels, *latent, device=device)
    times = bench_attention.time_alternating({"clip": lambda: euler_sample(
        velocity, (1, frames, 1, p.in_channels, *latent), steps=steps, guidance=4.0,
        cond_latents=cond, cond_frames=1, generator=torch.Generator().manual_seed(0),
        device=device)}, warmup=int(device.type == "cuda" or compiled), repeats=1)
    return {"seconds_per_clip": round(times["clip"]["min"], 3),
            "shapes": {"preset": preset, "frames": frames, "latent": list(latent),
                       "steps": steps, "guidance": 4.0, "vae_decode": "not included",
                       "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
                       "compiled": compiled}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--frames", type=int, default=4, help="frames per training clip")
    parser.add_argument("--batch", type=int, default=2, help="samples per training step "
                        "(paper: 2 per GPU, 64 on 32 GPUs)")
    parser.add_argument("--latent", default="36x64", help="training latent HxW (paper: 36x64)")
    parser.add_argument("--sample-latent", default="8x16", help="sampling latent HxW")
    parser.add_argument("--repeats", type=int, default=6, help="timed rounds")
    parser.add_argument("--peak-tflops", type=float, help="device peak for MFU (default: "
                        "known dense bf16 peaks of H100/H200/A100/A800)")
    parser.add_argument("--attention-preset", default="small",
                        help="preset whose temporal heads the attention comparison uses")
    parser.add_argument("--compile", action="store_true",
                        help="regional torch.compile of the blocks (MaskGWMDiT.compile_blocks)")
    parser.add_argument("--out", help="JSON file (e.g. results/bench/model.json)")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    latent = tuple(int(x) for x in args.latent.split("x"))
    result = {"benchmark": "maskgwm.model.bench_model",
              **bench_provenance("-m maskgwm.model.bench_model", MEASURES, argv),
              "model_weights": "random initialisation (torch.manual_seed(0)), no checkpoint: a "
                               "timing and memory benchmark; no detector, no samples scored",
              "machine": bench_attention.machine_description(), "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    result.update(bench_training_step(args.preset, args.frames, latent, args.repeats, device,
                                      dtype, args.compile, args.batch))
    result["mfu"] = {name: mfu(value, device, args.peak_tflops)
                     for name, value in result["achieved_tflops"].items()}
    sample_latent = tuple(int(x) for x in args.sample_latent.split("x"))
    result["sampling"] = bench_sampling(args.preset, 25, sample_latent, 30, device,
                                        args.compile)
    attention_args = ["--threads", "0", "--no-secondary", "--preset", args.attention_preset]
    if device.type == "cuda":
        attention_args += ["--device", "cuda", "--dtype", "bfloat16", "--repeats", "50"]
    with tempfile.TemporaryDirectory() as scratch:
        attention = bench_attention.main(["--out", str(Path(scratch) / "attention.json"),
                                          *attention_args])
    result["row_shift_vs_masked_attention_speedup"] = \
        attention["row_shift_vs_masked_attention_speedup"]
    result["attention"] = {key: attention[key] for key in
                           ("benchmark", "speedup_statistic", "speedup_min_over_rounds",
                            "target", "met", "preset", "dtype", "device", "gpu", "runs")}
    print(json.dumps({k: v for k, v in result.items() if k != "attention"}, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
