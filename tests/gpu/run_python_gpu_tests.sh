#!/usr/bin/env bash
# The Python package on a GPU machine, in one command (no network needed: PyTorch, pybind11 and
# scikit-build-core must already be installed for python3):
#
#   bash tests/gpu/run_python_gpu_tests.sh [--bench OUT.md]
#
#   1. builds and installs the package into a virtual environment that sees the system's
#      packages (pip install --no-build-isolation; LLVM is optional, so on a machine without it
#      the CPU backend is off and the CUDA one on);
#   2. runs tests/python/test_cuda.py (forward, training and torch.compile on CUDA tensors);
#   3. with --bench, runs bench/compare_python.py --device cuda and writes its table to OUT.md.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PYTHON:-python3}
VENV=${CELLFUSE_GPU_VENV:-build-gpu-venv}

fail() {
  echo "run_python_gpu_tests.sh: FAILED: $*" >&2
  exit 1
}

nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || echo "(nvidia-smi not available)"
"$PY" -m venv --system-site-packages "$VENV" || fail "python -m venv"
"$VENV/bin/python" -m pip install --no-build-isolation --no-deps . >"$VENV.install.log" 2>&1 ||
  { tail -40 "$VENV.install.log"; fail "pip install ."; }
grep -E "CUDA backend|CPU backend|Python module" "$VENV.install.log" || true
(cd tests/python && "../../$VENV/bin/python" -m pytest -q -p no:cacheprovider test_cuda.py) || fail "tests"
if [[ "${1:-}" == "--bench" ]]; then
  "$VENV/bin/python" bench/compare_python.py --device cuda --runs 7 --out "${2:?--bench needs a file}" ||
    fail "bench"
fi
echo "run_python_gpu_tests.sh: all Python GPU checks passed"
