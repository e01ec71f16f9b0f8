"""Temporal attention timing: row-wise + shift (packed, no mask) vs masked (boolean attn_mask).

    python -m maskgwm.model.bench_attention --out results/bench/attention.json

Both run torch SDPA on contiguous [N, heads, T, d] tensors of the same dtype: the shifted
version on N = B H Wk packed sequences without a mask, the masked baseline on N = B H W
sequences with a prebuilt boolean [N, 1, T, T] mask (mask construction is not timed). The
two are timed in alternation (warm-up, then min over repeats) so that load from other
processes hits both alike. Secondary numbers: the baseline with a prebuilt additive float
mask, unmasked attention over all H W tokens (the no-mask floor), and the end-to-end shifted
path including gather/scatter from the full [B, T, H, W, heads, d] layout.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from maskgwm.model.masks import (gather_rows, kept_count, masked_attention_mask, packing_mask,
                                 row_mask, shifted_temporal_attention, to_temporal_sequences)

SMALL_PRESET_HEADS = 8      # `small` preset attention shape (recorded in the output)
SMALL_PRESET_HEAD_DIM = 64


def time_alternating(candidates: dict[str, Callable[[], object]], warmup: int,
                     repeats: int) -> dict[str, dict[str, float]]:
    """Min and median wall seconds per candidate, running the candidates in turn each repeat."""
    for _ in range(warmup):
        for run in candidates.values():
            run()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return {name: {"min": min(times), "median": statistics.median(times)}
            for name, times in samples.items()}


def machine_description() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def run_benchmark(batch: int, frames: int, height: int, width: int, ratio: float, heads: int,
                  head_dim: int, cond_frames: int, dtype: torch.dtype, warmup: int,
                  repeats: int, seed: int) -> dict[str, object]:
    generator = torch.Generator().manual_seed(seed)
    keep = row_mask(batch, frames, height, width, ratio, generator,
                    cond_frames=torch.full((batch,), cond_frames, dtype=torch.long))
    full_shape = (batch, frames, height, width, heads, head_dim)
    q, k, v = [torch.randn(full_shape, generator=generator).to(dtype) for _ in range(3)]

    full_q, full_k, full_v = [to_temporal_sequences(t).contiguous() for t in (q, k, v)]
    pack = packing_mask(keep)
    packed_q, packed_k, packed_v = [to_temporal_sequences(gather_rows(t, pack)).contiguous()
                                    for t in (q, k, v)]
    bool_mask = masked_attention_mask(keep)
    float_mask = torch.zeros(bool_mask.shape, dtype=dtype).masked_fill(~bool_mask, float("-inf"))

    def shifted():
        return F.scaled_dot_product_attention(packed_q, packed_k, packed_v)

    def masked_bool():
        return F.scaled_dot_product_attention(full_q, full_k, full_v, attn_mask=bool_mask)

    def masked_float():
        return F.scaled_dot_product_attention(full_q, full_k, full_v, attn_mask=float_mask)

    def unmasked_full():
        return F.scaled_dot_product_attention(full_q, full_k, full_v)

    def shifted_end_to_end():
        return shifted_temporal_attention(q, k, v, keep)

    with torch.inference_mode():
        main = time_alternating({"row_shift": shifted, "masked_bool": masked_bool},
                                warmup, repeats)
        extra = time_alternating({"row_shift": shifted, "masked_float": masked_float,
                                  "unmasked_full": unmasked_full,
                                  "row_shift_end_to_end": shifted_end_to_end},
                                 warmup, max(3, repeats // 2))
    packed_width = kept_count(width, ratio)
    shifted_s, masked_s = main["row_shift"], main["masked_bool"]
    extra_min = {name: times["min"] for name, times in extra.items()}
    return {
        "row_shift_vs_masked_attention_speedup": masked_s["min"] / shifted_s["min"],
        "speedup_of_medians": masked_s["median"] / shifted_s["median"],
        "target_speedup": 1.5,
        "seconds": {"row_shift": shifted_s, "masked_bool_mask": masked_s},
        "secondary": {
            "seconds_min": {"row_shift": extra_min["row_shift"],
                            "masked_float_mask": extra_min["masked_float"],
                            "unmasked_all_tokens": extra_min["unmasked_full"],
                            "row_shift_with_gather_scatter": extra_min["row_shift_end_to_end"]},
            "row_shift_vs_float_masked_speedup":
                extra_min["masked_float"] / extra_min["row_shift"],
            "row_shift_vs_unmasked_all_tokens_speedup":
                extra_min["unmasked_full"] / extra_min["row_shift"],
            "token_count_bound": width / packed_width,
        },
        "shapes": {"batch": batch, "frames": frames, "height": height, "width": width,
                   "kept_per_row": packed_width, "ratio": ratio, "heads": heads,
                   "head_dim": head_dim, "cond_frames": cond_frames, "dtype": str(dtype),
                   "row_shift_qkv": list(packed_q.shape), "masked_qkv": list(full_q.shape),
                   "masked_attn_mask": list(bool_mask.shape), "layout": "[N, heads, T, d]"},
        "timing": {"warmup": warmup, "repeats": repeats, "statistic": "min (median also kept)",
                   "order": "alternating"},
        "machine": machine_description(),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/bench/attention.json"))
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--height", type=int, default=18)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.25)
    parser.add_argument("--heads", type=int, default=SMALL_PRESET_HEADS)
    parser.add_argument("--head-dim", type=int, default=SMALL_PRESET_HEAD_DIM)
    parser.add_argument("--cond-frames", type=int, default=1)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    runs = [run_benchmark(batch, args.frames, args.height, args.width, args.ratio, args.heads,
                          args.head_dim, args.cond_frames, getattr(torch, args.dtype),
                          args.warmup, args.repeats, args.seed)
            for batch in args.batch]
    result = {
        "benchmark": "temporal attention: row-wise + shift (packed) vs masked (bool attn_mask)",
        "row_shift_vs_masked_attention_speedup":
            min(run["row_shift_vs_masked_attention_speedup"] for run in runs),
        "speedup_statistic": "min over batch sizes",
        "preset": {"name": "small", "heads": args.heads, "head_dim": args.head_dim},
        "runs": runs,
        "machine": machine_description(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        shapes, secondary = run["shapes"], run["secondary"]
        seconds = run["seconds"]
        print(f"batch {shapes['batch']}: row_shift {seconds['row_shift']['min'] * 1e3:.1f} ms"
              f", masked {seconds['masked_bool_mask']['min'] * 1e3:.1f} ms, speedup "
              f"{run['row_shift_vs_masked_attention_speedup']:.2f}x (of medians "
              f"{run['speedup_of_medians']:.2f}x; vs float mask "
              f"{secondary['row_shift_vs_float_masked_speedup']:.2f}x, vs unmasked all tokens "
              f"{secondary['row_shift_vs_unmasked_all_tokens_speedup']:.2f}x, token bound "
              f"{secondary['token_count_bound']:.2f}x)")
    speedup = result["row_shift_vs_masked_attention_speedup"]
    print(f"row_shift_vs_masked_attention_speedup {speedup:.2f} -> {args.out}")
    return result


if __name__ == "__main__":
    main()
