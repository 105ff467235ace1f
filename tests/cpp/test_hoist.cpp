// The hoisting pass: each stage holds the right work, and the three stages run one after the
// other (pre and post on T*B rows at once) give exactly what the unsplit cell gives step by step.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "compiler/ir/text.h"
#include "compiler/passes/autodiff.h"
#include "compiler/passes/hoist.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/random_args.h"
#include "runtime/reference/interpreter.h"

namespace cellfuse {
namespace {

using Tensor = HostTensor<double>;

// Rows [first, first+count) of a [rows, n] or [T, B, n] tensor, as a [count, n] tensor.
Tensor rows_of(const Tensor& t, std::int64_t first, std::int64_t count) {
  std::int64_t n = t.shape.back();
  Tensor out({count, n});
  std::copy_n(t.data.begin() + first * n, count * n, out.data.begin());
  return out;
}

Tensor flatten(const Tensor& t) { return rows_of(t, 0, t.numel() / t.shape.back()); }

// Runs a plan with the reference interpreter: the semantics the native runners must match.
SequenceResult<double> run_plan(const SequencePlan& plan, const Cell& cell,
                                const SequenceArgs<double>& args, std::int64_t steps,
                                std::int64_t batch) {
  std::vector<Tensor> pre_out, loop_out;
  auto input_for = [&](const StageInput& in, std::int64_t first, std::int64_t count) {
    switch (in.from) {
      case StageInput::From::CellInput: return rows_of(flatten(args.inputs[in.index]), first, count);
      case StageInput::From::Pre: return rows_of(pre_out[in.index], first, count);
      case StageInput::From::Loop: return rows_of(loop_out[in.index], first, count);
    }
    return Tensor{};
  };
  auto params_for = [&](const SequenceStage& s) {
    std::vector<Tensor> p;
    for (int i : s.params) p.push_back(args.params[i]);
    return p;
  };
  const std::int64_t all = steps * batch;
  if (plan.pre.cell) {
    StepArgs<double> a{{}, {}, params_for(plan.pre)};
    for (const auto& in : plan.pre.inputs) a.inputs.push_back(input_for(in, 0, all));
    pre_out = interpret_step(*plan.pre.cell, a).outputs;
  }
  std::vector<Tensor> states = args.states;
  if (plan.loop.cell) {
    for (const auto& o : plan.loop.cell->outputs)
      loop_out.emplace_back(std::vector<std::int64_t>{all, plan.loop.cell->graph.node(o.value).shape.features()});
    for (std::int64_t t = 0; t < steps; ++t) {
      StepArgs<double> a{{}, states, params_for(plan.loop)};
      for (const auto& in : plan.loop.inputs) a.inputs.push_back(input_for(in, t * batch, batch));
      auto r = interpret_step(*plan.loop.cell, a);
      for (std::size_t o = 0; o < r.outputs.size(); ++o)
        std::copy(r.outputs[o].data.begin(), r.outputs[o].data.end(),
                  loop_out[o].data.begin() + t * batch * r.outputs[o].shape[1]);
      states = std::move(r.next_states);
    }
  }
  std::vector<Tensor> post_out;
  if (plan.post.cell) {
    StepArgs<double> a{{}, {}, params_for(plan.post)};
    for (const auto& in : plan.post.inputs) a.inputs.push_back(input_for(in, 0, all));
    post_out = interpret_step(*plan.post.cell, a).outputs;
  }
  SequenceResult<double> result;
  for (std::size_t o = 0; o < cell.outputs.size(); ++o) {
    const auto& src = plan.outputs[o];
    const Tensor& flat = src.stage == StageKind::Pre    ? pre_out[src.index]
                         : src.stage == StageKind::Loop ? loop_out[src.index]
                                                        : post_out[src.index];
    Tensor t({steps, batch, flat.shape[1]});
    t.data = flat.data;
    result.outputs.push_back(std::move(t));
  }
  result.final_states = std::move(states);
  return result;
}

// Both ways of planning (pointwise pre work hoisted or recomputed by its readers).
void expect_same_as_unsplit(const Cell& cell, std::int64_t steps, std::int64_t batch) {
  for (bool recompute : {false, true}) {
    SCOPED_TRACE(recompute ? "recompute_pointwise" : "hoist everything");
    SequencePlan plan = hoist(cell, HoistOptions{.recompute_pointwise = recompute});
    auto args = random_sequence_args<double>(cell, steps, batch, 42);
    auto want = interpret_sequence(cell, args);
    auto got = run_plan(plan, cell, args, steps, batch);
    ASSERT_EQ(got.outputs.size(), want.outputs.size());
    ASSERT_EQ(got.final_states.size(), want.final_states.size());
    auto close = [&](const Tensor& a, const Tensor& b) {
      ASSERT_EQ(a.shape, b.shape);
      for (std::size_t i = 0; i < a.data.size(); ++i)
        ASSERT_NEAR(a.data[i], b.data[i], 1e-12 * (1 + std::abs(b.data[i]))) << "element " << i;
    };
    for (std::size_t o = 0; o < want.outputs.size(); ++o) close(got.outputs[o], want.outputs[o]);
    for (std::size_t s = 0; s < want.final_states.size(); ++s)
      close(got.final_states[s], want.final_states[s]);
  }
}

TEST(Hoist, StandardCellsMatchTheUnsplitCell) {
  for (const char* spec : {"elman:5,7", "elman_proj:5,7,3", "lstm:5,7", "gru:6,4", "lnlstm:5,7",
                           "peephole:3,7"}) {
    SCOPED_TRACE(spec);
    Cell cell = cells::by_spec(spec, DType::f64);
    for (auto [steps, batch] : {std::pair{1, 1}, {3, 2}, {7, 3}}) expect_same_as_unsplit(cell, steps, batch);
  }
}

// The backward steps of the standard cells: many per-step-input values (recomputed gates,
// layer-norm statistics), the case recompute_pointwise is for.
TEST(Hoist, BackwardStepsMatchTheUnsplitCell) {
  for (const char* spec : {"lstm:5,7", "gru:6,4", "lnlstm:5,7", "peephole:3,7"}) {
    SCOPED_TRACE(spec);
    Cell step = differentiate(cells::by_spec(spec, DType::f64)).step;
    for (auto [steps, batch] : {std::pair{1, 1}, {4, 3}}) expect_same_as_unsplit(step, steps, batch);
  }
}

// With recompute_pointwise, what the pre stage hands on is products, cell outputs, or values
// the pre stage needs itself (operands of a hoisted product): the layer norms' statistics and
// the recomputed gates are computed by the stages that read them.
TEST(Hoist, RecomputedPlansHoistOnlyProducts) {
  for (const char* spec : {"lstm:5,7", "gru:6,4", "lnlstm:5,7", "peephole:3,7", "elman_proj:5,7,3"}) {
    for (bool backward : {false, true}) {
      SCOPED_TRACE(std::string(spec) + (backward ? " backward" : " forward"));
      Cell cell = cells::by_spec(spec);
      if (backward) cell = differentiate(cell).step;
      SequencePlan plan = hoist(cell, HoistOptions{.recompute_pointwise = true});
      if (!plan.pre.cell) continue;
      const Cell& pre = *plan.pre.cell;
      for (std::size_t o = 0; o < pre.outputs.size(); ++o) {
        const ValueId v = pre.outputs[o].value;
        bool cell_output = false, used_in_pre = false;
        for (const auto& source : plan.outputs)
          cell_output = cell_output || (source.stage == StageKind::Pre && pre.outputs[source.index].value == v);
        for (const Node& n : pre.graph.nodes())
          for (ValueId in : n.inputs) used_in_pre = used_in_pre || in == v;
        const OpKind op = pre.graph.node(v).op;
        EXPECT_TRUE(cell_output || used_in_pre || op_info(op).op_class == OpClass::Contraction)
            << "pre output " << pre.outputs[o].name << " is a " << op_name(op);
      }
    }
  }
  // The forward LayerNorm-LSTM: the input projection is hoisted, its layer norm is not.
  SequencePlan plan = hoist(cells::by_spec("lnlstm:5,7"), HoistOptions{.recompute_pointwise = true});
  ASSERT_TRUE(plan.pre.cell && plan.loop.cell);
  EXPECT_THAT(print_cell(*plan.pre.cell), testing::HasSubstr("linear %x, %W_ih"));
  EXPECT_THAT(print_cell(*plan.pre.cell), testing::Not(testing::HasSubstr("sum")));
  EXPECT_THAT(print_cell(*plan.loop.cell), testing::Not(testing::HasSubstr("W_ih")));
}

TEST(Hoist, InputProjectionGoesBeforeTheLoop) {
  SequencePlan plan = hoist(cells::lstm(5, 7));
  ASSERT_TRUE(plan.pre.cell && plan.loop.cell);
  EXPECT_FALSE(plan.post.cell);
  std::string pre = print_cell(*plan.pre.cell), loop = print_cell(*plan.loop.cell);
  EXPECT_THAT(pre, testing::HasSubstr("linear %x, %W_ih, %b_ih"));
  EXPECT_THAT(loop, testing::HasSubstr("linear %h, %W_hh, %b_hh"));
  EXPECT_THAT(loop, testing::Not(testing::HasSubstr("W_ih")));
  ASSERT_EQ(plan.loop.inputs.size(), 1u);
  EXPECT_EQ(plan.loop.inputs[0].from, StageInput::From::Pre);
}

TEST(Hoist, OutputProjectionGoesAfterTheLoop) {
  SequencePlan plan = hoist(cells::elman_proj(5, 7, 3));
  ASSERT_TRUE(plan.post.cell);
  EXPECT_THAT(print_cell(*plan.post.cell), testing::HasSubstr("%W_ho"));
  EXPECT_THAT(print_cell(*plan.loop.cell), testing::Not(testing::HasSubstr("W_ho")));
  ASSERT_EQ(plan.outputs.size(), 1u);
  EXPECT_EQ(plan.outputs[0].stage, StageKind::Post);
}

// Cells whose outputs and next states come from every kind of place.
TEST(Hoist, OddRoutingMatchesTheUnsplitCell) {
  CellBuilder b("odd", DType::f64);
  Val x = b.input("x", 3);
  Val u = b.input("u", 4);
  Val h = b.state("h", 4);
  Val k = b.state("k", 4);       // next k depends on the input only
  Val m = b.state("m", 4);       // carried unchanged
  Val W = b.param("W", {4, 3});
  Val bias = b.param("bias", {4});
  Val h2 = tanh(linear(x, W) + h * k + bias);
  b.output("prev_h", h);                     // a state leaf, read only by an output
  b.output("skip", sigmoid(u) * 2.0);         // input only: computed before the loop
  b.output("mixed", h2 * u + exp(m));         // post work that needs an input and the loop
  b.output("const", b.constant(0.5, Shape::batched(2)));
  b.next(h, h2);
  b.next(k, relu(u));
  b.next(m, m);
  Cell cell = std::move(b).finish();
  for (auto [steps, batch] : {std::pair{1, 1}, {4, 3}}) expect_same_as_unsplit(cell, steps, batch);
}

TEST(Hoist, StatelessCellIsAllPre) {
  CellBuilder b("ff", DType::f64);
  Val x = b.input("x", 3);
  b.output("y", tanh(linear(x, b.param("W", {2, 3}))));
  Cell cell = std::move(b).finish();
  SequencePlan plan = hoist(cell);
  EXPECT_TRUE(plan.pre.cell);
  EXPECT_FALSE(plan.loop.cell);
  EXPECT_FALSE(plan.post.cell);
  expect_same_as_unsplit(cell, 5, 2);
}

TEST(Hoist, BoundaryNamesDoNotCollideWithTheCellsNames) {
  CellBuilder b("names", DType::f64);
  Val x = b.input("v4", 3);  // looks like a generated name
  Val h = b.state("h", 3);
  Val h2 = tanh(exp(x) + h);
  b.output("v5", h2);
  b.next(h, h2);
  Cell cell = std::move(b).finish();
  expect_same_as_unsplit(cell, 3, 2);
}

}  // namespace
}  // namespace cellfuse
