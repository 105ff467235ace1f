// The CPU backend on the workloads (forward), one benchmark per workload, run with
// `bench_cpu --benchmark_repetitions=5` for medians. bench/compare_cpu.py runs this and the
// same cells in PyTorch in one go and prints the ratio table.
#include <benchmark/benchmark.h>

#include "bench/workloads.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/random_args.h"

namespace {

void run_workload(benchmark::State& state, const cellfuse::bench::Workload& w) {
  cellfuse::Cell cell = cellfuse::cells::by_spec(w.cell);
  auto compiled = cellfuse::compile_cpu(cell, w.batch);
  auto args = cellfuse::random_sequence_args<float>(cell, w.steps, w.batch, 1);
  // The result is reused, as a caller running many sequences would (and as PyTorch's caching
  // allocator does for its outputs); the first run, untimed, touches every buffer.
  cellfuse::SequenceResult<float> result;
  compiled->run_into(args, result);
  for (auto _ : state) {
    compiled->run_into(args, result);
    benchmark::DoNotOptimize(result.outputs[0].data.data());
  }
  state.counters["compile_ms"] = compiled->compile_ms();
}

// Forward and backward (BPTT) with loss gradients for every output and final state: what a
// training step of the cell costs.
void train_workload(benchmark::State& state, const cellfuse::bench::Workload& w) {
  cellfuse::Cell cell = cellfuse::cells::by_spec(w.cell);
  auto compiled = cellfuse::compile_cpu_bptt(cell, w.batch);
  auto args = cellfuse::random_sequence_args<float>(cell, w.steps, w.batch, 1);
  auto seeds = cellfuse::random_loss_gradients<float>(cell, w.steps, w.batch, 2);
  cellfuse::BpttResult<float> result;  // reused, as in run_workload
  compiled->run_into(args, seeds, result);
  for (auto _ : state) {
    compiled->run_into(args, seeds, result);
    benchmark::DoNotOptimize(result.grads.params.data());
  }
  state.counters["compile_ms"] = compiled->compile_ms();
}

const bool registered = [] {
  for (const auto& w : cellfuse::bench::workloads()) {
    benchmark::RegisterBenchmark(("forward/" + w.id).c_str(), run_workload, w)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
    benchmark::RegisterBenchmark(("train/" + w.id).c_str(), train_workload, w)
        ->Unit(benchmark::kMillisecond)
        ->UseRealTime()
        ->MeasureProcessCPUTime();
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
