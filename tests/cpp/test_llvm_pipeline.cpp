// compile() (compiler/pipeline.h) and the Backend interface (runtime/backend.h): the stages run
// in the documented order and log themselves; options that do not fit the cell are refused with
// an Error; every backend of the build runs a cell forward and backward through the one
// interface and agrees with the float64 reference interpreter.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "backend_check.h"
#include "cell_conversion.h"
#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "frontend/cells.h"
#include "runtime/backend.h"
#include "runtime/random_args.h"

namespace cellfuse {
namespace {

using testing_support::expect_grads;
using testing_support::expect_matches;

std::vector<std::string> stage_names(const CompiledCell& c) {
  std::vector<std::string> out;
  for (const StageLog& s : c.log) out.push_back(s.name);
  return out;
}

// The names in `want` appear in the log in this order (other entries, the passes' rounds, may
// sit between them).
void expect_in_order(const CompiledCell& c, const std::vector<std::string>& want) {
  const auto names = stage_names(c);
  std::size_t at = 0;
  for (const auto& w : want) {
    while (at < names.size() && names[at] != w) ++at;
    ASSERT_LT(at, names.size()) << "stage '" << w << "' missing or out of order";
  }
}

TEST(Pipeline, RunsEveryStageInOrderAndTimesEach) {
  TargetOptions o;
  o.batch = 3;
  o.stage_text = true;
  const CompiledCell c = compile(cells::lnlstm(5, 7), o);
  expect_in_order(c, {"verify", "optimize", "simplify (round 1)", "cse (round 1)", "dce (round 1)", "hoist", "fuse",
                      "lower to kernel IR", "rewrite kernels for cpu", "generate LLVM IR"});
  for (const StageLog& s : c.log) {
    EXPECT_GE(s.ms, 0.0) << s.name;
    EXPECT_FALSE(s.text.empty()) << s.name;
  }
  ASSERT_TRUE(c.forward.llvm);
  EXPECT_FALSE(c.forward.cuda);
  EXPECT_EQ(*c.options.dtype, DType::f32);
  // The CPU rewrite is in the program the runtime loads: the loop kernel covers the batch.
  bool loop_kernel = false;
  for (const auto& step : c.forward.stages[1].steps)
    if (step.kind == ProgramStep::Kind::Kernel) {
      loop_kernel = true;
      EXPECT_EQ(step.kernel.kernel.rows_hint, 3);
    }
  EXPECT_TRUE(loop_kernel);
}

TEST(Pipeline, WithoutStageTextTheLogStillNamesAndTimesEveryStage) {
  const CompiledCell c = compile(cells::gru(4, 6), TargetOptions{});
  expect_in_order(c, {"verify", "optimize", "hoist", "fuse", "lower to kernel IR", "generate LLVM IR"});
  for (const StageLog& s : c.log) EXPECT_TRUE(s.text.empty()) << s.name;
}

#if CELLFUSE_HAVE_CUDA
TEST(Pipeline, TrainingCompilesTheForwardWithItsTapeAndTheBackwardStep) {
  TargetOptions o;
  o.training = true;
  o.target = Target::Cuda;
  const CompiledCell c = compile(cells::lstm(3, 5), o);
  expect_in_order(c, {"verify", "optimize", "differentiate", "forward with tape", "forward: optimize", "forward: fuse",
                      "forward: generate CUDA C", "backward step: optimize", "backward step: generate CUDA C"});
  ASSERT_TRUE(c.backward && c.backward_step);
  // The forward's outputs: the user output h, the saves, then the state at every step (2).
  EXPECT_EQ(c.forward.cell.outputs.size(), 1 + c.backward->saved_outputs.size() + 2);
  ASSERT_TRUE(c.forward.cuda && c.backward_step->cuda);
  EXPECT_NE(c.backward_step->cuda->source.find("__global__"), std::string::npos);
}
#endif

TEST(Pipeline, TheFusionLimitIsOneKnob) {
  TargetOptions o;
  o.batch = 4;
  auto loop_gemms = [](const CompiledCell& c) {
    int n = 0;
    for (const auto& step : c.forward.stages[1].steps) n += step.kind == ProgramStep::Kind::Gemm;
    return n;
  };
  EXPECT_EQ(loop_gemms(compile(cells::lstm(5, 7), o)), 0);  // 4 <= 8: h W_hh^T fused
  o.fusion_limit = 3;
  EXPECT_EQ(loop_gemms(compile(cells::lstm(5, 7), o)), 1);  // 4 > 3: a GEMM
}

TEST(Pipeline, OptionsThatDoNotFitTheCellAreRefused) {
  const Cell cell = cells::elman(3, 5);
  auto refused = [&](TargetOptions o, const std::string& words) {
    try {
      compile(cell, o);
      ADD_FAILURE() << "accepted: " << words;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
    }
  };
  TargetOptions o;
  o.batch = 0;
  refused(o, "batch size must be at least 1, got 0");
  o = {};
  o.dtype = DType::f64;
  refused(o, "asked for f64 but the cell 'elman' is f32");
  o = {};
  o.storage = Storage::BF16;
  refused(o, "bf16 storage is for the CUDA backend only");
#if CELLFUSE_HAVE_CUDA
  o.target = Target::Cuda;
  EXPECT_NO_THROW(compile(cell, o));
  TargetOptions f64 = o;
  f64.storage = Storage::F16;
  try {
    compile(cells::elman(3, 5, DType::f64), f64);
    ADD_FAILURE() << "f16 storage of an f64 cell accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("f16 storage needs an f32 cell"), std::string::npos) << e.what();
  }
#endif
}

TEST(Backends, TheBuildListsItsBackendsAndRefusesOthersByName) {
  const auto names = backend_names();
  ASSERT_GE(names.size(), 2u);
  EXPECT_EQ(names[0], "ref");
  EXPECT_EQ(names[1], "cpu");
  try {
    backend("tpu");
    ADD_FAILURE() << "backend('tpu') found";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no backend 'tpu'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("ref, cpu"), std::string::npos) << e.what();
  }
}

// Every backend that can run here (the CUDA one needs a GPU: its compile says so, as an Error),
// forward and BPTT through the one interface, against the f64 interpreter.
TEST(Backends, EachRunsForwardAndBpttThroughTheInterface) {
  const Cell cell = cells::lnlstm(5, 7);
  const Cell cell64 = cells::lnlstm(5, 7, DType::f64);
  const std::int64_t steps = 6, batch = 3;
  const auto args = random_sequence_args<float>(cell, steps, batch, 11);
  const auto seeds = random_loss_gradients<float>(cell, steps, batch, 12);
  const auto want = interpret_sequence(cell64, testing_support::convert<float, double>(args));
  const auto want_grads = reference_bptt(differentiate_stage(cell64), testing_support::convert<float, double>(args),
                                         testing_support::convert_seeds<float, double>(seeds));
  TargetOptions o;
  o.batch = batch;
  for (const auto& name : backend_names()) {
    const Backend& b = backend(name);
    EXPECT_EQ(b.name(), name);
    if (name == "cuda") {  // without a GPU: a clear Error; with one: the same checks
      try {
        expect_matches(b.compile(cell, o)->run(args), want, 1e-5, name + " forward");
        expect_grads(b.compile_training(cell, o)->run(args, seeds).grads, want_grads.grads, 1e-4, name + " gradients");
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("CUDA"), std::string::npos) << e.what();
      }
      continue;
    }
    expect_matches(b.compile(cell, o)->run(args), want, 1e-5, name + " forward");
    const auto trained = b.compile_training(cell, o)->run(args, seeds);
    expect_matches(trained.forward, want, 1e-5, name + " training forward");
    expect_grads(trained.grads, want_grads.grads, 1e-4, name + " gradients");
  }
}

}  // namespace
}  // namespace cellfuse
