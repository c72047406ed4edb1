#!/usr/bin/env bash
# One script for a machine with a GPU, in this order: environment, Numba-CUDA smoke test,
# CPU-vs-GPU agreement of every op, the gpu-marked tests, a short FCN training run on the
# GPU, bench/run.py --device cuda against PyTorch + cuDNN, and the CUDA kernel tests.
#
#   OUT=/some/dir bench/gpu_check.sh             # on the GPU machine, from the repo root
#   bench/gpu_check.sh --dry-run                 # here, without a GPU: checks the script
#
# Needs no network and installs nothing: PYTHONPATH points at this checkout. Each stage
# runs under `timeout` and the script goes on past a failed stage; the whole run stays
# within GPU_CHECK_BUDGET seconds (default 480). Results under $OUT (a temp dir if unset):
#   gpu_check.log       everything printed, with a stage summary at the end
#   bench_cuda.json     bench/run.py --device cuda (partial if its stage timed out)
#   train_metrics.json, train_curves.png, train_predictions.png   from the training run
#
# The dry run uses the CPU everywhere: the agreement tests compare CPU with CPU
# (GRADFLOW_AGREEMENT_DRY_RUN=1), the Numba check runs in the CUDA simulator, training
# and the benchmark run on the CPU with tiny budgets. It proves the plumbing, not the GPU.
set -u -o pipefail

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_scratch.XXXXXX")"
BUDGET="${GPU_CHECK_BUDGET:-480}"
START=$(date +%s)

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CACHE_DIR="$SCRATCH/numba-cache"
export CUPY_CACHE_DIR="$SCRATCH/cupy-cache"
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-dev}"
export MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  export GRADFLOW_AGREEMENT_DRY_RUN=1
else
  DEVICE=cuda
fi

say() { echo "$*" | tee -a "$LOG"; }
SUMMARY=()

# stage NAME LIMIT_SECONDS COMMAND...: run under timeout (never past the overall budget),
# output to stdout and the log, record status and duration; never stops the script.
stage() {
  local name="$1" limit="$2"; shift 2
  local now left t0 rc status
  now=$(date +%s); left=$(( BUDGET - (now - START) - 5 ))
  if [ "$left" -lt 15 ]; then
    say "=== [$name] SKIPPED: overall budget of ${BUDGET}s used up"
    SUMMARY+=("$(printf '%-16s %-10s %5s s' "$name" "skipped" 0)")
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say ""
  say "=== [$name] $(date '+%H:%M:%S') limit ${limit}s: $*"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status=ok ;;
    124|137) status=TIMEOUT ;;
    5) status="no tests" ;;   # pytest: nothing collected / selected
    *) status="FAILED($rc)" ;;
  esac
  SUMMARY+=("$(printf '%-16s %-10s %5s s' "$name" "$status" "$(( $(date +%s) - t0 ))")")
  say "=== [$name] $status after $(( $(date +%s) - t0 ))s"
  return 0
}

say "gpu_check $( [ "$DRY_RUN" = 1 ] && echo '--dry-run (CPU only: checks the script, not a GPU)')"
say "repo $ROOT, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), OUT=$OUT, budget ${BUDGET}s"
say "python: $(command -v "$PY") ($("$PY" -V 2>&1))"

# 1. environment
if command -v nvidia-smi >/dev/null 2>&1; then
  stage nvidia-smi 20 nvidia-smi
else
  say "nvidia-smi: not found on this machine"
fi
stage env 40 "$PY" bench/gpu_smoke.py env
stage gradflow-cuda 30 "$PY" -c "import gradflow; print(gradflow.cuda.is_available(), gradflow.cuda.why_unavailable())"

# 2. Numba's CUDA target works with this driver, on CuPy arrays and CuPy's stream
if [ "$DRY_RUN" = 1 ]; then
  stage numba-cuda 60 env NUMBA_ENABLE_CUDASIM=1 "$PY" bench/gpu_smoke.py numba
else
  stage numba-cuda 60 "$PY" bench/gpu_smoke.py numba
fi

# 3. every op: CPU vs GPU, float64 and float32, forward and gradients (all failures listed)
stage agreement 120 "$PY" -m pytest tests/ops/test_cuda_agreement.py -q -rfE --maxfail=40 --tb=short

# 4. the other gpu-marked tests (stop at the first failure)
stage gpu-tests 60 "$PY" -m pytest -m gpu -x -q -rfE --tb=short --ignore=tests/ops/test_cuda_agreement.py tests

# 5. train the FCN briefly on the GPU: shapes, 4 epochs of 2000 64x64 images, batch 16
#    (the trainer's defaults otherwise: AdamW, cosine schedule, GroupNorm); keep metrics and plots
TRAIN_DIR="$SCRATCH/train"
if [ -f models/fcn.py ]; then
  if [ "$DRY_RUN" = 1 ]; then
    stage train 90 "$PY" models/fcn.py train --device cpu --epochs 1 --train-size 64 --val-size 32 \
      --batch-size 16 --no-progress --name gpu-check --out "$TRAIN_DIR"
  else
    stage train 90 "$PY" models/fcn.py train --device cuda --epochs 4 --train-size 2000 --val-size 200 \
      --batch-size 16 --no-progress --name gpu-check --out "$TRAIN_DIR"
  fi
  for pair in "metrics.json:train_metrics.json" "curves.png:train_curves.png" "predictions.png:train_predictions.png"; do
    found=$(find "$TRAIN_DIR" -name "${pair%%:*}" -type f 2>/dev/null | head -n 1)
    if [ -n "$found" ]; then cp "$found" "$OUT/${pair#*:}"; else say "train: no ${pair%%:*} written"; fi
  done
else
  say "=== [train] SKIPPED: models/fcn.py does not exist"
  SUMMARY+=("$(printf '%-16s %-10s %5s s' train "skipped" 0)")
fi

# 6. benchmark against PyTorch (+ cuDNN on the GPU); the JSON is rewritten after each row
if [ "$DRY_RUN" = 1 ]; then
  stage bench 120 "$PY" bench/run.py --device cpu --quick --only 'conv2d_3x3/|group_norm|fcn_gn_b8|overhead/chain' \
    --no-probes --out "$OUT/bench_cuda.json"
else
  stage bench 170 "$PY" bench/run.py --device cuda --out "$OUT/bench_cuda.json"
fi

# 7. the CUDA kernel tests (tests/kernels/cuda runs its kernels on the real GPU when there
#    is one; last, since the agreement tests already cover every op through the kernels)
if [ "$DRY_RUN" = 1 ]; then
  stage kernel-tests 60 env NUMBA_ENABLE_CUDASIM=1 "$PY" -m pytest tests/kernels/cuda -q -x -rfE --tb=short
else
  stage kernel-tests 45 "$PY" -m pytest tests/kernels/cuda -q -rfE --maxfail=10 --tb=short
fi

say ""
say "=== summary ($(( $(date +%s) - START ))s of ${BUDGET}s budget; log $LOG)"
FAILED=0
for line in "${SUMMARY[@]}"; do
  say "  $line"
  case "$line" in *FAILED*|*TIMEOUT*) FAILED=1 ;; esac
done
say "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
rm -rf "$SCRATCH"
exit "$FAILED"
