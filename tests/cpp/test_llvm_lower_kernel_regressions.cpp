// Kernel lowering regressions (compiler/kernel/lower_kernel.cpp), each run on the CPU backend and
// compared with the f64 reference (interpreter, reference BPTT) at odd batch sizes.
//
// Reductions over a concatenation: a sum or mean whose inline input changes concatenation pieces
// part-way (a cat, or a slice straddling one) used to be lowered as one element loop reading the
// first piece for every column. Lowering rejected the kernel ("load out of bounds", the backward
// step of random_cell(15, *, 12)), or, where the first piece was a slice of a wider buffer,
// silently summed the wrong columns.
#include <gtest/gtest.h>

#include <string>

#include "backend_check.h"
#include "compiler/ir/text.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "compiler/passes/hoist.h"
#include "random_cells.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using namespace testing_support;

// The forward on compile_cpu against the interpreter, then forward + backward on CpuBptt against
// reference_bptt: 1e-5 relative in f32, 1e-11 in f64.
void check(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed) {
  const std::string what = cell.name + " T=" + std::to_string(steps) + " B=" + std::to_string(batch);
  SCOPED_TRACE(what);
  auto forward = compile_cpu(cell, batch);
  CpuBptt training(cell, batch);
  BackwardCell reference_cell = differentiate(as_f64(cell));
  if (cell.graph.dtype() == DType::f32) {
    auto args = random_sequence_args<float>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<float>(cell, steps, batch, seed + 1);
    expect_matches(forward->run(args), interpret_sequence(as_f64(cell), convert<float, double>(args)), 1e-5, what + " forward");
    auto want = reference_bptt(reference_cell, convert<float, double>(args), convert_seeds<float, double>(seeds));
    auto got = training.run(args, seeds);
    expect_matches(got.forward, want.forward, 1e-5, what + " bptt forward");
    expect_grads(got.grads, want.grads, 1e-5, what + " f32");
  } else {
    auto args = random_sequence_args<double>(cell, steps, batch, seed);
    auto seeds = random_loss_gradients<double>(cell, steps, batch, seed + 1);
    expect_matches(forward->run(args), interpret_sequence(cell, args), 1e-11, what + " forward");
    auto want = reference_bptt(reference_cell, args, seeds);
    auto got = training.run(args, seeds);
    expect_matches(got.forward, want.forward, 1e-11, what + " bptt forward");
    expect_grads(got.grads, want.grads, 1e-11, what + " f64");
  }
}

void check_odd_sizes(const Cell& cell) {
  for (std::int64_t batch : {1, 3, 17, 67}) {
    check(cell, 5, batch, 40 + static_cast<std::uint64_t>(batch));
    if (::testing::Test::HasFailure()) return;
  }
}

// The bug report: the backward step's post stage of this random cell computes
// sum(-(a[0:3] + slice(cat(a, 0), 3, 3))), whose second term changes pieces after two columns.
TEST(LowerKernel, RandomCell15BackwardStep) {
  for (DType dtype : {DType::f32, DType::f64}) {
    Cell cell = random_cell(15, dtype, 12);
    SCOPED_TRACE(print_cell(cell));
    // What the report reproduced with (compile_cuda_program runs the same compile_stage).
    SequencePlan plan = hoist(optimize(differentiate(cell).step));
    ASSERT_TRUE(plan.post.cell);
    EXPECT_NO_THROW(compile_stage(*plan.post.cell, false, "post"));
    check_odd_sizes(cell);
  }
}

// The smallest cell with the same failure: a sum over a concatenation. The slice of the report
// is not needed; the one loop of the reduction read x[j] for j < 5 (x has 3 columns).
constexpr const char* kSumOfCat = R"(
cell sum_of_cat f32 {
  %x = input : [B,3]
  %h = state : [B,2]
  %joined = cat %x, %h : [B,5]
  %total = sum %joined : [B,1]
  %spread = expand %total {n=2} : [B,2]
  %h_next = tanh %spread : [B,2]
  output y = %total
  next h = %h_next
}
)";

TEST(LowerKernel, SumOverAConcatenation) { check_odd_sizes(parse_cell(kSumOfCat)); }

// The shape the report describes: a reduction over a slice straddling a concatenation's pieces.
constexpr const char* kSumOfSlicedCat = R"(
cell sum_of_sliced_cat f32 {
  %x = input : [B,3]
  %h = state : [B,2]
  %joined = cat %x, %h : [B,5]
  %window = slice %joined {start=1, len=3} : [B,3]
  %total = sum %window : [B,1]
  %spread = expand %total {n=2} : [B,2]
  %h_next = tanh %spread : [B,2]
  output y = %total
  next h = %h_next
}
)";

TEST(LowerKernel, SumOverASliceOfAConcatenation) { check_odd_sizes(parse_cell(kSumOfSlicedCat)); }

// The silent form: the first piece is a slice of a wider state, so the single loop stayed in
// bounds and averaged h[0..4] instead of h[0..1], x[0..2]. Nothing threw; only results show it.
constexpr const char* kMeanOfCatOfSlice = R"(
cell mean_of_cat_of_slice f32 {
  %x = input : [B,3]
  %h = state : [B,7]
  %head = slice %h {start=0, len=2} : [B,2]
  %joined = cat %head, %x : [B,5]
  %m = mean %joined : [B,1]
  %mm = expand %m {n=7} : [B,7]
  %centered = sub %h, %mm : [B,7]
  %h_next = tanh %centered : [B,7]
  output y = %m
  next h = %h_next
}
)";

TEST(LowerKernel, MeanOverAConcatenationOfASlice) { check_odd_sizes(parse_cell(kMeanOfCatOfSlice)); }

// Pieces cut at different columns inside one pointwise expression, a constant piece (what the
// backward of a slice makes), nested cats and a mean, in f64 and f32.
constexpr const char* kMeanOverPieces = R"(
cell mean_over_pieces f64 {
  %x = input : [B,5]
  %h = state : [B,3]
  %a = tanh %x : [B,5]
  %zero = constant {value=0} : [B,1]
  %padded = cat %a, %zero : [B,6]
  %tail = slice %padded {start=3, len=3} : [B,3]
  %head = slice %a {start=0, len=3} : [B,3]
  %s = add %head, %tail : [B,3]
  %hs = mul %h, %s : [B,3]
  %hh = cat %h, %hs : [B,6]
  %nested = cat %hh, %padded : [B,12]
  %window = slice %nested {start=2, len=7} : [B,7]
  %w = mul %window, %window : [B,7]
  %n = neg %w : [B,7]
  %m = mean %n : [B,1]
  %mm = expand %m {n=3} : [B,3]
  %u = add %s, %h : [B,3]
  %v = sub %u, %mm : [B,3]
  %h_next = tanh %v : [B,3]
  output y = %m
  next h = %h_next
}
)";

TEST(LowerKernel, MeanOverPiecesCutAtDifferentColumns) {
  std::string text = kMeanOverPieces;
  check_odd_sizes(parse_cell(text));
  text.replace(text.find(" f64 {"), 6, " f32 {");
  check_odd_sizes(parse_cell(text));
}

// Random cell 200447 (tests/stress, docs/RELIABILITY.md), minimized: the slice reads none of the
// product's columns, so the product's gradient is a constant 0 and the backward built
// `dx = matmul(0, W)`, which no product kernel takes ("matrix product operand not in memory").
// The simplifier now folds a product with a zero constant to zero; the parameter's gradient is 0.
constexpr const char* kUnreadProduct = R"(
cell unread_product f32 {
  %x0 = input : [B,11]
  %h0 = state : [B,6]
  %p1 = param : [3,6]
  %c = constant {value=0.5} : [B,5]
  %l = linear %h0, %p1 : [B,3]
  %joined = cat %x0, %c, %l : [B,19]
  %y = slice %joined {start=9, len=6} : [B,6]
  %h_next = tanh %h0 : [B,6]
  output y0 = %y
  next h0 = %h_next
}
)";

TEST(LowerKernel, ProductWhoseResultNothingReads) {
  check_odd_sizes(parse_cell(kUnreadProduct));
  std::string f64 = kUnreadProduct;
  f64.replace(f64.find(" f32 "), 5, " f64 ");
  check_odd_sizes(parse_cell(f64));
}

// The pipeline fuzzer (tests/fuzz/fuzz_pipeline, corpus_pipeline/amax_of_parameters.cell): a
// reduction over values computed from parameters alone. Such work is not in any kernel (it is
// recomputed inline where it is read), but a reduction is a loop of its own and cannot be
// inlined: compile() threw "internal error: amax reached inline emission". An invariant
// reduction now joins the first kernel, and a later kernel reads it from memory.
constexpr const char* kReductionsOfParameters = R"(
cell reductions_of_parameters f32 {
  %x = input : [B,5]
  %h = state : [B,4]
  %b = param : [4]
  %g = param : [4]
  %bb = broadcast %b : [B,4]
  %gg = broadcast %g : [B,4]
  %t = tanh %bb : [B,4]
  %big = amax %t : [B,1]
  %sq = mul %gg, %gg : [B,4]
  %norm2 = sum %sq : [B,1]
  %avg = mean %t : [B,1]
  %inv = rsqrt %norm2 : [B,1]
  %scale = expand %inv {n=4} : [B,4]
  %unit = mul %gg, %scale : [B,4]
  %xs = slice %x {start=1, len=4} : [B,4]
  %u = mul %xs, %unit : [B,4]
  %shift = expand %big {n=4} : [B,4]
  %v = add %u, %h : [B,4]
  %w = sub %v, %shift : [B,4]
  %h_next = tanh %w : [B,4]
  output y = %avg
  next h = %h_next
}
)";

TEST(LowerKernel, ReductionsOfParametersAlone) {
  std::string text = kReductionsOfParameters;
  check_odd_sizes(parse_cell(text));
  text.replace(text.find(" f32 {"), 6, " f64 {");
  check_odd_sizes(parse_cell(text));
}

// The same after a matrix product: at large batches the product runs as a GEMM between two
// kernels, so the reduction (first kernel) is read by the second kernel from memory.
constexpr const char* kReductionOfParametersAfterAProduct = R"(
cell reduction_after_product f32 {
  %x = input : [B,3]
  %h = state : [B,6]
  %W = param : [6,6]
  %b = param : [6]
  %bb = broadcast %b : [B,6]
  %sq = mul %bb, %bb : [B,6]
  %norm2 = sum %sq : [B,1]
  %z = matmul %h, %W : [B,6]
  %zt = tanh %z : [B,6]
  %n = expand %norm2 {n=6} : [B,6]
  %v = div %zt, %n : [B,6]
  %xs = sum %x : [B,1]
  %xe = expand %xs {n=6} : [B,6]
  %h_next = add %v, %xe : [B,6]
  output y = %norm2
  next h = %h_next
}
)";

TEST(LowerKernel, ReductionOfParametersReadAfterAProduct) {
  check_odd_sizes(parse_cell(kReductionOfParametersAfterAProduct));
}

}  // namespace
}  // namespace cellfuse
