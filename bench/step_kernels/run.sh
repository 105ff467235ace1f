#!/usr/bin/env bash
# The W5 step's product through every kernel, in CPU time (see step_kernels.cpp).
#   bash bench/step_kernels/run.sh [BUILD_DIR]    (default build/; needs llc-14 and an AVX-512 CPU)
# The generated kernel is the one cellfuse makes for this host: the W5 loop stage's LLVM IR from
# `cellfuse print --stages`, compiled by llc at -O3 (as the JIT does) and linked in.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$build/cellfuse" print --stages lstm:256 --batch 1 --target cpu | sed -n '/^# after generate LLVM IR/,$p' | tail -n +2 >"$work/w5.ll"
llc-14 -O3 -filetype=obj "$work/w5.ll" -o "$work/w5.o"
g++ -O2 -std=c++20 -I"$root" "$root/bench/step_kernels/step_kernels.cpp" "$work/w5.o" -o "$work/step_kernels" \
  -L"$build" -lcellfuse -Wl,-rpath,"$build" -lpthread
"$work/step_kernels"
