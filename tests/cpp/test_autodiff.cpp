// The autodiff pass: gradients of every op, every standard cell and random cells checked against
// f64 central finite differences (through the reference BPTT); what is saved and how parameter
// gradients are formed; the errors for an op without a rule and for unsupported parameter uses.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "compiler/passes/hoist.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "grad_check.h"
#include "random_cells.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;
using testing_support::check_cell_gradients;

AutodiffOptions saving(SavePolicy save) {
  AutodiffOptions options;
  options.save = save;
  return options;
}

// ---------------------------------------------------------------------------------------------
// Every op, each in a tiny cell.

// Arguments of an op cell: uniform in [lo, hi) per input, and a hook for special values.
struct Domain {
  double x_lo = -1, x_hi = 1;     // inputs x and x2
  double h_lo = 0.3, h_hi = 0.6;  // the initial state (the recurrence keeps it in [0.3, 0.6])
  bool sparse_x3 = false;         // x3 is a `where` condition: every other element 0
};

using Body = std::function<Val(CellBuilder&, Val x, Val x2, Val x3, Val col, Val h)>;

struct OpCase {
  std::string name;
  Body body;
  Domain domain;
};

// The op applied to the input x and the state h.
Body on_x_and_h(OpKind op) {
  return [op](CellBuilder&, Val x, Val, Val, Val, Val h) { return apply(op, {x, h}); };
}

// Inputs x, x2, x3 [B,3], col [B,1], state h [B,3]; output y = body(...); the next state
// 0.3 + 0.3 sigmoid(y) stays in [0.3, 0.6] whatever y is, so that every op's operands stay
// inside its domain over many steps, and the state's gradient flows through the op.
Cell op_cell(const OpCase& c) {
  CellBuilder b(c.name, DType::f64);
  Val x = b.input("x", 3);
  Val x2 = b.input("x2", 3);
  Val x3 = b.input("x3", 3);
  Val col = b.input("col", 1);
  Val h = b.state("h", 3);
  Val y = c.body(b, x, x2, x3, col, h);
  b.output("y", y);
  Val fitted = y;
  if (fitted.features() > 1)
    while (fitted.features() < 3) fitted = cat({fitted, fitted});
  if (fitted.features() > 3) fitted = slice(fitted, 0, 3);
  Val squashed = sigmoid(fitted) * b.constant(1.0, Shape::batched(3));
  b.next(h, 0.3 + 0.3 * squashed);
  return std::move(b).finish();
}

void move_into_domain(SequenceArgs<double>& args, const Domain& d) {
  SplitMix64 rng(99);
  for (std::size_t i = 0; i < 2; ++i)
    for (double& v : args.inputs[i].data) v = rng.uniform(d.x_lo, d.x_hi);
  if (d.sparse_x3)
    for (std::size_t i = 0; i < args.inputs[2].data.size(); i += 2) args.inputs[2].data[i] = 0.0;
  for (double& v : args.states[0].data) v = rng.uniform(d.h_lo, d.h_hi);
}

std::vector<OpCase> op_cases() {
  const Domain positive{0.2, 1.5};
  const Domain crossing{-1.0, 1.0, 0.3, 0.6};
  std::vector<OpCase> cases = {
      {"neg", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return -(x + h); }, {}},
      {"abs", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return abs(x - h); }, crossing},
      {"sigmoid", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return sigmoid(x + h); }, {}},
      {"tanh", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return tanh(x + h); }, {}},
      {"relu", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return relu(x - h); }, crossing},
      {"exp", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return exp(x + h); }, {}},
      {"log", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return log(x + h); }, positive},
      {"sqrt", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return sqrt(x + h); }, positive},
      {"rsqrt", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return rsqrt(x + h); }, positive},
      {"softplus",
       [](CellBuilder&, Val x, Val, Val, Val, Val h) { return softplus(x * 3.0 - h); },
       {}},
      {"add", on_x_and_h(OpKind::add), {}},
      {"sub", on_x_and_h(OpKind::sub), {}},
      {"mul", on_x_and_h(OpKind::mul), {}},
      {"div", on_x_and_h(OpKind::div), {}},
      {"div_by_input",
       [](CellBuilder&, Val, Val x2, Val, Val, Val h) {
         return apply(OpKind::div, {h, x2});
       },
       positive},
      {"min", on_x_and_h(OpKind::min), crossing},
      {"max", on_x_and_h(OpKind::max), crossing},
      // Comparisons: the whole cell has a zero gradient, and it must come out exactly so.
      {"gt", on_x_and_h(OpKind::gt), crossing},
      {"ge", on_x_and_h(OpKind::ge), crossing},
      {"lt", on_x_and_h(OpKind::lt), crossing},
      {"le", on_x_and_h(OpKind::le), crossing},
      {"where",
       [](CellBuilder&, Val x, Val, Val x3, Val, Val h) {
         return apply(OpKind::where, {x3, x, h});
       },
       {-1, 1, 0.3, 0.6, true}},
      {"where_compared",
       [](CellBuilder&, Val x, Val x2, Val, Val, Val h) { return where(greater(x, h), x2 * h, x); },
       crossing},
      {"linear",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val W = b.param("W", {2, 3});
         Val U = b.param("U", {2, 3});
         Val bias = b.param("b", {2});
         return apply(OpKind::linear, {x, W, bias}) + apply(OpKind::linear, {h, U});
       },
       {}},
      {"linear_shared_weight",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val W = b.param("W", {4, 3});
         return tanh(linear(x, W)) * linear(h, W);
       },
       {}},
      {"matmul",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val M = b.param("M", {3, 5});
         Val N = b.param("N", {3, 5});
         return apply(OpKind::matmul, {x, M}) * apply(OpKind::matmul, {h, N});
       },
       {}},
      {"broadcast",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val p = b.param("p", {3});
         return x + h * apply(OpKind::broadcast, {p});
       },
       {}},
      {"broadcast_scalar",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val s = b.param("s", {1});
         return x * s + h;  // expand(broadcast(s))
       },
       {}},
      {"expand",
       [](CellBuilder&, Val, Val, Val, Val col, Val h) {
         return apply(OpKind::expand, {col}, {std::int64_t{3}}) * h;
       },
       {}},
      {"cat",
       [](CellBuilder&, Val x, Val x2, Val, Val, Val h) {
         return apply(OpKind::cat, {h, x, x2 * h});
       },
       {}},
      {"slice",
       [](CellBuilder&, Val x, Val, Val, Val, Val h) {
         return apply(OpKind::slice, {x}, {std::int64_t{1}, std::int64_t{2}}) *
                apply(OpKind::slice, {h}, {std::int64_t{0}, std::int64_t{2}});
       },
       {}},
      {"overlapping_slices",
       [](CellBuilder&, Val x, Val, Val, Val, Val h) {
         Val v = x * h;
         return slice(v, 0, 2) * slice(v, 1, 2) + slice(h, 1, 2) + slice(h, 0, 2);
       },
       {}},
      {"sum",
       [](CellBuilder&, Val x, Val, Val, Val, Val h) { return apply(OpKind::sum, {x * h}); },
       {}},
      {"mean",
       [](CellBuilder&, Val x, Val, Val, Val, Val h) { return apply(OpKind::mean, {x * h}); },
       {}},
      {"constant",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         return x * b.constant(2.5, Shape::batched(3)) + h;
       },
       {}},
      {"layer_norm",
       [](CellBuilder& b, Val x, Val, Val, Val, Val h) {
         Val gamma = b.param("gamma", {3});
         Val beta = b.param("beta", {3});
         return layer_norm(x + h, gamma, beta);
       },
       {}},
      // Later additions at the end, so that the cases above keep their indices and seeds.
      {"erf", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return erf(x * 2.0 - h); }, {}},
      {"amax", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return amax(x * h) * h; }, {}},
      {"hardsigmoid", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return hardsigmoid(x * 4.0 + h) * h; }, {}},
      {"softsign", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return softsign(x * 3.0 - h) * h; }, {}},
      {"log1p", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return log1p(x * h * 0.5) * h; }, {}},
      {"expm1", [](CellBuilder&, Val x, Val, Val, Val, Val h) { return expm1(x * 2.0 - h) * h; }, {}},
  };
  return cases;
}

class PerOp : public ::testing::TestWithParam<std::size_t> {};

TEST_P(PerOp, MatchesFiniteDifferences) {
  const OpCase c = op_cases()[GetParam()];
  Cell cell = op_cell(c);
  for (SavePolicy save : {SavePolicy::Contractions, SavePolicy::MinBytes})
    for (std::int64_t steps : {1, 3}) {
      SCOPED_TRACE(c.name + " T=" + std::to_string(steps) +
                   (save == SavePolicy::MinBytes ? " min-bytes saves" : ""));
      auto r = check_cell_gradients(
          cell, steps, 2, 7 + GetParam(),
          [&](SequenceArgs<double>& a) { move_into_domain(a, c.domain); }, saving(save));
      EXPECT_GT(r.checked, 0u);
    }
}

std::string op_case_name(const ::testing::TestParamInfo<std::size_t>& param) {
  return op_cases()[param.param].name;
}

INSTANTIATE_TEST_SUITE_P(Ops, PerOp, ::testing::Range<std::size_t>(0, op_cases().size()),
                         op_case_name);

// The per-op cells use every op of the IR, so a new op needs a case here.
TEST(PerOpCoverage, EveryOpOfTheIrIsExercised) {
  std::set<OpKind> used;
  for (const OpCase& c : op_cases()) {
    Cell cell = op_cell(c);
    for (const Node& n : cell.graph.nodes()) used.insert(n.op);
  }
  for (int k = 0; k < op_count(); ++k)
    EXPECT_TRUE(used.count(static_cast<OpKind>(k))) << op_name(static_cast<OpKind>(k));
}

TEST(PerOpCoverage, EveryOpHasAGradientRule) {
  for (int k = 0; k < op_count(); ++k)
    EXPECT_TRUE(has_grad_rule(static_cast<OpKind>(k))) << op_name(static_cast<OpKind>(k));
}

// Comparisons have no gradient: the gradients are exactly zero, not merely small.
TEST(ZeroGradients, ComparisonCellHasExactlyZeroGradients) {
  OpCase c = op_cases()[17];
  ASSERT_EQ(c.name, "gt");
  Cell cell = op_cell(c);
  SequenceArgs<double> args = random_sequence_args<double>(cell, 3, 2, 5);
  auto w = random_loss_gradients<double>(cell, 3, 2, 6);
  auto r = reference_bptt(differentiate(cell), args, w);
  for (const auto& t : r.grads.inputs)
    for (double v : t.data) EXPECT_EQ(v, 0.0);
  for (const auto& t : r.grads.states)
    for (double v : t.data) EXPECT_EQ(v, 0.0);
}

// A masked-off gradient is exactly zero even when the incoming gradient is infinite (masks are
// `where`, not a multiplication by 0).
TEST(ZeroGradients, MasksDoNotTurnInfinityIntoNan) {
  CellBuilder b("masked", DType::f64);
  Val x = b.input("x", 4);
  Val h = b.state("h", 4);
  b.output("y", relu(x) + abs(h) + maximum(x, h));
  b.next(h, tanh(x));
  Cell cell = std::move(b).finish();
  SequenceArgs<double> args = random_sequence_args<double>(cell, 1, 2, 3);
  args.inputs[0].data = {-1, 2, -3, 4, 0.5, -0.5, 1, -1};
  args.states[0].data = {0, 0, 1, -1, 0, 2, -2, 0};
  LossGradients<double> w = random_loss_gradients<double>(cell, 1, 2, 4);
  for (double& v : w.outputs[0].data) v = INFINITY;
  for (double& v : w.final_states[0].data) v = 0.0;
  auto r = reference_bptt(differentiate(cell), args, w);
  for (std::size_t i = 0; i < 8; ++i) {
    double x_v = args.inputs[0].data[i], h_v = args.states[0].data[i];
    double dx = r.grads.inputs[0].data[i], dh = r.grads.states[0].data[i];
    EXPECT_FALSE(std::isnan(dx)) << i;
    EXPECT_FALSE(std::isnan(dh)) << i;
    // h's gradient: abs (0 at h == 0) and max (h only where h > x).
    if (h_v == 0 && !(h_v > x_v)) {
      EXPECT_EQ(dh, 0.0) << i;
    }
    if (x_v <= 0 && !(x_v >= h_v)) {
      EXPECT_EQ(dx, 0.0) << i;
    }
  }
}

// A state that nothing depends on, and an input that reaches nothing, get exact zeros; the
// step's next value for such a state is a zero constant.
TEST(ZeroGradients, UnusedStateAndInputGetZeros) {
  CellBuilder b("unused", DType::f64);
  Val x = b.input("x", 2);
  Val unused = b.input("unused", 3);
  Val h = b.state("h", 2);
  Val c = b.state("c", 2);
  (void)unused;
  (void)c;
  b.output("y", tanh(x) * h);
  b.next(h, tanh(x));
  b.next(c, sigmoid(x));
  Cell cell = std::move(b).finish();
  BackwardCell bw = differentiate(cell);
  const Node& next_h = bw.step.graph.node(bw.step.next_states[0]);
  EXPECT_EQ(next_h.op, OpKind::mul);  // dL/dh_t = dy * tanh(x)
  ValueId next_c = bw.step.next_states[1];
  ASSERT_EQ(bw.step.graph.node(next_c).op, OpKind::constant);
  EXPECT_EQ(bw.step.graph.node(next_c).float_attr("value"), 0.0);
  ASSERT_EQ(bw.step.graph.node(bw.step.outputs[1].value).op, OpKind::constant);
  auto r = check_cell_gradients(cell, 3, 2, 11);
  EXPECT_GT(r.checked, 0u);
}

// ---------------------------------------------------------------------------------------------
// Standard cells at small odd sizes.

struct CellCase {
  std::string name;
  std::int64_t batch, hidden, steps;
  SavePolicy save;
};

void PrintTo(const CellCase& c, std::ostream* os) {
  *os << c.name << " B=" << c.batch << " H=" << c.hidden << " T=" << c.steps
      << (c.save == SavePolicy::MinBytes ? " min-bytes saves" : "");
}

Cell standard_cell(const std::string& name, std::int64_t hidden) {
  const std::int64_t input = 3;
  if (name == "elman") return cells::elman(input, hidden, DType::f64);
  if (name == "elman_proj") return cells::elman_proj(input, hidden, 3, DType::f64);
  if (name == "lstm") return cells::lstm(input, hidden, DType::f64);
  if (name == "gru") return cells::gru(input, hidden, DType::f64);
  if (name == "lnlstm") return cells::lnlstm(input, hidden, DType::f64);
  return cells::peephole(input, hidden, DType::f64);
}

std::vector<CellCase> cell_cases() {
  std::vector<CellCase> out;
  for (const char* name : {"elman", "elman_proj", "lstm", "gru", "lnlstm", "peephole"})
    for (std::int64_t batch : {1, 3})
      for (std::int64_t hidden : {1, 3, 5})
        for (std::int64_t steps : {1, 2, 4})
          for (SavePolicy save : {SavePolicy::Contractions, SavePolicy::MinBytes})
            out.push_back({name, batch, hidden, steps, save});
  return out;
}

class StandardCell : public ::testing::TestWithParam<CellCase> {};

TEST_P(StandardCell, MatchesFiniteDifferences) {
  const CellCase& c = GetParam();
  Cell cell = standard_cell(c.name, c.hidden);
  auto r = check_cell_gradients(cell, c.steps, c.batch,
                                static_cast<std::uint64_t>(c.batch * 100 + c.hidden * 10 + c.steps),
                                {}, saving(c.save));
  EXPECT_GT(r.checked, 0u);
}

std::string cell_case_name(const ::testing::TestParamInfo<CellCase>& param) {
  const CellCase& c = param.param;
  return c.name + "_B" + std::to_string(c.batch) + "_H" + std::to_string(c.hidden) + "_T" +
         std::to_string(c.steps) + (c.save == SavePolicy::MinBytes ? "_MinBytes" : "");
}

INSTANTIATE_TEST_SUITE_P(Cells, StandardCell, ::testing::ValuesIn(cell_cases()), cell_case_name);

// ---------------------------------------------------------------------------------------------
// Random cells (the CPU property test's generator): every op, in random DAGs.

class RandomCell : public ::testing::TestWithParam<std::uint64_t> {};

TEST_P(RandomCell, MatchesFiniteDifferences) {
  const std::uint64_t seed = GetParam();
  Cell cell = testing_support::random_cell(seed, DType::f64, 10 + static_cast<int>(seed % 8));
  SCOPED_TRACE(print_cell(cell));
  auto r = check_cell_gradients(cell, 3, 2, seed * 7 + 1);
  EXPECT_GT(r.checked, 0u);
  // The cheapest saves give the same gradients, and never save more.
  auto m = check_cell_gradients(cell, 3, 2, seed * 7 + 1, {}, saving(SavePolicy::MinBytes));
  EXPECT_GT(m.checked, 0u);
  EXPECT_LE(saved_bytes_per_row(differentiate(cell, saving(SavePolicy::MinBytes))),
            saved_bytes_per_row(differentiate(cell)));
}

INSTANTIATE_TEST_SUITE_P(Seeds, RandomCell, ::testing::Range<std::uint64_t>(1, 33));

// ---------------------------------------------------------------------------------------------
// What the pass produces.

TEST(Backward, LstmSavesTheTwoContractionsAndFormsParameterGradientsAfterTheLoop) {
  BackwardCell bw = differentiate(cells::lstm(3, 5));
  const Cell& f = bw.forward;
  ASSERT_EQ(bw.saved_outputs.size(), 2u);
  for (int o : bw.saved_outputs)
    EXPECT_EQ(f.graph.node(f.outputs[static_cast<std::size_t>(o)].value).op, OpKind::linear);
  EXPECT_EQ(bw.user_outputs, 1);
  EXPECT_EQ(f.outputs[0].name, "h");
  EXPECT_EQ(saved_bytes_per_row(bw), 2 * 20 * 4);
  EXPECT_EQ(state_bytes_per_row(bw), 2 * 5 * 4);  // h and c at t

  using K = StepInputSource::Kind;
  std::vector<StepInputSource> want = {{K::ForwardInput, 0}, {K::ForwardState, 0},
                                       {K::ForwardState, 1}, {K::Saved, 0},
                                       {K::Saved, 1},        {K::OutputGrad, 0}};
  EXPECT_EQ(bw.step_inputs, want);
  EXPECT_EQ(bw.step.inputs.size(), want.size());
  EXPECT_EQ(bw.step.states.size(), 2u);
  EXPECT_EQ(bw.step.params.size(), 4u);
  ASSERT_GE(bw.step.outputs.size(), 1u);
  EXPECT_EQ(bw.step.outputs[0].name, "dx");

  // Every parameter gets its gradient from terms: W_ih = dG^T x (x read from the forward's
  // inputs), W_hh = dG^T h (the state at t), the biases row sums of the same dG.
  std::map<std::string, std::vector<ParamGradTerm>> by_param;
  for (const ParamGradTerm& t : bw.param_terms)
    by_param[std::string(f.leaf_name(f.params[static_cast<std::size_t>(t.param)]))].push_back(t);
  ASSERT_EQ(by_param.size(), 4u);
  for (const char* w : {"W_ih", "W_hh"}) {
    ASSERT_EQ(by_param[w].size(), 1u);
    EXPECT_EQ(by_param[w][0].kind, ParamGradTerm::Kind::GemmAtB);
    EXPECT_EQ(by_param[w][0].b.kind, StepValue::Kind::Input);
  }
  EXPECT_EQ(bw.step_inputs[static_cast<std::size_t>(by_param["W_ih"][0].b.index)],
            (StepInputSource{K::ForwardInput, 0}));
  EXPECT_EQ(bw.step_inputs[static_cast<std::size_t>(by_param["W_hh"][0].b.index)],
            (StepInputSource{K::ForwardState, 0}));
  for (const char* bias : {"b_ih", "b_hh"}) {
    ASSERT_EQ(by_param[bias].size(), 1u);
    EXPECT_EQ(by_param[bias][0].kind, ParamGradTerm::Kind::RowSum);
  }
  // One gate-gradient output serves all four terms.
  EXPECT_EQ(by_param["W_ih"][0].a, by_param["W_hh"][0].a);
  EXPECT_EQ(by_param["b_ih"][0].a, by_param["W_hh"][0].a);
  EXPECT_EQ(bw.step.outputs.size(), 2u);
}

TEST(Backward, StepIsAnOrdinaryCell) {
  for (const char* name : {"elman", "elman_proj", "lstm", "gru", "lnlstm", "peephole"}) {
    SCOPED_TRACE(name);
    BackwardCell bw = differentiate(cells::by_spec(std::string(name) + ":3,5"));
    // It prints and parses back, is already optimized, and splits into hoisting stages.
    Cell parsed = parse_cell(print_cell(bw.step));
    EXPECT_TRUE(structurally_equal(parsed, bw.step));
    EXPECT_EQ(print_cell(optimize(bw.step)), print_cell(bw.step));
    SequencePlan plan = hoist(bw.step);
    EXPECT_TRUE(plan.loop.cell.has_value());
    // Parameter gradients never accumulate inside the step: every value is per step and row.
    for (const auto& o : bw.step.outputs)
      EXPECT_TRUE(bw.step.graph.node(o.value).shape.is_batched());
    // Term operands have the shapes of their parameter's gradient.
    for (const ParamGradTerm& t : bw.param_terms) {
      auto width = [&](const StepValue& v) {
        ValueId id = v.kind == StepValue::Kind::Input
                         ? bw.step.inputs[static_cast<std::size_t>(v.index)]
                         : bw.step.outputs[static_cast<std::size_t>(v.index)].value;
        return bw.step.graph.node(id).shape.features();
      };
      const Shape& p =
          bw.forward.graph.node(bw.forward.params[static_cast<std::size_t>(t.param)]).shape;
      if (t.kind == ParamGradTerm::Kind::RowSum) {
        EXPECT_EQ(p, Shape::vector(width(t.a)));
      } else {
        EXPECT_EQ(p, Shape::matrix(width(t.a), width(t.b)));
      }
    }
  }
}

TEST(Backward, SavesPerStandardCell) {
  // Bytes per step per batch row in f32 for I = 3, H = 5 (O = 4 for elman_proj): the outputs of
  // the contractions on the gradient path.
  struct Want {
    const char* spec;
    std::int64_t saved_bytes;
  };
  for (const Want& w : {Want{"elman:3,5", 2 * 5 * 4}, Want{"elman_proj:3,5,4", 2 * 5 * 4},
                        Want{"lstm:3,5", 2 * 20 * 4}, Want{"gru:3,5", 2 * 15 * 4},
                        Want{"lnlstm:3,5", 2 * 20 * 4}, Want{"peephole:3,5", 2 * 20 * 4}}) {
    SCOPED_TRACE(w.spec);
    BackwardCell bw = differentiate(cells::by_spec(w.spec));
    EXPECT_EQ(saved_bytes_per_row(bw), w.saved_bytes);
    std::string text = print_backward(bw);
    EXPECT_THAT(text,
                HasSubstr("saved bytes per step per batch row: " + std::to_string(w.saved_bytes)));
  }
}

TEST(Backward, MinBytesSavesPerStandardCell) {
  // I = 3, H = 5, f32: the gate pre-activations instead of both GEMM outputs where the backward
  // only reads their sum; GRU needs r's and z's pre-activations and both halves of n's; the
  // LayerNorm-LSTM's norms read the GEMM outputs themselves.
  struct Want {
    const char* spec;
    std::int64_t saved_bytes;
    std::size_t saves;
  };
  for (const Want& w : {Want{"elman:3,5", 5 * 4, 1}, Want{"elman_proj:3,5,4", 5 * 4, 1},
                        Want{"lstm:3,5", 20 * 4, 1}, Want{"gru:3,5", 4 * 5 * 4, 4},
                        Want{"lnlstm:3,5", 2 * 20 * 4, 2}, Want{"peephole:3,5", 20 * 4, 1}}) {
    SCOPED_TRACE(w.spec);
    BackwardCell bw = differentiate(cells::by_spec(w.spec), saving(SavePolicy::MinBytes));
    EXPECT_EQ(saved_bytes_per_row(bw), w.saved_bytes);
    EXPECT_EQ(bw.saved_outputs.size(), w.saves);
  }
  // LSTM: the one save is the sum of the two GEMM outputs.
  BackwardCell bw = differentiate(cells::lstm(3, 5), saving(SavePolicy::MinBytes));
  const Cell& f = bw.forward;
  const Node& saved = f.graph.node(f.outputs[static_cast<std::size_t>(bw.saved_outputs[0])].value);
  EXPECT_EQ(saved.op, OpKind::add);
  EXPECT_EQ(f.graph.node(saved.inputs[0]).op, OpKind::linear);
  EXPECT_EQ(f.graph.node(saved.inputs[1]).op, OpKind::linear);
}

TEST(Backward, PrintShowsSavesBytesTermsAndTheStep) {
  BackwardCell bw = differentiate(cells::gru(3, 5, DType::f64));
  std::string text = print_backward(bw);
  EXPECT_THAT(text, HasSubstr("# backward of cell gru (f64)"));
  EXPECT_THAT(text, HasSubstr("saved.0 = %0 (linear) [B,15]: 120 bytes/row"));
  EXPECT_THAT(text, HasSubstr("(linear) [B,15]: 120 bytes/row"));
  EXPECT_THAT(text, HasSubstr("saved bytes per step per batch row: 240"));
  EXPECT_THAT(text,
              HasSubstr("forward states at t read by the backward (kept per step): 40 bytes/row"));
  EXPECT_THAT(text, HasSubstr("%saved.0 <- save saved.0 of step t"));
  EXPECT_THAT(text, HasSubstr("%dout.h <- dL/d(output h) at t"));
  EXPECT_THAT(text, HasSubstr("dW_hh += (output dz.W_hh)^T (%h)  [GEMM]"));
  EXPECT_THAT(text, HasSubstr("dW_ih += (output dz.W_ih)^T (%x)  [GEMM]"));
  EXPECT_THAT(text, HasSubstr("db_ih += rowsum(output dz.W_ih)"));
  EXPECT_THAT(text, HasSubstr("cell gru_backward f64 {"));
  EXPECT_THAT(text, HasSubstr("output saved.1 = %"));
}

// An output projection's weight gradient reads the output gradient straight from the step's
// inputs: nothing is emitted per step for it.
TEST(Backward, ProjectionTermsReadTheOutputGradientDirectly) {
  BackwardCell bw = differentiate(cells::elman_proj(3, 5, 4));
  const Cell& f = bw.forward;
  bool found = false;
  for (const ParamGradTerm& t : bw.param_terms) {
    if (f.leaf_name(f.params[static_cast<std::size_t>(t.param)]) != "W_ho") continue;
    found = true;
    ASSERT_EQ(t.a.kind, StepValue::Kind::Input);
    EXPECT_EQ(bw.step_inputs[static_cast<std::size_t>(t.a.index)],
              (StepInputSource{StepInputSource::Kind::OutputGrad, 0}));
    EXPECT_EQ(t.b.kind, StepValue::Kind::Output);  // h' = tanh(...), recomputed in the step
  }
  EXPECT_TRUE(found);
}

// ---------------------------------------------------------------------------------------------
// Errors.

TEST(Errors, OpWithoutARuleIsRejectedNamingIt) {
  AutodiffOptions options;
  options.without_rule = {OpKind::sigmoid};
  try {
    differentiate(cells::lstm(3, 5), options);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("op 'sigmoid'"));
    EXPECT_THAT(e.what(), HasSubstr("has no gradient rule"));
    EXPECT_THAT(e.what(), HasSubstr("cell 'lstm'"));
  }
  // An op off every gradient path needs no rule.
  options.without_rule = {OpKind::gt};
  CellBuilder b("cmp", DType::f64);
  Val x = b.input("x", 2);
  Val h = b.state("h", 2);
  b.next(h, where(greater(x, h), x, h));
  EXPECT_NO_THROW(differentiate(std::move(b).finish(), options));
}

TEST(Errors, UnbatchedComputationOnAParameterIsRejectedNamingTheOpAndTheParameter) {
  {
    CellBuilder b("squashed", DType::f64);
    Val x = b.input("x", 3);
    Val h = b.state("h", 3);
    Val p = b.param("p", {3});
    b.next(h, h * broadcast(sigmoid(p)) + x);
    try {
      differentiate(std::move(b).finish());
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("unsupported use of parameter %p"));
      EXPECT_THAT(e.what(), HasSubstr("`sigmoid`"));
      EXPECT_THAT(e.what(), HasSubstr("not supported yet"));
    }
  }
  {
    CellBuilder b("scaled_weight", DType::f64);
    Val x = b.input("x", 3);
    Val h = b.state("h", 2);
    Val W = b.param("W", {2, 3});
    Val s = b.param("s", {2, 3});
    b.next(h, tanh(linear(x, W * s)));
    try {
      differentiate(std::move(b).finish());
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("%W, %s"));
      EXPECT_THAT(e.what(), HasSubstr("`mul`"));
    }
  }
  // A parameter computation off every gradient path (only compared) is fine.
  CellBuilder b("compared", DType::f64);
  Val x = b.input("x", 3);
  Val h = b.state("h", 3);
  Val p = b.param("p", {3});
  b.next(h, where(greater(x, broadcast(exp(p))), x, h));
  Cell cell = std::move(b).finish();
  EXPECT_NO_THROW(differentiate(cell));
  auto r = check_cell_gradients(cell, 3, 2, 17);
  EXPECT_GT(r.checked, 0u);
}

}  // namespace
}  // namespace cellfuse
