#!/usr/bin/env bash
# Issue 23 on a GPU machine in one command (built to finish within ~9 minutes on one H100 with 16
# cores): the loop plans' correctness on the real GPU, then the step-latency timings before and
# after, then the plan sweep. Everything goes under $OUT (default ./gpu-out): one log per phase and
# SUMMARY.txt.
#
#   OUT=/path/to/out bash tests/gpu/run_latency_bench.sh [BUILD_DIR]     (default BUILD_DIR: build-gpu)
#
# Phases (each under its own time limit; a phase that would start after DEADLINE_S is skipped
# and says so):
#   build     Release, -DCELLFUSE_WITH_LLVM=OFF -DCELLFUSE_WITH_CUDA=ON, targets gpu_forward,
#             gpu_backward, bench_gpu
#   correct   gpu_forward --plans and gpu_backward --plans: the block-resident kernel forced on
#             every standard cell (f32 <= 1e-5, f64 <= 1e-12 against the f64 reference, B = 1,
#             3, 64), forward and BPTT; W1's shape and others resident and Auto (timed)
#   bench     bench_gpu --only W1,W5,W2, f32 and bf16 storage: "before" = the fixed rule of
#             earlier versions (CELLFUSE_CUDA_PLAN_TIMING=0), "auto" = graph and persistent timed
#             (today's default), "auto_with_resident" = the resident kernel timed too
#             (CELLFUSE_CUDA_PLANS=graph,persistent,resident), and W1 with the resident kernel forced
#   sweep     bench_gpu --sweep over SWEEP_KINDS x SWEEP_H x SWEEP_B, forward and forward+backward,
#             auto (resident included) against each plan forced (sized by the SWEEP_* variables to
#             fit the budget)
#
# Knobs: OUT, DEADLINE_S (default 510: no phase starts after it), RUNS (bench medians, default 5),
# SWEEP_KINDS (lstm,gru,elman), SWEEP_H (64,128,256), SWEEP_B (1,4,16,64), SWEEP_MODES
# (forward,train), SWEEP_STEPS (100), PHASES (build,correct,bench,sweep), CELLFUSE_JOBS (build
# parallelism, default nproc).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT=$PWD
BUILD=${1:-build-gpu}
OUT=${OUT:-$ROOT/gpu-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
DEADLINE_S=${DEADLINE_S:-510}
RUNS=${RUNS:-5}
SWEEP_KINDS=${SWEEP_KINDS:-lstm,gru,elman}
SWEEP_H=${SWEEP_H:-64,128,256}
SWEEP_B=${SWEEP_B:-1,4,16,64}
SWEEP_MODES=${SWEEP_MODES:-forward,train}
SWEEP_STEPS=${SWEEP_STEPS:-100}
PHASES=${PHASES:-build,correct,bench,sweep}
JOBS=${CELLFUSE_JOBS:-$(nproc 2>/dev/null || echo 8)}
START=$(date +%s)
SUMMARY=$OUT/SUMMARY.txt
: >"$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { echo $(($(date +%s) - START)); }
# phase NAME LIMIT_S: true when NAME is among PHASES and there is time to start it.
phase() {
  [[ ",$PHASES," == *",$1,"* ]] || return 1
  if (($(elapsed) + 10 > DEADLINE_S)); then
    note "SKIPPED $1: $(elapsed) s used of DEADLINE_S=$DEADLINE_S"
    return 1
  fi
  note "==> $1 (at $(elapsed) s, limit $2 s)"
  return 0
}
# run LOG LIMIT_S COMMAND...: runs with a time limit, output to $OUT/LOG, notes the status.
run() {
  local log=$1 limit=$2
  shift 2
  local left=$((DEADLINE_S + 60 - $(elapsed)))
  ((limit > left)) && limit=$left
  ((limit < 5)) && limit=5
  timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$OUT/$log" 2>&1
  local status=$?
  note "    $log: exit $status after $(elapsed) s$([[ $status -eq 124 ]] && echo " (TIMED OUT at ${limit} s)")"
  return $status
}

note "run_latency_bench.sh at $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>&1 | tee -a "$SUMMARY"
export CELLFUSE_CACHE_DIR=${CELLFUSE_CACHE_DIR:-$ROOT/$BUILD/kernel-cache}

if phase build 300; then
  GENERATOR=()
  command -v ninja >/dev/null && GENERATOR=(-G Ninja)
  if [[ -f "$BUILD/CMakeCache.txt" ]]; then
    want=$([[ ${#GENERATOR[@]} -gt 0 ]] && echo Ninja || echo "Unix Makefiles")
    grep -q "^CMAKE_GENERATOR:INTERNAL=$want\$" "$BUILD/CMakeCache.txt" || rm -rf "$BUILD"
  fi
  CUDA_ARGS=()
  for root in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
    if [[ -n "$root" && -x "$root/bin/nvcc" ]]; then
      CUDA_ARGS=(-DCUDAToolkit_ROOT="$root")
      break
    fi
  done
  run configure.log 120 cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release -DCELLFUSE_WITH_LLVM=OFF \
    -DCELLFUSE_WITH_CUDA=ON -DCELLFUSE_WITH_PYTHON=OFF -DCELLFUSE_BUILD_TESTS=OFF -DCELLFUSE_BUILD_BENCH=ON \
    -DCELLFUSE_BUILD_EXAMPLES=OFF "${CUDA_ARGS[@]}"
  run build.log 300 cmake --build "$BUILD" --parallel "$JOBS" --target gpu_forward gpu_backward bench_gpu ||
    note "    build FAILED: see $OUT/build.log"
fi

for exe in tests/gpu/gpu_forward tests/gpu/gpu_backward bench/bench_gpu; do
  [[ -x "$BUILD/$exe" ]] || note "missing $BUILD/$exe"
done

if phase correct 200; then
  run correct_forward.log 100 "$BUILD/tests/gpu/gpu_forward" --plans
  run correct_backward.log 150 "$BUILD/tests/gpu/gpu_backward" --plans
  for log in correct_forward.log correct_backward.log; do
    grep -E "passed, .* failed" "$OUT/$log" | sed "s/^/    $log: /" | tee -a "$SUMMARY"
    grep -E "^  FAILED" "$OUT/$log" | head -20 | sed "s/^/    /" | tee -a "$SUMMARY"
  done
fi

if phase bench 150; then
  for storage in native bf16; do
    CELLFUSE_CUDA_PLAN_TIMING=0 run "bench_${storage}_before.log" 60 "$BUILD/bench/bench_gpu" --runs "$RUNS" --only W1,W5,W2 \
      --storage "$storage"
    run "bench_${storage}_auto.log" 60 "$BUILD/bench/bench_gpu" --runs "$RUNS" --only W1,W5,W2 --storage "$storage"
    CELLFUSE_CUDA_PLANS=graph,persistent,resident run "bench_${storage}_auto_with_resident.log" 60 "$BUILD/bench/bench_gpu" \
      --runs "$RUNS" --only W1,W5,W2 --storage "$storage"
    run "bench_${storage}_resident.log" 60 "$BUILD/bench/bench_gpu" --runs "$RUNS" --only W1 --storage "$storage" \
      --strategy resident
  done
  for log in "$OUT"/bench_*.log; do
    echo "    --- $(basename "$log")" | tee -a "$SUMMARY"
    grep -E "^W[0-9]|bench_gpu:" "$log" | sed "s/^/    /" | tee -a "$SUMMARY"
  done
fi

if phase sweep 240; then
  CELLFUSE_CUDA_PLANS=graph,persistent,resident run sweep.log 240 "$BUILD/bench/bench_gpu" --sweep --runs 3 --sweep-kinds "$SWEEP_KINDS" --sweep-h "$SWEEP_H" \
    --sweep-b "$SWEEP_B" --sweep-modes "$SWEEP_MODES" --sweep-steps "$SWEEP_STEPS"
  grep -v "^sweep-json" "$OUT/sweep.log" | sed "s/^/    /" | tee -a "$SUMMARY"
fi

note "done after $(elapsed) s; logs in $OUT"
