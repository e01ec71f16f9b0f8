#!/usr/bin/env bash
# GPU checks and benchmarks, run on a lent GPU machine (see README "GPU checks"):
#   bash scripts/gpu_checks.sh OUT_DIR
# 1. the CUDA tests (tests/maskgwm/test_cuda.py, test_attention.py's flash test, FSDP's bf16
#    gathering over NCCL in one process);
# 2. the trainer's CUDA path: a smoke-scale stage-1c run (small preset, bf16 autocast);
# 3. sd3-medium at 512x288 (latent 36x64), bf16: MR vs full training steps (time, memory,
#    FLOPs, MFU), sampling seconds per 25-frame clip, and the temporal attention comparison;
#    the MR step is also timed the old way (one pass per branch) as a same-run baseline.
# 4. the memory plan on the GPU: every paper stage's step in the setting the plan chose, capped
#    at 80 GB, predicted vs measured (maskgwm.train.verify_memory -> memory_gpu.json); and the
#    plan's fit cases measured with CUDA's allocator (bench_memory -> memory_fit_gpu.json).
# 5. with 2+ GPUs: scripts/multi_gpu_check.sh (DDP and FSDP over NCCL against one process).
# Environment: FRAMES (16), REPEATS (60), BATCH (2: samples per step, the paper's per GPU),
# COMPILE=1 (regional torch.compile of the blocks, with the eager step timed in the same
# rounds), CHECKS (which of "tests train model memory multi" to run; default all, e.g. CHECKS=model
# when device time is short).
# Each step has its own time limit and writes its log and JSON under OUT_DIR, so a failure or
# a timeout in one step still returns the others.
set -u
out=${1:?usage: gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
checks=" ${CHECKS:-tests train model memory multi} "
step() {  # step NAME SECONDS COMMAND... (skipped unless NAME's first word is in CHECKS)
  local name=$1 limit=$2; shift 2
  [[ $checks == *" ${name%%_*} "* ]] || return 0
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $((SECONDS - start)) s" | tee -a "$out/steps.txt"
  tail -n 5 "$out/$name.log"
}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0))"
  # the git metadata a device copy carries can be older than its files: say what differs
  echo "git HEAD $(git rev-parse --short HEAD 2>/dev/null); changed or untracked:"
  git status --porcelain 2>/dev/null; } > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
step tests 180 python3 -m pytest -q -p no:cacheprovider tests/maskgwm/test_cuda.py \
  tests/maskgwm/test_attention.py \
  "tests/maskgwm/train/test_train_distributed.py::test_fsdp_gathers_bf16_weights_and_reduces_fp32_gradients"
step train_smoke 150 python3 -m maskgwm.train.bench --steps 30 --workers 2 \
  --out "$out/train_gpu.json"
step model_sd3_medium "$([ -n "${COMPILE:-}" ] && echo 480 || echo 330)" \
  python3 -m maskgwm.model.bench_model --preset sd3-medium --frames "${FRAMES:-16}" \
  --latent 36x64 --sample-latent 36x64 --repeats "${REPEATS:-60}" --batch "${BATCH:-2}" \
  --attention-preset sd3-medium ${COMPILE:+--compile} --out "$out/model_gpu.json"
step memory_stages 300 python3 -m maskgwm.train.verify_memory --out "$out/memory_gpu.json"
step memory_fit 300 python3 -m maskgwm.train.bench_memory --device cuda \
  --out "$out/memory_fit_gpu.json"
nvidia-smi --query-gpu=memory.used,memory.total --format=csv >> "$out/machine.txt" 2>&1
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  step multi_gpu 240 bash scripts/multi_gpu_check.sh "$out/multi_gpu"
fi
