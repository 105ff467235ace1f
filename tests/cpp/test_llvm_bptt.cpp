// BPTT on the CPU backend (fused forward, fused backward step run in reverse, parameter
// gradients as products over all steps) against the reference BPTT in f64.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backend_check.h"
#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "frontend/cells.h"
#include "random_cells.h"
#include "runtime/cpu/cpu_bptt.h"

namespace cellfuse {
namespace {

using namespace testing_support;

void check(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed) {
  const std::string what = cell.name + " T=" + std::to_string(steps) + " B=" + std::to_string(batch);
  CpuBptt compiled(cell, batch);
  BackwardCell reference_cell = differentiate(as_f64(cell));
  if (cell.graph.dtype() == DType::f32) {
    auto args = random_sequence_args<float>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<float>(cell, steps, batch, seed);
    auto want = reference_bptt(reference_cell, convert<float, double>(args), convert_seeds<float, double>(seeds));
    auto got = compiled.run(args, seeds);
    expect_matches(got.forward, want.forward, 1e-5, what + " forward");
    expect_grads(got.grads, want.grads, 1e-5, what + " f32");
  } else {
    auto args = random_sequence_args<double>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<double>(cell, steps, batch, seed);
    auto want = reference_bptt(reference_cell, args, seeds);
    auto got = compiled.run(args, seeds);
    expect_grads(got.grads, want.grads, 1e-11, what + " f64");
  }
}

TEST(CpuBptt, StandardCellsMatchTheReference) {
  for (const char* spec : {"elman:5,7", "elman_proj:5,7,3", "lstm:6,7", "gru:4,33", "lnlstm:5,7", "peephole:3,7"}) {
    for (DType dtype : {DType::f32, DType::f64}) {
      Cell cell = cells::by_spec(spec, dtype);
      for (auto [steps, batch] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {2, 3}, {9, 2}})
        check(cell, steps, batch, static_cast<std::uint64_t>(steps * 31 + batch));
    }
  }
}

// The long sequence and the large batch (GEMMs instead of fused products), in f32.
TEST(CpuBptt, LongSequencesAtLargeBatch) {
  for (const char* spec : {"lstm:6,9", "lnlstm:5,7", "elman_proj:4,6,3"}) {
    if (kSanitized && std::string(spec) != "lstm:6,9") continue;
    check(cells::by_spec(spec), 37, 64, 5);
  }
}

// The parameter gradients' products (and every GEMM) are split among the team by columns: the
// same bits whatever the thread count, and still the reference's values.
TEST(CpuBptt, ResultsDoNotDependOnTheThreadCount) {
  Cell cell = cells::lstm(40, 70);
  const std::int64_t steps = 5, batch = 64;
  auto args = random_sequence_args<float>(cell, steps, batch, 3);
  auto seeds = random_loss_gradients<float>(cell, steps, batch, 4);
  auto one = CpuBptt(cell, batch, 1).run(args, seeds);
  auto want = reference_bptt(differentiate(as_f64(cell)), convert<float, double>(args), convert_seeds<float, double>(seeds));
  expect_grads(one.grads, want.grads, 1e-5, "1 thread");
  for (int threads : {2, 3}) {
    auto got = CpuBptt(cell, batch, threads).run(args, seeds);
    for (std::size_t p = 0; p < one.grads.params.size(); ++p)
      EXPECT_EQ(got.grads.params[p].data, one.grads.params[p].data) << threads << " threads, param " << p;
    for (std::size_t i = 0; i < one.grads.inputs.size(); ++i)
      EXPECT_EQ(got.grads.inputs[i].data, one.grads.inputs[i].data) << threads << " threads, input " << i;
    for (std::size_t i = 0; i < one.grads.states.size(); ++i)
      EXPECT_EQ(got.grads.states[i].data, one.grads.states[i].data) << threads << " threads, state " << i;
  }
}

// run_into writes into the caller's result: the same tensors (no reallocation) when their
// shapes fit, replaced when they do not, and the values of run() every time, also when a call
// of another length came between (the kept tape and scratch are resized, not trusted).
TEST(CpuBptt, RunIntoReusesTheResult) {
  Cell cell = cells::by_spec("lnlstm:5,7");
  const std::int64_t batch = 3;
  CpuBptt compiled(cell, batch);
  BackwardCell reference_cell = differentiate(as_f64(cell));
  BpttResult<float> result;
  result.grads.params.emplace_back(std::vector<std::int64_t>{2, 2});  // a wrong shape: replaced
  const float* kept_param_grad = nullptr;
  const float* kept_output = nullptr;
  std::int64_t previous_steps = -1;
  for (std::int64_t steps : {4, 4, 9, 4}) {
    SCOPED_TRACE("T=" + std::to_string(steps));
    auto args = random_sequence_args<float>(cell, steps, batch, static_cast<std::uint64_t>(steps));
    auto seeds = random_loss_gradients<float>(cell, steps, batch, static_cast<std::uint64_t>(steps + 1));
    compiled.run_into(args, seeds, result);
    auto want = reference_bptt(reference_cell, convert<float, double>(args), convert_seeds<float, double>(seeds));
    expect_matches(result.forward, want.forward, 1e-5, "forward");
    expect_grads(result.grads, want.grads, 1e-5, "grads");
    auto fresh = compiled.run(args, seeds);
    for (std::size_t p = 0; p < fresh.grads.params.size(); ++p)
      EXPECT_EQ(result.grads.params[p].data, fresh.grads.params[p].data) << "param " << p;
    // Parameter gradients do not depend on T: the same memory throughout.
    if (kept_param_grad) {
      EXPECT_EQ(result.grads.params[0].data.data(), kept_param_grad);
    }
    kept_param_grad = result.grads.params[0].data.data();
    // Outputs: the same memory while T stays the same.
    if (steps == previous_steps) {
      EXPECT_EQ(result.forward.outputs[0].data.data(), kept_output);
    }
    kept_output = result.forward.outputs[0].data.data();
    previous_steps = steps;
  }
}

TEST(CpuBptt, RandomCellsMatchTheReference) {
  const std::uint64_t seeds = kSanitized ? 3 : 10;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    Cell cell = random_cell(seed, DType::f64, 6 + static_cast<int>(seed % 8));
    SCOPED_TRACE(print_cell(cell));
    for (auto [steps, batch] : {std::pair<std::int64_t, std::int64_t>{3, 1}, {5, 20}}) check(cell, steps, batch, seed);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(CpuBptt, ZeroStepsPassTheStateGradientsThrough) {
  Cell cell = cells::lstm(3, 4);
  CpuBptt compiled(cell, 2);
  auto args = random_sequence_args<float>(cell, 1, 2, 1);
  args.inputs[0].shape[0] = 0;
  args.inputs[0].data.clear();
  auto seeds = random_loss_gradients<float>(cell, 0, 2, 1);
  auto result = compiled.run(args, seeds);
  EXPECT_EQ(result.grads.states[0].data, seeds.final_states[0].data);
  for (const auto& p : result.grads.params)
    for (float v : p.data) EXPECT_EQ(v, 0.0f);
}

TEST(CpuBptt, RejectsSeedsOfTheWrongShape) {
  Cell cell = cells::gru(3, 4);
  CpuBptt compiled(cell, 2);
  auto args = random_sequence_args<float>(cell, 5, 2, 1);
  auto seeds = random_loss_gradients<float>(cell, 4, 2, 1);
  EXPECT_THAT([&] { compiled.run(args, seeds); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(::testing::HasSubstr("[4,2,4]"), ::testing::HasSubstr("[5,2,4]"))));
}

}  // namespace
}  // namespace cellfuse
