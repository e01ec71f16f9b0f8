"""Temporal attention timing: row-wise + shift (packed, no mask) vs masked (boolean attn_mask).

    python -m maskgwm.model.bench_attention --out results/bench/attention.json

The issue's comparison, at the paper's token grid (18 x 32 tokens per frame, T = 25), r = 0.25,
with the temporal block's heads of a DiT preset (`small`: new_block_heads, head dim
hidden_size / heads). Both sides run torch SDPA on contiguous [N, heads, T, d] tensors of the
same dtype: the shifted version on N = B H Wk packed sequences without a mask, the masked
baseline on N = B H W sequences with a prebuilt boolean [N, 1, T, T] mask (mask construction is
not timed). Each round times the candidates in alternation (warm-up, then `repeats` calls each)
so that load from other processes hits them alike; the per-round speedup is the ratio of the
minimum times. The run reports the median and the minimum of that speedup over `rounds`
independent rounds, per batch size and thread count. Headline
(`row_shift_vs_masked_attention_speedup`): the median over rounds, at the first thread count
given (default: torch's default, all cores), the minimum over the batch sizes.

Secondary numbers (same rounds, same alternation), to explain the ratio:
  unmasked_all_tokens      SDPA without a mask over all H W tokens: the no-mask floor, so
                           unmasked / row_shift is the token-count effect (ideal W / Wk) and
                           masked / unmasked the cost of the mask in the baseline kernel;
  masked_float_mask        the baseline with an additive float mask instead of a bool one;
  row_shift_sdpa_math      the packed call forced onto SDPA's math kernel;
  row_shift_explicit /     softmax(Q K^T / sqrt(d) [+ float mask]) V written out with matmuls,
  masked_explicit          for both sides (a different kernel, not the issue's baseline);
  row_shift_end_to_end /   from the full [B, T, H, W, heads, d] layout: packing + gather,
  masked_end_to_end        attention, scatter back (shifted) vs the to/from sequence layout
                           copies plus masked attention with the prebuilt mask (masked).
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from evals.atomic import atomic_write_json
from evals.commit import bench_provenance
from maskgwm.model.masks import (gather_rows, kept_count, masked_attention_mask,
                                 masked_temporal_attention, packing_mask, row_mask,
                                 shifted_temporal_attention, to_temporal_sequences)
from maskgwm.model.presets import get_preset

TARGET_SPEEDUP = 1.5
HEADLINE_KEY = "row_shift_vs_masked_attention_speedup"
MEASURES = ("maskgwm/model/bench_attention.py", "maskgwm/model/masks.py",
            "maskgwm/model/attention.py", "maskgwm/model/presets.py")


def preset_attention_shape(name: str) -> tuple[int, int]:
    """(heads, head_dim) of a preset's temporal blocks."""
    preset = get_preset(name)
    heads = preset.new_block_heads
    if preset.hidden_size % heads:
        raise ValueError(f"preset '{name}': hidden size {preset.hidden_size} is not a multiple "
                         f"of the temporal heads {heads}")
    return heads, preset.hidden_size // heads


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_alternating(candidates: dict[str, Callable[[], object]], warmup: int,
                     repeats: int) -> dict[str, dict[str, float]]:
    """Min and median wall seconds per candidate, running the candidates in turn each repeat
    (on a GPU each call is timed to completion: the device is synchronised around it)."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            _synchronize()
            start = time.perf_counter()
            run()
            _synchronize()
            samples[name].append(time.perf_counter() - start)
    return {name: {"min": min(times), "median": statistics.median(times)}
            for name, times in samples.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine_description() -> dict[str, object]:
    return {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_default_threads": torch.get_num_threads()}


def sdpa_kernel_name(*args: torch.Tensor, attn_mask: torch.Tensor | None = None) -> str:
    """The SDPA kernel torch picks for these inputs (e.g. FLASH_ATTENTION: its CPU flash kernel)."""
    try:
        return SDPBackend(torch._fused_sdp_choice(*args, attn_mask=attn_mask)).name
    except Exception as error:  # private API: record why instead of failing the benchmark
        return f"unknown ({type(error).__name__})"


def summarize(values: list[float]) -> dict[str, object]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "rounds": values}


def run_benchmark(batch: int, frames: int, height: int, width: int, ratio: float, heads: int,
                  head_dim: int, cond_frames: int, dtype: torch.dtype, warmup: int,
                  repeats: int, rounds: int, seed: int, headline: bool = True,
                  secondary: bool = True, device: str = "cpu") -> dict[str, object]:
    """Time the headline pair and/or the secondary groups on one configuration."""
    generator = torch.Generator().manual_seed(seed)
    keep = row_mask(batch, frames, height, width, ratio, generator,
                    cond_frames=torch.full((batch,), cond_frames, dtype=torch.long)).to(device)
    full_shape = (batch, frames, height, width, heads, head_dim)
    q, k, v = [torch.randn(full_shape, generator=generator).to(device, dtype)
               for _ in range(3)]

    full_q, full_k, full_v = [to_temporal_sequences(t).contiguous() for t in (q, k, v)]
    pack = packing_mask(keep)
    packed_q, packed_k, packed_v = [to_temporal_sequences(gather_rows(t, pack)).contiguous()
                                    for t in (q, k, v)]
    bool_mask = masked_attention_mask(keep)
    float_mask = torch.zeros(bool_mask.shape, dtype=dtype, device=device).masked_fill(
        ~bool_mask, float("-inf"))
    scale = 1.0 / math.sqrt(head_dim)

    def shifted():
        return F.scaled_dot_product_attention(packed_q, packed_k, packed_v)

    def masked_bool():
        return F.scaled_dot_product_attention(full_q, full_k, full_v, attn_mask=bool_mask)

    groups = []
    if secondary:
        def unmasked_full():
            return F.scaled_dot_product_attention(full_q, full_k, full_v)

        def masked_float():
            return F.scaled_dot_product_attention(full_q, full_k, full_v, attn_mask=float_mask)

        def shifted_math():
            with sdpa_kernel(SDPBackend.MATH):
                return F.scaled_dot_product_attention(packed_q, packed_k, packed_v)

        def shifted_explicit():
            scores = (packed_q @ packed_k.transpose(-1, -2)).mul_(scale)
            return torch.softmax(scores, -1) @ packed_v

        def masked_explicit():
            scores = (full_q @ full_k.transpose(-1, -2)).mul_(scale).add_(float_mask)
            return torch.softmax(scores, -1) @ full_v

        def shifted_end_to_end():
            return shifted_temporal_attention(q, k, v, keep)

        def masked_end_to_end():
            return masked_temporal_attention(q, k, v, keep, attn_mask=bool_mask)

        # each group alternates within itself and includes what its ratios compare
        groups = [{"row_shift": shifted, "masked_bool_mask": masked_bool,
                    "unmasked_all_tokens": unmasked_full, "masked_float_mask": masked_float},
                   {"masked_bool_mask": masked_bool, "row_shift_sdpa_math": shifted_math,
                    "row_shift": shifted, "row_shift_explicit": shifted_explicit,
                    "masked_explicit": masked_explicit},
                   {"row_shift_end_to_end": shifted_end_to_end,
                    "masked_end_to_end": masked_end_to_end}]

    load_before = load_average()
    with torch.inference_mode():
        per_round = [time_alternating({"row_shift": shifted, "masked_bool_mask": masked_bool},
                                      warmup, repeats) for _ in range(rounds)] if headline else []
        group_rounds = []
        for group in groups:
            # secondary groups: fewer repeats for the slow end-to-end paths
            group_repeats = max(3, repeats // 4) if "row_shift_end_to_end" in group else repeats
            group_rounds.append([time_alternating(group, warmup, group_repeats)
                                 for _ in range(rounds)])
    load_after = load_average()

    def ratios(numerator: str, denominator: str) -> dict[str, object]:
        """Speedup per round (ratio of min times), from the group timing both candidates."""
        rounds_of = next(g for g in [per_round, *group_rounds]
                         if g and numerator in g[0] and denominator in g[0])
        return summarize([r[numerator]["min"] / r[denominator]["min"] for r in rounds_of])

    def seconds_of(rounds_of: list[dict[str, dict[str, float]]]) -> dict[str, object]:
        return {name: {"min": min(r[name]["min"] for r in rounds_of),
                       "median_of_round_medians":
                           statistics.median(r[name]["median"] for r in rounds_of)}
                for name in rounds_of[0]}

    result: dict[str, object] = {}
    if headline:
        speedup = ratios("masked_bool_mask", "row_shift")
        result.update({
            HEADLINE_KEY: speedup["median"],
            "speedup": speedup,
            "speedup_of_medians": summarize([r["masked_bool_mask"]["median"]
                                             / r["row_shift"]["median"] for r in per_round]),
            "seconds": seconds_of(per_round),
        })
    result.update({
        "sdpa_kernel": {"row_shift": sdpa_kernel_name(packed_q, packed_k, packed_v),
                        "masked_bool_mask": sdpa_kernel_name(full_q, full_k, full_v,
                                                             attn_mask=bool_mask)},
        "token_count_bound": width / kept_count(width, ratio),
    })
    if secondary:
        result["secondary_seconds"] = [seconds_of(g) for g in group_rounds]
        result["secondary"] = {
            "unmasked_all_tokens_vs_row_shift (token-count effect)":
                ratios("unmasked_all_tokens", "row_shift"),
            "masked_vs_unmasked_all_tokens (mask cost in the baseline kernel)":
                ratios("masked_bool_mask", "unmasked_all_tokens"),
            "masked_vs_row_shift (secondary group)": ratios("masked_bool_mask", "row_shift"),
            "masked_float_mask_vs_row_shift": ratios("masked_float_mask", "row_shift"),
            "masked_vs_row_shift_sdpa_math": ratios("masked_bool_mask", "row_shift_sdpa_math"),
            "explicit_masked_vs_explicit_row_shift": ratios("masked_explicit",
                                                            "row_shift_explicit"),
            "row_shift_sdpa_vs_row_shift_explicit": ratios("row_shift", "row_shift_explicit"),
            "end_to_end_masked_vs_row_shift": ratios("masked_end_to_end",
                                                     "row_shift_end_to_end"),
        }
    timing_key = "timing" if headline else "secondary_timing"
    result.update({
        "shapes": {"batch": batch, "frames": frames, "height": height, "width": width,
                   "kept_per_row": kept_count(width, ratio), "ratio": ratio, "heads": heads,
                   "head_dim": head_dim, "cond_frames": cond_frames, "dtype": str(dtype),
                   "device": str(device),
                   "row_shift_qkv": list(packed_q.shape), "masked_qkv": list(full_q.shape),
                   "masked_attn_mask": list(bool_mask.shape),
                   "masked_attn_mask_dtype": str(bool_mask.dtype),
                   "contiguous": all(t.is_contiguous() for t in
                                     (packed_q, packed_k, packed_v, full_q, full_k, full_v)),
                   "layout": "[N, heads, T, d]"},
        "threads": torch.get_num_threads(),
        timing_key: {"warmup": warmup, "repeats": repeats, "rounds": rounds,
                   "statistic": "per round: ratio of min times; over rounds: median (min, max "
                                "and every round kept)",
                   "order": "alternating", "load_average_before": load_before,
                   "load_average_after": load_after},
    })
    return result


def analysis(runs: list[dict[str, object]], threads: int) -> dict[str, object]:
    """Per batch size at the headline thread count: speedup = token-count effect (ideal W / Wk)
    x the cost of the mask in the baseline kernel; both medians over rounds."""
    out: dict[str, object] = {
        "reading": "row_shift runs W / Wk fewer sequences (the token-count bound); on top of "
                   "that it only saves what the mask costs the baseline SDPA kernel, so with "
                   "the same kernel on both sides speedup ~= token_effect x mask_cost",
    }
    for run in runs:
        if run["threads"] != threads or "secondary" not in run:
            continue
        secondary = {name.split(" ")[0]: value["median"]
                     for name, value in run["secondary"].items()}
        token = secondary["unmasked_all_tokens_vs_row_shift"]
        mask = secondary["masked_vs_unmasked_all_tokens"]
        out[f"batch_{run['shapes']['batch']}"] = {
            "speedup": run[HEADLINE_KEY], "token_count_bound": run["token_count_bound"],
            "token_effect": token, "mask_cost": mask, "token_effect_x_mask_cost": token * mask,
            "same_kernel_explicit_matmul_speedup":
                secondary["explicit_masked_vs_explicit_row_shift"],
            "end_to_end_speedup": secondary["end_to_end_masked_vs_row_shift"]}
    return out


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench/attention.json"))
    parser.add_argument("--preset", default="small", help="DiT preset giving heads and head dim")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=18)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--heads", type=int, default=None, help="override the preset's heads")
    parser.add_argument("--head-dim", type=int, default=None,
                        help="override the preset's head dim")
    parser.add_argument("--cond-frames", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (timed to completion)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[0, 1],
                        help="torch thread counts to run (0: torch's default); the headline "
                             "uses the first")
    parser.add_argument("--no-secondary", action="store_true",
                        help="time only the two headline candidates")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    preset_heads, preset_head_dim = preset_attention_shape(args.preset)
    heads = args.heads or preset_heads
    head_dim = args.head_dim or preset_head_dim
    default_threads = torch.get_num_threads()
    thread_counts = [t or default_threads for t in args.threads]
    thread_counts = list(dict.fromkeys(thread_counts))  # drop repeats, keep order

    def one(threads: int, batch: int, **parts: bool) -> dict[str, object]:
        torch.set_num_threads(threads)
        return run_benchmark(batch, args.frames, args.height, args.width, args.ratio, heads,
                             head_dim, args.cond_frames, getattr(torch, args.dtype),
                             args.warmup, args.repeats, args.rounds, args.seed, **parts,
                             device=args.device)

    configs = [(threads, batch) for threads in thread_counts for batch in args.batch]
    try:
        # all headline timings first, so the secondary candidates (large allocations, other
        # kernels) cannot change the process state the headline pair runs in
        runs = [one(*config, headline=True, secondary=False) for config in configs]
        if not args.no_secondary:
            for run, config in zip(runs, configs):
                run.update(one(*config, headline=False, secondary=True))
    finally:
        torch.set_num_threads(default_threads)

    headline_runs = [run for run in runs if run["threads"] == thread_counts[0]]
    speedup = min(run[HEADLINE_KEY] for run in headline_runs)
    result = {
        "benchmark": "temporal attention: row-wise + shift (packed, no mask) vs masked "
                     "(bool attn_mask), torch SDPA both",
        HEADLINE_KEY: speedup,
        "speedup_statistic": "per round the ratio of min times; median over rounds; min over "
                             f"batch sizes {args.batch} at {thread_counts[0]} threads",
        "speedup_min_over_rounds": min(run["speedup"]["min"] for run in headline_runs),
        "target": TARGET_SPEEDUP,
        "met": bool(speedup >= TARGET_SPEEDUP),
        "analysis": analysis(runs, thread_counts[0]),
        "preset": {"name": args.preset, "heads": heads, "head_dim": head_dim,
                   "from_preset": (heads, head_dim) == (preset_heads, preset_head_dim)},
        "dtype": args.dtype,
        "device": args.device,
        "gpu": torch.cuda.get_device_name(args.device) if args.device.startswith("cuda")
        else None,
        "threads": thread_counts,
        "runs": runs,
        "machine": machine_description(),
        **bench_provenance("-m maskgwm.model.bench_attention", MEASURES, argv),
    }
    atomic_write_json(args.out, result, indent=2)
    for run in runs:
        shapes, seconds, ratio = run["shapes"], run["seconds"], run["speedup"]
        line = (f"threads {run['threads']} batch {shapes['batch']}: row_shift "
                f"{seconds['row_shift']['min'] * 1e3:.1f} ms, masked "
                f"{seconds['masked_bool_mask']['min'] * 1e3:.1f} ms, speedup median "
                f"{ratio['median']:.2f}x min {ratio['min']:.2f}x max {ratio['max']:.2f}x")
        if "secondary" in run:
            sec = {name.split(" ")[0]: value["median"]
                   for name, value in run["secondary"].items()}
            line += (f" | token effect {sec['unmasked_all_tokens_vs_row_shift']:.2f}x"
                     f" (bound {run['token_count_bound']:.2f}x), mask cost "
                     f"{sec['masked_vs_unmasked_all_tokens']:.2f}x, explicit-matmul both "
                     f"{sec['explicit_masked_vs_explicit_row_shift']:.2f}x, end-to-end "
                     f"{sec['end_to_end_masked_vs_row_shift']:.2f}x")
        print(line)
    print(f"{HEADLINE_KEY} {speedup:.2f} (target {TARGET_SPEEDUP}, met {result['met']}; "
          f"min over rounds {result['speedup_min_over_rounds']:.2f}) -> {args.out}")
    return result


if __name__ == "__main__":
    main()
