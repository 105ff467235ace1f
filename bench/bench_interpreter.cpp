// The reference interpreter's speed: the baseline every backend is measured against, and a
// guard against the oracle becoming too slow for the test suite's sizes.
#include <benchmark/benchmark.h>

#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace {

void BM_InterpretLstm(benchmark::State& state) {
  const auto hidden = state.range(0);
  const auto batch = state.range(1);
  const std::int64_t steps = 16;
  cellfuse::Cell cell = cellfuse::cells::lstm(hidden, hidden);
  auto args = cellfuse::random_sequence_args<float>(cell, steps, batch, 1);
  for (auto _ : state) benchmark::DoNotOptimize(cellfuse::interpret_sequence(cell, args));
  state.SetItemsProcessed(state.iterations() * steps);
}
BENCHMARK(BM_InterpretLstm)->Args({64, 1})->Args({256, 8})->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
