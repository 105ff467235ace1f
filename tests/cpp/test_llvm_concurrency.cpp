// Many threads at once (issue 20): threads compiling different cells (the shared JIT cache, LLVM,
// the team), and threads running one compiled module, forward and BPTT, get exactly the results
// of a serial run. tests/stress/tsan.sh builds this file with ThreadSanitizer.
#include <gtest/gtest.h>

#include <thread>

#include "backend_check.h"
#include "frontend/cells.h"
#include "random_cells.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using namespace testing_support;

#if defined(__SANITIZE_THREAD__)
constexpr int kThreads = 3, kRounds = 2;
#else
constexpr int kThreads = 4, kRounds = 4;
#endif

template <class F>
void in_threads(int n, F body) {
  std::vector<std::thread> threads;
  for (int t = 0; t < n; ++t) threads.emplace_back(body, t);
  for (auto& t : threads) t.join();
}

TEST(Concurrency, ThreadsCompilingDifferentCellsGetTheSerialResults) {
  const int cells = kThreads * kRounds;
  std::vector<Cell> cell_list;
  std::vector<SequenceArgs<float>> args;
  std::vector<SequenceResult<float>> serial;
  for (int i = 0; i < cells; ++i) {
    cell_list.push_back(random_cell(9000 + static_cast<std::uint64_t>(i), DType::f32, 8));
    args.push_back(random_sequence_args<float>(cell_list.back(), 5, 3, static_cast<std::uint64_t>(i)));
    // Serial: a cell of its own (not the cache), one thread.
    serial.push_back(CpuCell(cell_list.back(), 3, 1).run(args.back()));
  }
  std::vector<SequenceResult<float>> parallel(static_cast<std::size_t>(cells));
  std::vector<std::string> errors(static_cast<std::size_t>(kThreads));
  in_threads(kThreads, [&](int t) {
    try {
      for (int r = 0; r < kRounds; ++r) {
        const auto i = static_cast<std::size_t>(t * kRounds + r);
        // Through the process's cache (compile_cpu) and a private cell, alternately.
        if (r % 2 == 0) parallel[i] = compile_cpu(cell_list[i], 3)->run(args[i]);
        else parallel[i] = CpuCell(cell_list[i], 3, 1).run(args[i]);
      }
    } catch (const std::exception& e) {
      errors[static_cast<std::size_t>(t)] = e.what();
    }
  });
  for (const auto& e : errors) EXPECT_EQ(e, "");
  for (int i = 0; i < cells; ++i) {
    const auto k = static_cast<std::size_t>(i);
    ASSERT_EQ(parallel[k].outputs.size(), serial[k].outputs.size());
    for (std::size_t o = 0; o < serial[k].outputs.size(); ++o)
      EXPECT_EQ(parallel[k].outputs[o].data, serial[k].outputs[o].data) << "cell " << i << " output " << o;
    for (std::size_t s = 0; s < serial[k].final_states.size(); ++s)
      EXPECT_EQ(parallel[k].final_states[s].data, serial[k].final_states[s].data) << "cell " << i << " state " << s;
  }
}

TEST(Concurrency, ThreadsRunningOneModuleGetTheSerialResults) {
  const Cell cell = cells::lnlstm(6, 9);
  const auto compiled = compile_cpu(cell, 4);
  std::vector<SequenceArgs<float>> args;
  std::vector<SequenceResult<float>> serial;
  for (int t = 0; t < kThreads; ++t) {
    // Different lengths too: the module's workspace follows the length of each run.
    args.push_back(random_sequence_args<float>(cell, 3 + 2 * t, 4, static_cast<std::uint64_t>(t + 1)));
    serial.push_back(compiled->run(args.back()));
  }
  std::vector<int> mismatches(static_cast<std::size_t>(kThreads), 0);
  in_threads(kThreads, [&](int t) {
    const auto k = static_cast<std::size_t>(t);
    SequenceResult<float> result;
    for (int r = 0; r < kRounds * 4; ++r) {
      compiled->run_into(args[k], result);
      for (std::size_t o = 0; o < result.outputs.size(); ++o)
        if (result.outputs[o].data != serial[k].outputs[o].data) ++mismatches[k];
      for (std::size_t s = 0; s < result.final_states.size(); ++s)
        if (result.final_states[s].data != serial[k].final_states[s].data) ++mismatches[k];
    }
  });
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[static_cast<std::size_t>(t)], 0) << "thread " << t;
}

TEST(Concurrency, ThreadsTrainingOneModuleGetTheSerialGradients) {
  const Cell cell = cells::gru(5, 7);
  const CpuBptt trainer(cell, 3, 1);
  std::vector<SequenceArgs<float>> args;
  std::vector<LossGradients<float>> seeds;
  std::vector<BpttResult<float>> serial;
  for (int t = 0; t < kThreads; ++t) {
    args.push_back(random_sequence_args<float>(cell, 4 + t, 3, static_cast<std::uint64_t>(t + 7)));
    seeds.push_back(random_loss_gradients<float>(cell, 4 + t, 3, static_cast<std::uint64_t>(t + 8)));
    serial.push_back(trainer.run(args.back(), seeds.back()));
  }
  std::vector<int> mismatches(static_cast<std::size_t>(kThreads), 0);
  in_threads(kThreads, [&](int t) {
    const auto k = static_cast<std::size_t>(t);
    for (int r = 0; r < kRounds; ++r) {
      const auto got = trainer.run(args[k], seeds[k]);
      for (std::size_t p = 0; p < got.grads.params.size(); ++p)
        if (got.grads.params[p].data != serial[k].grads.params[p].data) ++mismatches[k];
      for (std::size_t i = 0; i < got.grads.inputs.size(); ++i)
        if (got.grads.inputs[i].data != serial[k].grads.inputs[i].data) ++mismatches[k];
    }
  });
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(mismatches[static_cast<std::size_t>(t)], 0) << "thread " << t;
}

}  // namespace
}  // namespace cellfuse
