// The graph passes, each tested as text: parse Before, run ONE pass, and compare the printed
// result with the printed Expected. Every rewrite is also checked against the reference
// interpreter (before and after must compute the same values), and the whole optimize() pipeline
// is checked on the standard cells.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/lower.h"
#include "compiler/passes/passes.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;
using Pass = Cell (*)(const Cell&);

// Every test cell starts with these leaves; the test writes the rest of the body.
std::string cell_text(std::string_view body, std::string_view dtype = "f32") {
  return "cell t " + std::string(dtype) +
         " {\n"
         "  %x = input : [B,4]\n"
         "  %y = input : [B,4]\n"
         "  %z = input : [B,2]\n"
         "  %v = param : [4]\n" +
         std::string(body) + "}\n";
}

template <class T>
bool close(T a, T b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (a == b) return true;
  T tol = std::is_same_v<T, float> ? T(1e-6) : T(1e-12);
  return std::abs(a - b) <= tol * std::max({T(1), std::abs(a), std::abs(b)});
}

// Runs both cells through the reference interpreter on the same random arguments.
template <class T>
::testing::AssertionResult same_results_as(const Cell& before, const Cell& after) {
  SequenceArgs<T> args = random_sequence_args<T>(before, 2, 3, 2024);
  SequenceResult<T> a = interpret_sequence(before, args);
  SequenceResult<T> b = interpret_sequence(after, args);
  auto compare = [](const std::vector<HostTensor<T>>& x, const std::vector<HostTensor<T>>& y,
                    const char* what) -> ::testing::AssertionResult {
    if (x.size() != y.size()) return ::testing::AssertionFailure() << what << " count differs";
    for (std::size_t i = 0; i < x.size(); ++i) {
      if (x[i].shape != y[i].shape)
        return ::testing::AssertionFailure() << what << " " << i << ": shape differs";
      for (std::size_t k = 0; k < x[i].data.size(); ++k)
        if (!close(x[i].data[k], y[i].data[k]))
          return ::testing::AssertionFailure()
                 << what << " " << i << "[" << k << "]: " << x[i].data[k] << " vs " << y[i].data[k];
    }
    return ::testing::AssertionSuccess();
  };
  if (auto r = compare(a.outputs, b.outputs, "output"); !r) return r;
  return compare(a.final_states, b.final_states, "final state");
}

::testing::AssertionResult same_results(const Cell& before, const Cell& after) {
  return before.graph.dtype() == DType::f64 ? same_results_as<double>(before, after)
                                            : same_results_as<float>(before, after);
}

// Before -> Expected for one pass. Both are bodies for cell_text().
::testing::AssertionResult rewrites(Pass pass, std::string_view before, std::string_view expected,
                                    std::string_view dtype = "f32") {
  Cell in = parse_cell(cell_text(before, dtype), "before");
  Cell out = pass(in);
  try {
    verify(out);
  } catch (const Error& e) {
    return ::testing::AssertionFailure() << "the result does not verify: " << e.what() << "\n"
                                         << print_cell(out);
  }
  std::string got = print_cell(out);
  std::string want = print_cell(parse_cell(cell_text(expected, dtype), "expected"));
  if (got != want)
    return ::testing::AssertionFailure() << "\n--- got ---\n"
                                         << got << "--- expected ---\n"
                                         << want;
  if (auto r = same_results(in, out); !r) return r << "\n" << got;
  // The pass keeps the roles exactly.
  if (in.inputs != out.inputs || in.states != out.states || in.params != out.params)
    return ::testing::AssertionFailure() << "the roles changed";
  return ::testing::AssertionSuccess();
}

// A pass that has nothing to do returns the cell as it was.
::testing::AssertionResult unchanged(Pass pass, std::string_view body,
                                     std::string_view dtype = "f32") {
  return rewrites(pass, body, body, dtype);
}

// ---------------------------------------------------------------------------------------------
// Dead-code elimination.

TEST(Dce, RemovesDeadChainsAndKeepsUnusedLeaves) {
  EXPECT_TRUE(rewrites(eliminate_dead_code,
                       "  %a = tanh %x\n"
                       "  %b = sigmoid %a\n"
                       "  %c = exp %b\n"
                       "  %k = constant {value=2} : [B,4]\n"
                       "  %d = mul %c, %k\n"
                       "  %e = relu %y\n"
                       "  %w = broadcast %v\n"
                       "  output o = %a\n",
                       "  %a = tanh %x\n"
                       "  output o = %a\n"));
}

TEST(Dce, KeepsWhatOutputsAndNextStatesNeed) {
  const char* before = R"(cell t f64 {
  %x = input : [B,2]
  %h = state : [B,2]
  %unused = param : [2,2]
  %a = add %x, %h
  %dead = mul %a, %a
  %n = tanh %a
  %dead2 = exp %n
  %o = sigmoid %x
  output o = %o
  next h = %n
}
)";
  const char* expected = R"(cell t f64 {
  %x = input : [B,2]
  %h = state : [B,2]
  %unused = param : [2,2]
  %a = add %x, %h
  %n = tanh %a
  %o = sigmoid %x
  output o = %o
  next h = %n
}
)";
  Cell in = parse_cell(before);
  Cell out = eliminate_dead_code(in);
  EXPECT_EQ(print_cell(out), print_cell(parse_cell(expected)));
  EXPECT_TRUE(same_results(in, out));
}

TEST(Dce, HasNothingToDoOnALiveCell) {
  EXPECT_TRUE(unchanged(eliminate_dead_code,
                        "  %a = add %x, %y\n"
                        "  %b = tanh %a\n"
                        "  output o = %b\n"
                        "  output p = %a\n"));
}

// ---------------------------------------------------------------------------------------------
// Common-subexpression elimination.

TEST(Cse, MergesDuplicateNodes) {
  EXPECT_TRUE(rewrites(eliminate_common_subexpressions,
                       "  %a = tanh %x\n"
                       "  %b = tanh %x\n"
                       "  %c = sub %a, %b\n"
                       "  output o = %c\n",
                       "  %a = tanh %x\n"
                       "  %c = sub %a, %a\n"
                       "  output o = %c\n"));
}

TEST(Cse, MergesWholeChains) {
  EXPECT_TRUE(rewrites(eliminate_common_subexpressions,
                       "  %a = slice %x {start=1, len=2}\n"
                       "  %b = slice %x {len=2, start=1}\n"
                       "  %ta = exp %a\n"
                       "  %tb = exp %b\n"
                       "  %c = div %ta, %tb\n"
                       "  output o = %c\n",
                       "  %a = slice %x {start=1, len=2}\n"
                       "  %ta = exp %a\n"
                       "  %c = div %ta, %ta\n"
                       "  output o = %c\n"));
}

TEST(Cse, MergesCommutativeOpsWithSwappedOperands) {
  for (const char* op : {"add", "mul", "min", "max"}) {
    SCOPED_TRACE(op);
    std::string o(op);
    EXPECT_TRUE(rewrites(
        eliminate_common_subexpressions,
        "  %a = " + o + " %x, %y\n  %b = " + o + " %y, %x\n  %c = sub %a, %b\n  output o = %c\n",
        "  %a = " + o + " %x, %y\n  %c = sub %a, %a\n  output o = %c\n"));
  }
}

TEST(Cse, PutsCommutativeOperandsInOneOrder) {
  EXPECT_TRUE(rewrites(eliminate_common_subexpressions, "  %a = add %y, %x\n  output o = %a\n",
                       "  %a = add %x, %y\n  output o = %a\n"));
}

TEST(Cse, DoesNotMergeNonCommutativeOpsWithSwappedOperands) {
  for (const char* op : {"sub", "div", "gt", "le"}) {
    SCOPED_TRACE(op);
    std::string o(op);
    EXPECT_TRUE(unchanged(
        eliminate_common_subexpressions,
        "  %a = " + o + " %x, %y\n  %b = " + o + " %y, %x\n  %c = mul %a, %b\n  output o = %c\n"));
  }
}

TEST(Cse, DoesNotMergeDifferentAttributesOrShapes) {
  EXPECT_TRUE(unchanged(eliminate_common_subexpressions,
                        "  %a = slice %x {start=0, len=2}\n"
                        "  %b = slice %x {start=2, len=2}\n"
                        "  %c = sub %a, %b\n"
                        "  output o = %c\n"));
  EXPECT_TRUE(rewrites(eliminate_common_subexpressions,
                       "  %k1 = constant {value=2} : [B,4]\n"
                       "  %k2 = constant {value=2} : [B,4]\n"
                       "  %k3 = constant {value=2} : [B,2]\n"
                       "  %k4 = constant {value=-2} : [B,4]\n"
                       "  %a = div %x, %k1\n"
                       "  %b = div %y, %k2\n"
                       "  %c = div %z, %k3\n"
                       "  %d = div %x, %k4\n"
                       "  output a = %a\n  output b = %b\n  output c = %c\n  output d = %d\n",
                       "  %k1 = constant {value=2} : [B,4]\n"
                       "  %k3 = constant {value=2} : [B,2]\n"
                       "  %k4 = constant {value=-2} : [B,4]\n"
                       "  %a = div %x, %k1\n"
                       "  %b = div %y, %k1\n"
                       "  %c = div %z, %k3\n"
                       "  %d = div %x, %k4\n"
                       "  output a = %a\n  output b = %b\n  output c = %c\n  output d = %d\n"));
}

// ---------------------------------------------------------------------------------------------
// Simplification. The pass leaves the nodes it bypasses for DCE to remove, so Expected keeps
// the constants the Before declared.

TEST(Simplify, MultiplyByOne) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %a = mul %x, %one\n"
                       "  %b = mul %one, %y\n"
                       "  %c = sub %a, %b\n"
                       "  output o = %c\n",
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %c = sub %x, %y\n"
                       "  output o = %c\n"));
}

TEST(Simplify, AddZero) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %nzero = constant {value=-0} : [B,4]\n"
                       "  %a = add %x, %zero\n"
                       "  %b = add %zero, %y\n"
                       "  %c = add %a, %nzero\n"
                       "  %d = sub %c, %b\n"
                       "  output o = %d\n",
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %nzero = constant {value=-0} : [B,4]\n"
                       "  %d = sub %x, %y\n"
                       "  output o = %d\n"));
}

TEST(Simplify, SubtractZeroAndZeroMinusX) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %a = sub %x, %zero\n"
                       "  %b = sub %zero, %y\n"
                       "  %c = mul %a, %b\n"
                       "  output o = %c\n",
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %b = neg %y\n"
                       "  %c = mul %x, %b\n"
                       "  output o = %c\n"));
}

TEST(Simplify, DivideByOne) {
  // x/1 -> x, but 1/x stays.
  EXPECT_TRUE(rewrites(simplify,
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %a = div %x, %one\n"
                       "  %b = div %one, %y\n"
                       "  %c = add %a, %b\n"
                       "  output o = %c\n",
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %b = div %one, %y\n"
                       "  %c = add %x, %b\n"
                       "  output o = %c\n"));
}

TEST(Simplify, MultiplyByMinusOneIsNeg) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %m = constant {value=-1} : [B,4]\n"
                       "  %a = mul %x, %m\n"
                       "  %b = mul %m, %y\n"
                       "  %c = sub %a, %b\n"
                       "  output o = %c\n",
                       "  %m = constant {value=-1} : [B,4]\n"
                       "  %a = neg %x\n"
                       "  %b = neg %y\n"
                       "  %c = sub %a, %b\n"
                       "  output o = %c\n"));
}

TEST(Simplify, DoubleNegation) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = neg %x\n"
                       "  %b = neg %a\n"
                       "  %c = tanh %b\n"
                       "  output o = %c\n",
                       "  %a = neg %x\n"
                       "  %c = tanh %x\n"
                       "  output o = %c\n"));
  // Three negations are one; simplify does not merge the copy it makes (CSE does).
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = neg %x\n"
                       "  %b = neg %a\n"
                       "  %c = neg %b\n"
                       "  output o = %c\n",
                       "  %a = neg %x\n"
                       "  %c = neg %x\n"
                       "  output o = %c\n"));
  // -x * -1 = x
  EXPECT_TRUE(rewrites(simplify,
                       "  %m = constant {value=-1} : [B,4]\n"
                       "  %a = neg %x\n"
                       "  %b = mul %a, %m\n"
                       "  output o = %b\n",
                       "  %m = constant {value=-1} : [B,4]\n"
                       "  %a = neg %x\n"
                       "  output o = %x\n"));
}

TEST(Simplify, MinAndMaxOfOneValue) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = min %x, %x\n"
                       "  %b = max %y, %y\n"
                       "  %c = sub %a, %b\n"
                       "  output o = %c\n",
                       "  %c = sub %x, %y\n"
                       "  output o = %c\n"));
  EXPECT_TRUE(unchanged(simplify, "  %a = min %x, %y\n  output o = %a\n"));
}

TEST(Simplify, WhereOfAConstantCondition) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %t = constant {value=2} : [B,4]\n"
                       "  %f = constant {value=0} : [B,4]\n"
                       "  %n = constant {value=nan} : [B,4]\n"
                       "  %a = where %t, %x, %y\n"
                       "  %b = where %f, %x, %y\n"
                       "  %c = where %n, %x, %y\n"
                       "  %d = sub %a, %b\n"
                       "  %e = div %d, %c\n"
                       "  output o = %e\n",
                       "  %t = constant {value=2} : [B,4]\n"
                       "  %f = constant {value=0} : [B,4]\n"
                       "  %n = constant {value=nan} : [B,4]\n"
                       "  %d = sub %x, %y\n"
                       "  %e = div %d, %x\n"
                       "  output o = %e\n"));
  // Both branches the same value: the condition does not matter.
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = where %x, %y, %y\n"
                       "  output o = %a\n",
                       "  output o = %y\n"));
}

TEST(Simplify, SliceOfCat) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %c = cat %x, %z\n"
                       "  %a = slice %c {start=4, len=2}\n"
                       "  %b = slice %c {start=0, len=4}\n"
                       "  %m = slice %c {start=1, len=2}\n"
                       "  %s = slice %c {start=3, len=2}\n"
                       "  output a = %a\n  output b = %b\n  output m = %m\n  output s = %s\n",
                       "  %c = cat %x, %z\n"
                       "  %m = slice %x {start=1, len=2}\n"
                       "  %s = slice %c {start=3, len=2}\n"  // straddles x|z: stays
                       "  output a = %z\n  output b = %x\n  output m = %m\n  output s = %s\n"));
}

TEST(Simplify, ChunkOfCat) {
  // chunk(cat(x, y), 2) as the builder writes it: equal slices, one per piece.
  EXPECT_TRUE(rewrites(simplify,
                       "  %c = cat %x, %y\n"
                       "  %p0 = slice %c {start=0, len=4}\n"
                       "  %p1 = slice %c {start=4, len=4}\n"
                       "  %r = sub %p0, %p1\n"
                       "  output o = %r\n",
                       "  %c = cat %x, %y\n"
                       "  %r = sub %x, %y\n"
                       "  output o = %r\n"));
  // chunk(cat(x, y), 4): each chunk lies inside one piece.
  EXPECT_TRUE(rewrites(simplify,
                       "  %c = cat %x, %y\n"
                       "  %p0 = slice %c {start=0, len=2}\n"
                       "  %p1 = slice %c {start=2, len=2}\n"
                       "  %p2 = slice %c {start=4, len=2}\n"
                       "  %p3 = slice %c {start=6, len=2}\n"
                       "  %a = mul %p0, %p3\n"
                       "  %b = mul %p1, %p2\n"
                       "  output a = %a\n  output b = %b\n",
                       "  %c = cat %x, %y\n"
                       "  %p0 = slice %x {start=0, len=2}\n"
                       "  %p1 = slice %x {start=2, len=2}\n"
                       "  %p2 = slice %y {start=0, len=2}\n"
                       "  %p3 = slice %y {start=2, len=2}\n"
                       "  %a = mul %p0, %p3\n"
                       "  %b = mul %p1, %p2\n"
                       "  output a = %a\n  output b = %b\n"));
}

TEST(Simplify, SliceOfSlice) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = slice %x {start=1, len=3}\n"
                       "  %b = slice %a {start=1, len=2}\n"
                       "  output o = %b\n",
                       "  %a = slice %x {start=1, len=3}\n"
                       "  %b = slice %x {start=2, len=2}\n"
                       "  output o = %b\n"));
}

TEST(Simplify, WholeWidthSlice) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = slice %x {start=0, len=4}\n"
                       "  %b = tanh %a\n"
                       "  output o = %b\n",
                       "  %b = tanh %x\n"
                       "  output o = %b\n"));
}

TEST(Simplify, CatOfOne) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = cat %z\n"
                       "  %b = exp %a\n"
                       "  output o = %b\n",
                       "  %b = exp %z\n"
                       "  output o = %b\n"));
}

TEST(Simplify, NestedCatsFlatten) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = cat %x, %z\n"
                       "  %b = cat %a, %y\n"
                       "  %c = cat %y, %b\n"
                       "  output o = %c\n",
                       "  %a = cat %x, %z\n"
                       "  %b = cat %x, %z, %y\n"
                       "  %c = cat %y, %x, %z, %y\n"
                       "  output o = %c\n"));
}

TEST(Simplify, CatOfAdjacentSlicesIsOneSlice) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = slice %x {start=0, len=1}\n"
                       "  %b = slice %x {start=1, len=2}\n"
                       "  %c = cat %a, %b, %z\n"
                       "  output o = %c\n",
                       "  %a = slice %x {start=0, len=1}\n"
                       "  %b = slice %x {start=1, len=2}\n"
                       "  %s = slice %x {start=0, len=3}\n"
                       "  %c = cat %s, %z\n"
                       "  output o = %c\n"));
  // Adjacent slices covering the whole source are the source itself.
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = slice %x {start=0, len=1}\n"
                       "  %b = slice %x {start=1, len=2}\n"
                       "  %d = slice %x {start=3, len=1}\n"
                       "  %c = cat %a, %b, %d\n"
                       "  %e = tanh %c\n"
                       "  output o = %e\n",
                       "  %a = slice %x {start=0, len=1}\n"
                       "  %b = slice %x {start=1, len=2}\n"
                       "  %d = slice %x {start=3, len=1}\n"
                       "  %e = tanh %x\n"
                       "  output o = %e\n"));
}

TEST(Simplify, SlicesThatAreNotAdjacentStay) {
  // A gap, the wrong order, or two sources: nothing to merge.
  EXPECT_TRUE(unchanged(simplify,
                        "  %a = slice %x {start=0, len=1}\n"
                        "  %b = slice %x {start=2, len=2}\n"
                        "  %c = cat %a, %b\n"
                        "  output o = %c\n"));
  EXPECT_TRUE(unchanged(simplify,
                        "  %a = slice %x {start=2, len=2}\n"
                        "  %b = slice %x {start=0, len=2}\n"
                        "  %c = cat %a, %b\n"
                        "  output o = %c\n"));
  EXPECT_TRUE(unchanged(simplify,
                        "  %a = slice %x {start=0, len=2}\n"
                        "  %b = slice %y {start=2, len=2}\n"
                        "  %c = cat %a, %b\n"
                        "  output o = %c\n"));
}

// ---------------------------------------------------------------------------------------------
// Constant folding. Every constant is a splat of one value, so folding is scalar arithmetic.

TEST(Simplify, FoldsPointwiseOps) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=2} : [B,4]\n"
                       "  %b = constant {value=3} : [B,4]\n"
                       "  %p = mul %a, %b\n"
                       "  %q = sub %p, %a\n"
                       "  %r = add %x, %q\n"
                       "  output o = %r\n",
                       "  %a = constant {value=2} : [B,4]\n"
                       "  %b = constant {value=3} : [B,4]\n"
                       "  %p = constant {value=6} : [B,4]\n"
                       "  %q = constant {value=4} : [B,4]\n"
                       "  %r = add %x, %q\n"
                       "  output o = %r\n",
                       "f64"));
  // Folding can expose an identity: exp(0) = 1, and x*1 = x.
  EXPECT_TRUE(rewrites(simplify,
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %e = exp %zero\n"
                       "  %r = mul %x, %e\n"
                       "  output o = %r\n",
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %e = constant {value=1} : [B,4]\n"
                       "  output o = %x\n"));
  // Comparisons and where.
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=2} : [B,4]\n"
                       "  %b = constant {value=3} : [B,4]\n"
                       "  %g = gt %b, %a\n"
                       "  %w = where %g, %a, %b\n"
                       "  %r = add %x, %w\n"
                       "  output o = %r\n",
                       "  %a = constant {value=2} : [B,4]\n"
                       "  %b = constant {value=3} : [B,4]\n"
                       "  %g = constant {value=1} : [B,4]\n"
                       "  %r = add %x, %a\n"
                       "  output o = %r\n"));
}

TEST(Simplify, FoldsLayoutOpsAndReductions) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %k = constant {value=2} : [4]\n"
                       "  %kb = broadcast %k\n"
                       "  %r = div %x, %kb\n"
                       "  output o = %r\n",
                       "  %k = constant {value=2} : [4]\n"
                       "  %kb = constant {value=2} : [B,4]\n"
                       "  %r = div %x, %kb\n"
                       "  output o = %r\n"));
  EXPECT_TRUE(rewrites(simplify,
                       "  %k = constant {value=3} : [B,1]\n"
                       "  %e = expand %k {n=4}\n"
                       "  %s = slice %e {start=1, len=2}\n"
                       "  %r = div %z, %s\n"
                       "  output o = %r\n",
                       "  %k = constant {value=3} : [B,1]\n"
                       "  %e = constant {value=3} : [B,4]\n"
                       "  %s = constant {value=3} : [B,2]\n"
                       "  %r = div %z, %s\n"
                       "  output o = %r\n"));
  EXPECT_TRUE(rewrites(simplify,
                       "  %k = constant {value=1.5} : [B,4]\n"
                       "  %s = sum %k\n"
                       "  %m = mean %k\n"
                       "  %d = sub %s, %m\n"
                       "  %e = expand %d {n=2}\n"
                       "  %r = mul %z, %e\n"
                       "  output o = %r\n",
                       "  %k = constant {value=1.5} : [B,4]\n"
                       "  %s = constant {value=6} : [B,1]\n"
                       "  %m = constant {value=1.5} : [B,1]\n"
                       "  %d = constant {value=4.5} : [B,1]\n"
                       "  %e = constant {value=4.5} : [B,2]\n"
                       "  %r = mul %z, %e\n"
                       "  output o = %r\n"));
}

TEST(Simplify, FoldsCatOfEqualConstantsOnly) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=0.5} : [B,2]\n"
                       "  %b = constant {value=0.5} : [B,4]\n"
                       "  %c = cat %a, %b\n"
                       "  %s = slice %c {start=1, len=4}\n"
                       "  %r = mul %x, %s\n"
                       "  output o = %r\n",
                       "  %a = constant {value=0.5} : [B,2]\n"
                       "  %b = constant {value=0.5} : [B,4]\n"
                       "  %c = constant {value=0.5} : [B,6]\n"
                       "  %r = mul %x, %b\n"
                       "  output o = %r\n"));
  EXPECT_TRUE(unchanged(simplify,
                        "  %a = constant {value=0.5} : [B,2]\n"
                        "  %b = constant {value=0.25} : [B,2]\n"
                        "  %c = cat %a, %b\n"
                        "  %r = mul %x, %c\n"
                        "  output o = %r\n"));
}

TEST(Simplify, F32FoldingRoundsToFloat) {
  // In f32, 0.1 + 0.2 is float arithmetic, and in float it is 0.3 (in double it is not): the
  // folded constant is what a float kernel computes.
  const float f32_sum = 0.1f + 0.2f;
  ASSERT_EQ(format_number(static_cast<double>(f32_sum), DType::f32), "0.3");
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %b = constant {value=0.2} : [B,4]\n"
                       "  %s = add %a, %b\n"
                       "  %r = mul %x, %s\n"
                       "  output o = %r\n",
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %b = constant {value=0.2} : [B,4]\n"
                       "  %s = constant {value=0.3} : [B,4]\n"
                       "  %r = mul %x, %s\n"
                       "  output o = %r\n",
                       "f32"));
  Cell folded =
      simplify(parse_cell(cell_text("  %a = constant {value=0.1} : [B,4]\n"
                                    "  %b = constant {value=0.2} : [B,4]\n"
                                    "  %s = add %a, %b\n"
                                    "  output o = %s\n")));
  EXPECT_EQ(folded.graph.node(folded.outputs[0].value).float_attr("value"),
            static_cast<double>(f32_sum));
  // A transcendental folds in float too: the value is exp of the float 0.1f, in float.
  Cell folded_exp =
      simplify(parse_cell(cell_text("  %a = constant {value=0.1} : [B,4]\n"
                                    "  %e = exp %a\n"
                                    "  output o = %e\n")));
  EXPECT_EQ(folded_exp.graph.node(folded_exp.outputs[0].value).float_attr("value"),
            static_cast<double>(std::exp(0.1f)));
  // In f64 it is double arithmetic.
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %b = constant {value=0.2} : [B,4]\n"
                       "  %s = add %a, %b\n"
                       "  %r = mul %x, %s\n"
                       "  output o = %r\n",
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %b = constant {value=0.2} : [B,4]\n"
                       "  %s = constant {value=0.30000000000000004} : [B,4]\n"
                       "  %r = mul %x, %s\n"
                       "  output o = %r\n",
                       "f64"));
  // Constants of an f32 cell are floats, and a folded layout op keeps the float.
  EXPECT_TRUE(rewrites(simplify,
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %s = slice %a {start=0, len=2}\n"
                       "  %r = mul %z, %s\n"
                       "  output o = %r\n",
                       "  %a = constant {value=0.1} : [B,4]\n"
                       "  %s = constant {value=0.1} : [B,2]\n"
                       "  %r = mul %z, %s\n"
                       "  output o = %r\n",
                       "f32"));
}

TEST(Simplify, FoldsToInfinityAndNan) {
  EXPECT_TRUE(rewrites(simplify,
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %inf = div %one, %zero\n"
                       "  %nan = div %zero, %zero\n"
                       "  %a = add %x, %inf\n"
                       "  %b = add %y, %nan\n"
                       "  output a = %a\n  output b = %b\n",
                       "  %zero = constant {value=0} : [B,4]\n"
                       "  %one = constant {value=1} : [B,4]\n"
                       "  %inf = constant {value=inf} : [B,4]\n"
                       "  %nan = constant {value=nan} : [B,4]\n"
                       "  %a = add %x, %inf\n"
                       "  %b = add %y, %nan\n"
                       "  output a = %a\n  output b = %b\n",
                       "f64"));
  // The folded NaN prints as `nan` and parses back to the same cell.
  Cell folded =
      simplify(parse_cell(cell_text("  %zero = constant {value=0} : [B,4]\n"
                                    "  %nan = div %zero, %zero\n"
                                    "  %b = add %y, %nan\n"
                                    "  output b = %b\n",
                                    "f64")));
  EXPECT_TRUE(structurally_equal(parse_cell(print_cell(folded)), folded)) << print_cell(folded);
}

TEST(Simplify, RulesThatWouldChangeNanOrInfinityDoNotFire) {
  // x*0 is not 0 when x is inf or NaN; x-x is not 0 either; x/x is not 1.
  EXPECT_TRUE(unchanged(simplify,
                        "  %zero = constant {value=0} : [B,4]\n"
                        "  %a = mul %x, %zero\n"
                        "  %b = mul %zero, %y\n"
                        "  %c = sub %x, %x\n"
                        "  %d = div %y, %y\n"
                        "  %n = neg %x\n"
                        "  %e = add %x, %n\n"
                        "  output a = %a\n  output b = %b\n  output c = %c\n  output d = %d\n"
                        "  output e = %e\n"));
}

TEST(Simplify, DoesNotFoldContractions) {
  EXPECT_TRUE(unchanged(simplify,
                        "  %k = constant {value=1} : [B,4]\n"
                        "  %W = constant {value=2} : [4,4]\n"
                        "  %l = linear %k, %W\n"
                        "  %r = add %x, %l\n"
                        "  output o = %r\n"));
}

// ---------------------------------------------------------------------------------------------
// The optimize() pipeline.

class OptimizeStandardCell : public ::testing::TestWithParam<std::string> {};

TEST_P(OptimizeStandardCell, IsVerifiedNeverBiggerIdempotentAndExact) {
  for (DType dtype : {DType::f32, DType::f64}) {
    SCOPED_TRACE(dtype_name(dtype));
    Cell cell = cells::by_spec(GetParam(), dtype);
    Cell once = optimize(cell);
    EXPECT_NO_THROW(verify(once));
    EXPECT_LE(once.graph.size(), cell.graph.size());
    Cell twice = optimize(once);
    EXPECT_EQ(print_cell(twice), print_cell(once));
    EXPECT_TRUE(structurally_equal(twice, once));
    EXPECT_EQ(cell_hash(twice), cell_hash(once));
    // The calling convention is untouched.
    EXPECT_EQ(once.inputs, cell.inputs);
    EXPECT_EQ(once.states, cell.states);
    EXPECT_EQ(once.params, cell.params);
    ASSERT_EQ(once.outputs.size(), cell.outputs.size());
    for (std::size_t i = 0; i < once.outputs.size(); ++i)
      EXPECT_EQ(once.outputs[i].name, cell.outputs[i].name);
    EXPECT_TRUE(same_results(cell, once));
  }
}

INSTANTIATE_TEST_SUITE_P(Cells, OptimizeStandardCell,
                         ::testing::Values("elman:1,1", "elman:7,33", "elman_proj:5,7,3",
                                           "lstm:1,1", "lstm:7,33", "gru:3,5", "gru:33,7",
                                           "lnlstm:1,1", "lnlstm:7,33", "peephole:7,33"),
                         [](const auto& param_info) {
                           std::string s = param_info.param;
                           for (char& c : s)
                             if (c == ':' || c == ',') c = '_';
                           return s;
                         });

TEST(Optimize, CleansUpAMessyCell) {
  const char* before =
      "  %one = constant {value=1} : [B,4]\n"
      "  %zero = constant {value=0} : [B,4]\n"
      "  %a = mul %x, %one\n"
      "  %b = add %zero, %y\n"
      "  %s1 = add %a, %b\n"
      "  %s2 = add %b, %a\n"
      "  %m = min %s1, %s2\n"  // min(x,x) once CSE has merged s1 and s2
      "  %c = cat %m, %z\n"
      "  %p = slice %c {start=0, len=4}\n"
      "  %q = slice %c {start=4, len=2}\n"
      "  %n1 = neg %q\n"
      "  %n2 = neg %n1\n"
      "  %dead = exp %p\n"
      "  %t = tanh %p\n"
      "  output t = %t\n"
      "  output u = %n2\n";
  const char* expected =
      "  %s = add %x, %y\n"
      "  %t = tanh %s\n"
      "  output t = %t\n"
      "  output u = %z\n";
  Cell in = parse_cell(cell_text(before));
  Cell out = optimize(in);
  EXPECT_EQ(print_cell(out), print_cell(parse_cell(cell_text(expected))));
  EXPECT_TRUE(same_results(in, out));
  EXPECT_EQ(print_cell(optimize(out)), print_cell(out));
}

TEST(Optimize, LogsEveryStage) {
  std::vector<StageLog> log;
  Cell cell = optimize(cells::gru(3, 4), &log);
  ASSERT_GE(log.size(), 4u);
  EXPECT_EQ(log.front().name, "input");
  EXPECT_EQ(log.front().text, print_cell(cells::gru(3, 4)));
  EXPECT_EQ(log[1].name, "simplify (round 1)");
  EXPECT_EQ(log[2].name, "cse (round 1)");
  EXPECT_EQ(log[3].name, "dce (round 1)");
  EXPECT_EQ(log.back().text, print_cell(cell));
  for (const StageLog& s : log) EXPECT_THAT(s.text, HasSubstr("cell gru f32 {"));
}

// ---------------------------------------------------------------------------------------------
// Random cells written as text, full of what the passes look for: identities with 0, 1 and -1,
// duplicates, swapped commutative operands, slices of cats, cats of slices, dead values and
// constants to fold.

class RandomTextCell {
 public:
  RandomTextCell(std::uint64_t seed, std::string_view dtype) : rng_(seed), dtype_(dtype) {
    values_ = {{"x", 4}, {"y", 4}, {"z", 2}, {"h", 4}};
  }

  std::string make(int statements) {
    for (int i = 0; i < statements; ++i) step();
    std::string out = "cell r " + dtype_ +
                      " {\n  %x = input : [B,4]\n  %y = input : [B,4]\n  %z = input : [B,2]\n"
                      "  %h = state : [B,4]\n  %v = param : [4]\n" +
                      body_;
    int outputs = static_cast<int>(pick(1, 3));
    for (int o = 0; o < outputs; ++o)
      out += "  output o" + std::to_string(o) + " = %" + any().name + "\n";
    out += "  next h = %" + of_width(4) + "\n}\n";
    return out;
  }

 private:
  struct Value {
    std::string name;
    std::int64_t width;
  };

  std::int64_t pick(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(rng_() % static_cast<std::uint64_t>(hi - lo + 1));
  }
  const Value& any() {
    return values_[static_cast<std::size_t>(
        pick(0, static_cast<std::int64_t>(values_.size()) - 1))];
  }
  std::string of_width(std::int64_t w) {
    std::vector<std::string> fits;
    for (const Value& v : values_)
      if (v.width == w) fits.push_back(v.name);
    if (fits.empty()) return emit("slice %x {start=0, len=" + std::to_string(w) + "}", w);
    return fits[static_cast<std::size_t>(pick(0, static_cast<std::int64_t>(fits.size()) - 1))];
  }
  std::string constant(std::int64_t w) {
    static const char* kValues[] = {"0", "1", "-1", "2", "0.5", "-0", "3"};
    return emit(
        "constant {value=" + std::string(kValues[pick(0, 6)]) + "} : [B," + std::to_string(w) + "]",
        w);
  }
  std::string emit(const std::string& rhs, std::int64_t width) {
    std::string name = "t" + std::to_string(counter_++);
    body_ += "  %" + name + " = " + rhs + "\n";
    values_.push_back({name, width});
    lines_.push_back(rhs);
    return name;
  }

  void step() {
    static const char* kUnary[] = {"neg", "tanh", "sigmoid", "abs", "relu", "softplus", "erf"};
    static const char* kBinary[] = {"add", "sub", "mul", "div", "min", "max", "gt", "le"};
    Value a = any();
    std::string w = std::to_string(a.width);
    switch (pick(0, 11)) {
      case 0:
        emit(std::string(kUnary[pick(0, 6)]) + " %" + a.name, a.width);
        break;
      case 1:
      case 2: {  // a binary op, often with a constant
        std::string b = pick(0, 1) ? constant(a.width) : of_width(a.width);
        if (pick(0, 1)) std::swap(a.name, b);
        emit(std::string(kBinary[pick(0, 7)]) + " %" + a.name + ", %" + b, a.width);
        break;
      }
      case 3:
        emit("where %" + of_width(a.width) + ", %" + a.name + ", %" + of_width(a.width), a.width);
        break;
      case 4: {
        std::int64_t start = pick(0, a.width - 1), len = pick(1, a.width - start);
        emit("slice %" + a.name + " {start=" + std::to_string(start) +
                 ", len=" + std::to_string(len) + "}",
             len);
        break;
      }
      case 5: {
        Value b = any();
        if (a.width + b.width <= 12) emit("cat %" + a.name + ", %" + b.name, a.width + b.width);
        break;
      }
      case 6: {  // chunk of a cat, as the builder writes it
        Value b = any();
        if (a.width + b.width > 12) break;
        std::string c = emit("cat %" + a.name + ", %" + b.name, a.width + b.width);
        emit("slice %" + c + " {start=0, len=" + w + "}", a.width);
        emit("slice %" + c + " {start=" + w + ", len=" + std::to_string(b.width) + "}", b.width);
        break;
      }
      case 7: {  // a cat of adjacent slices
        if (a.width < 2) break;
        std::int64_t cut = pick(1, a.width - 1);
        std::string p =
            emit("slice %" + a.name + " {start=0, len=" + std::to_string(cut) + "}", cut);
        std::string q = emit("slice %" + a.name + " {start=" + std::to_string(cut) +
                                 ", len=" + std::to_string(a.width - cut) + "}",
                             a.width - cut);
        emit("cat %" + p + ", %" + q, a.width);
        break;
      }
      case 8: {  // a reduction, widened back
        std::string r = emit(std::string(pick(0, 1) ? "sum" : "mean") + " %" + a.name, 1);
        emit("expand %" + r + " {n=" + w + "}", a.width);
        break;
      }
      case 9:
        emit("broadcast %v", 4);
        break;
      case 10:  // a duplicate of an earlier statement
        if (!lines_.empty()) {
          std::string line = lines_[static_cast<std::size_t>(
              pick(0, static_cast<std::int64_t>(lines_.size()) - 1))];
          std::int64_t width = 0;
          for (const Value& v : values_)
            if (!v.name.empty() && v.name[0] == 't' &&
                lines_[static_cast<std::size_t>(std::stoi(v.name.substr(1)))] == line)
              width = v.width;
          if (width > 0) emit(line, width);
        }
        break;
      default: {  // a commutative op and its mirror
        std::string b = of_width(a.width);
        const char* op = pick(0, 1) ? "add" : "mul";
        emit(std::string(op) + " %" + a.name + ", %" + b, a.width);
        emit(std::string(op) + " %" + b + ", %" + a.name, a.width);
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  std::string dtype_;
  std::vector<Value> values_;
  std::vector<std::string> lines_;  // right-hand sides of t0, t1, ...
  std::string body_;
  int counter_ = 0;
};

TEST(PassProperties, RandomCells) {
  int simplified = 0;
  for (std::uint64_t seed = 1; seed <= 150; ++seed) {
    for (const char* dtype : {"f32", "f64"}) {
      std::string text = RandomTextCell(seed, dtype).make(static_cast<int>(5 + seed % 30));
      SCOPED_TRACE(text);
      Cell cell = parse_cell(text);
      for (Pass pass : {simplify, eliminate_common_subexpressions, eliminate_dead_code}) {
        Cell out = pass(cell);
        ASSERT_NO_THROW(verify(out));
        ASSERT_TRUE(same_results(cell, out)) << print_cell(out);
        ASSERT_TRUE(structurally_equal(parse_cell(print_cell(out)), out));
        ASSERT_EQ(out.inputs, cell.inputs);
        ASSERT_EQ(out.states, cell.states);
        ASSERT_EQ(out.params, cell.params);
        if (pass != simplify) {
          ASSERT_LE(out.graph.size(), cell.graph.size());
        }
      }
      Cell once = optimize(cell);
      ASSERT_NO_THROW(verify(once));
      ASSERT_LE(once.graph.size(), cell.graph.size());
      if (once.graph.size() < eliminate_dead_code(cell).graph.size()) ++simplified;
      ASSERT_TRUE(same_results(cell, once)) << print_cell(once);
      ASSERT_EQ(print_cell(optimize(once)), print_cell(once));
      // Nothing is left for any single pass to do.
      for (Pass pass : {simplify, eliminate_common_subexpressions, eliminate_dead_code})
        ASSERT_EQ(print_cell(pass(once)), print_cell(once));
    }
  }
  // The generator really does give the passes work.
  EXPECT_GT(simplified, 150);
}

TEST(Optimize, RejectsAnInvalidCell) {
  Cell cell = cells::lstm(2, 2);
  cell.next_states[1] = ValueId{};
  EXPECT_THROW(optimize(cell), Error);
}

}  // namespace
}  // namespace cellfuse
