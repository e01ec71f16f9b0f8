"""Fit and check the memory plan's activation coefficients (memory.py) on measured steps.

    python -m maskgwm.train.bench_memory --out results/bench/memory.json
    python -m maskgwm.train.bench_memory --device cuda --out memory_fit_gpu.json   # a GPU

Every case is one real training step (memory_probe.measure_step: the objective's forward under
bf16 autocast and backward), each in a worker process. The coefficients are fitted by least
squares to what the forward keeps, at sd3-medium's width (1536, 24 heads) with 1-3 layers and
paper-size latents (36x64): `FIT_CASES`. The fit is then checked on cases it did not see
(`CHECK_CASES`: the `small` preset with all 12 layers, other batch, frame, view and text sizes,
MR branches, checkpointing, a frozen backbone): the plan's prediction of both what the forward
keeps and the step's peak is set beside the measurement, with their ratio. The record's
`coefficients` are what memory.COEFFICIENTS must hold (a test checks it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch

from evals.atomic import atomic_write_json
from evals.commit import REPO, bench_provenance
from maskgwm.model.bench_attention import machine_description
from maskgwm.train import memory
from maskgwm.train.memory_probe import Case, Measured, build, measure_step

MEASURES = ("maskgwm/train/memory.py", "maskgwm/train/memory_probe.py",
            "maskgwm/train/bench_memory.py", "maskgwm/train/modelsetup.py", "maskgwm/model/")
PAPER = dict(preset="sd3-medium", latent=(36, 64))
FIT_CASES = tuple(
    Case(**PAPER, layers=layers, frames=frames, context=context, checkpointing=checkpointing)
    for checkpointing in (False, True)
    for layers, frames, context in ((1, 2, 8), (2, 2, 8), (2, 4, 8), (2, 2, 72), (2, 2, 200),
                                    (3, 2, 8), (3, 2, 200), (3, 1, 200), (1, 2, 136))
) + tuple(
    Case(**PAPER, layers=2, frames=frames, views=views, temporal=temporal,
         checkpointing=checkpointing)
    for checkpointing in (False, True)
    for frames, views, temporal in ((2, 1, False), (1, 3, True))
) + (
    Case(**PAPER, layers=3, frames=2, mr=True, branch="spatial"),
    Case(**PAPER, layers=3, frames=2, mr=True, branch="temporal"),
)
SMALL = dict(preset="small", latent=(36, 64))
CHECK_CASES = (
    Case(**SMALL, frames=4),
    Case(**SMALL, frames=4, checkpointing=True),
    Case(**SMALL, batch=2, frames=3, context=40),
    Case(**SMALL, frames=4, mr=True, branch="spatial"),
    Case(**SMALL, frames=4, mr=True, branch="temporal"),
    Case(**SMALL, frames=2, views=3),
    Case(**SMALL, frames=2, views=3, checkpointing=True),
    Case(**SMALL, frames=4, trainable=("temporal",)),
    Case(**SMALL, batch=8, frames=1, temporal=False),
    Case(**PAPER, layers=4, frames=3, context=24),
    Case(**PAPER, layers=4, frames=3, checkpointing=True),
)


def case_shape(case: Case) -> memory.StepShape:
    preset = case.dit_preset()
    return memory.StepShape(
        samples=case.batch, frames=case.frames, views=case.views,
        tokens_per_frame=(case.latent[0] // preset.patch_size) * (case.latent[1] //
                                                                   preset.patch_size),
        text_tokens=case.context, layers=preset.num_layers, hidden=preset.hidden_size,
        temporal=case.temporal, view=case.views > 1, mask=case.mask_config())


def case_counts(case: Case) -> memory.ParamCounts:
    """The plan's parameter counts for the case's model (built on the meta device)."""
    return memory.count_parameters(build(case, torch.device("meta")))


def weight_copies(case: Case, counts: memory.ParamCounts) -> float:
    """The bf16 weight copies the forward keeps (memory.step_parts' reading)."""
    return 0.0 if case.checkpointing else 2.0 * counts.in_layers


def fit(measured: list[tuple[Case, Measured]]) -> dict[str, float]:
    """Least squares of the kept bytes (less the bf16 weight copies) on the plan's terms: the
    plain coefficients from the cases without checkpointing, then the checkpointed ones (with
    `recon` as fitted). `transient`: the most any fit case's peak exceeds the plan without it,
    in layers' activations, rounded up."""
    coefficients = dict.fromkeys(memory.COEFFICIENTS, 0.0)
    for checkpointed in (False, True):
        rows = [(c, m) for c, m in measured if c.checkpointing == checkpointed]
        fixed = {"recon"} if checkpointed else set()
        terms = [memory.activation_terms(case_shape(c), c.branch, c.checkpointing)
                 for c, _ in rows]
        names = [k for k in coefficients if k not in fixed and any(t.get(k) for t in terms)]
        matrix = np.array([[t.get(k, 0.0) for k in names] for t in terms])
        target = np.array([m.forward - weight_copies(c, case_counts(c)) -
                           sum(coefficients[k] * t.get(k, 0.0) for k in fixed)
                           for (c, m), t in zip(rows, terms)])
        solution, *_ = np.linalg.lstsq(matrix, target, rcond=None)
        coefficients.update({k: round(float(v), 3) for k, v in zip(names, solution)})
    excess = [(m.peak - predict(c, coefficients)["peak"]) / layer(c, coefficients)
              for c, m in measured]
    coefficients["transient"] = math.ceil(max(0.0, *excess) * 100) / 100
    return coefficients


def layer(case: Case, coefficients: dict[str, float]) -> float:
    return memory.layer_bytes(case_shape(case), coefficients)


def predict(case: Case, coefficients: dict[str, float]) -> dict[str, float]:
    """The plan's kept bytes and step peak for a single-process step of `case`, every sample
    on the case's path."""
    shape, counts = case_shape(case), case_counts(case)
    kept = memory.kept_bytes(shape, case.checkpointing, case.branch, coefficients) + \
        weight_copies(case, counts)
    peak = memory.step_parts(shape, counts, 1, case.checkpointing, case.branch, coefficients)
    return {"forward": kept, "peak": sum(peak.values())}


def row(case: Case, m: Measured, coefficients: dict[str, float]) -> dict:
    guess = predict(case, coefficients)
    return {"case": case.label(), **dataclasses.asdict(case),
            "measured_forward_bytes": m.forward, "predicted_forward_bytes": round(guess["forward"]),
            "forward_ratio": round(guess["forward"] / m.forward, 4),
            "measured_peak_bytes": m.peak, "predicted_peak_bytes": round(guess["peak"]),
            "peak_ratio": round(guess["peak"] / m.peak, 4),
            "gradient_bytes": m.grads, "parameters": m.parameters,
            "trainable_parameters": m.trainable}


GPU_RECORDS = ("results/bench/model_gpu_h200.json", "results/bench/model_gpu_h200_frames8.json")
"""Eager sd3-medium steps measured on an H200 (maskgwm.model.bench_model): batch 2, 8 text
tokens, every sample on the plain path, fp32 weights and AdamW, bf16 autocast."""


def calibrate(coefficients: dict[str, float], records=GPU_RECORDS) -> dict:
    """The CUDA activation scale s that fits the plan to the GPU records: their step peak
    above the memory before it, plus the previous step's gradients (the step frees them at
    zero_grad(set_to_none=True) and backward allocates them again), against the plan's
    step with every token coefficient times s (least squares; the plan is linear in s where
    backward's start is the peak, which the rows' `end` confirms)."""
    points = []
    for path in records:
        data = json.loads((REPO / path).read_text())
        shapes = data["shapes"]
        case = Case(preset=shapes["preset"], latent=tuple(shapes["latent"]),
                    batch=shapes["batch"], frames=shapes["frames"], mr=True, context=8)
        measured = data["peak_memory_bytes"]["full"] + 4 * data["parameters"]
        points.append((path, case, measured))

    def plan(case: Case, scale: float) -> dict[str, float]:
        scaled = {k: v if k == "transient" else v * scale for k, v in coefficients.items()}
        return memory.step_parts(case_shape(case), case_counts(case), 1, False, "plain",
                                 scaled)
    base = [sum(plan(c, 0.0).values()) for _, c, _ in points]
    slope = [sum(plan(c, 1.0).values()) - b for (_, c, _), b in zip(points, base)]
    scale = sum(d * (m - b) for (_, _, m), b, d in zip(points, base, slope)) / \
        sum(d * d for d in slope)
    scale = round(scale, 3)
    rows = []
    for path, case, measured in points:
        parts = plan(case, scale)
        rows.append({"record": path, "frames": case.frames, "batch": case.batch,
                     "measured_step_bytes": measured,
                     "predicted_step_bytes": round(sum(parts.values())),
                     "ratio": round(sum(parts.values()) / measured, 4),
                     "end": "start of backward" if parts["gradients"] == 0 else "later"})
    return {"cuda_activation_scale": scale, "points": rows}


def recorded(path: str) -> tuple[list, list]:
    """The (case, measurement) pairs of an earlier record."""
    data = json.loads(open(path).read())["cases"]
    fields = {f.name for f in dataclasses.fields(Case)}

    def pairs(rows):
        return [(Case(**{k: tuple(v) if isinstance(v, list) else v for k, v in r.items()
                         if k in fields}),
                 Measured(r["measured_forward_bytes"], r["measured_peak_bytes"],
                          r["gradient_bytes"], r["parameters"], r["trainable_parameters"]))
                for r in rows]
    return pairs(data["fit"]), pairs(data["check"])


def measure_all(cases, device: torch.device, threads: int | None = None
                ) -> list[tuple[Case, Measured]]:
    """Each case measured in a worker process that is replaced every few cases: the CPU
    allocator of one long-lived process keeps freed memory, which added up over the cases."""
    found = []
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                             max_tasks_per_child=4) as pool:
        for case in cases:
            started = time.perf_counter()
            found.append((case, pool.submit(_measure, case, str(device), threads).result()))
            print(f"  {case.label()}: forward keeps {found[-1][1].forward / 1e6:,.1f} MB, "
                  f"peak {found[-1][1].peak / 1e6:,.1f} MB "
                  f"({time.perf_counter() - started:.1f} s)", flush=True)
    return found


def _measure(case: Case, device: str, threads: int | None) -> Measured:
    if threads:
        torch.set_num_threads(threads)
    return measure_step(case, device)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="JSON record (e.g. results/bench/memory.json)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda: measure the same cases "
                        "with the caching allocator's counters (a GPU fit of the coefficients)")
    parser.add_argument("--refit", help="fit again to the measurements of this record "
                        "(no step is run; for changes to the plan's formula)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.refit:
        fitted, checked = recorded(args.refit)
    else:
        print("fit cases:")
        fitted = measure_all(FIT_CASES, device, args.threads)
        print("check cases:")
        checked = measure_all(CHECK_CASES, device, args.threads)
    coefficients = fit(fitted)
    calibration = calibrate(coefficients)
    rows = {"fit": [row(c, m, coefficients) for c, m in fitted],
            "check": [row(c, m, coefficients) for c, m in checked]}
    spread = {part: [min(r[f"{part}_ratio"] for r in rows["check"]),
                     max(r[f"{part}_ratio"] for r in rows["check"])]
              for part in ("forward", "peak")}
    result = {"benchmark": "maskgwm.train.bench_memory",
              **bench_provenance("-m maskgwm.train.bench_memory", MEASURES, argv),
              "model_weights": "random initialisation (torch.manual_seed(0)): memory depends "
                               "on shapes only",
              "machine": machine_description(), "device": str(device),
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "precision": "bf16 autocast, fp32 parameters",
              "measure": ("torch.cuda memory_allocated / max_memory_allocated"
                          if device.type == "cuda" else
                          "torch.profiler CPU allocation events, summed in time order") +
                         ": bytes the forward keeps for backward, and the step's peak "
                         "(gradients included) above the memory before it",
              "coefficients": coefficients,
              "coefficient_unit": "bytes per token per hidden unit",
              "check_ratio_range": spread,
              "calibration": calibration,
              "cases": rows}
    print(json.dumps({k: result[k] for k in ("coefficients", "check_ratio_range",
                                             "calibration")}, indent=1))
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
