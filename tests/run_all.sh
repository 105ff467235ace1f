#!/usr/bin/env bash
# Every test of cellfuse, in one command:   bash tests/run_all.sh
#
#   1. Release build in build/      (CMake preset "default"), then its CTest suite
#   2. the Python package: a fresh virtual environment in build-venv/ with PyTorch from PyPI,
#      `pip install .` (scikit-build-core; its CMake tree is kept in build-pip/), then pytest on
#      tests/python (run from there, so that the installed package is the one tested)
#   3. ASan + UBSan Debug build in build-asan/ (preset "asan", benchmarks off), then its suite
#   4. when clang with libFuzzer is installed: the fuzz build in build-fuzz/ (preset "fuzz"),
#      replaying the checked-in corpus tests/fuzz/corpus once (a regression check, no new fuzzing)
#
# Exits non-zero when anything fails to configure, build or pass, and ends with each suite's CTest
# summary. CELLFUSE_JOBS=N limits the build's parallelism (default: Ninja's choice).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/cellfuse_run_all.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT
STARTED=$SECONDS
SUITES=()
BUILD_ARGS=()
[[ -n "${CELLFUSE_JOBS:-}" ]] && BUILD_ARGS+=(--parallel "$CELLFUSE_JOBS")

summary() {
  echo
  echo "==================== summary ($((SECONDS - STARTED)) s) ===================="
  for suite in "${SUITES[@]}"; do
    echo "--- $suite"
    grep -E 'tests passed|tests failed|Total Test time|The following tests FAILED|^\s+[0-9]+ - |[0-9]+ (passed|failed)' \
      "$LOGS/$suite.log" || echo "(no CTest summary: see the output above)"
  done
}

fail() {
  echo "run_all.sh: FAILED: $*" >&2
  summary
  echo "run_all.sh: FAILED: $*" >&2
  exit 1
}

step() {
  echo
  echo "==> $*"
}

# A build directory made by another generator cannot be reused by the Ninja presets.
reuse_or_clear() {
  local dir=$1
  if [[ -f "$dir/CMakeCache.txt" ]] && ! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$dir/CMakeCache.txt"; then
    echo "run_all.sh: $dir was configured with another generator; starting it afresh"
    rm -rf "$dir"
  fi
}

# configure + build + ctest for one preset; extra arguments go to the configure step.
suite() {
  local preset=$1 dir=$2
  shift 2
  reuse_or_clear "$dir"
  step "configure ($preset, $dir)"
  cmake --preset "$preset" "$@" || fail "configure ($preset)"
  step "build ($preset)"
  cmake --build --preset "$preset" "${BUILD_ARGS[@]}" || fail "build ($preset)"
  step "test ($preset)"
  SUITES+=("$preset")
  local -a filter=()
  [[ "$preset" == fuzz ]] && filter=(-L fuzz)
  ctest --test-dir "$dir" --output-on-failure -j2 "${filter[@]}" 2>&1 | tee "$LOGS/$preset.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || fail "tests ($preset)"
}

command -v cmake >/dev/null || fail "cmake is not installed"
command -v ninja >/dev/null || fail "ninja is not installed"

suite default build -DCELLFUSE_BUILD_TESTS=ON

python_suite() {
  local venv=build-venv python=${CELLFUSE_PYTHON:-python3}
  step "python: fresh virtual environment ($venv), PyTorch from PyPI, pip install ."
  command -v "$python" >/dev/null || fail "$python is not installed"
  rm -rf "$venv"
  "$python" -m venv "$venv" || fail "python -m venv (Debian: apt-get install python3-venv)"
  "$venv/bin/pip" install --quiet --upgrade pip || fail "pip upgrade"
  "$venv/bin/pip" install --quiet torch pytest || fail "pip install torch pytest"
  "$venv/bin/pip" install . || fail "pip install ."
  step "test (python)"
  SUITES+=(python)
  (cd tests/python && "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .) 2>&1 | tee "$LOGS/python.log"
  [[ ${PIPESTATUS[0]} -eq 0 ]] || fail "tests (python)"
}
python_suite

suite asan build-asan -DCELLFUSE_BUILD_TESTS=ON

# libFuzzer needs clang and its runtime (Debian: clang, libclang-rt-14-dev).
fuzz_probe="$LOGS/probe"
if command -v clang++ >/dev/null && command -v clang >/dev/null &&
   echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
     clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o "$fuzz_probe" 2>/dev/null; then
  suite fuzz build-fuzz -DCELLFUSE_BUILD_TESTS=ON
else
  echo
  echo "run_all.sh: clang with libFuzzer not found: skipping the fuzz corpus replay"
fi

summary
echo "run_all.sh: all suites passed"
