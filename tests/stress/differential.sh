#!/usr/bin/env bash
# Random cells against the f64 reference, by hand, for as long as you like (issue 20):
#
#   tests/stress/differential.sh --minutes N [--seed S] [--build DIR] [--python-minutes M] [--threads T]
#                                [--backend cpu|cuda]
#
#   C++ (cellfuse_differential): N minutes of random cells (tests/stress/random_cell.h) through the
#   CPU backend (--backend cuda: the CUDA backend on this machine's GPU), forward and BPTT, against
#   the reference interpreter in f64. Every failure is
#   printed with its seed and the cell shrunk to the smallest that still fails, and saved as
#   <failures>/seed-S.cell (default: a new directory under /tmp; the summary says where).
#   Python (--python-minutes M, after the C++ part): M minutes of the same cells as PyTorch
#   modules through cellfuse.compile, forward and backward, against eager PyTorch in f64; it needs
#   the extension in DIR/python (configure with -Dpybind11_DIR=... -DPython_EXECUTABLE=...).
#
# The seed defaults to the time, so every run explores new cells; it is printed first, and one
# seed reruns with `build/tests/stress/cellfuse_differential --check SEED`. Runs at nice 19 on one
# thread (CELLFUSE_NUM_THREADS=1): the machine stays usable.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
minutes=10 seed=$(date +%s) build=build py_minutes=0 threads=1 backend=cpu
while (($#)); do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --python-minutes) py_minutes=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --backend) backend=$2; shift 2 ;;
    *) echo "differential.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
driver=$build/tests/stress/cellfuse_differential
[[ -x $driver ]] || { echo "differential.sh: $driver is not built (cmake --build $build --target cellfuse_differential)" >&2; exit 2; }
failures=$(mktemp -d "${TMPDIR:-/tmp}/cellfuse_differential.XXXXXX")
echo "differential.sh: seed $seed, $minutes min of C++ ($backend vs f64 reference), $py_minutes min of Python; failures in $failures"
status=0
seconds=$(python3 -c "print(int(float('$minutes') * 60))")
CELLFUSE_NUM_THREADS=$threads nice -n 19 "$driver" --seconds "$seconds" --seed "$seed" --threads "$threads" \
  --backend "$backend" --keep-going --failures "$failures" || status=1
if [[ $py_minutes != 0 ]]; then
  python=${PYTHON:-python3}
  CELLFUSE_NUM_THREADS=$threads nice -n 19 "$python" tests/stress/python_differential.py --build "$build" \
    --minutes "$py_minutes" --seed "$seed" --keep-going || status=1
fi
exit $status
