#!/usr/bin/env bash
# examples/cpp_project built the two ways a C++ user takes cellfuse (run by CTest, see
# tests/package/CMakeLists.txt):
#   install        cmake --install BUILD --prefix WORK/prefix; checks the layout (library, public
#                  header, CLI, CMake package); builds the example with find_package and runs it
#   fetchcontent   builds the example with cellfuse's sources through FetchContent (library
#                  only, reference interpreter only: the CPU backend is covered by `install`)
# Usage: check_cpp_package.sh MODE BUILD_DIR SOURCE_DIR WORK_DIR CXX_COMPILER
set -euo pipefail
mode=$1 build=$2 source=$3 work=$4 cxx=$5
rm -rf "$work"
mkdir -p "$work"
fail() { echo "cpp_package: FAILED: $*" >&2; exit 1; }
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

case "$mode" in
  install)
    prefix=$work/prefix
    cmake --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
    for f in include/cellfuse/cellfuse.h include/cellfuse/frontend/builder.h bin/cellfuse \
             lib/cmake/cellfuse/cellfuseConfig.cmake lib/cmake/cellfuse/cellfuseConfigVersion.cmake; do
      [[ -e "$prefix/$f" ]] || fail "$f is not installed"
    done
    ls "$prefix"/lib/libcellfuse.so* >/dev/null 2>&1 || fail "lib/libcellfuse.so is not installed"
    # Only what the public header needs: no implementation files, no backend internals.
    if find "$prefix/include" -name '*.cpp' | grep -q .; then fail "a .cpp file was installed"; fi
    [[ ! -e "$prefix/include/cellfuse/compiler/codegen/llvm" ]] || fail "the LLVM code generator's headers were installed"
    "$prefix/bin/cellfuse" --help | grep -q "cellfuse run" || fail "the installed CLI does not run"
    "$prefix/bin/cellfuse" run elman:3,4 --seq 3 --batch 2 | grep -q "checksum:" || fail "the installed CLI cannot run a cell"
    cmake -S "$source/examples/cpp_project" -B "$work/app" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
          -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release || fail "configure with find_package(cellfuse)"
    ;;
  fetchcontent)
    cmake -S "$source/examples/cpp_project" -B "$work/app" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
          -DCELLFUSE_SOURCE="$source" -DCELLFUSE_WITH_LLVM=OFF -DCELLFUSE_WITH_CUDA=OFF \
          -DCMAKE_BUILD_TYPE=Debug || fail "configure with FetchContent"
    # cellfuse as a subproject builds its library only: no tests, benchmarks or Python module.
    ! grep -q "cellfuse_python\|test_cli" "$work/app/CMakeCache.txt" "$work/app/build.ninja" 2>/dev/null ||
      fail "the subproject builds more than the library"
    ;;
  *) fail "unknown mode $mode" ;;
esac
cmake --build "$work/app" --parallel 2 || fail "build of examples/cpp_project ($mode)"
out=$("$work/app/mgu_app") || fail "mgu_app exited non-zero: $out"
echo "$out"
[[ "$out" == *ok* ]] || fail "mgu_app did not print ok"
rm -rf "$work"
echo "cpp_package: ok ($mode)"
