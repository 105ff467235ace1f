// Property test: random cells over every op, compiled for the CPU, match the f64 interpreter.
#include <gtest/gtest.h>

#include "backend_check.h"
#include "compiler/ir/text.h"
#include "random_cells.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using namespace testing_support;

TEST(RandomGraphs, CpuMatchesTheInterpreter) {
  const std::uint64_t seeds = kSanitized ? 10 : 40;
  for (std::uint64_t seed = 1; seed <= seeds; ++seed) {
    for (DType dtype : {DType::f32, DType::f64}) {
      Cell cell = random_cell(seed, dtype, 6 + static_cast<int>(seed % 10));
      SCOPED_TRACE("seed " + std::to_string(seed) + "\n" + print_cell(cell));
      for (auto [steps, batch] : {std::pair<std::int64_t, std::int64_t>{1, 1}, {2, 3}, {37, 64}}) {
        auto compiled = compile_cpu(cell, batch);
        Cell reference = as_f64(cell);
        const std::string what = "T=" + std::to_string(steps) + " B=" + std::to_string(batch);
        if (dtype == DType::f32) {
          auto args = random_sequence_args<float>(cell, steps, batch, seed);
          expect_matches(compiled->run(args), interpret_sequence(reference, convert<float, double>(args)), 1e-5, what);
        } else {
          auto args = random_sequence_args<double>(cell, steps, batch, seed);
          expect_matches(compiled->run(args), interpret_sequence(reference, args), 1e-12, what);
        }
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

}  // namespace
}  // namespace cellfuse
