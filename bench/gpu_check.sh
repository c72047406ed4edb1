#!/usr/bin/env bash
# One script for a machine with a GPU, finishing within one call of GPU_CHECK_BUDGET seconds
# (default 540). In this order:
#   probe         which packages import (a stage whose packages are missing is skipped, not failed)
#   env           versions, the GPU, whether Numba finds NVVM and libdevice
#   bench         bench/run.py --device cuda --quick --no-probes against PyTorch + cuDNN (first: it
#                 also fills the Numba cache every later stage reuses)
#   numba-cuda    a Numba kernel on CuPy's stream, every kernel module, the launch path taken
#   launch        bench/gpu_launch.py: per-launch cost of our kernels against CuPy's own
#   optim         bench/gpu_optim.py: one fused optimizer update against torch.optim (foreach)
#   agreement     every op, CPU vs GPU, float64 and float32, forward and gradients
#   gpu-tests     the gpu-marked tests, only in the files that hold some (and whose imports work)
#   kernel-tests  tests/kernels/cuda on the GPU
#   nccl          bench/nccl_check.py: gradflow.distributed over NCCL, one process (needs mpi4py)
#   train         a short FCN run on the GPU (--no-plots when matplotlib is missing)
#
#   OUT=/some/dir bench/gpu_check.sh             # on the GPU machine, from the repo root
#   bench/gpu_check.sh --dry-run                 # without a GPU: checks the script (CI runs this)
#
# GPU_CHECK_PRETEND_MISSING="torch matplotlib" treats those packages as missing (tests the skips).
# Needs no network and installs nothing: PYTHONPATH points at this checkout. Every stage runs
# under `timeout`; the limits below add up to at most the budget (checked before anything
# runs), and the script goes on past a failed stage. Results under $OUT (a temp dir if unset):
#   gpu_check.log        everything printed, with a stage summary at the end
#   bench_cuda.json      bench/run.py (partial if its stage timed out)
#   launch.json, optim.json, train_metrics.json (and train_*.png with matplotlib)
#
# The dry run uses the CPU: the benchmarks on the CPU with tiny budgets, the Numba checks in
# the CUDA simulator, the test stages collect their tests without running them, training runs
# one tiny epoch. It proves the plumbing, not the GPU.
set -u -o pipefail

DRY_RUN=0
case "${1:-}" in
  --dry-run) DRY_RUN=1 ;;
  "") ;;
  -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

# Stage time limits in seconds; they must add up to no more than the budget.
declare -A LIMIT=([probe]=25 [nvidia-smi]=5 [env]=30 [bench]=130 [numba-cuda]=45 [launch]=30 [optim]=30
                  [agreement]=75 [gpu-tests]=60 [kernel-tests]=45 [nccl]=20 [train]=45)
BUDGET="${GPU_CHECK_BUDGET:-540}"
TOTAL=0
for name in "${!LIMIT[@]}"; do TOTAL=$(( TOTAL + LIMIT[$name] )); done
if [ "$TOTAL" -gt "$BUDGET" ]; then
  echo "gpu_check: stage limits add up to ${TOTAL}s, over the ${BUDGET}s budget" >&2
  exit 2
fi

PLAN="GPU budget ${BUDGET}s; stage limits add up to ${TOTAL}s"
if [ "$DRY_RUN" = 1 ]; then
  # the CPU and the simulator stand in for the GPU, on a possibly busy CI machine: twice the time
  for name in "${!LIMIT[@]}"; do LIMIT[$name]=$(( 2 * LIMIT[$name] )); done
  BUDGET=$(( 2 * BUDGET ))
fi

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 2
OUT="${OUT:-$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")}"
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/gpu_check_scratch.XXXXXX")"
START=$(date +%s)

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if command -v python >/dev/null 2>&1; then PY=python; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY_RUN" = 1 ] && [ -n "${NUMBA_CACHE_DIR:-}" ]; then
  :   # the dry run reuses the caller's compiled kernels (CI's test run has just filled them)
else
  export NUMBA_CACHE_DIR="$SCRATCH/numba-cache"
fi
export CUPY_CACHE_DIR="$SCRATCH/cupy-cache"
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-dev}"
export MPLBACKEND=Agg
export PYTHONUNBUFFERED=1
export PYTHONDONTWRITEBYTECODE=1

if [ "$DRY_RUN" = 1 ]; then
  DEVICE=cpu
  SIM="env NUMBA_ENABLE_CUDASIM=1"
  COLLECT="--collect-only"          # the test stages only prove their files import and collect
  export GRADFLOW_AGREEMENT_DRY_RUN=1
else
  DEVICE=cuda
  SIM=""
  COLLECT=""
fi

say() { echo "$*" | tee -a "$LOG"; }
SUMMARY=()
record() { SUMMARY+=("$(printf '%-13s %-22s %5s s' "$1" "$2" "$3")"); }

# stage NAME COMMAND...: run under the stage's limit (never past the overall budget), output to
# stdout and the log, record status and duration; never stops the script.
stage() {
  local name="$1"; shift
  local limit="${LIMIT[$name]}" now left t0 rc status
  now=$(date +%s); left=$(( BUDGET - (now - START) - 5 ))
  if [ "$left" -lt 10 ]; then
    say "=== [$name] SKIPPED: overall budget of ${BUDGET}s used up"
    record "$name" "skipped (budget)" 0
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  say ""
  say "=== [$name] $(date '+%H:%M:%S') limit ${limit}s: $*"
  t0=$(date +%s)
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  case "$rc" in
    0) status=ok ;;
    124|137) status=TIMEOUT ;;
    5) status="no tests" ;;   # pytest: nothing collected / selected
    *) status="FAILED($rc)" ;;
  esac
  record "$name" "$status" "$(( $(date +%s) - t0 ))"
  say "=== [$name] $status after $(( $(date +%s) - t0 ))s"
  return 0
}

# skip_unless NAME MODULE...: true when every module imports; else records NAME as skipped
skip_unless() {
  local name="$1" missing=() module; shift
  for module in "$@"; do
    [ "${HAVE[$module]:-0}" = 1 ] || missing+=("$module")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "=== [$name] SKIPPED: missing ${missing[*]}"
    record "$name" "skipped (no ${missing[0]})" 0
    return 1
  fi
  return 0
}

say "gpu_check $( [ "$DRY_RUN" = 1 ] && echo '--dry-run (CPU only: checks the script, not a GPU)')"
say "repo $ROOT, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'), OUT=$OUT"
say "$PLAN$( [ "$DRY_RUN" = 1 ] && echo "; this dry run: twice each")"
say "python: $(command -v "$PY") ($("$PY" -V 2>&1))"

# 1. which packages import; the GPU side needs cupy (the dry run stands numpy in for it)
declare -A HAVE=()
t0=$(date +%s)
PROBE="$(timeout "${LIMIT[probe]}" "$PY" bench/gpu_smoke.py probe 2>>"$LOG")"
while IFS='=' read -r module ok; do
  [ -n "$module" ] && HAVE[$module]=$ok
done <<< "$PROBE"
[ "$DRY_RUN" = 1 ] && HAVE[cupy]=${HAVE[numpy]:-0}
for module in ${GPU_CHECK_PRETEND_MISSING:-}; do HAVE[$module]=0; done   # to test the skips
say "packages: $(echo "$PROBE" | tr '\n' ' ')"
record probe "$( [ -n "$PROBE" ] && echo ok || echo "FAILED(no output)")" "$(( $(date +%s) - t0 ))"

if command -v nvidia-smi >/dev/null 2>&1; then
  stage nvidia-smi nvidia-smi
else
  say "nvidia-smi: not found on this machine"
fi
if skip_unless env numpy numba; then
  stage env "$PY" bench/gpu_smoke.py env
fi

# 2. the benchmark first, quick and without probes
if skip_unless bench cupy torch numba_cuda; then
  if [ "$DRY_RUN" = 1 ]; then
    stage bench "$PY" bench/run.py --device cpu --quick --no-probes --repeats 2 --only 'overhead/chain' \
      --out "$OUT/bench_cuda.json"
  else
    stage bench "$PY" bench/run.py --device cuda --quick --no-probes --out "$OUT/bench_cuda.json"
  fi
fi

# 3. Numba's CUDA target with this driver, on CuPy arrays and CuPy's stream; the launch path
if skip_unless numba-cuda cupy numba_cuda; then
  stage numba-cuda $SIM "$PY" bench/gpu_smoke.py numba
fi
if skip_unless launch cupy numba_cuda; then
  stage launch $SIM "$PY" bench/gpu_launch.py --calls "$( [ "$DRY_RUN" = 1 ] && echo 1 || echo 2000)" \
    --out "$OUT/launch.json"
fi
if skip_unless optim cupy torch; then
  stage optim "$PY" bench/gpu_optim.py --device "$DEVICE" \
    $( [ "$DRY_RUN" = 1 ] && echo "--repeats 1 --width 4" || echo "--repeats 30") --out "$OUT/optim.json"
fi

# 4. the tests that need a GPU: every op CPU vs GPU (all failures listed), then the other
#    gpu-marked tests in the files that hold some, then the CUDA kernel tests
PYTEST_OK=$( [ "${HAVE[pytest]:-0}" = 1 ] && [ "${HAVE[hypothesis]:-0}" = 1 ] && echo 1 || echo 0)
HAVE[pytest_and_hypothesis]=$PYTEST_OK
if skip_unless agreement cupy pytest_and_hypothesis torch; then
  stage agreement "$PY" -m pytest tests/ops/test_cuda_agreement.py -q -rfE --maxfail=40 --tb=short $COLLECT
fi
if skip_unless gpu-tests cupy pytest_and_hypothesis; then
  GPU_FILES=$("$PY" bench/gpu_smoke.py gpu-test-files 2>>"$LOG" \
              | grep -v -e '^tests/kernels/cuda/' -e '^tests/ops/test_cuda_agreement.py$' | tr '\n' ' ')
  say "gpu test files: $GPU_FILES"
  if [ -n "$GPU_FILES" ]; then
    # shellcheck disable=SC2086
    stage gpu-tests "$PY" -m pytest -m gpu -q -rfE --maxfail=10 --tb=short $COLLECT $GPU_FILES
  else
    record gpu-tests "skipped (no files)" 0
  fi
fi
if skip_unless kernel-tests cupy pytest_and_hypothesis numba_cuda; then
  stage kernel-tests $SIM "$PY" -m pytest tests/kernels/cuda -q -rfE --maxfail=10 --tb=short $COLLECT
fi

# 4b. gradflow.distributed over NCCL in one process: communicator, collectives, DDP on CUDA
if [ "$DRY_RUN" = 1 ]; then
  record nccl "skipped (dry run: needs a GPU and NCCL)" 0
elif skip_unless nccl cupy mpi4py; then
  LAUNCH=""
  command -v mpirun >/dev/null 2>&1 && LAUNCH="mpirun -n 1"   # without it MPI starts as a singleton
  # shellcheck disable=SC2086
  stage nccl env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 $LAUNCH "$PY" bench/nccl_check.py
fi

# 5. train the FCN briefly on the GPU: shapes, 3 epochs of 1000 64x64 images, batch 16 (the
#    trainer's defaults otherwise: AdamW, cosine schedule, GroupNorm); keep metrics (and plots)
TRAIN_DIR="$SCRATCH/train"
PLOTS=""
[ "${HAVE[matplotlib]:-0}" = 1 ] || PLOTS="--no-plots"
if [ ! -f models/fcn.py ]; then
  say "=== [train] SKIPPED: models/fcn.py does not exist"
  record train "skipped (no models)" 0
elif skip_unless train cupy; then
  if [ "$DRY_RUN" = 1 ]; then
    stage train "$PY" models/fcn.py train --device cpu --epochs 1 --train-size 16 --val-size 8 --image-size 16 \
      --width 4 --batch-size 8 --no-progress $PLOTS --name gpu-check --out "$TRAIN_DIR"
  else
    stage train "$PY" models/fcn.py train --device cuda --epochs 3 --train-size 1000 --val-size 200 \
      --batch-size 16 --no-progress $PLOTS --name gpu-check --out "$TRAIN_DIR"
  fi
  for pair in "metrics.json:train_metrics.json" "curves.png:train_curves.png" "predictions.png:train_predictions.png"; do
    found=$(find "$TRAIN_DIR" -name "${pair%%:*}" -type f 2>/dev/null | head -n 1)
    if [ -n "$found" ]; then cp "$found" "$OUT/${pair#*:}"; elif [ -z "$PLOTS" ] || [ "${pair%%:*}" = metrics.json ]; then
      say "train: no ${pair%%:*} written"; fi
  done
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
