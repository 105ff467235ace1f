#!/usr/bin/env bash
# Runs every fuzz target for N minutes each, one after the other on one core (nice 19), from the
# checked-in corpus, then merges what it found back into it (-set_cover_merge: the same coverage
# in the fewest files). Then the Python-level fuzzer of the capture (random modules through
# cellfuse.compile, tests/stress/python_differential.py) for the same time, when --python is given.
#
#   tests/fuzz/run_fuzzers.sh --minutes N [--targets parse,pipeline,cache_entry,generator_file]
#                             [--build build-fuzz] [--python BUILD_WITH_PYTHON] [--no-merge]
#
# Prints each target's final libFuzzer stats (executions, exec/s, coverage). A crash leaves
# crash-* in <work>/artifacts (the summary says where); rerun it with the target and the file.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
minutes=10 build=build-fuzz targets=parse,pipeline,cache_entry,generator_file python_build="" merge=1
while (($#)); do
  case $1 in
    --minutes) minutes=$2; shift 2 ;;
    --targets) targets=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --python) python_build=$2; shift 2 ;;
    --no-merge) merge=0; shift ;;
    *) echo "run_fuzzers.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
seconds=$(python3 -c "print(int(float('$minutes') * 60))")
work=$(mktemp -d "${TMPDIR:-/tmp}/cellfuse_fuzz.XXXXXX")
mkdir -p "$work/artifacts"
status=0
for t in ${targets//,/ }; do
  bin=$build/tests/fuzz/fuzz_$t
  [[ -x $bin ]] || { echo "run_fuzzers.sh: $bin is not built (cmake --preset fuzz && cmake --build --preset fuzz)"; exit 2; }
  corpus=tests/fuzz/corpus_$t extra=() flags=()
  case $t in
    parse) corpus=tests/fuzz/corpus; extra=(tests/fuzz/seeds); flags=(-dict=tests/fuzz/cell.dict -max_len=8192) ;;
    pipeline) extra=(tests/fuzz/seeds); flags=(-dict=tests/fuzz/cell.dict -max_len=4096 -timeout=60) ;;
    cache_entry) flags=(-close_fd_mask=2 -max_len=4096) ;;
    generator_file) flags=(-timeout=60 -max_len=65536) ;;
  esac
  mkdir -p "$work/$t" "$corpus"
  cp -r "$corpus"/. "$work/$t"/ 2>/dev/null || true
  for e in "${extra[@]}"; do cp -r "$e"/. "$work/$t"/; done
  echo "==> fuzz_$t for $minutes min (corpus $(ls "$work/$t" | wc -l) files)"
  if ! nice -n 19 "$bin" "${flags[@]}" -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/$t-" "$work/$t" 2>&1 | tee "$work/$t.log" | grep -E '^#[0-9]+.*(DONE|pulse)|stat::|ERROR|SUMMARY' ; then
    :
  fi
  if grep -qE 'ERROR: (libFuzzer|AddressSanitizer|UndefinedBehavior)|runtime error|deadly signal' "$work/$t.log"; then
    echo "run_fuzzers.sh: fuzz_$t FOUND A PROBLEM: see $work/$t.log and $work/artifacts"
    status=1
  elif ((merge)); then
    mkdir -p "$work/$t.merged"
    "$bin" "${flags[@]}" -set_cover_merge=1 "$work/$t.merged" "$work/$t" >/dev/null 2>&1 &&
      rm -rf "$corpus" && mv "$work/$t.merged" "$corpus" && echo "   corpus merged: $(ls "$corpus" | wc -l) files in $corpus"
  fi
done
if [[ -n $python_build ]]; then
  echo "==> the Python capture fed random modules, $minutes min"
  CELLFUSE_NUM_THREADS=1 nice -n 19 "${PYTHON:-python3}" tests/stress/python_differential.py --build "$python_build" \
    --minutes "$minutes" --seed "$(date +%s)" --keep-going || status=1
fi
echo "run_fuzzers.sh: logs and artifacts in $work"
exit $status
