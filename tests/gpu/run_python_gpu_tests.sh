#!/usr/bin/env bash
# The Python package on a GPU machine, in one command (no network needed: PyTorch must be
# installed for python3; pybind11 and pytest too, or their wheels in build-wheels/, made elsewhere
# with `pip download pytest pybind11 -d build-wheels`, which are installed offline):
#
#   bash tests/gpu/run_python_gpu_tests.sh [--bench OUT.md]
#
#   1. builds the native module with CMake (LLVM is optional: without it the CPU backend is off
#      and the CUDA one on) and stages it with the package's sources in build-gpu-py/stage, which
#      goes on PYTHONPATH (the python3 that has PyTorch runs everything; `pip install .` is what
#      tests/run_all.sh checks);
#   2. runs tests/python/test_cuda.py (forward, training and torch.compile on CUDA tensors) and the
#      CUDA cases of tests/python/test_research_cells.py;
#   3. runs the profiler's GPU checks (tests/python/test_profile_cuda.py: device events per
#      launch, the GPU report, the eager column on CUDA, `cellfuse profile --target cuda`);
#   4. with --bench, runs bench/compare_python.py --device cuda and writes its table to OUT.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=$(command -v "${PYTHON:-python3}")
DIR=build-gpu-py

fail() {
  echo "run_python_gpu_tests.sh: FAILED: $*" >&2
  exit 1
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "(nvidia-smi not available)"
"$PY" -c "import torch" || fail "PyTorch is not installed for $PY"
if [[ -d build-wheels ]]; then
  "$PY" -m pip install -q --no-index --find-links build-wheels --target "$DIR/deps" pytest pybind11 ||
    fail "offline install of build-wheels/"
  export PYTHONPATH=$PWD/$DIR/deps${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" -c "import pybind11, pytest" || fail "pybind11 or pytest is not installed for $PY"
cmake -S . -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCELLFUSE_BUILD_TESTS=OFF \
  -DCELLFUSE_BUILD_BENCH=OFF -DPython_EXECUTABLE="$PY" -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" \
  >"$DIR.configure.log" 2>&1 || { tail -30 "$DIR.configure.log"; fail "configure"; }
grep -E "backend|Python module" "$DIR.configure.log"
cmake --build "$DIR/build" --target cellfuse_python >"$DIR.build.log" 2>&1 || { tail -30 "$DIR.build.log"; fail "build"; }
rm -rf "$DIR/stage" && mkdir -p "$DIR/stage/cellfuse"
cp python/cellfuse/*.py "$DIR/stage/cellfuse/" && cp "$DIR"/build/python/cellfuse/_C*.so "$DIR/stage/cellfuse/" ||
  fail "stage"
export PYTHONPATH=$PWD/$DIR/stage${PYTHONPATH:+:$PYTHONPATH}
(cd tests/python && "$PY" -m pytest -q -p no:cacheprovider test_cuda.py) || fail "tests"
# The research cells on CUDA tensors (their CPU cases need the LLVM backend, often off here).
(cd tests/python && "$PY" -m pytest -q -p no:cacheprovider test_research_cells.py -k cuda) || fail "research cells"
# The capture corpus (31 cells in research code's styles) on CUDA tensors.
(cd tests/python && "$PY" -m pytest -q -p no:cacheprovider test_corpus.py -k cuda) || fail "corpus"
# The profiler on CUDA tensors (CUDA events per launch, the trace's GPU track, the eager column).
(cd tests/python && "$PY" -m pytest -q -s -p no:cacheprovider test_profile_cuda.py) || fail "profiler"
if [[ "${1:-}" == "--bench" ]]; then
  "$PY" bench/compare_python.py --device cuda --runs 7 --out "${2:?--bench needs a file}" || fail "bench"
fi
echo "run_python_gpu_tests.sh: all Python GPU checks passed"
