#!/usr/bin/env bash
# What cellfuse needs from the system, in one place: the package list for each supported system
# and the code that installs what is missing. Used by quickstart.sh, tests/run_all.sh and (through
# run_all.sh) .ci/run.
#
#   bash tools/install_deps.sh            install the missing system packages (sudo when not root)
#   bash tools/install_deps.sh --check    only say what is missing (exit 1 when something is)
#   source tools/install_deps.sh          defines the functions below without running anything
#
# Supported: Debian 12, Ubuntu 22.04, Ubuntu 24.04 (x86-64). Anywhere else it names what to install
# by hand and exits 1; CELLFUSE_SKIP_SYSTEM_PACKAGES=1 skips this step for a machine set up by hand.
# CELLFUSE_OS_RELEASE=FILE reads FILE instead of /etc/os-release (the tests use it).

# The packages of one system, printed one a line. $1 = ID from os-release, $2 = VERSION_ID.
cellfuse_system_packages() {
  local id=$1 version=$2
  local -a p
  # The build and the tests: CMake + Ninja (+ ccache), GoogleTest, Google Benchmark.
  p=(cmake ninja-build ccache libgtest-dev libgmock-dev libbenchmark-dev)
  # The CPU backend: LLVM 14 and OpenBLAS. LLVM's CMake package (LLVMConfig.cmake and
  # LLVMExports.cmake) looks for zlib, libxml2, libffi, terminfo (ncurses) and z3, so their -dev
  # packages must be there for find_package(LLVM) to work.
  p+=(llvm-14-dev zlib1g-dev libxml2-dev libffi-dev libncurses-dev libz3-dev libopenblas-dev)
  # The Python package: venv and headers for the system's python3 (pip brings PyTorch, pytest,
  # scikit-build-core, pybind11 and auditwheel from PyPI).
  p+=(python3 python3-venv python3-dev)
  case "$id:$version" in
    debian:12)
      # g++ 12; the fuzz build: clang 14 and its libFuzzer/sanitizer runtimes.
      p+=(g++ clang libclang-rt-14-dev) ;;
    ubuntu:22.04)
      # The default g++ there is 11; cellfuse needs C++20 as g++ 12 has it (CXX is set by
      # cellfuse_pick_compiler). No fuzz build: clang 14's libFuzzer is not packaged separately.
      p+=(g++-12) ;;
    ubuntu:24.04)
      p+=(g++) ;;
    *) return 1 ;;
  esac
  printf '%s\n' "${p[@]}"
}

# Reads ID and VERSION_ID of this system into CELLFUSE_OS_ID / CELLFUSE_OS_VERSION / CELLFUSE_OS_NAME.
cellfuse_read_os() {
  local file=${CELLFUSE_OS_RELEASE:-/etc/os-release}
  CELLFUSE_OS_ID=unknown CELLFUSE_OS_VERSION=unknown CELLFUSE_OS_NAME="an unknown system (no $file)"
  [[ -r "$file" ]] || return 0
  CELLFUSE_OS_ID=$(. "$file" && echo "${ID:-unknown}")
  CELLFUSE_OS_VERSION=$(. "$file" && echo "${VERSION_ID:-unknown}")
  CELLFUSE_OS_NAME=$(. "$file" && echo "${PRETTY_NAME:-$ID $VERSION_ID}")
}

cellfuse_unsupported_message() {
  cat >&2 <<EOF
cellfuse: unsupported system: $CELLFUSE_OS_NAME$( [[ $(uname -m) != x86_64 ]] && echo " on $(uname -m)")
The setup knows Debian 12 and Ubuntu 22.04/24.04 on x86-64. Elsewhere, install by hand:
  - a C++20 compiler (g++ >= 12 or clang >= 14), CMake >= 3.22, Ninja
  - LLVM 14, 15 or 16 with its CMake package (LLVMConfig.cmake; pass -DLLVM_DIR=... to CMake)
    and the libraries it links (zlib, libxml2, libffi, ncurses/terminfo, z3)
  - OpenBLAS with cblas.h
  - GoogleTest + GoogleMock and Google Benchmark (for the tests and benchmarks)
  - Python >= 3.10 with venv and its headers (PyTorch comes from PyPI)
then run again with CELLFUSE_SKIP_SYSTEM_PACKAGES=1.
EOF
}

# The packages of cellfuse_system_packages that are not installed, one a line.
cellfuse_missing_packages() {
  local pkg
  while read -r pkg; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || echo "$pkg"
  done < <(cellfuse_system_packages "$CELLFUSE_OS_ID" "$CELLFUSE_OS_VERSION")
}

# Installs the missing system packages; with --check only reports them. Returns non-zero, with a
# message naming what to install, when that cannot be done here.
cellfuse_install_system_packages() {
  local check=${1:-}
  if [[ "${CELLFUSE_SKIP_SYSTEM_PACKAGES:-0}" == 1 ]]; then
    echo "install_deps: CELLFUSE_SKIP_SYSTEM_PACKAGES=1: not checking the system packages"
    return 0
  fi
  cellfuse_read_os
  if [[ $(uname -m) != x86_64 ]] || ! cellfuse_system_packages "$CELLFUSE_OS_ID" "$CELLFUSE_OS_VERSION" >/dev/null ||
     ! command -v dpkg-query >/dev/null; then
    cellfuse_unsupported_message
    return 1
  fi
  local -a missing
  mapfile -t missing < <(cellfuse_missing_packages)
  if ((${#missing[@]} == 0)); then
    echo "install_deps: every system package is installed ($CELLFUSE_OS_NAME)"
    return 0
  fi
  if [[ "$check" == --check ]]; then
    echo "install_deps: missing on $CELLFUSE_OS_NAME: ${missing[*]}" >&2
    return 1
  fi
  local -a sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      echo "install_deps: not root and no sudo: as root, run" >&2
      echo "  apt-get update && apt-get install -y ${missing[*]}" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "install_deps: installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y "${missing[@]}" </dev/null && return 0
  echo "install_deps: apt-get failed; to install by hand:" >&2
  echo "  ${sudo[*]} apt-get update && ${sudo[*]} apt-get install -y ${missing[*]}" >&2
  return 1
}

# Exports CXX/CC when the default g++ is older than 12 and g++-12 is there (Ubuntu 22.04).
cellfuse_pick_compiler() {
  [[ -n "${CXX:-}" ]] && return 0
  local major
  major=$(g++ -dumpversion 2>/dev/null | cut -d. -f1)
  if [[ -n "$major" && "$major" -lt 12 ]] && command -v g++-12 >/dev/null; then
    export CXX=g++-12 CC=gcc-12
    echo "install_deps: g++ $major is too old for C++20; using CXX=$CXX"
  fi
}

# A virtual environment in $1 with PyTorch, the Python build tools and what the bench scripts
# import (numpy), from PyPI; an existing one that already has them is kept. Extra arguments are
# more packages to install there.
cellfuse_make_venv() {
  local venv=$1
  shift
  local python=${CELLFUSE_PYTHON:-python3}
  if [[ ! -x "$venv/bin/python" ]]; then
    command -v "$python" >/dev/null || { echo "install_deps: $python is not installed" >&2; return 1; }
    echo "install_deps: creating the virtual environment $venv"
    "$python" -m venv "$venv" || {
      echo "install_deps: '$python -m venv' failed (Debian/Ubuntu: apt-get install python3-venv)" >&2
      return 1
    }
    "$venv/bin/pip" install --quiet --upgrade pip || return 1
  fi
  local -a want=(torch numpy pytest scikit-build-core pybind11 "$@") need=() pkg
  for pkg in "${want[@]}"; do
    "$venv/bin/pip" show --quiet "$pkg" >/dev/null 2>&1 || need+=("$pkg")
  done
  if ((${#need[@]})); then
    echo "install_deps: pip install ${need[*]} (into $venv)"
    "$venv/bin/pip" install --quiet "${need[@]}" || {
      echo "install_deps: pip install ${need[*]} failed (is PyPI reachable?)" >&2
      return 1
    }
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -uo pipefail
  cellfuse_install_system_packages "${1:-}"
fi
