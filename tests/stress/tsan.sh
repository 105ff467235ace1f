#!/usr/bin/env bash
# The concurrency tests (tests/cpp/test_llvm_concurrency.cpp: threads compiling different cells,
# threads running and training one compiled module) under ThreadSanitizer: the "tsan" preset
# (build-tsan/, -fsanitize=thread on every cellfuse target), then the test. A data race is a
# ThreadSanitizer report and a non-zero exit.
#
#   bash tests/stress/tsan.sh
#
# The JIT-compiled kernels and OpenBLAS are not instrumented: races inside generated code are not
# seen, the runtime's synchronisation around it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
cmake --preset tsan >/dev/null
cmake --build --preset tsan ${CELLFUSE_JOBS:+--parallel "$CELLFUSE_JOBS"}
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 ${TSAN_OPTIONS:-}" CELLFUSE_NUM_THREADS=2 \
  nice -n 10 build-tsan/tests/test_llvm_concurrency
