#!/usr/bin/env bash
# The GPU suite in one command, on a machine with an NVIDIA GPU, its driver and the CUDA toolkit
# (nvcc/NVRTC/cuBLAS; no LLVM, no GoogleTest needed):
#
#   bash tests/gpu/run_gpu_tests.sh [--quick] [BUILD_DIR]      (default BUILD_DIR: build-gpu)
#
#   1. configures a Release build with -DCELLFUSE_WITH_LLVM=OFF -DCELLFUSE_WITH_CUDA=ON (tests,
#      benchmarks and Python off: only the CUDA backend and the GPU programs);
#   2. builds tests/gpu/gpu_forward, tests/gpu/gpu_backward and the `cellfuse` CLI;
#   3. runs gpu_forward: every standard cell forward on the GPU against the f64 interpreter
#      (f32 <= 1e-5 relative, f64 <= 1e-12; odd sizes; B = 1, 3, 64; T = 1, 2, 37; fused small
#      products and cuBLAS; direct launches and CUDA graph replays), random cells, the
#      device-pointer API, NaN propagation, the disk cache, then a few timings;
#   4. runs gpu_backward: every standard cell forward+backward (BPTT) on the GPU against the f64
#      reference BPTT (same tolerances and sizes), a tied weight, wide and random cells, the
#      device-pointer training API, sequences of length 0;
#   5. checks that `cellfuse run --target cuda` (and with --backward) gives the reference
#      checksums.
#
# Ends with both programs' summaries; exits non-zero when anything fails. The kernel cache goes to
# BUILD_DIR/kernel-cache (CELLFUSE_CACHE_DIR overrides). --quick skips the wide and random cells
# and the timings. CELLFUSE_JOBS=N limits the build's parallelism.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

QUICK=()
if [[ "${1:-}" == "--quick" ]]; then
  QUICK=(--quick)
  shift
fi
BUILD=${1:-build-gpu}
JOBS=${CELLFUSE_JOBS:-$(nproc 2>/dev/null || echo 4)}

fail() {
  echo "run_gpu_tests.sh: FAILED: $*" >&2
  exit 1
}

command -v cmake >/dev/null || fail "cmake is not installed"
GENERATOR=()
command -v ninja >/dev/null && GENERATOR=(-G Ninja)
# A build directory made by another generator cannot be reused.
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

echo "==> GPU"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "(nvidia-smi not available)"

echo "==> configure ($BUILD)"
cmake -S . -B "$BUILD" "${GENERATOR[@]}" -DCMAKE_BUILD_TYPE=Release \
  -DCELLFUSE_WITH_LLVM=OFF -DCELLFUSE_WITH_CUDA=ON -DCELLFUSE_WITH_PYTHON=OFF \
  -DCELLFUSE_BUILD_TESTS=OFF -DCELLFUSE_BUILD_BENCH=OFF "${CUDA_ARGS[@]}" | tee "$BUILD.configure.log" ||
  fail "configure"
grep -q "CUDA backend (NVRTC)  : ON" "$BUILD.configure.log" ||
  fail "CMake did not find the CUDA toolkit (NVRTC); set CUDA_HOME or CUDAToolkit_ROOT"
rm -f "$BUILD.configure.log"

echo "==> build"
cmake --build "$BUILD" --parallel "$JOBS" --target gpu_forward gpu_backward cellfuse_cli || fail "build"

export CELLFUSE_CACHE_DIR=${CELLFUSE_CACHE_DIR:-$PWD/$BUILD/kernel-cache}

echo "==> the CLI: cellfuse run --target cuda against --target ref"
status=0
# compare SPEC KEY [TOLERANCE [CUDA_FLAGS]]: runs both targets, compares the line `KEY: value`.
compare() {
  local spec=$1 key=$2 tol=${3:-1e-3} flags=${4:-} ref out gpu
  # shellcheck disable=SC2086
  ref=$("$BUILD/cellfuse" run $spec --target ref | sed -n "s/^$key: //p")
  # shellcheck disable=SC2086
  out=$("$BUILD/cellfuse" run $spec --target cuda $flags 2>&1)
  gpu=$(sed -n "s/^$key: //p" <<<"$out")
  if [[ -z "$gpu" ]]; then
    echo "FAIL  cellfuse run $spec --target cuda: $out"
    status=1
    return
  fi
  # The checksums are sums of thousands of f32 values: agree to ~1e-3 relative (16-bit storage:
  # arguments rounded to the format, ~1e-2).
  if python3 -c "import sys; r, g = float('$ref'), float('$gpu'); sys.exit(0 if abs(r - g) <= $tol * max(1.0, abs(r)) else 1)" 2>/dev/null ||
     { ! command -v python3 >/dev/null && [[ "$ref" == "$gpu" ]]; }; then
    echo "ok    cellfuse run $spec $flags ($key): ref $ref, cuda $gpu"
  else
    echo "FAIL  cellfuse run $spec $flags ($key): ref $ref, cuda $gpu"
    status=1
  fi
}
for spec in "lstm:33,33 --seq 37 --batch 3" "lnlstm:64,64 --seq 20 --batch 64" "gru:17,40 --seq 9 --batch 1"; do
  compare "$spec" checksum
done
for spec in "lstm:33,33 --seq 37 --batch 3 --backward" "lnlstm:64,64 --seq 20 --batch 64 --backward" \
            "elman_proj:20,30,7 --seq 15 --batch 2 --backward" "peephole:9,17 --seq 5 --batch 64 --backward --dtype f64"; do
  compare "$spec" "grad checksum"
done
compare "lstm:33,33 --seq 37 --batch 3" checksum 2e-2 "--storage bf16"
compare "gru:17,40 --seq 9 --batch 64 --backward" "grad checksum" 2e-2 "--storage f16"

echo "==> gpu_forward ${QUICK[*]}"
"$BUILD/tests/gpu/gpu_forward" "${QUICK[@]}"
forward=$?

echo "==> gpu_backward ${QUICK[*]}"
"$BUILD/tests/gpu/gpu_backward" "${QUICK[@]}"
backward=$?

if [[ $forward -ne 0 || $backward -ne 0 || $status -ne 0 ]]; then
  fail "gpu_forward exit status $forward, gpu_backward exit status $backward, CLI checks status $status"
fi
echo "run_gpu_tests.sh: all GPU checks passed"
