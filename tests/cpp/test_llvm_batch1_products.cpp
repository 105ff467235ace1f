// The batch-1 (small-batch) recurrent step on the CPU: the loop stage's products with the state
// run inside the loop kernel as matrix-vector products over weights laid out in panels
// (kernel_codegen's MatVec), shared by columns among the team. Sizes are picked so that every
// part of the layout runs: whole panels, the vectors after the last panel, the single columns
// after those (4 * 37 = 148 = 2 panels of 64 + 1 vector + 4 columns; 4 * 300 = 1200 = 18
// panels + 3 vectors), for the LSTM, the GRU and a cell of no standard family. Every result is
// checked against the f64 reference interpreter on fresh random arguments, on 1 and 2 threads.
#include <gtest/gtest.h>

#include "backend_check.h"
#include "cpu_check.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using testing_support::as_f64;
using testing_support::convert;
using testing_support::expect_matches;

// Not an LSTM or a GRU: two products of slices of one state and a product of the other state,
// into gates and a candidate that meet the states in other ways than the standard cells do.
Cell two_state_cell(std::int64_t input, std::int64_t hidden) {
  CellBuilder b("two_state");
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val m = b.state("m", hidden);
  Val W = b.param("W", {2 * hidden, input});
  Val U_low = b.param("U_low", {hidden, hidden / 2});
  Val U_high = b.param("U_high", {hidden, hidden - hidden / 2});
  Val V = b.param("V", {hidden, hidden});
  Val bias = b.param("bias", {hidden});
  Val xw = linear(x, W);
  Val gate = sigmoid(slice(xw, 0, hidden) + linear(slice(h, 0, hidden / 2), U_low) +
                     linear(slice(h, hidden / 2, hidden - hidden / 2), U_high, bias));
  Val candidate = tanh(slice(xw, hidden, hidden) + linear(m, V) * h);
  Val h2 = gate * candidate + (1.0 - gate) * m;
  Val m2 = 0.5 * (m + h2);
  b.output("y", h2 * 2.0);
  b.next(h, h2);
  b.next(m, m2);
  return std::move(b).finish();
}

void check(const Cell& cell, std::int64_t steps, std::int64_t batch, int threads, std::uint64_t seed) {
  const std::string what = cell.name + " B=" + std::to_string(batch) + " threads=" + std::to_string(threads);
  auto args = random_sequence_args<float>(cell, steps, batch, seed);
  auto want = interpret_sequence(as_f64(cell), convert<float, double>(args));
  CpuCell compiled(cell, batch, threads);
  // The path under test: no product of the loop stage left to a GEMM step.
  const std::string described = compiled.describe();
  const std::string loop = described.substr(described.find("# program of stage loop"));
  EXPECT_NE(loop.find("matvec"), std::string::npos) << what;
  EXPECT_EQ(loop.find("gemm"), std::string::npos) << what << "\n" << loop;
  expect_matches(compiled.run(args), want, 1e-5, what);
}

TEST(Batch1Products, OddHiddenSizesMatchTheInterpreter) {
  const std::int64_t sizes[] = {37, 300};
  for (std::int64_t hidden : sizes) {
    std::vector<Cell> cells_to_check = {cells::lstm(23, hidden), cells::gru(hidden, hidden), two_state_cell(19, hidden)};
    for (const Cell& cell : cells_to_check) {
      for (int threads : {1, 2}) check(cell, 7, 1, threads, static_cast<std::uint64_t>(hidden + threads));
      check(cell, 7, 5, 2, static_cast<std::uint64_t>(hidden + 5));  // rows done together (up to the fusion limit)
    }
  }
}

// The batch-1 forward keeps its place in training: forward and BPTT gradients against the f64
// reference BPTT.
TEST(Batch1Products, ForwardAndBackwardAtBatchOne) {
  testing_support::expect_cpu_forward_and_bptt(two_state_cell(11, 37), 6, 1, 5, "two_state 37");
  testing_support::expect_cpu_forward_and_bptt(cells::lstm(9, 300), 4, 1, 6, "lstm 300");
}

// A long sequence at batch 1: errors of the products do not grow step after step beyond the
// tolerance (a wrong column in a tail of the layout would show after a few steps anyway).
TEST(Batch1Products, LongSequenceAtBatchOne) {
  check(cells::lstm(16, 300), 200, 1, 2, 17);
}

}  // namespace
}  // namespace cellfuse
