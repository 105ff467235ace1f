// The recurrent products of the CPU workloads, OpenBLAS (blas.h: gemm, W packed again by every
// call) against cellfuse's packed kernel (packed_gemm.h: W packed once), both on the whole team.
// Run: bench_packed_gemm --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>
#include <vector>

#include "runtime/cpu/blas.h"
#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/team.h"

namespace {

using cellfuse::cpu::Team;

struct Shape {
  const char* what;
  std::int64_t m, k, n;
  bool n_by_k;
};

const Shape kShapes[] = {
    {"W2 forward h*W_hh^T", 64, 512, 2048, true},
    {"W2 backward dG*W_hh", 64, 2048, 512, false},
    {"W2 hoisted x*W_ih^T", 6400, 512, 2048, true},
    {"lstm:256 B=16", 16, 256, 1024, true},
    {"lstm:1024 B=32", 32, 1024, 4096, true},
    {"in L1 (ceiling)", 12, 256, 32, true},
    {"in L2", 48, 512, 128, true},
};

std::vector<float> values(std::size_t n) {
  std::mt19937 rng(3);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> v(n);
  for (float& f : v) f = u(rng);
  return v;
}

void product(benchmark::State& state, Shape s, bool packed_kernel) {
  static Team team(cellfuse::cpu::default_thread_count());
  cellfuse::cpu::use_single_threaded_blas();
  auto x = values(static_cast<std::size_t>(s.m * s.k)), w = values(static_cast<std::size_t>(s.k * s.n)),
       bias = values(static_cast<std::size_t>(s.n)), out = values(static_cast<std::size_t>(s.m * s.n));
  cellfuse::cpu::PackedWeights packed;
  if (packed_kernel) packed.pack(w.data(), s.n_by_k, s.k, s.n);
  for (auto _ : state) {
    if (packed_kernel)
      packed.multiply(team, x.data(), bias.data(), out.data(), s.m);
    else
      cellfuse::cpu::gemm<float>(team, x.data(), w.data(), s.n_by_k, bias.data(), out.data(), s.m, s.k, s.n);
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(s.m * s.k * s.n), benchmark::Counter::kIsIterationInvariantRate, benchmark::Counter::kIs1000);
}

const bool registered = [] {
  for (const Shape& s : kShapes)
    for (bool packed : {false, true})
      benchmark::RegisterBenchmark((std::string(packed ? "packed/" : "openblas/") + s.what).c_str(), product, s, packed)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
