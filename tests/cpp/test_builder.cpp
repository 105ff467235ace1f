// The C++ builder: every helper builds the graph it promises (broadcast, expand and constants
// inserted where PyTorch would broadcast implicitly) and, run through the reference interpreter,
// gives the values computed by hand here. Errors name the op, the values and the sizes.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "frontend/builder.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;
using Vec = std::vector<double>;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

Vec random_vec(std::size_t n, std::uint64_t seed, double lo = -1.0, double hi = 1.0) {
  std::mt19937_64 engine(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Vec v(n);
  for (auto& e : v) e = dist(engine);
  return v;
}

std::size_t at(std::int64_t row, std::int64_t cols, std::int64_t col) {
  return static_cast<std::size_t>(row * cols + col);
}

// Runs one step of `cell` on the given values (each in row-major order, in the cell's
// declaration order) and returns its outputs as f64 vectors.
template <class T = double>
std::vector<Vec> run(const Cell& cell, std::int64_t batch, const std::vector<Vec>& inputs,
                     const std::vector<Vec>& params = {}, const std::vector<Vec>& states = {}) {
  auto tensors = [&](const std::vector<ValueId>& leaves, const std::vector<Vec>& values) {
    std::vector<HostTensor<T>> out;
    for (std::size_t i = 0; i < leaves.size() && i < values.size(); ++i) {
      const Shape& s = cell.graph.node(leaves[i]).shape;
      std::vector<std::int64_t> dims;
      for (int d = 0; d < s.rank; ++d) dims.push_back(s.dims[d] == Shape::kBatch ? batch : s.dims[d]);
      HostTensor<T> t(dims);
      if (t.data.size() != values[i].size())
        throw std::invalid_argument("test: wrong number of values for " +
                                    std::string(cell.leaf_name(leaves[i])));
      for (std::size_t e = 0; e < t.data.size(); ++e) t.data[e] = static_cast<T>(values[i][e]);
      out.push_back(std::move(t));
    }
    return out;
  };
  StepArgs<T> args{tensors(cell.inputs, inputs), tensors(cell.states, states),
                   tensors(cell.params, params)};
  StepResult<T> r = interpret_step(cell, args);
  std::vector<Vec> outs;
  for (const auto& o : r.outputs) outs.emplace_back(o.data.begin(), o.data.end());
  return outs;
}

// Element-wise agreement, NaN matching NaN, with a relative tolerance.
void expect_values(const Vec& got, const Vec& want, double rtol = 1e-14) {
  ASSERT_EQ(got.size(), want.size());
  for (std::size_t e = 0; e < got.size(); ++e) {
    if (std::isnan(want[e])) {
      EXPECT_TRUE(std::isnan(got[e])) << "[" << e << "] got " << got[e] << ", expected NaN";
      continue;
    }
    EXPECT_LE(std::abs(got[e] - want[e]), rtol * std::max(1.0, std::abs(want[e])))
        << "[" << e << "] got " << got[e] << ", expected " << want[e];
  }
}

int count_ops(const Cell& cell, OpKind op) {
  int n = 0;
  for (const Node& node : cell.graph.nodes()) n += node.op == op;
  return n;
}

const Node& node_of(const Val& v) { return v.cell().graph.node(v.id()); }

// ---------------------------------------------------------------------------------------------
// Broadcasting.

TEST(BuilderBroadcast, VectorParamMeetsBatchThroughBroadcast) {
  const std::int64_t B = 3, n = 4;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val v = b.param("v", {n});
  Val sum = x + v, diff = v - x, prod = x * v, quot = v / x;
  // One broadcast node, shared by the four uses (identical nodes are hash-consed).
  EXPECT_EQ(count_ops(b.cell(), OpKind::broadcast), 1);
  const Node& add = node_of(sum);
  ASSERT_EQ(add.op, OpKind::add);
  EXPECT_EQ(add.shape, Shape::batched(n));
  EXPECT_EQ(add.inputs[0], x.id());
  EXPECT_EQ(b.cell().graph.node(add.inputs[1]).op, OpKind::broadcast);
  EXPECT_EQ(b.cell().graph.node(add.inputs[1]).inputs[0], v.id());
  // The vector stays on the side it was written on: v - x is not x - v.
  EXPECT_EQ(b.cell().graph.node(node_of(diff).inputs[0]).op, OpKind::broadcast);
  EXPECT_EQ(node_of(diff).inputs[1], x.id());
  b.output("sum", sum);
  b.output("diff", diff);
  b.output("prod", prod);
  b.output("quot", quot);
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 1), vs = random_vec(n, 2);
  auto out = run(cell, B, {xs}, {vs});
  Vec want_sum(xs.size()), want_diff(xs.size()), want_prod(xs.size()), want_quot(xs.size());
  for (std::int64_t r = 0; r < B; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      double xv = xs[at(r, n, j)], vv = vs[static_cast<std::size_t>(j)];
      want_sum[at(r, n, j)] = xv + vv;
      want_diff[at(r, n, j)] = vv - xv;
      want_prod[at(r, n, j)] = xv * vv;
      want_quot[at(r, n, j)] = vv / xv;
    }
  expect_values(out[0], want_sum);
  expect_values(out[1], want_diff);
  expect_values(out[2], want_prod);
  expect_values(out[3], want_quot);
}

TEST(BuilderBroadcast, ColumnMeetsFeaturesThroughExpand) {
  const std::int64_t B = 3, n = 5;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val s = b.input("s", 1);
  Val scaled = s * x, shifted = x - s, flipped = s - x, normalized = x / sum(x);
  const Node& mul = node_of(scaled);
  const Node& widened = b.cell().graph.node(mul.inputs[0]);
  ASSERT_EQ(widened.op, OpKind::expand);
  EXPECT_EQ(widened.int_attr("n"), n);
  EXPECT_EQ(widened.inputs[0], s.id());
  EXPECT_EQ(mul.inputs[1], x.id());
  EXPECT_EQ(mul.shape, Shape::batched(n));
  b.output("scaled", scaled);
  b.output("shifted", shifted);
  b.output("flipped", flipped);
  b.output("normalized", normalized);
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 3), ss = random_vec(B, 4);
  auto out = run(cell, B, {xs, ss});
  Vec w0(xs.size()), w1(xs.size()), w2(xs.size()), w3(xs.size());
  for (std::int64_t r = 0; r < B; ++r) {
    double row_sum = 0;
    for (std::int64_t j = 0; j < n; ++j) row_sum += xs[at(r, n, j)];
    double sv = ss[static_cast<std::size_t>(r)];
    for (std::int64_t j = 0; j < n; ++j) {
      double xv = xs[at(r, n, j)];
      w0[at(r, n, j)] = sv * xv;
      w1[at(r, n, j)] = xv - sv;
      w2[at(r, n, j)] = sv - xv;
      w3[at(r, n, j)] = xv / row_sum;
    }
  }
  expect_values(out[0], w0);
  expect_values(out[1], w1);
  expect_values(out[2], w2);
  expect_values(out[3], w3, 1e-12);
}

TEST(BuilderBroadcast, OneElementVectorBroadcastsThenExpands) {
  const std::int64_t B = 2, n = 6;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val k = b.param("k", {1});
  Val y = k * x;
  const Node& widened = b.cell().graph.node(node_of(y).inputs[0]);
  ASSERT_EQ(widened.op, OpKind::expand);
  EXPECT_EQ(b.cell().graph.node(widened.inputs[0]).op, OpKind::broadcast);
  b.output("y", y);
  Cell cell = std::move(b).finish();
  Vec xs = random_vec(B * n, 5), ks = random_vec(1, 6);
  Vec want(xs.size());
  for (std::size_t e = 0; e < xs.size(); ++e) want[e] = ks[0] * xs[e];
  expect_values(run(cell, B, {xs}, {ks})[0], want);
}

TEST(BuilderBroadcast, ScalarsBecomeConstantsOfTheOtherShape) {
  const std::int64_t B = 3, n = 7;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val v = b.param("v", {n});
  std::vector<Val> ys = {x * 2.5, 3.0 - x, x / 4.0, 1.5 / x, x + 0.25, 2.0 * x, x - 1.0,
                         x + v * 3.0};
  const Node& mul = node_of(ys[0]);
  const Node& c = b.cell().graph.node(mul.inputs[1]);
  ASSERT_EQ(c.op, OpKind::constant);
  EXPECT_EQ(c.float_attr("value"), 2.5);
  EXPECT_EQ(c.shape, Shape::batched(n));
  // The number stays on its side: 3 - x has the constant first.
  const Node& sub = node_of(ys[1]);
  EXPECT_EQ(b.cell().graph.node(sub.inputs[0]).op, OpKind::constant);
  EXPECT_EQ(sub.inputs[1], x.id());
  // A number next to a parameter vector is a vector constant, not a batched one.
  Val scaled = v * 3.0;
  EXPECT_EQ(b.cell().graph.node(node_of(scaled).inputs[1]).shape, Shape::vector(n));
  for (std::size_t i = 0; i < ys.size(); ++i) b.output("y" + std::to_string(i), ys[i]);
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 7), vs = random_vec(n, 8);
  auto out = run(cell, B, {xs}, {vs});
  ASSERT_EQ(out.size(), ys.size());
  for (std::size_t e = 0; e < xs.size(); ++e) {
    double xv = xs[e], vv = vs[e % static_cast<std::size_t>(n)];
    Vec want = {xv * 2.5, 3.0 - xv, xv / 4.0, 1.5 / xv, xv + 0.25, 2.0 * xv, xv - 1.0,
                xv + vv * 3.0};
    for (std::size_t i = 0; i < want.size(); ++i)
      EXPECT_DOUBLE_EQ(out[i][e], want[i]) << "y" << i << "[" << e << "]";
  }
}

TEST(BuilderBroadcast, IncompatibleShapesNameTheOpAndValues) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 4);
  Val y = b.input("y", 5);
  Val v = b.param("v", {3});
  try {
    (void)(x + y);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("add"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,4]"));
    EXPECT_THAT(e.what(), HasSubstr("%y [B,5]"));
  }
  try {
    (void)(v * x);
    FAIL() << "expected a shape error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("mul"));
    EXPECT_THAT(e.what(), HasSubstr("%v [3]"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,4]"));
  }
}

TEST(BuilderBroadcast, IdenticalExpressionsAreShared) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 4);
  Val v = b.param("v", {4});
  EXPECT_EQ((x + v).id(), (x + v).id());
  EXPECT_EQ(sigmoid(x).id(), sigmoid(x).id());
  EXPECT_NE((x + v).id(), (v + x).id());  // operand order is kept, not canonicalized here
  EXPECT_EQ((x * 2.0).id(), (x * 2.0).id());
  EXPECT_NE((x * 2.0).id(), (x * 3.0).id());
}

// ---------------------------------------------------------------------------------------------
// chunk and split.

TEST(BuilderChunk, NonDividingCountNamesValueAndSizes) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 7);
  try {
    (void)chunk(x, 3);
    FAIL() << "expected chunk to refuse 7 features in 3 chunks";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("chunk"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,7]"));
    EXPECT_THAT(e.what(), HasSubstr("7 features"));
    EXPECT_THAT(e.what(), HasSubstr("3 equal chunks"));
  }
  // A computed value is named by its number.
  Val t = tanh(x);
  try {
    (void)chunk(t, 2);
    FAIL() << "expected chunk to refuse 7 features in 2 chunks";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(b.cell().graph.ref(t.id()) + " [B,7]"));
    EXPECT_THAT(e.what(), HasSubstr("2 equal chunks"));
  }
  EXPECT_THROW((void)chunk(x, 0), Error);
  EXPECT_THROW((void)chunk(x, -1), Error);
  EXPECT_THROW((void)chunk(x, 8), Error);
}

TEST(BuilderChunk, EqualPiecesInOrder) {
  const std::int64_t B = 3, n = 12;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  auto parts = chunk(x, 4);
  ASSERT_EQ(parts.size(), 4u);
  for (std::size_t i = 0; i < parts.size(); ++i) {
    const Node& s = node_of(parts[i]);
    EXPECT_EQ(s.op, OpKind::slice);
    EXPECT_EQ(s.int_attr("start"), static_cast<std::int64_t>(3 * i));
    EXPECT_EQ(s.int_attr("len"), 3);
    b.output("p" + std::to_string(i), parts[i]);
  }
  auto whole = chunk(x, 1);
  ASSERT_EQ(whole.size(), 1u);
  b.output("whole", whole[0]);
  Cell cell = std::move(b).finish();
  Vec xs = random_vec(B * n, 9);
  auto out = run(cell, B, {xs});
  for (std::int64_t i = 0; i < 4; ++i) {
    Vec want;
    for (std::int64_t r = 0; r < B; ++r)
      for (std::int64_t j = 0; j < 3; ++j) want.push_back(xs[at(r, n, 3 * i + j)]);
    expect_values(out[static_cast<std::size_t>(i)], want, 0);
  }
  expect_values(out[4], xs, 0);
}

TEST(BuilderSplit, SizesMustAddUp) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 7);
  try {
    (void)split(x, {2, 4});
    FAIL() << "expected split to refuse sizes adding up to 6";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("split"));
    EXPECT_THAT(e.what(), HasSubstr("add up to 6"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,7]"));
    EXPECT_THAT(e.what(), HasSubstr("7 features"));
  }
  EXPECT_THROW((void)split(x, {0, 7}), Error);   // an empty piece
  EXPECT_THROW((void)split(x, {8, -1}), Error);  // adds up, but a piece is negative
}

TEST(BuilderSplit, UnequalPieces) {
  const std::int64_t B = 3, n = 7;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  auto parts = split(x, {2, 4, 1});
  ASSERT_EQ(parts.size(), 3u);
  for (std::size_t i = 0; i < parts.size(); ++i) b.output("p" + std::to_string(i), parts[i]);
  Cell cell = std::move(b).finish();
  Vec xs = random_vec(B * n, 10);
  auto out = run(cell, B, {xs});
  const std::int64_t starts[] = {0, 2, 6}, lens[] = {2, 4, 1};
  for (std::size_t i = 0; i < 3; ++i) {
    Vec want;
    for (std::int64_t r = 0; r < B; ++r)
      for (std::int64_t j = 0; j < lens[i]; ++j) want.push_back(xs[at(r, n, starts[i] + j)]);
    expect_values(out[i], want, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Pointwise helpers.

TEST(BuilderPointwise, Clamp) {
  const std::int64_t B = 3, n = 9;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  b.output("y", clamp(x, -0.5, 0.25));
  Cell cell = std::move(b).finish();
  Vec xs = random_vec(B * n, 11, -2.0, 2.0);
  xs[0] = kNaN;  // NaN stays NaN, as in torch.clamp
  xs[1] = -0.5;  // the bounds themselves
  xs[2] = 0.25;
  Vec want(xs.size());
  int below = 0, above = 0;
  for (std::size_t e = 0; e < xs.size(); ++e) {
    want[e] = std::isnan(xs[e]) ? kNaN : xs[e] < -0.5 ? -0.5 : xs[e] > 0.25 ? 0.25 : xs[e];
    below += xs[e] < -0.5;
    above += xs[e] > 0.25;
  }
  ASSERT_GT(below, 0);  // the data reaches both sides
  ASSERT_GT(above, 0);
  expect_values(run(cell, B, {xs})[0], want, 0);

  CellBuilder b2("t", DType::f64);
  Val x2 = b2.input("x", n);
  try {
    (void)clamp(x2, 1.0, -1.0);
    FAIL() << "expected clamp to refuse lo > hi";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("clamp"));
  }
}

TEST(BuilderPointwise, Comparisons) {
  const std::int64_t B = 3, n = 8;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val y = b.input("y", n);
  b.output("gt", greater(x, y));
  b.output("ge", greater_equal(x, y));
  b.output("lt", less(x, y));
  b.output("le", less_equal(x, y));
  Vec thresholds = random_vec(n, 12);
  Val v = b.param("v", {n});
  b.output("gt_v", greater(x, v));  // against a broadcast parameter
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 13), ys = random_vec(B * n, 14);
  for (std::size_t e = 0; e < xs.size(); e += 3) ys[e] = xs[e];  // ties, where > and >= differ
  auto out = run(cell, B, {xs, ys}, {thresholds});
  Vec gt(xs.size()), ge(xs.size()), lt(xs.size()), le(xs.size()), gt_v(xs.size());
  for (std::size_t e = 0; e < xs.size(); ++e) {
    gt[e] = xs[e] > ys[e] ? 1.0 : 0.0;
    ge[e] = xs[e] >= ys[e] ? 1.0 : 0.0;
    lt[e] = xs[e] < ys[e] ? 1.0 : 0.0;
    le[e] = xs[e] <= ys[e] ? 1.0 : 0.0;
    gt_v[e] = xs[e] > thresholds[e % static_cast<std::size_t>(n)] ? 1.0 : 0.0;
  }
  expect_values(out[0], gt, 0);
  expect_values(out[1], ge, 0);
  expect_values(out[2], lt, 0);
  expect_values(out[3], le, 0);
  expect_values(out[4], gt_v, 0);
}

TEST(BuilderPointwise, WhereSelectsAndBroadcasts) {
  const std::int64_t B = 3, n = 6;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val y = b.input("y", n);
  Val col = b.input("col", 1);
  Val v = b.param("v", {n});
  b.output("max", where(greater(x, y), x, y));
  b.output("vec_branch", where(less(x, y), v, x));     // [n] branch against [B,n]
  b.output("col_cond", where(col, x, y));              // [B,1] condition
  b.output("col_branch", where(greater(x, y), col, y));  // [B,1] branch against [B,n]
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 15), ys = random_vec(B * n, 16), vs = random_vec(n, 17);
  Vec cols = {0.0, 2.0, kNaN};  // zero is false; any other value, NaN included, is true
  auto out = run(cell, B, {xs, ys, cols}, {vs});
  Vec w0(xs.size()), w1(xs.size()), w2(xs.size()), w3(xs.size());
  for (std::int64_t r = 0; r < B; ++r)
    for (std::int64_t j = 0; j < n; ++j) {
      std::size_t e = at(r, n, j);
      double c = cols[static_cast<std::size_t>(r)];
      w0[e] = std::max(xs[e], ys[e]);
      w1[e] = xs[e] < ys[e] ? vs[static_cast<std::size_t>(j)] : xs[e];
      w2[e] = c != 0.0 ? xs[e] : ys[e];
      w3[e] = xs[e] > ys[e] ? c : ys[e];
    }
  expect_values(out[0], w0, 0);
  expect_values(out[1], w1, 0);
  expect_values(out[2], w2, 0);
  expect_values(out[3], w3, 0);
}

TEST(BuilderPointwise, MinMaxPropagateNaN) {
  const std::int64_t B = 2, n = 5;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val y = b.input("y", n);
  b.output("min_xy", minimum(x, y));
  b.output("min_yx", minimum(y, x));
  b.output("max_xy", maximum(x, y));
  b.output("max_yx", maximum(y, x));
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 18), ys = random_vec(B * n, 19);
  xs[0] = kNaN;              // NaN on the left
  ys[3] = kNaN;              // NaN on the right
  xs[6] = ys[6] = kNaN;      // both
  auto out = run(cell, B, {xs, ys});
  Vec lo(xs.size()), hi(xs.size());
  for (std::size_t e = 0; e < xs.size(); ++e) {
    bool nan = std::isnan(xs[e]) || std::isnan(ys[e]);
    lo[e] = nan ? kNaN : std::min(xs[e], ys[e]);
    hi[e] = nan ? kNaN : std::max(xs[e], ys[e]);
  }
  expect_values(out[0], lo, 0);
  expect_values(out[1], lo, 0);
  expect_values(out[2], hi, 0);
  expect_values(out[3], hi, 0);
}

// softplus(x) = log(1 + e^x), computed here in long double with log1p so that it is exact to
// f64 over the whole range tested, overflow of e^x included.
double softplus_exact(double x) {
  // Past 1e4 even long double's exp overflows; there log(1 + e^x) = x + log1p(e^-x) rounds to x.
  if (x > 1e4) return x;
  return static_cast<double>(std::log1p(std::exp(static_cast<long double>(x))));
}

template <class T>
void check_softplus_extremes(const Vec& xs, double rtol) {
  CellBuilder b("t", std::is_same_v<T, double> ? DType::f64 : DType::f32);
  Val x = b.input("x", static_cast<std::int64_t>(xs.size()));
  b.output("y", softplus(x));
  Cell cell = std::move(b).finish();
  Vec got = run<T>(cell, 1, {xs})[0];
  for (std::size_t e = 0; e < xs.size(); ++e) {
    double want = softplus_exact(static_cast<double>(static_cast<T>(xs[e])));
    EXPECT_TRUE(std::isfinite(got[e])) << "softplus(" << xs[e] << ") = " << got[e];
    // Relative where the result is representable in T; below T's smallest normal, anything
    // between 0 and it is right.
    double floor = static_cast<double>(std::numeric_limits<T>::min());
    EXPECT_LE(std::abs(got[e] - want), rtol * std::abs(want) + floor)
        << "softplus(" << xs[e] << ") = " << got[e] << ", expected " << want;
  }
}

TEST(BuilderPointwise, SoftplusLargeMagnitudeDoesNotOverflow) {
  check_softplus_extremes<double>({-1000, -700, -50, -3.5, -1e-9, 0, 1e-9, 0.7, 3.5, 36, 50, 700,
                                   710, 1000, 1e300},
                                  1e-14);
  // In f32 e^89 already overflows: a naive log(1 + exp(x)) would give inf from there on.
  check_softplus_extremes<float>({-200, -100, -88, -20, -1, 0, 1, 20, 88, 89, 100, 200, 1e30},
                                 1e-6);
}

TEST(BuilderPointwise, UnaryOpsMatchStdMath) {
  const std::int64_t B = 3, n = 7;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);    // any sign
  Val p = b.input("p", n);    // positive
  b.output("neg", -x);
  b.output("abs", abs(x));
  b.output("sigmoid", sigmoid(x));
  b.output("tanh", tanh(x));
  b.output("relu", relu(x));
  b.output("exp", exp(x));
  b.output("log", log(p));
  b.output("sqrt", sqrt(p));
  b.output("rsqrt", rsqrt(p));
  b.output("erf", erf(x));
  Cell cell = std::move(b).finish();
  Vec xs = random_vec(B * n, 20, -4.0, 4.0), ps = random_vec(B * n, 21, 0.01, 9.0);
  auto out = run(cell, B, {xs, ps});
  ASSERT_EQ(out.size(), 10u);
  for (std::size_t e = 0; e < xs.size(); ++e) {
    double xv = xs[e], pv = ps[e];
    Vec want = {-xv,          std::fabs(xv), 1.0 / (1.0 + std::exp(-xv)), std::tanh(xv),
                xv > 0 ? xv : 0.0, std::exp(xv), std::log(pv), std::sqrt(pv),
                1.0 / std::sqrt(pv), std::erf(xv)};
    for (std::size_t i = 0; i < want.size(); ++i)
      EXPECT_NEAR(out[i][e], want[i], 1e-14 * std::max(1.0, std::abs(want[i])))
          << cell.outputs[i].name << "(" << (i >= 6 && i <= 8 ? pv : xv) << ")";
  }
}

// ---------------------------------------------------------------------------------------------
// Layout and reductions.

TEST(BuilderLayout, CatAndSlice) {
  const std::int64_t B = 3, a = 4, c = 2;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", a);
  Val y = b.input("y", c);
  Val joined = cat({x, y, x});
  EXPECT_EQ(node_of(joined).shape, Shape::batched(2 * a + c));
  b.output("joined", joined);
  b.output("middle", slice(joined, a - 1, c + 2));  // straddles both seams
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * a, 22), ys = random_vec(B * c, 23);
  auto out = run(cell, B, {xs, ys});
  Vec want_joined, want_middle;
  for (std::int64_t r = 0; r < B; ++r) {
    Vec row;
    for (std::int64_t j = 0; j < a; ++j) row.push_back(xs[at(r, a, j)]);
    for (std::int64_t j = 0; j < c; ++j) row.push_back(ys[at(r, c, j)]);
    for (std::int64_t j = 0; j < a; ++j) row.push_back(xs[at(r, a, j)]);
    want_joined.insert(want_joined.end(), row.begin(), row.end());
    want_middle.insert(want_middle.end(), row.begin() + (a - 1), row.begin() + (a - 1 + c + 2));
  }
  expect_values(out[0], want_joined, 0);
  expect_values(out[1], want_middle, 0);
}

TEST(BuilderLayout, BadSliceAndCatNameTheValues) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 7);
  Val v = b.param("v", {7});
  try {
    (void)slice(x, 5, 3);
    FAIL() << "expected slice to refuse [5, 8) of 7 features";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("slice"));
    EXPECT_THAT(e.what(), HasSubstr("start=5 len=3"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,7]"));
  }
  EXPECT_THROW((void)slice(x, -1, 2), Error);
  EXPECT_THROW((void)slice(x, 0, 0), Error);
  try {
    (void)cat({x, v});
    FAIL() << "expected cat to refuse a batched and an unbatched operand";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("cat"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,7]"));
    EXPECT_THAT(e.what(), HasSubstr("%v [7]"));
  }
}

TEST(BuilderReduce, SumAndMeanOverFeatures) {
  const std::int64_t B = 3, n = 9;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val s = sum(x), m = mean(x);
  EXPECT_EQ(node_of(s).shape, Shape::batched(1));
  EXPECT_EQ(node_of(m).shape, Shape::batched(1));
  b.output("sum", s);
  b.output("mean", m);
  b.output("centered", x - m);  // a reduction widened back with expand
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 24);
  auto out = run(cell, B, {xs});
  Vec want_sum, want_mean, want_centered;
  for (std::int64_t r = 0; r < B; ++r) {
    double acc = 0;
    for (std::int64_t j = 0; j < n; ++j) acc += xs[at(r, n, j)];
    want_sum.push_back(acc);
    want_mean.push_back(acc / static_cast<double>(n));
    for (std::int64_t j = 0; j < n; ++j) want_centered.push_back(xs[at(r, n, j)] - acc / 9.0);
  }
  expect_values(out[0], want_sum, 1e-14);
  expect_values(out[1], want_mean, 1e-14);
  expect_values(out[2], want_centered, 1e-14);
}

TEST(BuilderReduce, LayerNormMatchesHandComputation) {
  const std::int64_t B = 3, n = 9;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", n);
  Val gamma = b.param("gamma", {n});
  Val beta = b.param("beta", {n});
  b.output("affine", layer_norm(x, gamma, beta));
  b.output("plain", layer_norm(x));
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * n, 25, -3.0, 3.0), gs = random_vec(n, 26), bs = random_vec(n, 27);
  for (std::int64_t j = 0; j < n; ++j) xs[at(2, n, j)] = 0.75;  // a constant row: variance 0
  auto out = run(cell, B, {xs}, {gs, bs});
  Vec want_affine, want_plain;
  for (std::int64_t r = 0; r < B; ++r) {
    double mean = 0, var = 0;
    for (std::int64_t j = 0; j < n; ++j) mean += xs[at(r, n, j)];
    mean /= static_cast<double>(n);
    for (std::int64_t j = 0; j < n; ++j) var += (xs[at(r, n, j)] - mean) * (xs[at(r, n, j)] - mean);
    var /= static_cast<double>(n);  // biased, as F.layer_norm
    for (std::int64_t j = 0; j < n; ++j) {
      double normed = (xs[at(r, n, j)] - mean) / std::sqrt(var + 1e-5);
      want_plain.push_back(normed);
      want_affine.push_back(normed * gs[static_cast<std::size_t>(j)] +
                            bs[static_cast<std::size_t>(j)]);
    }
  }
  expect_values(out[0], want_affine, 1e-12);
  expect_values(out[1], want_plain, 1e-12);
  // The constant row normalizes to exactly beta (eps keeps it finite).
  for (std::int64_t j = 0; j < n; ++j)
    EXPECT_EQ(out[0][at(2, n, j)], bs[static_cast<std::size_t>(j)]);
}

// ---------------------------------------------------------------------------------------------
// Contractions.

TEST(BuilderContraction, LinearAndMatmulAgainstHandLoops) {
  const std::int64_t B = 3, K = 5, N = 4;
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", K);
  Val W = b.param("W", {N, K});   // nn.Linear layout: [out, in]
  Val M = b.param("M", {K, N});   // matmul layout: [in, out]
  Val bias = b.param("bias", {N});
  Val lin = linear(x, W), lin_b = linear(x, W, bias), mm = matmul(x, M);
  EXPECT_EQ(node_of(lin).shape, Shape::batched(N));
  EXPECT_EQ(node_of(mm).shape, Shape::batched(N));
  b.output("lin", lin);
  b.output("lin_b", lin_b);
  b.output("mm", mm);
  Cell cell = std::move(b).finish();

  Vec xs = random_vec(B * K, 28), ws = random_vec(N * K, 29), bs = random_vec(N, 30);
  Vec ms = random_vec(K * N, 31);
  auto out = run(cell, B, {xs}, {ws, ms, bs});
  Vec want_lin, want_lin_b, want_mm;
  for (std::int64_t r = 0; r < B; ++r)
    for (std::int64_t j = 0; j < N; ++j) {
      double l = 0, m = 0;
      for (std::int64_t k = 0; k < K; ++k) {
        l += xs[at(r, K, k)] * ws[at(j, K, k)];
        m += xs[at(r, K, k)] * ms[at(k, N, j)];
      }
      want_lin.push_back(l);
      want_lin_b.push_back(l + bs[static_cast<std::size_t>(j)]);
      want_mm.push_back(m);
    }
  expect_values(out[0], want_lin, 1e-14);
  expect_values(out[1], want_lin_b, 1e-14);
  expect_values(out[2], want_mm, 1e-14);

  // matmul with M = W^T is linear with W.
  Vec wt(ws.size());
  for (std::int64_t j = 0; j < N; ++j)
    for (std::int64_t k = 0; k < K; ++k) wt[at(k, N, j)] = ws[at(j, K, k)];
  expect_values(run(cell, B, {xs}, {ws, wt, bs})[2], out[0], 1e-14);
}

TEST(BuilderContraction, InnerDimensionMismatchNamesBoth) {
  CellBuilder b("t", DType::f64);
  Val x = b.input("x", 5);
  Val W = b.param("W", {4, 5});
  Val M = b.param("M", {5, 4});
  Val bias = b.param("bias", {5});
  try {
    (void)matmul(x, W);  // [B,5] @ [4,5]: the nn.Linear layout given to matmul
    FAIL() << "expected matmul to refuse";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("matmul"));
    EXPECT_THAT(e.what(), HasSubstr("%x [B,5]"));
    EXPECT_THAT(e.what(), HasSubstr("%W [4,5]"));
  }
  try {
    (void)linear(x, M);
    FAIL() << "expected linear to refuse";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("linear"));
    EXPECT_THAT(e.what(), HasSubstr("%M [5,4]"));
  }
  try {
    (void)linear(x, W, bias);
    FAIL() << "expected linear to refuse a bias of the wrong size";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("%bias [5]"));
  }
}

// ---------------------------------------------------------------------------------------------
// Builder misuse.

TEST(BuilderErrors, MisuseIsAnErrorNotACrash) {
  CellBuilder a("a", DType::f64);
  CellBuilder other("b", DType::f64);
  Val x = a.input("x", 3);
  Val y = other.input("y", 3);
  EXPECT_THROW((void)(x + y), Error);  // values of two cells
  EXPECT_THROW((void)(Val() + x), Error);
  EXPECT_THROW((void)a.param("p", {1, 2, 3}), Error);
  EXPECT_THROW((void)a.input("x", 3), Error);  // a name used twice
  EXPECT_THROW(CellBuilder("not a name"), Error);

  Val h = a.state("h", 3);
  a.output("y", tanh(x));
  try {
    (void)std::move(a).finish();
    FAIL() << "expected finish to refuse a state that is never updated";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("%h [B,3]"));
    EXPECT_THAT(e.what(), HasSubstr("never updated"));
  }
  (void)h;
}

}  // namespace
}  // namespace cellfuse

namespace cellfuse {
namespace {

TEST(BuilderAfterFinish, UsingTheBuilderAgainIsAnErrorNotACrash) {
  CellBuilder b("used");
  Val x = b.input("x", 2);
  Val h = b.state("h", 2);
  b.next(h, tanh(x + h));
  Cell cell = std::move(b).finish();
  EXPECT_THROW(b.input("y", 2), Error);
  EXPECT_THROW(b.cell(), Error);
  EXPECT_THROW(std::move(b).finish(), Error);
  EXPECT_EQ(cell.inputs.size(), 1u);
}

}  // namespace
}  // namespace cellfuse
