// log1p and expm1 (compiler/ir/ops.def), native so that small arguments keep their digits: the
// CPU kernels within a few ulps of libm's log1p/expm1 in double, across magnitudes from 1e-30 to
// overflow and the special values; the CUDA text is libm's; a cell using both matches the f64
// reference forward and through BPTT on the CPU at odd sizes. (The spelled-out log(1 + x) of
// f32 is off by ~1e-3 relative at x = 1e-5: these tests would fail on it.)
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "cpu_check.h"
#include "frontend/builder.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using namespace testing_support;

std::vector<double> points() {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> xs = {-inf, -2.0, -1.0, -0.9999, -0.5, -1e-3, -1e-7, -1e-30, -0.0, 0.0, 1e-30, 3e-8,
                            1e-5, 1e-3, 0.25,  1.0,  20.0,    88.0, 700.0, inf, std::nan("")};
  for (int i = 0; i < 300; ++i) xs.push_back(std::ldexp(std::sin(0.91 * i), -(i % 40)));  // |x| from 1 down to 1e-12
  return xs;
}

// ulps of `got` from `want` in T (want rounded to T first); 0 when both are the same special value.
template <class T>
double ulps(T got, double want) {
  const T w = static_cast<T>(want);
  if (std::isnan(w)) return std::isnan(got) ? 0 : 1e30;
  if (std::isinf(w) || w == 0) return got == w ? 0 : 1e30;
  const T spacing = std::nextafter(std::abs(w), std::numeric_limits<T>::infinity()) - std::abs(w);
  return std::abs(static_cast<double>(got) - want) / spacing;
}

template <class T>
void check_against_libm(DType dtype, double max_ulps) {
  const std::vector<double> xs = points();
  const auto n = static_cast<std::int64_t>(xs.size());
  CellBuilder b("small_args", dtype);
  Val x = b.input("x", n);
  b.output("log1p", log1p(x));
  b.output("expm1", expm1(x));
  Cell cell = std::move(b).finish();
  SequenceArgs<T> args;
  args.inputs.emplace_back(std::vector<std::int64_t>{1, 1, n});
  for (std::int64_t j = 0; j < n; ++j) args.inputs[0].data[static_cast<std::size_t>(j)] = static_cast<T>(xs[j]);
  auto got = compile_cpu(cell, 1)->run(args);
  for (std::int64_t j = 0; j < n; ++j) {
    const double x_t = static_cast<double>(args.inputs[0].data[static_cast<std::size_t>(j)]);
    const T l = got.outputs[0].data[static_cast<std::size_t>(j)], e = got.outputs[1].data[static_cast<std::size_t>(j)];
    EXPECT_LE(ulps<T>(l, std::log1p(x_t)), max_ulps) << dtype_name(dtype) << " log1p(" << x_t << ") = " << l;
    EXPECT_LE(ulps<T>(e, std::expm1(x_t)), max_ulps) << dtype_name(dtype) << " expm1(" << x_t << ") = " << e;
  }
}

TEST(Log1pExpm1, CpuKernelsKeepTheDigitsOfSmallArguments) {
  check_against_libm<float>(DType::f32, 4);
  check_against_libm<double>(DType::f64, 4);
}

TEST(Log1pExpm1, CudaTextIsLibms) {
  EXPECT_EQ(cuda_codegen::cuda_pointwise(OpKind::log1p, {"v0"}, DType::f32), "log1pf(v0)");
  EXPECT_EQ(cuda_codegen::cuda_pointwise(OpKind::expm1, {"v2"}, DType::f64), "expm1(v2)");
}

Cell log_cell(DType dtype, std::int64_t input, std::int64_t hidden) {
  CellBuilder b("log1p_expm1", dtype);
  Val x = b.input("x", input);
  Val h = b.state("h", hidden);
  Val W = b.param("W", {hidden, input});
  Val U = b.param("U", {hidden, hidden});
  Val z = tanh(linear(x, W) + linear(h, U));
  b.output("y", log1p(z * 0.5) + expm1(z * h));
  b.next(h, expm1(z * 0.25) + log1p(h * h) * 0.5);
  return std::move(b).finish();
}

TEST(Log1pExpm1, CpuForwardAndBpttMatchTheReference) {
  for (DType dtype : {DType::f32, DType::f64})
    for (auto [input, hidden] : {std::pair<std::int64_t, std::int64_t>{3, 1}, {5, 7}, {4, 33}})
      for (std::int64_t batch : {1, 3, 17}) {
        Cell cell = log_cell(dtype, input, hidden);
        const std::string what = std::string(dtype_name(dtype)) + " H=" + std::to_string(hidden) + " B=" + std::to_string(batch);
        expect_cpu_forward_and_bptt(cell, 5, batch, static_cast<std::uint64_t>(hidden * 10 + batch), what);
      }
}

}  // namespace
}  // namespace cellfuse
