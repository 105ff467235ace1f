// The CUDA backend without a GPU: every standard cell's kernels (and random cells') compile
// through NVRTC to cubins for sm_90 and sm_80, and the emitted source is what it should be; NVRTC
// failures carry the log and the source; the disk cache of cubins hits, rejects corrupt and
// truncated entries, honours its environment and survives concurrent writers; the driver loader
// fails with a clear Error where there is no driver.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <dlfcn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <optional>
#include <set>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/codegen/cuda/cuda_program.h"
#include "compiler/ir/error.h"
#include "compiler/lower.h"
#include "compiler/passes/autodiff.h"
#include "cuda_test_program.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "random_cells.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/kernel_cache.h"
#include "runtime/cuda/nvrtc.h"
#include "runtime/cuda/plan_record.h"

namespace cellfuse {
namespace {

using testing_support::compile_cuda_program;
namespace fs = std::filesystem;
using cuda_codegen::CudaKernel;
using cuda_codegen::CudaProgram;
using cuda_codegen::FuseProducts;
using ::testing::HasSubstr;

// A fresh directory under the build's temp, removed at the end.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::temp_directory_path() / "cellfuse_cuda_test.XXXXXX").string();
    char* made = ::mkdtemp(pattern.data());
    if (!made) throw std::runtime_error("mkdtemp failed");
    path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) ::setenv(name, value, 1);
    else ::unsetenv(name);
  }
  ~ScopedEnv() {
    if (old_) ::setenv(name_.c_str(), old_->c_str(), 1);
    else ::unsetenv(name_.c_str());
  }

 private:
  std::string name_;
  std::optional<std::string> old_;
};

bool is_elf(const std::vector<char>& bytes) {
  return bytes.size() > 4 && bytes[0] == 0x7f && bytes[1] == 'E' && bytes[2] == 'L' && bytes[3] == 'F';
}

std::size_t count(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (std::size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Structural checks of every kernel of a program, independent of the emitter's own logic.
void check_program_source(const CudaProgram& p, const std::string& what) {
  for (const char* intrinsic : {"__expf", "__logf", "__fdividef", "__tanhf", "__powf", "__frsqrt", "use_fast_math"})
    EXPECT_EQ(p.source.find(intrinsic), std::string::npos) << what << ": " << intrinsic;
  for (int s = 0; s < 3; ++s) {
    const auto& stage = p.stages[s];
    ASSERT_EQ(stage.kernels.size(), stage.program.steps.size()) << what;
    for (std::size_t i = 0; i < stage.program.steps.size(); ++i) {
      const ProgramStep& step = stage.program.steps[i];
      if (step.kind != ProgramStep::Kind::Kernel) {
        EXPECT_TRUE(stage.kernels[i].name.empty());
        continue;
      }
      const CudaKernel& ck = stage.kernels[i];
      const kernel::Kernel& k = step.kernel.kernel;
      EXPECT_EQ(ck.name, k.name);
      // Exactly one definition in the translation unit, with its launch bounds.
      EXPECT_EQ(count(p.source, "__launch_bounds__(" + std::to_string(ck.threads) + ")\n" + k.name + "("), 1u) << what << " " << k.name;
      EXPECT_GE(ck.threads, 32);
      EXPECT_LE(ck.threads, 1024);
      EXPECT_EQ(ck.threads % 32, 0);
      EXPECT_GE(ck.rows_per_block, 1);
      EXPECT_EQ(ck.threads % ck.rows_per_block, 0) << "a reduction needs the same threads for every row";
      EXPECT_LE(ck.shared_bytes, 48 * 1024) << what << " " << k.name;
      // Every buffer that is not scratch is a parameter, in buffer order.
      std::vector<int> expected;
      for (std::size_t b = 0; b < k.buffers.size(); ++b)
        if (k.buffers[b].role != kernel::BufferRole::Scratch) expected.push_back(static_cast<int>(b));
      EXPECT_EQ(ck.pointer_buffers, expected) << what << " " << k.name;
      // A statement that reads what the one before it wrote waits for the block first.
      for (std::size_t st = 1; st < k.body.size(); ++st) {
        std::set<int> written, read;
        const auto& prev = k.body[st - 1];
        if (prev.kind == kernel::Statement::Kind::MatVec) written.insert(prev.matvec.out);
        else {
          for (const auto& x : prev.loop.stores) written.insert(x.buffer);
          for (const auto& x : prev.loop.reductions) written.insert(x.buffer);
        }
        const auto& cur = k.body[st];
        if (cur.kind == kernel::Statement::Kind::MatVec) read.insert(cur.matvec.x);
        else
          for (const auto& in : cur.loop.insts)
            if (in.kind == kernel::Inst::Kind::Load) read.insert(in.buffer);
        bool dependent = false;
        for (int b : read) dependent |= written.count(b) > 0;
        if (!dependent) continue;
        const std::string from = "// s" + std::to_string(st - 1) + ":", to = "// s" + std::to_string(st) + ":";
        const std::size_t a = ck.source.find(from), b = ck.source.find(to);
        ASSERT_NE(a, std::string::npos) << ck.source;
        ASSERT_NE(b, std::string::npos) << ck.source;
        const std::string between = ck.source.substr(a, b - a);
        // The last line before statement st is the barrier.
        const std::size_t last = between.rfind("__syncthreads();");
        ASSERT_NE(last, std::string::npos) << what << " " << k.name << " s" << st << "\n" << ck.source;
        EXPECT_EQ(between.find_first_not_of(" \n", last + 16), std::string::npos)
            << what << " " << k.name << ": no barrier right before s" << st << "\n" << ck.source;
      }
    }
  }
}

struct Case {
  const char* spec;
};

class StandardCellsCompile : public ::testing::TestWithParam<Case> {};

TEST_P(StandardCellsCompile, ToCubinsForSm90WithTheExpectedSource) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  for (DType dtype : {DType::f32, DType::f64})
    for (std::int64_t batch : {1, 3, 64}) {
      Cell cell = cells::by_spec(GetParam().spec, dtype);
      const std::string what = std::string(GetParam().spec) + " " + std::string(dtype_name(dtype)) + " B=" + std::to_string(batch);
      CudaBinary bin = build_cuda_binary(cell, batch, "sm_90", {}, &cache);
      EXPECT_TRUE(is_elf(bin.cubin)) << what;
      EXPECT_GT(bin.cubin.size(), 1000u) << what;
      check_program_source(bin.program, what);
      // Every kernel's name is in the cubin's symbol table.
      const std::string cubin(bin.cubin.begin(), bin.cubin.end());
      for (const auto& stage : bin.program.stages)
        for (const auto& k : stage.kernels)
          if (!k.name.empty()) {
            EXPECT_NE(cubin.find(k.name), std::string::npos) << what << " " << k.name;
          }
      EXPECT_NE(cubin.find(dtype == DType::f32 ? "cf_transpose_f32" : "cf_transpose_f64"), std::string::npos);
      // The persistent loop kernel (cuda_persistent.h) for small batches, in the same cubin.
      if (batch <= TargetOptions{}.persistent_limit) {
        ASSERT_TRUE(bin.program.persistent.ok()) << what << ": " << bin.program.persistent.reason;
        EXPECT_NE(cubin.find(bin.program.persistent.name), std::string::npos) << what;
        EXPECT_GE(bin.program.persistent.barriers_per_step, 1) << what;
        EXPECT_GT(bin.program.persistent.shared_bytes(132), 0) << what;
      } else {
        EXPECT_FALSE(bin.program.persistent.ok()) << what;
        EXPECT_THAT(bin.program.source, HasSubstr("// persistent loop: not available: batch 64 > 8")) << what;
      }
      // The block-resident loop kernel at every batch these small cells fit one block's shared
      // memory at, in the same cubin.
      const auto& r = bin.program.resident;
      ASSERT_TRUE(r.ok()) << what << ": " << r.reason;
      EXPECT_EQ(r.scope, cuda_codegen::LoopScope::Block) << what;
      EXPECT_NE(cubin.find(r.name), std::string::npos) << what;
      EXPECT_GE(r.barriers_per_step, 1) << what;
      EXPECT_GE(r.threads, 128) << what;
      EXPECT_LE(r.threads, 1024) << what;
      EXPECT_GE(r.shared_bytes(1), r.weight_elements * static_cast<std::int64_t>(dtype_size(dtype))) << what;
      EXPECT_LE(r.shared_bytes(1), cuda_codegen::kMaxBlockSharedBytes) << what;
      EXPECT_EQ(r.source.find("cf_grid_sync(cf_bar)"), std::string::npos) << what << ": a grid barrier in the one-block kernel";
      EXPECT_EQ(r.source.find("__ldcg"), std::string::npos) << what;
    }
  EXPECT_EQ(cache.stats().misses, 6u);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, StandardCellsCompile,
                         ::testing::Values(Case{"elman:5,1"}, Case{"elman:3,33"}, Case{"elman_proj:5,7,3"}, Case{"lstm:1,1"},
                                           Case{"lstm:5,7"}, Case{"lstm:33,33"}, Case{"gru:7,1"}, Case{"gru:4,33"},
                                           Case{"lnlstm:5,7"}, Case{"lnlstm:33,1"}, Case{"peephole:3,7"},
                                           Case{"peephole:7,33"}),
                         [](const auto& param_info) {
                           std::string name = param_info.param.spec;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Training (runtime/cuda/cuda_bptt.h): the forward with its tape (saves, the state at every
// step) and the generated backward step compile to cubins with the same structural checks, at a
// batch that fuses small products and one that calls cuBLAS; the step's kernels are named apart
// from the forward's (both modules are loaded into one process).
class StandardCellsBackwardCompile : public ::testing::TestWithParam<Case> {};

TEST_P(StandardCellsBackwardCompile, BothTrainingCellsToCubinsWithTheExpectedSource) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  for (DType dtype : {DType::f32, DType::f64})
    for (std::int64_t batch : {1, 64}) {
      Cell cell = cells::by_spec(GetParam().spec, dtype);
      BackwardCell backward = differentiate(optimize(cell));
      Cell forward = forward_with_tape(backward);
      ASSERT_EQ(forward.outputs.size(), cell.outputs.size() + backward.saved_outputs.size() + cell.states.size());
      std::set<std::string> names;
      for (const Cell* c : {&forward, &backward.step}) {
        const std::string what = std::string(GetParam().spec) + " " + std::string(dtype_name(dtype)) + " B=" +
                                 std::to_string(batch) + " " + c->name;
        CudaBinary bin = build_cuda_binary(*c, batch, "sm_90", {}, &cache);
        EXPECT_TRUE(is_elf(bin.cubin)) << what;
        check_program_source(bin.program, what);
        const std::string cubin(bin.cubin.begin(), bin.cubin.end());
        int kernels = 0;
        for (const auto& stage : bin.program.stages)
          for (const auto& k : stage.kernels)
            if (!k.name.empty()) {
              ++kernels;
              EXPECT_NE(cubin.find(k.name), std::string::npos) << what << " " << k.name;
              EXPECT_TRUE(names.insert(k.name).second) << what << ": two kernels named " << k.name;
            }
        EXPECT_GT(kernels, 0) << what;
      }
      // The backward step runs its recurrence in a loop stage (the state gradients).
      EXPECT_TRUE(backward.step.states.size() == cell.states.size());
    }
  EXPECT_EQ(cache.stats().misses, 8u);
}

INSTANTIATE_TEST_SUITE_P(OddSizes, StandardCellsBackwardCompile,
                         ::testing::Values(Case{"elman:3,33"}, Case{"elman_proj:5,7,3"}, Case{"lstm:5,7"}, Case{"gru:4,33"},
                                           Case{"lnlstm:5,7"}, Case{"peephole:7,33"}),
                         [](const auto& param_info) {
                           std::string name = param_info.param.spec;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

TEST(CudaCompile, RandomCellsBackwardStepsCompile) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  int compiled = 0;
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    DType dtype = seed % 2 ? DType::f32 : DType::f64;
    Cell cell = testing_support::random_cell(seed, dtype, 10);
    const std::string what = "random seed " + std::to_string(seed);
    std::optional<BackwardCell> backward;
    try {
      backward = differentiate(cell);
    } catch (const Error& e) {
      continue;  // autodiff rejects it, with a reason (tested with autodiff)
    }
    CudaBinary bin = build_cuda_binary(backward->step, 3, "sm_90", {}, &cache);
    EXPECT_TRUE(is_elf(bin.cubin)) << what;
    check_program_source(bin.program, what);
    ++compiled;
  }
  EXPECT_GE(compiled, 4);
}

// The LSTM's loop stage at a large batch: one cuBLAS GEMM (h W_hh^T) and one kernel that does
// every gate's math, reading the four gates of the fused [B, 4H] products at column offsets (no
// slice copies), with the accurate device functions.
TEST(CudaEmitter, LstmLoopIsOneGemmAndOneFusedKernel) {
  CudaProgram p = compile_cuda_program(optimize(cells::lstm(5, 7)), 64, "lstm");
  const auto& loop = p.stages[1];
  int gemms = 0, kernels = 0;
  for (const auto& step : loop.program.steps) (step.kind == ProgramStep::Kind::Gemm ? gemms : kernels)++;
  EXPECT_EQ(gemms, 1);
  ASSERT_EQ(kernels, 1);
  const CudaKernel* k = nullptr;
  for (const auto& ck : loop.kernels)
    if (!ck.name.empty()) k = &ck;
  ASSERT_NE(k, nullptr);
  EXPECT_EQ(count(k->source, "cf_sigmoid("), 3u) << k->source;
  EXPECT_EQ(count(k->source, "tanhf("), 2u) << k->source;
  // The gates i, f, g, o are columns j, j+7, j+14, j+21 of the [B, 28] pre-activations.
  for (const char* col : {" + j]", " + j + 7]", " + j + 14]", " + j + 21]"})
    EXPECT_NE(k->source.find(std::string("row * 28") + col), std::string::npos) << col << "\n" << k->source;
  EXPECT_EQ(k->source.find("__syncthreads"), std::string::npos) << "one statement needs no barrier\n" << k->source;
  EXPECT_EQ(k->barriers, 0);
  // The pre stage is the one GEMM x W_ih^T over all steps (+ bias): no kernel at all.
  EXPECT_THAT(p.source, HasSubstr("// cuBLAS: %0 [B,28] = %x x %W_ih^T"));
}

// At batch 1 the LayerNorm-LSTM's loop is one kernel: the product, three layer norms (block
// reductions in a fixed order) and the gates, with barriers between dependent statements.
TEST(CudaEmitter, LayerNormLstmAtBatchOneIsOneKernelWithBlockReductions) {
  cuda_codegen::ProgramOptions options;
  options.fuse = FuseProducts::Always;
  CudaProgram p = compile_cuda_program(optimize(cells::lnlstm(5, 7)), 1, "lnlstm", options);
  const auto& loop = p.stages[1];
  ASSERT_EQ(loop.program.steps.size(), 1u);
  const CudaKernel& k = loop.kernels[0];
  EXPECT_THAT(k.source, HasSubstr("fmaf("));
  EXPECT_THAT(k.source, HasSubstr("cf_red["));
  EXPECT_GE(k.barriers, 5);
  EXPECT_EQ(k.rows_per_block, 1);  // rows_hint 1: one row a block
  EXPECT_EQ(k.global_scratch_per_block, 0);
  EXPECT_GT(k.shared_bytes, 0);
  check_program_source(p, "lnlstm B=1");
}

TEST(CudaEmitter, FusionOfSmallProductsFollowsTheOption) {
  auto loop_gemms = [](const CudaProgram& p) {
    int n = 0;
    for (const auto& step : p.stages[1].program.steps) n += step.kind == ProgramStep::Kind::Gemm;
    return n;
  };
  Cell small = optimize(cells::lstm(5, 7)), big = optimize(cells::lstm(300, 300));
  cuda_codegen::ProgramOptions options;
  EXPECT_EQ(loop_gemms(compile_cuda_program(small, 2, "s", options)), 0);   // auto: small weight, fused
  EXPECT_EQ(loop_gemms(compile_cuda_program(big, 2, "b", options)), 1);     // auto: 360000 weights, cuBLAS
  EXPECT_EQ(loop_gemms(compile_cuda_program(small, 9, "s", options)), 1);   // batch too large to fuse
  options.fuse = FuseProducts::Never;
  EXPECT_EQ(loop_gemms(compile_cuda_program(small, 2, "s", options)), 1);
  options.fuse = FuseProducts::Always;
  auto forced = compile_cuda_program(big, 2, "b", options);
  EXPECT_EQ(loop_gemms(forced), 0);
  EXPECT_TRUE(forced.stages[1].fused_products);
}

// Scratch that does not fit the shared memory goes to global memory, per block.
TEST(CudaEmitter, LargeScratchGoesToGlobalMemory) {
  cuda_codegen::ProgramOptions options;
  options.fuse = FuseProducts::Always;
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  CudaBinary bin = build_cuda_binary(cells::lnlstm(8, 4000), 3, "sm_90", options, &cache);
  const CudaKernel& k = bin.program.stages[1].kernels[0];
  EXPECT_GT(k.global_scratch_per_block, 0);
  EXPECT_LE(k.shared_bytes, options.emit.shared_limit);
  EXPECT_THAT(k.source, HasSubstr("cf_scratch + static_cast<long long>(blockIdx.x) * "));
  EXPECT_THAT(k.notes.front(), HasSubstr("global scratch"));
  EXPECT_TRUE(is_elf(bin.cubin));
}

// The persistent loop kernel: one grid barrier after the product and one at the end of an LSTM
// step; the weight slices in dynamic shared memory; wide cells' kernels compile too.
TEST(CudaPersistent, LstmStepHasTwoGridBarriersAndCompiles) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  for (const char* spec : {"lstm:256,256", "gru:64,1024", "elman:64,1024", "lnlstm:64,512"}) {
    CudaBinary bin = build_cuda_binary(cells::by_spec(spec), 8, "sm_90", {}, &cache);
    const auto& p = bin.program.persistent;
    ASSERT_TRUE(p.ok()) << spec << ": " << p.reason;
    EXPECT_THAT(p.source, HasSubstr("cf_grid_sync(cf_bar);")) << spec;
    EXPECT_THAT(p.source, HasSubstr("CF_DYNAMIC_SHARED(")) << spec;
    if (std::string(spec) == "lstm:256,256") {
      EXPECT_EQ(p.barriers_per_step, 2);
      EXPECT_EQ(p.weight_elements, 256 * 1024);
      // 32 blocks: 32 columns of W_hh (256 k) each, the operand rows, partial sums, a tree.
      EXPECT_EQ(p.shared_bytes(32), (32 * 256 + 8 * 256 + 256 + 256) * 4);
    }
    const std::string cubin(bin.cubin.begin(), bin.cubin.end());
    EXPECT_NE(cubin.find(p.name), std::string::npos) << spec;
  }
}

// The block-resident loop kernel (LoopScope::Block): W1's recurrence (elman_proj 256/128/128,
// B=2) and its backward step keep the whole 128x128 W_hh in one block's shared memory; W5's LSTM
// (256x1024 f32 = 1 MiB) does not fit a block and says so; the kernels compile for sm_90.
TEST(CudaResident, SmallCellsFitOneBlockAndBigOnesSaySoWithTheirSize) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  Cell w1 = cells::by_spec("elman_proj:256,128,128");
  BackwardCell backward = differentiate(optimize(w1));
  for (const Cell* c : {&w1, &backward.step}) {
    CudaBinary bin = build_cuda_binary(*c, 2, "sm_90", {}, &cache);
    const auto& r = bin.program.resident;
    ASSERT_TRUE(r.ok()) << c->name << ": " << r.reason;
    EXPECT_EQ(r.weight_elements, 128 * 128) << c->name;
    EXPECT_EQ(r.threads, 1024) << c->name;  // 128 columns, 8 threads each
    EXPECT_GT(r.shared_bytes(1), 128 * 128 * 4) << c->name;
    EXPECT_LT(r.shared_bytes(1), 100 * 1024) << c->name;
    EXPECT_THAT(r.source, HasSubstr("resident product")) << c->name;
    EXPECT_THAT(bin.program.source, HasSubstr("===== resident loop")) << c->name;
    const std::string cubin(bin.cubin.begin(), bin.cubin.end());
    EXPECT_NE(cubin.find(r.name), std::string::npos) << c->name;
  }
  auto w5 = compile_cuda_program(optimize(cells::by_spec("lstm:256,256")), 1, "w5");
  EXPECT_FALSE(w5.resident.ok());
  EXPECT_THAT(w5.resident.reason, HasSubstr("bytes of shared memory, more than a block has (232448)"));
  EXPECT_THAT(w5.source, HasSubstr("// resident loop: not available: "));
  // Batch rows share the resident weights: 64 rows of gru:64 still fit.
  auto gru = compile_cuda_program(optimize(cells::by_spec("gru:64,64")), 64, "g");
  ASSERT_TRUE(gru.resident.ok()) << gru.resident.reason;
  EXPECT_EQ(gru.resident.weight_elements, 64 * 192);
}

// The plan records of Auto's timing (plan_record.h): what is stored is read back for the same
// key only; a truncated, foreign or multi-line record reads as a miss; a store replaces it whole.
TEST(PlanRecord, StoresLoadsAndRejectsWhatItShould) {
  TempDir dir;
  const std::string key = "device=NVIDIA H100 source=0123 batch=2 lengths<=2^12";
  EXPECT_EQ(cuda::load_plan_record(dir.path(), key), std::nullopt);
  ASSERT_TRUE(cuda::store_plan_record(dir.path(), key, "resident"));
  EXPECT_EQ(cuda::load_plan_record(dir.path(), key), std::optional<std::string>("resident"));
  EXPECT_EQ(cuda::load_plan_record(dir.path(), key + " "), std::nullopt);
  const auto path = cuda::plan_record_path(dir.path(), key);
  EXPECT_EQ(path.parent_path().filename(), "plans");
  EXPECT_EQ(path.extension(), ".plan");
  ASSERT_TRUE(cuda::store_plan_record(dir.path(), key, "graph"));
  EXPECT_EQ(cuda::load_plan_record(dir.path(), key), std::optional<std::string>("graph"));
  for (const std::string& bad : std::vector<std::string>{std::string(), "cellfuse-plan 1\n", "cellfuse-plan 2\n" + key + "\ngraph\n",
                                 "cellfuse-plan 1\n" + key + "\ngraph", "cellfuse-plan 1\n" + key + "\n\n"}) {
    std::ofstream(path, std::ios::trunc | std::ios::binary) << bad;
    EXPECT_EQ(cuda::load_plan_record(dir.path(), key), std::nullopt) << bad;
  }
  std::ofstream(path, std::ios::trunc | std::ios::binary) << "cellfuse-plan 1\n" << key << "\ngraph\nresident\n";
  EXPECT_EQ(cuda::load_plan_record(dir.path(), key), std::nullopt);
  // Nothing but the record itself is left in the directory (no temporaries).
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(path.parent_path())) files += e.is_regular_file() ? 1 : 0;
  EXPECT_EQ(files, 1u);
  // An unwritable place fails without throwing.
  EXPECT_FALSE(cuda::store_plan_record("/proc/cellfuse-no-such-dir", key, "graph"));
}

TEST(CudaEmitter, TheSameCellGivesTheSameSource) {
  auto a = compile_cuda_program(optimize(cells::gru(4, 33)), 3, "gru");
  auto b = compile_cuda_program(optimize(cells::gru(4, 33)), 3, "gru");
  EXPECT_EQ(a.source, b.source);  // what lets the disk cache hit across processes
  auto c = compile_cuda_program(optimize(cells::gru(4, 34)), 3, "gru");
  EXPECT_NE(a.source, c.source);
}

TEST(CudaEmitter, LiteralsReadBackExactly) {
  for (double v : {0.0, -0.0, 1.0, -1.0, 0.1, 1e-5, 3.4028234663852886e38, 1e-45, -2.5e-300, 123456789.0}) {
    std::string f = cuda_codegen::cuda_literal(v, DType::f32);
    std::string d = cuda_codegen::cuda_literal(v, DType::f64);
    std::string fs = f.substr(f[0] == '(' ? 1 : 0);
    std::string ds = d.substr(d[0] == '(' ? 1 : 0);
    EXPECT_EQ(std::strtof(fs.c_str(), nullptr), static_cast<float>(v)) << f;
    EXPECT_EQ(std::strtod(ds.c_str(), nullptr), v) << d;
    EXPECT_EQ(f.find('f'), f.size() - (f.back() == ')' ? 2 : 1)) << f;
    EXPECT_NE(fs.find_first_of(".e"), std::string::npos) << f;
  }
  EXPECT_EQ(cuda_codegen::cuda_literal(-1.0, DType::f32), "(-1.0f)");
  EXPECT_THAT(cuda_codegen::cuda_literal(std::numeric_limits<double>::infinity(), DType::f32), HasSubstr("0x7f800000"));
  EXPECT_THAT(cuda_codegen::cuda_literal(-std::numeric_limits<double>::infinity(), DType::f64), HasSubstr("0xfff0000000000000"));
  EXPECT_THAT(cuda_codegen::cuda_literal(std::nan(""), DType::f64), HasSubstr("0x7ff8000000000000"));
}

// A cell whose constants are infinite and NaN, and every pointwise op, compiles.
TEST(CudaEmitter, EveryOpAndSpecialConstantsCompile) {
  for (DType dtype : {DType::f32, DType::f64}) {
    CellBuilder b("every_op", dtype);
    Val x = b.input("x", 5);
    Val h = b.state("h", 5);
    Val inf = b.constant(std::numeric_limits<double>::infinity(), Shape::batched(5));
    Val nan = b.constant(std::nan(""), Shape::batched(5));
    Val y = -x + abs(h) + sigmoid(x) + tanh(h) + relu(x) + exp(h) + log(abs(x) + 1.0) + sqrt(abs(h)) + rsqrt(abs(x) + 1.0) +
            softplus(h) + x / (abs(h) + 1.0) + minimum(x, inf) + maximum(h, nan) + greater(x, h) + greater_equal(x, h) +
            less(x, h) + less_equal(x, h) + where(x, h, x * 2.0) + erf(x) + hardsigmoid(x) + softsign(h);
    b.next(h, tanh(y) - mean(y) - amax(y));
    b.output("y", y);
    Cell cell = std::move(b).finish();
    TempDir dir;
    cuda::KernelCache cache(dir.path(), true);
    CudaBinary bin = build_cuda_binary(cell, 3, "sm_90", {}, &cache);
    EXPECT_TRUE(is_elf(bin.cubin));
    for (const char* fn : {"cf_min(", "cf_max(", "cf_relu(", "cf_softplus(", "cf_rsqrt(", " != "})
      EXPECT_THAT(bin.program.source, HasSubstr(fn));
    EXPECT_THAT(bin.program.source, HasSubstr(dtype == DType::f32 ? "erff(" : "erf("));
    check_program_source(bin.program, "every_op");
  }
}

TEST(CudaCompile, RandomCellsCompile) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  for (std::uint64_t seed = 1; seed <= 16; ++seed) {
    DType dtype = seed % 2 ? DType::f32 : DType::f64;
    Cell cell = testing_support::random_cell(seed, dtype, 14);
    for (std::int64_t batch : {std::int64_t{1}, std::int64_t{5}}) {
      const std::string what = "random seed " + std::to_string(seed) + " B=" + std::to_string(batch);
      try {
        CudaBinary bin = build_cuda_binary(cell, batch, seed % 3 ? "sm_90" : "sm_80", {}, &cache);
        EXPECT_TRUE(is_elf(bin.cubin)) << what;
        check_program_source(bin.program, what);
      } catch (const Error& e) {
        // A cell the compiled backends reject (e.g. a product of parameters alone) says so; NVRTC
        // must never be the one that fails.
        EXPECT_EQ(std::string(e.what()).find("NVRTC"), std::string::npos) << what << ": " << e.what();
      }
    }
  }
}

TEST(Nvrtc, KnowsTheArchitecturesWeAskFor) {
  auto archs = cuda::nvrtc_architectures();
  EXPECT_NE(std::find(archs.begin(), archs.end(), 90), archs.end());
  EXPECT_NE(std::find(archs.begin(), archs.end(), 80), archs.end());
  EXPECT_EQ(cuda::architecture_for(9, 0), "sm_90");
  EXPECT_EQ(cuda::architecture_for(8, 0), "sm_80");
  EXPECT_EQ(cuda::architecture_for(8, 6), "sm_86");
  EXPECT_THAT([] { cuda::architecture_for(1, 0); }, ::testing::ThrowsMessage<Error>(HasSubstr("compute capability 1.0")));
  EXPECT_THAT(cuda::nvrtc_version(), ::testing::MatchesRegex("[0-9]+\\.[0-9]+"));
}

TEST(Nvrtc, ACompileErrorCarriesTheLogAndTheSource) {
  const std::string source = "extern \"C\" __global__ void broken(float* x) {\n  x[0] = undeclared_thing;\n}\n";
  try {
    cuda::compile_to_cubin(source, "sm_90", {}, "broken.cu");
    FAIL() << "no error";
  } catch (const cuda::CompileError& e) {
    EXPECT_THAT(e.what(), HasSubstr("NVRTC"));
    EXPECT_THAT(e.what(), HasSubstr("broken.cu"));
    EXPECT_THAT(e.what(), HasSubstr("undeclared_thing"));          // the log names it
    EXPECT_THAT(e.what(), HasSubstr("    2    x[0] = undeclared"));  // the numbered source
    EXPECT_THAT(e.log(), HasSubstr("undeclared_thing"));
    EXPECT_EQ(e.source(), source);
  }
  // A bad option fails the same way, through the same Error type.
  EXPECT_THAT([] { cuda::compile_to_cubin("extern \"C\" __global__ void k() {}\n", "sm_90", {"--no-such-option"}); },
              ::testing::Throws<cuda::CompileError>());
  // So does an architecture NVRTC does not know.
  EXPECT_THAT([] { cuda::compile_to_cubin("extern \"C\" __global__ void k() {}\n", "sm_12"); }, ::testing::Throws<Error>());
}

TEST(Nvrtc, ACompileErrorPassesThroughTheCache) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  EXPECT_THAT([&] { cache.get_or_compile("this is not C++\n", "sm_90"); },
              ::testing::ThrowsMessage<cuda::CompileError>(HasSubstr("this is not C++")));
  EXPECT_TRUE(fs::is_empty(dir.path()) || !fs::exists(dir.path()));
}

// ---- the disk cache ------------------------------------------------------------------------

const std::string kSmallKernel = "extern \"C\" __global__ void cf_cache_probe(float* x) { x[threadIdx.x] *= 2.0f; }\n";

TEST(KernelCache, HitsAfterAMiss) {
  TempDir dir;
  cuda::KernelCache cache(dir.path() / "nested" / "dir", true);
  const auto before = cuda::nvrtc_compile_count();
  bool hit = true;
  auto first = cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 1);
  auto second = cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit);
  EXPECT_TRUE(hit);
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 1);
  EXPECT_EQ(first, second);
  EXPECT_EQ(cache.stats().hits, 1u);
  EXPECT_EQ(cache.stats().misses, 1u);
  // Another cache object on the same directory (another process, in effect) hits too.
  cuda::KernelCache other(dir.path() / "nested" / "dir", true);
  EXPECT_EQ(other.get_or_compile(kSmallKernel, "sm_90"), first);
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 1);
  // Another architecture or option is another entry.
  other.get_or_compile(kSmallKernel, "sm_80");
  other.get_or_compile(kSmallKernel, "sm_90", {"-lineinfo"});
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 3);
  std::size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir.path() / "nested" / "dir")) {
    EXPECT_EQ(e.path().extension(), ".cubin") << e.path();  // no temporary file left behind
    ++entries;
  }
  EXPECT_EQ(entries, 3u);
}

TEST(KernelCache, KeysSeparateEveryField) {
  auto k = cuda::cache_key("src", "13.0", "sm_90", {"-a"});
  EXPECT_EQ(k, cuda::cache_key("src", "13.0", "sm_90", {"-a"}));
  EXPECT_FALSE(k == cuda::cache_key("src ", "13.0", "sm_90", {"-a"}));
  EXPECT_FALSE(k == cuda::cache_key("src", "13.1", "sm_90", {"-a"}));
  EXPECT_FALSE(k == cuda::cache_key("src", "13.0", "sm_80", {"-a"}));
  EXPECT_FALSE(k == cuda::cache_key("src", "13.0", "sm_90", {"-b"}));
  EXPECT_FALSE(k == cuda::cache_key("src", "13.0", "sm_90", {"-a", ""}));
  EXPECT_EQ(k.hex().size(), 32u);
}

void corrupt_and_check(const std::function<void(const fs::path&)>& damage, const std::string& what) {
  TempDir dir;
  cuda::KernelCache cache(dir.path(), true);
  auto good = cache.get_or_compile(kSmallKernel, "sm_90");
  const auto key = cuda::cache_key(kSmallKernel, cuda::toolchain_version(), "sm_90", cuda::default_options());
  const fs::path entry = cache.entry_path(key);
  ASSERT_TRUE(fs::exists(entry)) << what;
  damage(entry);
  const auto before = cuda::nvrtc_compile_count();
  bool hit = true;
  auto rebuilt = cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit);
  EXPECT_FALSE(hit) << what;
  EXPECT_EQ(rebuilt, good) << what;
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 1) << what << ": the entry was not rebuilt";
  EXPECT_EQ(cache.stats().rejected, 1u) << what;
  // The rebuilt entry is whole again.
  EXPECT_EQ(cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit), good);
  EXPECT_TRUE(hit) << what;
}

TEST(KernelCache, RebuildsACorruptOrTruncatedEntry) {
  corrupt_and_check([](const fs::path& p) { fs::resize_file(p, fs::file_size(p) / 2); }, "truncated");
  corrupt_and_check([](const fs::path& p) { fs::resize_file(p, 20); }, "truncated inside the header");
  corrupt_and_check([](const fs::path& p) { fs::resize_file(p, 0); }, "empty");
  corrupt_and_check(
      [](const fs::path& p) {
        std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(static_cast<std::streamoff>(fs::file_size(p) - 7));
        f.put('\x5a');
      },
      "a payload byte flipped");
  corrupt_and_check(
      [](const fs::path& p) {
        std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
        f.seekp(0);
        f.write("NOTCUBIN", 8);
      },
      "bad magic");
  corrupt_and_check(
      [](const fs::path& p) {
        std::ofstream f(p, std::ios::binary | std::ios::app);
        f << "trailing garbage";
      },
      "longer than its header says");
  corrupt_and_check(
      [](const fs::path& p) {
        // A valid entry of another key under this key's name.
        cuda::KernelCache other(p.parent_path(), true);
        auto bytes = other.get_or_compile("extern \"C\" __global__ void other_kernel() {}\n", "sm_90");
        fs::rename(other.entry_path(cuda::cache_key("extern \"C\" __global__ void other_kernel() {}\n", cuda::toolchain_version(),
                                                    "sm_90", cuda::default_options())),
                   p);
      },
      "another key's entry");
}

TEST(KernelCache, FollowsTheEnvironment) {
  TempDir dir;
  {
    ScopedEnv a("CELLFUSE_CACHE_DIR", (dir.path() / "explicit").c_str());
    ScopedEnv b("XDG_CACHE_HOME", (dir.path() / "xdg").c_str());
    ScopedEnv c("CELLFUSE_CACHE", nullptr);
    EXPECT_EQ(cuda::KernelCache::default_directory(), dir.path() / "explicit");
    cuda::KernelCache cache;
    EXPECT_TRUE(cache.enabled());
    cache.get_or_compile(kSmallKernel, "sm_90");
    EXPECT_FALSE(fs::is_empty(dir.path() / "explicit"));
  }
  {
    ScopedEnv a("CELLFUSE_CACHE_DIR", nullptr);
    ScopedEnv b("XDG_CACHE_HOME", (dir.path() / "xdg").c_str());
    EXPECT_EQ(cuda::KernelCache::default_directory(), dir.path() / "xdg" / "cellfuse");
  }
  {
    ScopedEnv a("CELLFUSE_CACHE_DIR", nullptr);
    ScopedEnv b("XDG_CACHE_HOME", nullptr);
    ScopedEnv c("HOME", (dir.path() / "home").c_str());
    EXPECT_EQ(cuda::KernelCache::default_directory(), dir.path() / "home" / ".cache" / "cellfuse");
  }
}

TEST(KernelCache, CacheZeroTurnsItOff) {
  TempDir dir;
  ScopedEnv a("CELLFUSE_CACHE_DIR", dir.path().c_str());
  ScopedEnv b("CELLFUSE_CACHE", "0");
  cuda::KernelCache cache;
  EXPECT_FALSE(cache.enabled());
  const auto before = cuda::nvrtc_compile_count();
  bool hit = true;
  cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit);
  cache.get_or_compile(kSmallKernel, "sm_90", {}, "probe.cu", &hit);
  EXPECT_FALSE(hit);
  EXPECT_EQ(cuda::nvrtc_compile_count(), before + 2);
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(KernelCache, AnUnwritableDirectoryDoesNotFailACompilation) {
  TempDir dir;
  const fs::path file = dir.path() / "a_file";
  std::ofstream(file) << "not a directory";
  cuda::KernelCache cache(file / "cache", true);
  auto cubin = cache.get_or_compile(kSmallKernel, "sm_90");
  EXPECT_TRUE(is_elf(cubin));
  EXPECT_EQ(cache.stats().write_failures, 1u);
  EXPECT_THAT(cache.stats().last_write_error, HasSubstr("cannot create"));
}

// Two processes store and load one key at the same time: every load sees nothing or a whole,
// valid entry of one of the two writers, never a mix or half a file.
TEST(KernelCache, ConcurrentWritersNeverCorruptAnEntry) {
  TempDir dir;
  const cuda::CacheKey key{0x1234, 0x5678};
  auto payload = [](char fill) { return std::vector<char>(std::size_t{1} << 16, fill); };
  pid_t children[2];
  for (int c = 0; c < 2; ++c) {
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      cuda::KernelCache cache(dir.path(), true);
      const char mine = c == 0 ? 'a' : 'b';
      int bad = 0;
      for (int i = 0; i < 150; ++i) {
        if (!cache.store(key, payload(mine))) bad |= 1;
        auto got = cache.load(key);
        if (!got) continue;  // between two renames there is always an entry, but be lenient
        if (got->size() != (std::size_t{1} << 16)) bad |= 2;
        const char first = (*got)[0];
        if (first != 'a' && first != 'b') bad |= 4;
        if (std::count(got->begin(), got->end(), first) != static_cast<std::ptrdiff_t>(got->size())) bad |= 8;
      }
      if (cache.stats().rejected != 0) bad |= 16;
      std::_Exit(bad);
    }
    children[c] = pid;
  }
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "a writer saw a broken entry (bits: 1 store failed, 2 size, 4 content, 8 mix, "
                                         "16 rejected)";
  }
  cuda::KernelCache cache(dir.path(), true);
  auto final_entry = cache.load(key);
  ASSERT_TRUE(final_entry.has_value());
  EXPECT_TRUE(*final_entry == payload('a') || *final_entry == payload('b'));
  std::size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1u) << "temporary files left behind";
}

// ---- the driver loader, where there is no driver ----------------------------------------------

// In a child process (the driver is loaded once per process): with $CELLFUSE_CUDA_DRIVER naming
// a library that is not there, asking for CUDA gives the clear Error, from every entry point.
TEST(CudaDriver, AMissingDriverIsAClearError) {
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::setenv("CELLFUSE_CUDA_DRIVER", "/nonexistent/libcuda.so.1", 1);
    int bad = 0;
    std::string why;
    if (cuda::cuda_available(&why)) bad |= 1;
    if (why.find("no CUDA driver: /nonexistent/libcuda.so.1 not found") == std::string::npos) bad |= 2;
    try {
      CudaCell cell(cells::lstm(5, 7), 2);
      bad |= 4;
    } catch (const Error& e) {
      if (std::string(e.what()) != why) bad |= 8;
    }
    try {
      compile_cuda(cells::gru(3, 4), 1);
      bad |= 16;
    } catch (const Error& e) {
      if (std::string(e.what()).find("no CUDA driver") == std::string::npos) bad |= 32;
    }
    std::_Exit(bad);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "the child crashed";
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// On this machine itself: where libcuda.so.1 cannot be loaded, the default loader says so.
TEST(CudaDriver, NoDriverHereMeansAClearErrorNotACrash) {
  void* probe = ::dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (probe) {
    ::dlclose(probe);
    GTEST_SKIP() << "this machine has a CUDA driver";
  }
  std::string why;
  EXPECT_FALSE(cuda::cuda_available(&why));
  EXPECT_THAT(why, HasSubstr("no CUDA driver: libcuda.so.1 not found"));
  EXPECT_THAT([] { compile_cuda(cells::lstm(5, 7), 3); }, ::testing::ThrowsMessage<Error>(HasSubstr("no CUDA driver")));
}

// ---- the command line -----------------------------------------------------------------------

std::pair<int, std::string> run_cli(const std::string& args) {
  const std::string command = std::string(CELLFUSE_CLI) + " " + args + " 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return {-1, ""};
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, out};
}

TEST(CudaCli, PrintCudaShowsEveryKernelWithoutAGpu) {
  auto [status, out] = run_cli("print --cuda lnlstm:5,7 --batch 3");
  EXPECT_EQ(status, 0) << out;
  EXPECT_THAT(out, HasSubstr("cf_lnlstm_pre_k0("));
  EXPECT_THAT(out, HasSubstr("cf_lnlstm_loop_k0("));
  EXPECT_THAT(out, HasSubstr("CF_DEVICE float cf_sigmoid(float a)"));
  EXPECT_THAT(out, HasSubstr("__syncthreads();"));
  EXPECT_THAT(out, HasSubstr("// ===== stage loop"));
}

TEST(CudaCli, RunOnCudaWithoutADriverIsAClearError) {
  ScopedEnv env("CELLFUSE_CUDA_DRIVER", "/nonexistent/libcuda.so.1");
  auto [status, out] = run_cli("run lstm:5,7 --seq 3 --batch 2 --target cuda");
  EXPECT_EQ(status, 2) << out;
  EXPECT_THAT(out, HasSubstr("cellfuse: error: no CUDA driver"));
}

}  // namespace
}  // namespace cellfuse
