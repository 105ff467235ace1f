// The CPU backend against the f64 reference interpreter: every standard cell, f32 and f64, at
// odd sizes, through both small-batch (fused products) and large-batch (BLAS) paths.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "backend_check.h"
#include "compiler/ir/error.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "runtime/cpu/cpu_cell.h"

namespace cellfuse {
namespace {

using testing_support::as_f64;
using testing_support::convert;
using testing_support::expect_matches;

void check_cell(const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed) {
  const std::string what = cell.name + " T=" + std::to_string(steps) + " B=" + std::to_string(batch);
  auto compiled = compile_cpu(cell, batch);
  Cell reference = as_f64(cell);
  if (cell.graph.dtype() == DType::f32) {
    auto args = random_sequence_args<float>(cell, steps, batch, seed);
    auto want = interpret_sequence(reference, convert<float, double>(args));
    expect_matches(compiled->run(args), want, 1e-5, what + " f32");
  } else {
    auto args = random_sequence_args<double>(cell, steps, batch, seed);
    auto want = interpret_sequence(reference, args);
    expect_matches(compiled->run(args), want, 1e-12, what + " f64");
  }
}

struct Case {
  const char* name;
  std::int64_t input, hidden;
};

class StandardCells : public ::testing::TestWithParam<Case> {};

TEST_P(StandardCells, MatchTheInterpreter) {
  const Case& c = GetParam();
  for (DType dtype : {DType::f32, DType::f64}) {
    std::string spec = std::string(c.name) + ":" + std::to_string(c.input) + "," + std::to_string(c.hidden);
    Cell cell = cells::by_spec(spec, dtype);
    for (std::int64_t batch : {1, 3, 64})
      for (std::int64_t steps : {1, 2, 37}) check_cell(cell, steps, batch, 7 * static_cast<std::uint64_t>(batch + steps));
  }
}

INSTANTIATE_TEST_SUITE_P(OddSizes, StandardCells,
                         ::testing::Values(Case{"elman", 5, 1}, Case{"elman", 3, 33}, Case{"elman_proj", 5, 7},
                                           Case{"lstm", 1, 1}, Case{"lstm", 5, 7}, Case{"lstm", 33, 33},
                                           Case{"gru", 7, 1}, Case{"gru", 4, 33}, Case{"lnlstm", 5, 7},
                                           Case{"lnlstm", 33, 1}, Case{"peephole", 3, 7}, Case{"peephole", 7, 33}),
                         [](const auto& param_info) {
                           return std::string(param_info.param.name) + "_" + std::to_string(param_info.param.input) + "_" +
                                  std::to_string(param_info.param.hidden);
                         });

TEST(CpuBackend, WideHiddenLayer) {
  for (std::int64_t batch : {1, 3, 64}) {
    if (testing_support::kSanitized && batch != 3) continue;  // the sanitizer build: one batch size
    check_cell(cells::lstm(13, 1000), 2, batch, 11);
  }
  check_cell(cells::elman_proj(9, 1000, 17), 3, 2, 5);
  check_cell(cells::lnlstm(8, 1000), 2, 3, 5);
}

TEST(CpuBackend, CompiledOnceForManyLengthsAndInputs) {
  Cell cell = cells::gru(6, 10);
  auto before = cpu_compile_count();
  auto first = compile_cpu(cell, 4);
  for (std::int64_t steps : {1, 5, 9}) check_cell(cell, steps, 4, static_cast<std::uint64_t>(steps));
  EXPECT_EQ(compile_cpu(cells::gru(6, 10), 4).get(), first.get());
  EXPECT_EQ(cpu_compile_count(), before + 1);
  // Another batch size is another compilation.
  compile_cpu(cell, 5);
  EXPECT_EQ(cpu_compile_count(), before + 2);
}

TEST(CpuBackend, CompilingAnLstmIsFast) {
  auto compiled = std::make_shared<CpuCell>(cells::lstm(256, 256), 8);
  std::printf("LSTM 256 compile (B=8): %.1f ms\n", compiled->compile_ms());
  auto big = std::make_shared<CpuCell>(cells::lstm(512, 512), 64);
  std::printf("LSTM 512 compile (B=64): %.1f ms\n", big->compile_ms());
  EXPECT_GT(compiled->compile_ms(), 0.0);
}

TEST(CpuBackend, RejectsArgumentsOfTheWrongShape) {
  Cell cell = cells::lstm(5, 7);
  auto compiled = compile_cpu(cell, 3);
  auto args = random_sequence_args<float>(cell, 4, 2, 1);  // batch 2, compiled for 3
  EXPECT_THAT([&] { compiled->run(args); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(::testing::HasSubstr("%x"),
                                                               ::testing::HasSubstr("[4,3,5]"),
                                                               ::testing::HasSubstr("[4,2,5]"))));
  auto f64_args = random_sequence_args<double>(cell, 4, 3, 1);
  EXPECT_THAT([&] { compiled->run(f64_args); },
              ::testing::ThrowsMessage<Error>(::testing::HasSubstr("f32")));
}

TEST(CpuBackend, ZeroStepsLeaveTheStates) {
  Cell cell = cells::lstm(5, 7);
  auto args = random_sequence_args<float>(cell, 1, 2, 3);
  args.inputs[0].shape[0] = 0;
  args.inputs[0].data.clear();
  auto result = compile_cpu(cell, 2)->run(args);
  EXPECT_EQ(result.outputs[0].shape, (std::vector<std::int64_t>{0, 2, 7}));
  EXPECT_EQ(result.final_states[0].data, args.states[0].data);
}

}  // namespace
}  // namespace cellfuse

namespace cellfuse {
namespace {

// Every way of sharing the work (columns of fused products, rows of the big stages, one
// thread) gives the same bits, and the interpreter's answer.
TEST(CpuBackend, SameBitsWhateverTheThreadCount) {
  struct Shape {
    const char* cell;
    std::int64_t steps, batch;
  };
  for (Shape s : {Shape{"lstm:40,256", 9, 1}, Shape{"gru:33,200", 7, 3}, Shape{"elman_proj:50,300,70", 300, 2},
                  Shape{"lnlstm:30,100", 200, 4}, Shape{"peephole:20,70", 5, 130}}) {
    Cell cell = cells::by_spec(s.cell);
    auto args = random_sequence_args<float>(cell, s.steps, s.batch, 3);
    SequenceResult<float> first;
    for (int threads : {1, 2, 3}) {
      CpuCell compiled(cell, s.batch, threads);
      auto result = compiled.run(args);
      if (threads == 1) {
        first = result;
        testing_support::expect_matches(result, interpret_sequence(as_f64(cell), convert<float, double>(args)), 1e-5,
                                        s.cell);
        continue;
      }
      for (std::size_t o = 0; o < first.outputs.size(); ++o)
        EXPECT_EQ(result.outputs[o].data, first.outputs[o].data) << s.cell << " threads " << threads;
      for (std::size_t i = 0; i < first.final_states.size(); ++i)
        EXPECT_EQ(result.final_states[i].data, first.final_states[i].data) << s.cell << " threads " << threads;
    }
  }
}

}  // namespace
}  // namespace cellfuse

#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/raw_ostream.h>

#include "compiler/codegen/llvm/host_target.h"
#include "compiler/codegen/llvm/kernel_codegen.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/lower.h"
#include "compiler/passes/hoist.h"
#include "runtime/cpu/llvm_jit.h"

namespace cellfuse {
namespace {

// The optimized IR of every kernel of a GRU and a LayerNorm-LSTM: vector math at the host's
// width, and no call other than LLVM intrinsics (and the barrier callback) anywhere.
TEST(CpuBackend, GeneratedIrIsVectorMathWithoutLibmCalls) {
  for (const char* spec : {"gru:40,70", "lnlstm:40,70"}) {
    llvm::LLVMContext context;
    llvm::Module module("inspect", context);
    SequencePlan plan = hoist(optimize(cells::by_spec(spec)));
    for (const auto* stage : {&plan.pre, &plan.loop, &plan.post}) {
      if (!stage->cell) continue;
      for (bool fuse : {false, true})
        for (const auto& step : compile_stage(*stage->cell, fuse, std::string("k") + (fuse ? "f" : "g") +
                                                                      std::to_string(reinterpret_cast<std::uintptr_t>(stage) % 997)).steps)
          if (step.kind == ProgramStep::Kind::Kernel) llvm_codegen::emit_kernel(module, step.kernel.kernel);
    }
    optimize_module(module);
    std::string ir;
    llvm::raw_string_ostream os(ir);
    module.print(os, nullptr);
    os.flush();
    const int lanes = llvm_codegen::host_target().lanes(4);
    EXPECT_NE(ir.find("<" + std::to_string(lanes) + " x float>"), std::string::npos) << spec;
    for (const char* libm : {"@expf", "@tanhf", "@logf", "@log1pf", "@expm1f", "@exp(", "@tanh(", "@log("})
      EXPECT_EQ(ir.find(libm), std::string::npos) << spec << " calls " << libm;
    // Every call is an intrinsic or the barrier passed in as an argument.
    for (std::size_t at = ir.find(" call "); at != std::string::npos; at = ir.find(" call ", at + 1)) {
      std::string line = ir.substr(at, ir.find('\n', at) - at);
      EXPECT_TRUE(line.find("@llvm.") != std::string::npos || line.find("%5(") != std::string::npos ||
                  line.find("void %") != std::string::npos)
          << line;
    }
  }
}

}  // namespace
}  // namespace cellfuse
