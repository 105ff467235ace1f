// Fusion and kernel lowering decisions, checked on the standard cells' loop stages.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "compiler/kernel/stage_program.h"
#include "compiler/lower.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/hoist.h"
#include "frontend/builder.h"
#include "frontend/cells.h"

namespace cellfuse {
namespace {

using ::testing::HasSubstr;

StageProgram loop_program(const Cell& cell, bool fuse) {
  SequencePlan plan = hoist(optimize(cell));
  return compile_stage(*plan.loop.cell, fuse, "t");
}

int count(const StageProgram& p, ProgramStep::Kind kind) {
  int n = 0;
  for (const auto& s : p.steps) n += s.kind == kind;
  return n;
}

TEST(Fusion, LstmStepIsOneGemmAndOneLoop) {
  StageProgram p = loop_program(cells::lstm(5, 7), false);
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].kind, ProgramStep::Kind::Gemm);
  const auto& k = p.steps[1].kernel.kernel;
  ASSERT_EQ(k.body.size(), 1u);  // c' and h' in one element loop
  EXPECT_EQ(k.body[0].loop.extent, 7);
  EXPECT_EQ(k.body[0].loop.stores.size(), 2u);
  EXPECT_THAT(p.notes[0], HasSubstr("runs as a GEMM"));
}

TEST(Fusion, SmallBatchLstmStepIsASingleKernel) {
  StageProgram p = loop_program(cells::lstm(5, 7), true);
  ASSERT_EQ(p.steps.size(), 1u);
  const auto& k = p.steps[0].kernel.kernel;
  ASSERT_EQ(k.body.size(), 2u);
  EXPECT_EQ(k.body[0].kind, kernel::Statement::Kind::MatVec);
  EXPECT_EQ(k.body[1].kind, kernel::Statement::Kind::Loop);
  // The gates come from the fused product's scratch; no slice or cat survives as a copy.
  for (const auto& inst : k.body[1].loop.insts)
    if (inst.kind == kernel::Inst::Kind::Compute) {
      EXPECT_TRUE(is_pointwise(inst.op));
    }
}

TEST(Fusion, LayerNormFusesWithItsNeighbours) {
  StageProgram p = loop_program(cells::lnlstm(5, 7), false);
  EXPECT_EQ(count(p, ProgramStep::Kind::Gemm), 1);
  EXPECT_EQ(count(p, ProgramStep::Kind::Kernel), 1);
}

TEST(Fusion, ElmanProjectionRunsAfterTheLoop) {
  SequencePlan plan = hoist(optimize(cells::elman_proj(5, 7, 3)));
  StageProgram post = compile_stage(*plan.post.cell, false, "t");
  ASSERT_EQ(post.steps.size(), 1u);
  EXPECT_EQ(post.steps[0].kind, ProgramStep::Kind::Gemm);
}

TEST(Fusion, ChainedProductsSplitKernelsWithReasons) {
  CellBuilder b("chain");
  Val x = b.input("x", 4);
  Val h = b.state("h", 4);
  Val a = tanh(linear(h, b.param("W1", {4, 4})) + x);
  Val h2 = sigmoid(linear(a, b.param("W2", {4, 4})));
  b.output("h", h2);
  b.next(h, h2);
  Cell cell = std::move(b).finish();
  FusionPlan plan = plan_fusion(*hoist(cell).loop.cell, FusionOptions{false});
  ASSERT_EQ(plan.groups.size(), 4u);  // gemm, kernel, gemm, kernel
  EXPECT_EQ(plan.groups[0].kind, FusionGroup::Kind::Gemm);
  EXPECT_EQ(plan.groups[1].kind, FusionGroup::Kind::Kernel);
  EXPECT_EQ(plan.groups[2].kind, FusionGroup::Kind::Gemm);
  EXPECT_EQ(plan.reasons.size(), 2u);
  // Fused, the whole step is one kernel.
  FusionPlan fused = plan_fusion(*hoist(cell).loop.cell, FusionOptions{true});
  ASSERT_EQ(fused.groups.size(), 1u);
  EXPECT_EQ(fused.groups[0].nodes.size(), 5u);
}

TEST(Fusion, ConcatenationSplitsTheLoopAtItsPieces) {
  CellBuilder b("cat");
  Val x = b.input("x", 3);
  Val h = b.state("h", 5);
  Val joined = cat({tanh(x), sigmoid(h)});              // [B,8]
  Val h2 = slice(joined, 2, 5) * 2.0;                    // columns 2..6 straddle the pieces
  b.output("h", h2);
  b.next(h, h2);
  StageProgram p = compile_stage(*hoist(std::move(b).finish()).loop.cell, false, "t");
  ASSERT_EQ(p.steps.size(), 1u);
  const auto& body = p.steps[0].kernel.kernel.body;
  ASSERT_EQ(body.size(), 2u);
  EXPECT_EQ(body[0].loop.extent, 1);  // x[2]
  EXPECT_EQ(body[1].loop.extent, 4);  // h[0..3]
}

}  // namespace
}  // namespace cellfuse

namespace cellfuse {
namespace {

// A constant next state (a gradient that is zero every step) is written by a kernel.
TEST(Fusion, ConstantResultsAreWritten) {
  CellBuilder b("zero");
  Val x = b.input("x", 3);
  Val h = b.state("h", 3);
  b.output("y", x * h);
  b.next(h, b.constant(0.0, Shape::batched(3)));
  StageProgram p = compile_stage(*hoist(std::move(b).finish()).loop.cell, false, "t");
  ASSERT_EQ(p.steps.size(), 1u);
  bool stores_constant = false;
  for (const auto& st : p.steps[0].kernel.kernel.body)
    for (const auto& inst : st.loop.insts) stores_constant = stores_constant || inst.kind == kernel::Inst::Kind::Const;
  EXPECT_TRUE(stores_constant);
}

}  // namespace
}  // namespace cellfuse

namespace cellfuse {
namespace {

// A reduction over a concatenation is split at the pieces like an element loop: one loop per
// piece sums into a column of a scratch row, one more sums that row (a single loop read the
// first piece past its end: "load out of bounds", or the wrong columns of a wider buffer).
TEST(Fusion, ReductionOverAConcatenationSplitsAtItsPieces) {
  CellBuilder b("sum_cat");
  Val x = b.input("x", 3);
  Val h = b.state("h", 4);
  Val total = sum(slice(cat({x, h}), 1, 5));  // x[1..2], h[0..2]
  b.output("y", total);
  b.next(h, tanh(h - total));
  StageProgram p = compile_stage(*hoist(std::move(b).finish()).loop.cell, false, "t");
  ASSERT_EQ(p.steps.size(), 1u);
  const auto& k = p.steps[0].kernel.kernel;
  std::vector<std::int64_t> reduced;  // the extents of the reduction loops, in order
  for (const auto& st : k.body)
    if (!st.loop.reductions.empty()) reduced.push_back(st.loop.extent);
  EXPECT_EQ(reduced, (std::vector<std::int64_t>{2, 3, 2})) << kernel::print_kernel(k);
  ASSERT_GE(k.body.size(), 3u);
  const auto& combine = k.body[2].loop;  // sums the partial sums of the two pieces
  ASSERT_EQ(combine.reductions.size(), 1u);
  EXPECT_EQ(k.buffers[combine.insts[0].buffer].role, kernel::BufferRole::Scratch);
  EXPECT_EQ(k.buffers[combine.insts[0].buffer].cols, 2);
  EXPECT_EQ(k.buffers[combine.reductions[0].buffer].role, kernel::BufferRole::Output);
  EXPECT_THAT(::testing::PrintToString(p.notes), HasSubstr("partial sums of"));
}

}  // namespace
}  // namespace cellfuse
