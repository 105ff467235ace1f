// The matrix-vector products of generation (runtime/cpu/quant) per weight format and kernel set,
// at the char-RNN's shape (a 1024-hidden LSTM layer's 4096 x 1024 product, 16 MiB of fp32, far
// beyond the caches), with 1 and 8 streams, on the whole team. Reports the bytes of weight read
// per second: against the machine's read bandwidth, how near each format runs to its floor.
// Run: bench_quant_matvec --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_values.h"

#include <mutex>
#include <random>
#include <vector>

#include "runtime/cpu/quant/quant_matrix.h"
#include "runtime/cpu/team.h"

namespace {

using namespace cellfuse::cpu::quant;

using cellfuse::bench::normal_values;

// Several matrices, used in turn, so that each call streams its weights from memory as a
// generation step does (one layer's weights are long out of cache when the next step reads them).
void product(benchmark::State& state, Format format, Isa isa, std::int64_t streams) {
  const std::int64_t n = 4096, k = 1024, copies = 6;
  if (static_cast<int>(isa) > static_cast<int>(host_isa())) return state.SkipWithError("kernel set not on this CPU");
  force_isa(isa);
  auto w = normal_values(static_cast<std::size_t>(n * k), 0.03f);
  std::vector<QuantMatrix> ms;
  for (int c = 0; c < copies; ++c) ms.push_back(QuantMatrix::quantize(w.data(), true, k, n, format));
  auto x = normal_values(static_cast<std::size_t>(streams * k), 1.0f);
  std::vector<float> out(static_cast<std::size_t>(streams * n));
  auto team = cellfuse::cpu::shared_team(cellfuse::cpu::default_thread_count());
  std::lock_guard<std::mutex> lock(team->user_mutex());
  Activations a;
  std::size_t i = 0;
  for (auto _ : state) {
    a.prepare(format, x.data(), streams, k, k);
    ms[i++ % copies].multiply(a, nullptr, out.data(), n, team.get());
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(ms[0].bytes()));
  force_isa(host_isa());
}

void register_all() {
  for (Format f : {Format::F32, Format::BF16, Format::Int8, Format::Int4})
    for (Isa isa : {Isa::Avx512, Isa::Avx2, Isa::Scalar})
      for (std::int64_t streams : {1, 8}) {
        if (isa == Isa::Scalar && streams > 1) continue;
        std::string name = std::string(format_name(f)) + "/" + isa_name(isa) + "/streams:" + std::to_string(streams);
        benchmark::RegisterBenchmark(name.c_str(), [=](benchmark::State& s) { product(s, f, isa, streams); })
            ->UseRealTime()
            ->Unit(benchmark::kMicrosecond);
      }
}

}  // namespace

int main(int argc, char** argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
