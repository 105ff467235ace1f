#!/usr/bin/env bash
# The pytest suite under AddressSanitizer + UndefinedBehaviorSanitizer, with the extension
# (cellfuse._C) and everything it links built with them (CMake preset "asan" plus the Python
# module, in build-asan-py/), and the sanitizer runtime preloaded into the Python interpreter.
#
#   bash tests/stress/asan_python.sh [pytest arguments]      e.g. -x -k generate
#
# PYTHON (default /work/venv/bin/python, else python3) must have torch and pytest. Leak detection
# is off: CPython and PyTorch keep allocations for the life of the process on purpose, which
# LeakSanitizer would report by the thousand. Every other ASan or UBSan finding aborts the run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
python=${PYTHON:-/work/venv/bin/python}
[[ -x $python ]] || python=python3
build=build-asan-py
cmake --preset asan -B "$build" -DCELLFUSE_BUILD_TESTS=OFF \
  -Dpybind11_DIR="$("$python" -m pybind11 --cmakedir)" -DPython_EXECUTABLE="$python" >/dev/null
cmake --build "$build" --target cellfuse_python ${CELLFUSE_JOBS:+--parallel "$CELLFUSE_JOBS"}
runtime=$("${CXX:-c++}" -print-file-name=libasan.so)
[[ -f $runtime ]] || { echo "asan_python.sh: no libasan.so from ${CXX:-c++}" >&2; exit 2; }
# libstdc++ too, with it: the interpreter does not link it, so without it ASan finds no real
# __cxa_throw when it starts, and the first C++ exception (torch's own, e.g. make_fx meeting
# data-dependent control flow in test_errors.py) aborts in its interceptor ("CHECK failed:
# real___cxa_throw != 0") before any cellfuse code runs.
stdcxx=$("${CXX:-c++}" -print-file-name=libstdc++.so)
export LD_PRELOAD="$runtime $stdcxx ${LD_PRELOAD:-}"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allow_user_segv_handler=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
# The package of this tree with the sanitized extension beside it (links, nothing installed).
pkg=$PWD/$build/asan_pkg/cellfuse
rm -rf "$pkg" && mkdir -p "$pkg"
ln -s "$PWD"/python/cellfuse/*.py "$PWD/$build"/python/cellfuse/_C*.so "$pkg"/
export PYTHONPATH="$PWD/$build/asan_pkg${PYTHONPATH:+:$PYTHONPATH}"
cd tests/python
nice -n 10 "$python" -m pytest -q -p no:cacheprovider "$@" .
