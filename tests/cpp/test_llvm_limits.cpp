// Limits (issue 20): sizes that cannot be allocated are an Error naming the size, and inference
// over a very long sequence runs in memory that does not grow with its length (the CPU backend
// runs it in pieces of a few thousand rows; runtime/cpu/cpu_cell.cpp).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <malloc.h>

#include "backend_check.h"
#include "compiler/ir/error.h"
#include "frontend/cells.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/memory_limits.h"

namespace cellfuse {
namespace {

using namespace testing_support;
using ::testing::HasSubstr;

TEST(Limits, ATensorLargerThanMemoryIsAnErrorNamingItsSize) {
  try {
    HostTensor<float> t({1000000, 1000, 1000});
    FAIL() << "allocated 4 TB";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("[1000000,1000,1000]"));
    EXPECT_THAT(e.what(), HasSubstr("3725.3 GiB"));
    EXPECT_THAT(e.what(), HasSubstr("of memory is available"));
  }
  try {
    HostTensor<double> t({std::int64_t{1} << 40, std::int64_t{1} << 30});
    FAIL() << "the size overflowed";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("overflows 64 bits"));
  }
}

TEST(Limits, ASequenceTooLongForMemoryIsAnError) {
  const Cell cell = cells::lstm(512, 512);
  // Arguments of 100000 steps x 4096 rows x 512 inputs: 780 GiB.
  EXPECT_THAT([&] { random_sequence_args<float>(cell, 100000, 4096, 1); },
              ::testing::ThrowsMessage<Error>(HasSubstr("the arguments would take 838.869205 GB")));
  // A result of that size asked of a compiled cell directly.
  SequenceResult<float> result;
  EXPECT_THAT([&] { result.outputs.emplace_back(std::vector<std::int64_t>{100000, 4096, 512}); },
              ::testing::ThrowsMessage<Error>(HasSubstr("cannot allocate a tensor of [100000,4096,512] (781.2 GiB)")));
}

// A batch whose workspace no machine has: the CPU runner's buffers are checked before anything is
// read from the (here absent) caller's memory.
TEST(Limits, AWorkspaceLargerThanMemoryIsAnErrorNamingTheBatch) {
  const Cell cell = cells::elman(3, 5);
  const std::int64_t batch = std::int64_t{1} << 40;
  CpuCell compiled(cell, batch, 1);
  SequenceView<float> view;
  view.steps = 1;
  view.inputs.assign(cell.inputs.size(), nullptr);
  view.states.assign(cell.states.size(), nullptr);
  view.params.assign(cell.params.size(), nullptr);
  view.outputs.assign(cell.outputs.size(), nullptr);
  view.final_states.assign(cell.states.size(), nullptr);
  try {
    compiled.run_view(view);
    FAIL() << "ran a batch of 2^40";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("1099511627776"));
    EXPECT_THAT(e.what(), ::testing::AnyOf(HasSubstr("GiB"), HasSubstr("out of memory")));
  }
}

std::size_t heap_in_use() {
  const auto info = ::mallinfo2();
  return info.uordblks + info.hblkhd;
}

// The memory a run adds to the compiled cell (its workspace), the result's tensors allocated
// beforehand.
std::size_t workspace_growth(const Cell& cell, const SequenceArgs<float>& args) {
  CpuCell compiled(cell, 1, 1);
  SequenceResult<float> result;
  for (const auto& o : cell.outputs)
    result.outputs.emplace_back(std::vector<std::int64_t>{args.inputs[0].shape[0], 1, cell.graph.node(o.value).shape.features()});
  for (const auto& s : args.states) result.final_states.emplace_back(s.shape);
  const std::size_t before = heap_in_use();
  compiled.run_into(args, result);
  const std::size_t after = heap_in_use();
  return after > before ? after - before : 0;
}

TEST(Limits, AMillionStepsOfInferenceInMemoryIndependentOfTheLength) {
  const Cell cell = cells::lstm(8, 16);
  const std::int64_t long_steps = kSanitized ? 200000 : 1000000;
  const auto short_args = random_sequence_args<float>(cell, 20000, 1, 3);
  const auto long_args = random_sequence_args<float>(cell, long_steps, 1, 3);
  const std::size_t short_growth = workspace_growth(cell, short_args);
  const std::size_t long_growth = workspace_growth(cell, long_args);
  // Without pieces the long run's hoisted products alone would be long_steps x 64 floats (256 MB).
  EXPECT_LE(long_growth, short_growth + (std::size_t{1} << 20))
      << "workspace of " << long_steps << " steps: " << long_growth << " bytes; of 20000 steps: " << short_growth;
  EXPECT_LT(long_growth, std::size_t{16} << 20);
}

// Pieces give the results of one run: forward against the reference over several pieces (B=3:
// 2730 steps a piece), and BPTT, whose backward runs the pieces in reverse.
TEST(Limits, PiecesOfALongSequenceMatchTheReference) {
  const Cell cell = cells::gru(5, 7);
  const std::int64_t steps = kSanitized ? 3000 : 6000, batch = 3;
  const auto args = random_sequence_args<float>(cell, steps, batch, 5);
  const Cell reference = as_f64(cell);
  expect_matches(CpuCell(cell, batch, 1).run(args), interpret_sequence(reference, convert<float, double>(args)), 1e-5,
                 "forward in pieces");
  const auto seeds = random_loss_gradients<float>(cell, steps, batch, 6);
  const auto want = reference_bptt(differentiate(reference), convert<float, double>(args), convert_seeds<float, double>(seeds));
  const auto got = CpuBptt(cell, batch, 1).run(args, seeds);
  expect_matches(got.forward, want.forward, 1e-5, "training forward in pieces");
  expect_grads(got.grads, want.grads, 1e-4, "BPTT in pieces");
}

}  // namespace
}  // namespace cellfuse
