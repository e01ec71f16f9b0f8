#!/usr/bin/env bash
# Data-parallel check: one process against two (DDP, then FSDP), same global batch, at the ci
# scale (tiny model, synthetic data), with periodic checkpoints. On a machine with 2+ GPUs this runs
# NCCL with bf16 autocast (called by gpu_checks.sh); without GPUs, gloo on the CPU.
#   bash scripts/multi_gpu_check.sh OUT_DIR
# Writes OUT_DIR/compare.json (per-step losses, largest differences) and exits non-zero when the
# runs disagree by more than the tolerance (1e-5 on the CPU, 2 % under bf16 on GPUs).
set -u
out=${1:?usage: multi_gpu_check.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
train="1c --scale ci --set stage.batch_size=4 --workers 0 --log-every 1 --cache-dir $out/cache"
two="$py -m torch.distributed.run --standalone --nproc_per_node 2 -m maskgwm.train"
$py -m maskgwm.train $train --steps 6 --out "$out/one" > "$out/one.log" 2>&1 || exit 1
for strategy in ddp fsdp; do
  $two $train --steps 6 --strategy "$strategy" --checkpoint-every 3 \
    --out "$out/$strategy" > "$out/$strategy.log" 2>&1 || { tail -30 "$out/$strategy.log"; exit 1; }
done
$py - "$out" <<'PY'
import json, sys
from pathlib import Path
import torch
out = Path(sys.argv[1])
def losses(name):
    rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}
tolerance = 0.02 if torch.cuda.is_available() else 1e-5
one = losses("one")
report = {"device": "cuda" if torch.cuda.is_available() else "cpu", "tolerance": tolerance,
          "one": one}
ok = True
for name in ("ddp", "fsdp"):
    other = losses(name)
    summary = json.loads((out / name / "summary.json").read_text())
    worst = max(abs(one[s] - other[s]) / max(abs(one[s]), 1e-8) for s in one)
    report[name] = {"losses": other, "max_relative_difference": worst,
                    "world_size": summary["world_size"], "strategy": summary["strategy"],
                    "steps_per_s": summary["steps_per_s"]}
    ok &= other.keys() == one.keys() and worst <= tolerance and summary["world_size"] == 2
report["ok"] = ok
(out / "compare.json").write_text(json.dumps(report, indent=1) + "\n")
print(json.dumps({k: v for k, v in report.items() if k != "one"}, indent=1))
sys.exit(0 if ok else 1)
PY
