// The composite pointwise ops (compiler/ir/composite_ops.h: hardsigmoid, softsign), each defined
// once by a formula that the interpreter, both code generators and autodiff instantiate: their
// values against an independent loop written from PyTorch's definitions (special values
// included), the CPU backend forward and BPTT against the f64 reference at odd sizes, exactly
// equal to the interpreter in the same type, and their gradient rules against PyTorch's.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend_check.h"
#include "cpu_check.h"
#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/ir/composite_ops.h"
#include "compiler/ir/pointwise_math.h"
#include "frontend/builder.h"
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

// PyTorch's definitions: hardsigmoid = 0 for x <= -3, 1 for x >= 3, x / 6 + 1 / 2 between;
// softsign = x / (1 + |x|).
double torch_hardsigmoid(double x) { return x <= -3 ? 0.0 : x >= 3 ? 1.0 : x / 6.0 + 0.5; }
double torch_softsign(double x) { return x / (1.0 + std::abs(x)); }

std::vector<double> sample_points() {
  std::vector<double> xs = {-kInf, -1e30, -3.0000001, -3.0, -2.9999999, -1.0, -1e-300, -0.0, 0.0, 1e-300,
                            0.5,   2.9999999, 3.0, 3.0000001, 7.25, 1e30, kInf, kNan};
  for (int i = 0; i < 200; ++i) xs.push_back(std::sin(0.37 * i) * (1 + i % 7));
  return xs;
}

TEST(CompositeOps, ScalarMeaningIsPyTorchs) {
  for (double x : sample_points()) {
    const double hs = pointwise_value<double>(OpKind::hardsigmoid, x);
    const double ss = pointwise_value<double>(OpKind::softsign, x);
    if (std::isnan(x)) {
      EXPECT_TRUE(std::isnan(hs));
      EXPECT_TRUE(std::isnan(ss));
      continue;
    }
    EXPECT_NEAR(hs, torch_hardsigmoid(x), 4e-16) << "hardsigmoid(" << x << ")";
    if (std::isinf(x)) EXPECT_TRUE(std::isnan(ss)) << "softsign(" << x << "): inf / inf, as x / (1 + |x|) in PyTorch";
    else EXPECT_DOUBLE_EQ(ss, torch_softsign(x)) << "softsign(" << x << ")";
  }
  EXPECT_EQ(pointwise_value<double>(OpKind::hardsigmoid, -3.0), 0.0);
  EXPECT_EQ(pointwise_value<double>(OpKind::hardsigmoid, 3.0), 1.0);
  EXPECT_EQ(pointwise_value<float>(OpKind::hardsigmoid, 1e30f), 1.0f);
  EXPECT_TRUE(std::signbit(pointwise_value<double>(OpKind::softsign, -0.0)));
}

TEST(CompositeOps, CudaTextIsTheFormula) {
  EXPECT_EQ(cuda_codegen::cuda_pointwise(OpKind::softsign, {"v0"}, DType::f32), "(v0 / ((fabsf(v0)) + 1.0f))");
  EXPECT_EQ(cuda_codegen::cuda_pointwise(OpKind::hardsigmoid, {"v1"}, DType::f64),
            "((cf_min((cf_max((v1 + 3.0), 0.0)), 6.0)) / 6.0)");
  EXPECT_TRUE(is_composite(OpKind::hardsigmoid) && is_composite(OpKind::softsign));
  EXPECT_FALSE(is_composite(OpKind::sigmoid));
}

TEST(CompositeOps, CpuForwardAndBpttMatchTheReference) {
  for (DType dtype : {DType::f32, DType::f64})
    for (auto [input, hidden] : {std::pair<std::int64_t, std::int64_t>{3, 1}, {5, 7}, {4, 33}}) {
      Cell cell = composite_cell(dtype, input, hidden);
      for (std::int64_t batch : {1, 3, 64}) {
        const std::string what = std::string(dtype_name(dtype)) + " H=" + std::to_string(hidden) + " B=" + std::to_string(batch);
        expect_cpu_forward_and_bptt(cell, 4, batch, static_cast<std::uint64_t>(hidden * 10 + batch), what);
      }
    }
}

// The CPU kernel computes the formula with the same operations as the interpreter: the same
// bits, special values included, in the vector body and the scalar tail.
TEST(CompositeOps, CpuIsBitwiseTheInterpreterOnSpecialValues) {
  const std::vector<double> points = sample_points();
  const auto n = static_cast<std::int64_t>(points.size());
  for (DType dtype : {DType::f32, DType::f64}) {
    CellBuilder b("special", dtype);
    Val x = b.input("x", n);
    b.output("hs", hardsigmoid(x));
    b.output("ss", softsign(x));
    Cell cell = std::move(b).finish();
    auto check = [&](auto zero) {
      using T = decltype(zero);
      SequenceArgs<T> args;
      args.inputs.emplace_back(std::vector<std::int64_t>{1, 1, n});
      for (std::int64_t j = 0; j < n; ++j) args.inputs[0].data[static_cast<std::size_t>(j)] = static_cast<T>(points[j]);
      auto got = compile_cpu(cell, 1)->run(args);
      auto want = interpret_sequence(cell, args);
      for (std::size_t o = 0; o < 2; ++o)
        for (std::int64_t j = 0; j < n; ++j) {
          const T g = got.outputs[o].data[static_cast<std::size_t>(j)], w = want.outputs[o].data[static_cast<std::size_t>(j)];
          if (std::isnan(w)) EXPECT_TRUE(std::isnan(g)) << o << " at " << points[j];
          else EXPECT_EQ(g, w) << dtype_name(dtype) << " output " << o << " at x = " << points[j];
        }
    };
    if (dtype == DType::f32) check(0.0f);
    else check(0.0);
  }
}

// PyTorch's backward rules: hardsigmoid passes dy / 6 strictly inside (-3, 3) and exactly 0
// elsewhere (the ends included); softsign's is dy / (1 + |x|)^2.
TEST(CompositeOps, GradientRulesArePyTorchs) {
  const std::vector<double> xs = {-4.0, -3.0, -2.5, -0.0, 0.75, 2.999, 3.0, 12.0};
  const auto n = static_cast<std::int64_t>(xs.size());
  CellBuilder b("grads", DType::f64);
  Val x = b.input("x", n);
  b.output("hs", hardsigmoid(x));
  b.output("ss", softsign(x));
  Cell cell = std::move(b).finish();
  SequenceArgs<double> args;
  args.inputs.emplace_back(std::vector<std::int64_t>{1, 1, n});
  args.inputs[0].data = xs;
  for (int which = 0; which < 2; ++which) {
    LossGradients<double> seeds = random_loss_gradients<double>(cell, 1, 1, 5);
    std::vector<double> dy(xs.size());
    for (std::size_t j = 0; j < xs.size(); ++j) dy[j] = 0.5 + 0.25 * static_cast<double>(j);
    seeds.outputs[0].data = which == 0 ? dy : std::vector<double>(xs.size(), 0.0);
    seeds.outputs[1].data = which == 1 ? dy : std::vector<double>(xs.size(), 0.0);
    auto got = reference_bptt(differentiate(cell), args, seeds);
    for (std::size_t j = 0; j < xs.size(); ++j) {
      const double a = std::abs(xs[j]);
      const double want = which == 0 ? (xs[j] > -3 && xs[j] < 3 ? dy[j] * (1.0 / 6.0) : 0.0) : dy[j] / ((1 + a) * (1 + a));
      EXPECT_DOUBLE_EQ(got.grads.inputs[0].data[j], want) << (which ? "softsign" : "hardsigmoid") << " at " << xs[j];
    }
  }
}

}  // namespace
}  // namespace cellfuse
