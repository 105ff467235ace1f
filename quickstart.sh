#!/usr/bin/env bash
# From a fresh clone to cellfuse running, in one command:   bash quickstart.sh
#
#   1. installs the missing system packages (tools/install_deps.sh; sudo when not root)
#   2. a virtual environment in .venv with PyTorch from PyPI (kept and reused when it exists)
#   3. `pip install .` there: the Python package and the `cellfuse` command
#   4. the demo (python -m cellfuse.demo): a custom cell written in PyTorch, compiled by cellfuse
#      and run on the CPU (and on the GPU when there is one) beside the same cell in eager PyTorch:
#      do the outputs agree, and how much faster is it
#
# CELLFUSE_VENV=DIR uses another virtual environment; arguments go to the demo (--help lists them).
# Exits non-zero, saying what to install, on a system it does not know.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
source tools/install_deps.sh

venv=${CELLFUSE_VENV:-.venv}
say() { printf '\n==> %s\n' "$*"; }

say "system packages"
cellfuse_install_system_packages || exit 1
cellfuse_pick_compiler

say "Python environment ($venv, PyTorch from PyPI)"
cellfuse_make_venv "$venv" || exit 1

# The venv has the build tools (scikit-build-core, pybind11), so no isolated build environment.
say "pip install . (builds the native module; a few minutes the first time)"
"$venv/bin/pip" install --quiet --no-build-isolation . || { echo "quickstart: pip install . failed (see above)" >&2; exit 1; }

say "demo: a custom cell in PyTorch, eager against cellfuse"
"$venv/bin/python" -m cellfuse.demo "$@"

cat <<EOF

Next:
  . $venv/bin/activate                        # then: python -c 'import cellfuse', or
  cellfuse run lstm:256 --seq 100 --batch 8   # a built-in LSTM, compiled (--target ref: the interpreter)
  cellfuse --help                             # every command
  python examples/train_custom_cell.py        # training a custom cell
  bash tests/run_all.sh                       # every test
EOF
