#!/usr/bin/env bash
# Rewrites the golden IR files (tests/golden/<cell>/*) from what compile() prints now, then shows
# what changed. Review the diff and commit it with the change that caused it.
#   tests/golden/update.sh [BUILD_DIR]      (default: build)
set -euo pipefail
cd "$(dirname "$0")/../.."
build="${1:-build}"
cmake --build "$build" --target test_cuda_golden
CELLFUSE_UPDATE_GOLDEN=1 "$build/tests/test_cuda_golden" --gtest_brief=1
git status --short tests/golden
git diff --stat tests/golden
