// amax, the maximum over the feature axis ([R,N] -> [R,1]): its meaning in the reference
// interpreter against a plain loop (NaN, -inf, ties), the CPU backend forward and BPTT against
// the f64 reference at odd sizes (reductions over concatenation pieces included), and its
// gradient's handling of ties (shared evenly, as torch.amax) on the reference and the CPU.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "backend_check.h"
#include "compiler/ir/op.h"
#include "frontend/builder.h"
#include "cpu_check.h"
#include "op_cells.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/reference/bptt.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using namespace testing_support;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNan = std::numeric_limits<double>::quiet_NaN();

Cell amax_of_input(std::int64_t n, DType dtype = DType::f64) {
  CellBuilder b("amax_only", dtype);
  Val x = b.input("x", n);
  b.output("m", amax(x));
  return std::move(b).finish();
}

// Rows with a NaN, with -inf, all -inf, ties, and fresh random values.
std::vector<std::vector<double>> special_rows(std::int64_t n) {
  std::vector<std::vector<double>> rows;
  std::vector<double> base;
  for (std::int64_t j = 0; j < n; ++j) base.push_back(std::sin(1.7 * static_cast<double>(j) + 0.3) * 4.0);
  rows.push_back(base);
  auto with_nan = base;
  with_nan[static_cast<std::size_t>(n / 2)] = kNan;
  rows.push_back(with_nan);
  auto with_neg_inf = base;
  with_neg_inf[0] = -kInf;
  rows.push_back(with_neg_inf);
  rows.push_back(std::vector<double>(static_cast<std::size_t>(n), -kInf));
  auto tied = base;
  for (auto& v : tied) v = std::round(v);
  rows.push_back(tied);
  return rows;
}

double plain_max(const std::vector<double>& row) {
  double m = -kInf;
  for (double v : row) {
    if (std::isnan(v)) return v;
    m = v > m ? v : m;
  }
  return m;
}

TEST(AmaxReference, IsThePlainMaximumWithNanWinning) {
  for (std::int64_t n : {1, 7, 33}) {
    auto rows = special_rows(n);
    const auto batch = static_cast<std::int64_t>(rows.size());
    StepArgs<double> args;
    args.inputs.emplace_back(std::vector<std::int64_t>{batch, n});
    for (std::int64_t r = 0; r < batch; ++r)
      for (std::int64_t j = 0; j < n; ++j) args.inputs[0].data[static_cast<std::size_t>(r * n + j)] = rows[r][j];
    auto out = interpret_step(amax_of_input(n), args);
    for (std::int64_t r = 0; r < batch; ++r) {
      const double want = plain_max(rows[r]), got = out.outputs[0].data[static_cast<std::size_t>(r)];
      if (std::isnan(want)) EXPECT_TRUE(std::isnan(got)) << "n=" << n << " row " << r;
      else EXPECT_EQ(got, want) << "n=" << n << " row " << r;
    }
  }
}

// The CPU backend on the same rows: exact (a maximum rounds nothing), NaN and -inf included,
// across the vector body and the scalar tail (n = 1, 7, 33, 70).
TEST(AmaxCpu, SpecialValuesExactly) {
  for (DType dtype : {DType::f32, DType::f64})
    for (std::int64_t n : {1, 7, 33, 70}) {
      auto rows = special_rows(n);
      const auto batch = static_cast<std::int64_t>(rows.size());
      Cell cell = amax_of_input(n, dtype);
      auto check = [&](auto zero) {
        using T = decltype(zero);
        SequenceArgs<T> args;
        args.inputs.emplace_back(std::vector<std::int64_t>{1, batch, n});
        for (std::int64_t r = 0; r < batch; ++r)
          for (std::int64_t j = 0; j < n; ++j) args.inputs[0].data[static_cast<std::size_t>(r * n + j)] = static_cast<T>(rows[r][j]);
        auto got = compile_cpu(cell, batch)->run(args);
        for (std::int64_t r = 0; r < batch; ++r) {
          const double want = static_cast<T>(plain_max(rows[r]));
          const double value = got.outputs[0].data[static_cast<std::size_t>(r)];
          if (std::isnan(want)) EXPECT_TRUE(std::isnan(value)) << dtype_name(dtype) << " n=" << n << " row " << r;
          else EXPECT_EQ(value, want) << dtype_name(dtype) << " n=" << n << " row " << r;
        }
      };
      if (dtype == DType::f32) check(0.0f);
      else check(0.0);
    }
}

TEST(AmaxCpu, SoftmaxCellMatchesTheReference) {
  for (DType dtype : {DType::f32, DType::f64})
    for (auto [input, hidden] : {std::pair<std::int64_t, std::int64_t>{5, 7}, {3, 33}, {9, 1}}) {
      Cell cell = softmax_amax_cell(dtype, input, hidden);
      for (std::int64_t batch : {1, 3, 64})
        for (std::int64_t steps : {1, 5}) {
          const std::string what = std::string(dtype_name(dtype)) + " H=" + std::to_string(hidden) +
                                   " B=" + std::to_string(batch) + " T=" + std::to_string(steps);
          const std::uint64_t seed = static_cast<std::uint64_t>(hidden * 100 + batch * 10 + steps);
          expect_cpu_forward_and_bptt(cell, steps, batch, seed, what);
        }
    }
}

// Tied maxima share the gradient evenly (torch.amax's rule), whatever their positions; a row
// whose maximum is NaN gets zeros (torch.amax would give NaN there).
TEST(AmaxGradient, TiesShareEvenlyOnTheReferenceAndTheCpu) {
  const std::int64_t n = 5;
  const std::vector<std::vector<double>> rows = {
      {1.0, 3.0, -2.0, 3.0, 0.5}, {4.0, 4.0, 4.0, 1.0, 4.0}, {-1.0, -7.0, -0.5, -3.0, -2.0}, {2.0, kNan, 1.0, 0.0, -1.0}};
  const std::vector<std::vector<double>> want = {
      {0, 0.5, 0, 0.5, 0}, {0.25, 0.25, 0.25, 0, 0.25}, {0, 0, 1, 0, 0}, {0, 0, 0, 0, 0}};
  const auto batch = static_cast<std::int64_t>(rows.size());
  Cell cell = amax_of_input(n);
  SequenceArgs<double> args;
  args.inputs.emplace_back(std::vector<std::int64_t>{1, batch, n});
  for (std::int64_t r = 0; r < batch; ++r)
    for (std::int64_t j = 0; j < n; ++j) args.inputs[0].data[static_cast<std::size_t>(r * n + j)] = rows[r][j];
  LossGradients<double> seeds = random_loss_gradients<double>(cell, 1, batch, 3);
  for (double& v : seeds.outputs[0].data) v = 1.0;
  auto reference = reference_bptt(differentiate(cell), args, seeds);
  auto cpu = CpuBptt(cell, batch).run(args, seeds);
  for (std::int64_t r = 0; r < batch; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      const auto e = static_cast<std::size_t>(r * n + j);
      EXPECT_EQ(reference.grads.inputs[0].data[e], want[r][j]) << "reference row " << r << " column " << j;
      EXPECT_EQ(cpu.grads.inputs[0].data[e], want[r][j]) << "CPU row " << r << " column " << j;
    }
}

}  // namespace
}  // namespace cellfuse
