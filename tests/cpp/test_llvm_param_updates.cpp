// Parameters changed in place between runs (an optimizer step on the same buffers) are seen by
// the next run: the runner keeps rearranged copies of weights (transposed for fused products,
// packed for GEMM steps) and must refresh exactly those whose bits changed.
#include <gtest/gtest.h>

#include "backend_check.h"
#include "frontend/cells.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using testing_support::as_f64;
using testing_support::convert;
using testing_support::expect_matches;

// Runs the same args object three times, changing the first parameter in place before the second
// run and the second one before the third (W_ih and W_hh of the standard cells: a hoisted and a
// recurrent product); every run must match the interpreter on the parameters of that moment.
void check_updates(const std::string& spec, std::int64_t batch) {
  Cell cell = cells::by_spec(spec);
  auto compiled = compile_cpu(cell, batch);
  Cell reference = as_f64(cell);
  auto args = random_sequence_args<float>(cell, 5, batch, 31);
  SequenceResult<float> result;
  for (int round = 0; round < 3; ++round) {
    if (round > 0) {
      auto& p = args.params[static_cast<std::size_t>(round - 1)].data;
      for (std::size_t i = 0; i < p.size(); ++i) p[i] = p[i] * 0.5f + 0.01f * static_cast<float>(i % 7);
    }
    compiled->run_into(args, result);  // the same buffers every round
    expect_matches(result, interpret_sequence(reference, convert<float, double>(args)), 1e-5,
                   spec + " B=" + std::to_string(batch) + " round " + std::to_string(round));
  }
}

TEST(ParamUpdates, FusedProductsSeeChangedWeights) {
  check_updates("lstm:7,33", 3);  // small batch: fused products on transposed weights
  check_updates("gru:5,17", 1);
}

TEST(ParamUpdates, PackedProductsSeeChangedWeights) {
  check_updates("lstm:7,33", 20);  // large batch: GEMM steps on packed weights
  check_updates("elman_proj:9,13", 17);
}

}  // namespace
}  // namespace cellfuse
