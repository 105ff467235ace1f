// Where the time of W5 (LSTM 256/256, T=1000, batch 1) goes on the CPU, and what the batch-1
// recurrent product costs through each kernel cellfuse has for it. Per benchmark: the time of
// 1000 steps' worth of work, so that the rows add up to a W5 forward.
//
//   W5/forward            the whole sequence (compile_cpu, as cellfuse.compile runs it)
//   W5/loop_only          the same cell with input size 1: the hoisted product is ~nothing,
//                         so this is the time loop (h W_hh^T fused with the gates, 1000 steps)
//   W5/hoisted_product    x W_ih^T + b for all 1000 rows at once (the packed GEMM)
//   step_product/*        h W_hh^T (256 -> 1024) 1000 times through the other kernels: the
//                         generation's fp32 panels (quant F32) and the packed GEMM at one row
//
// Each on the whole team (threads:0, CELLFUSE_NUM_THREADS or every core) and on the caller alone
// (threads:1); on one thread the CPU column is the work itself even on a loaded machine (no
// waiting for another member), which compares the kernels where wall times drift.
//
// Run: bench_batch1_step --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true
//        --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include "bench/bench_values.h"

#include <memory>
#include <mutex>
#include <string>
#include <random>
#include <vector>

#include "frontend/cells.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/cpu/packed_gemm.h"
#include "runtime/cpu/quant/quant_matrix.h"
#include "runtime/cpu/team.h"
#include "runtime/random_args.h"

namespace {

using namespace cellfuse;

constexpr std::int64_t kSteps = 1000, kHidden = 256, kInput = 256, kGates = 4 * kHidden;

using cellfuse::bench::normal_values;

void sequence(benchmark::State& state, std::int64_t input, int threads) {
  const Cell cell = cells::lstm(input, kHidden);
  auto compiled = std::make_shared<CpuCell>(cell, 1, threads);
  auto args = random_sequence_args<float>(cell, kSteps, 1, 5);
  SequenceResult<float> result;
  compiled->run_into(args, result);  // the workspace and the rearranged weights, once
  for (auto _ : state) {
    compiled->run_into(args, result);
    benchmark::DoNotOptimize(result.outputs[0].data.data());
  }
}

int team_size(int threads) { return threads > 0 ? threads : cpu::default_thread_count(); }

void hoisted_product(benchmark::State& state, int threads) {
  auto team = cpu::shared_team(team_size(threads));
  std::lock_guard<std::mutex> lock(team->user_mutex());
  auto x = normal_values(static_cast<std::size_t>(kSteps * kInput), 1.0f), w = normal_values(static_cast<std::size_t>(kGates * kInput), 0.05f),
       bias = normal_values(static_cast<std::size_t>(kGates), 0.1f), out = normal_values(static_cast<std::size_t>(kSteps * kGates), 0.0f);
  cpu::PackedWeights packed;
  packed.pack(w.data(), true, kInput, kGates);
  for (auto _ : state) {
    packed.multiply(*team, x.data(), bias.data(), out.data(), kSteps);
    benchmark::DoNotOptimize(out.data());
  }
}

// h W_hh^T for 1000 steps, each step's h the previous step's output squashed (a chain, as in the
// loop), through the generation's fp32 panels or the packed GEMM at one row.
void step_product(benchmark::State& state, bool quant, int threads) {
  auto team = cpu::shared_team(team_size(threads));
  std::lock_guard<std::mutex> lock(team->user_mutex());
  auto w = normal_values(static_cast<std::size_t>(kGates * kHidden), 0.05f), bias = normal_values(static_cast<std::size_t>(kGates), 0.1f);
  std::vector<float> h = normal_values(static_cast<std::size_t>(kHidden), 1.0f), out(static_cast<std::size_t>(kGates));
  auto qm = cpu::quant::QuantMatrix::quantize(w.data(), true, kHidden, kGates, cpu::quant::Format::F32);
  cpu::quant::Activations a;
  cpu::PackedWeights packed;
  packed.pack(w.data(), true, kHidden, kGates);
  for (auto _ : state) {
    for (std::int64_t t = 0; t < kSteps; ++t) {
      if (quant) {
        a.prepare(cpu::quant::Format::F32, h.data(), 1, kHidden, kHidden);
        qm.multiply(a, bias.data(), out.data(), kGates, team.get());
      } else {
        packed.multiply(*team, h.data(), bias.data(), out.data(), 1);
      }
      for (std::int64_t j = 0; j < kHidden; ++j) h[static_cast<std::size_t>(j)] = out[static_cast<std::size_t>(j)] * 0.01f;
    }
    benchmark::DoNotOptimize(h.data());
  }
}

const bool registered = [] {
  for (int threads : {0, 1}) {
    auto add = [&](std::string name, auto fn, auto... args) {
      name += "/threads:" + std::to_string(threads);
      benchmark::RegisterBenchmark(name.c_str(), fn, args..., threads)->UseRealTime()->Unit(benchmark::kMillisecond);
    };
    add("W5/forward", sequence, kInput);
    add("W5/loop_only", sequence, std::int64_t{1});
    add("W5/hoisted_product", hoisted_product);
    add("step_product/quant_f32_panels", step_product, true);
    add("step_product/packed_gemm_one_row", step_product, false);
  }
  return true;
}();

}  // namespace

BENCHMARK_MAIN();
