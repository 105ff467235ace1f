// The GPU sequence runner (runtime/cuda/cuda_cell.cpp) and the emitted kernels, run on a machine
// without a GPU: the driver and cuBLAS are a host emulation (fake_cuda/fake_cuda.cpp, loaded
// through $CELLFUSE_CUDA_DRIVER and $CELLFUSE_CUBLAS_LIBRARY), and each cell's generated CUDA C
// is compiled for the host by the C++ compiler (fake_cuda/cuda_emulation.h: blocks of real
// threads meeting at barriers). NVRTC still compiles the real cubin, which the fake driver
// checks it is given. Results are compared with the f64 reference interpreter.
//
// What this proves before a GPU sees the code: the kernels' indexing, row blocking, reductions
// and barriers compute the kernel IR's meaning; the runner binds every value to the right memory
// at every step, calls cuBLAS with the right transposes and leading dimensions, copies states,
// captures and replays graphs, and writes nothing out of bounds (guard bytes) nor reads memory
// nothing wrote (fresh memory is NaN). What it cannot prove: GPU timing, memory-model corner
// cases and the device math library's last bits (tests/gpu/run_gpu_tests.sh does, on a GPU).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <bit>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <optional>

#include "backend_check.h"
#include "cuda_device_args.h"
#include "cuda_test_program.h"
#include "fake_cuda/emulated_cuda.h"
#include "storage_rounding.h"
#include "compiler/codegen/cuda/cuda_program.h"
#include "compiler/ir/error.h"
#include "compiler/lower.h"
#include "frontend/builder.h"
#include "frontend/cells.h"
#include "random_cells.h"
#include "op_cells.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/profile/ceilings.h"
#include "runtime/profile/profiler.h"

namespace cellfuse {
namespace {

using testing_support::compile_cuda_program;
namespace fs = std::filesystem;
using cuda_codegen::FuseProducts;
using testing_support::as_f64;
using testing_support::convert;
using testing_support::DeviceScratch;
using testing_support::device_sequence_args;
using testing_support::device_training_args;
using testing_support::download;
using testing_support::same_bits;
using testing_support::convert_seeds;
using testing_support::expect_grads;
using testing_support::expect_matches;
using testing_support::rounded;
using testing_support::build_host_kernels;
using testing_support::emulated_bptt;
using testing_support::emulated_cell;
using testing_support::emulation_work_dir;
using testing_support::fake_counters;
using testing_support::fake_errors;
using testing_support::use_fake_cuda;
using Counters = testing_support::FakeCounters;
using ::testing::HasSubstr;

// Before any test runs (and so before the driver is first loaded): the fake driver and cuBLAS.
const bool kFakeDriver = [] {
  use_fake_cuda();
  return true;
}();

const fs::path& work_dir() { return emulation_work_dir(); }

// Three runs (a direct launch, a graph capture, a graph replay), each against the interpreter.
template <class T>
void check_runs(CudaCell& compiled, const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
                const std::string& what) {
  auto args = random_sequence_args<T>(cell, steps, batch, seed);
  SequenceResult<double> want;
  if constexpr (std::is_same_v<T, float>) want = interpret_sequence(as_f64(cell), convert<float, double>(args));
  else want = interpret_sequence(cell, args);
  const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  const Counters before = fake_counters();
  const auto captures_before = compiled.graph_captures();
  std::vector<SequenceResult<T>> runs;
  for (int r = 0; r < 3; ++r) {
    runs.push_back(compiled.run(args));
    expect_matches(runs.back(), want, tolerance, what + " run " + std::to_string(r));
  }
  EXPECT_TRUE(same_bits(runs[0], runs[1]) && same_bits(runs[1], runs[2])) << what << ": a graph replay differs";
  const Counters after = fake_counters();
  if (compiled.graphs() && compiled.loop_plan() == LoopStrategy::Graph && steps > 0) {
    EXPECT_EQ(compiled.graph_captures(), captures_before + 1) << what;
    EXPECT_EQ(after.graph_launches - before.graph_launches, 2u) << what;
  } else {
    EXPECT_EQ(after.graph_launches, before.graph_launches) << what;
  }
  EXPECT_EQ(fake_errors(), "") << what;
}

struct Case {
  const char* spec;
  DType dtype;
  std::int64_t batch, steps;
  FuseProducts fuse;
};

std::string case_name(const Case& c) {
  std::string name = std::string(c.spec) + "_" + std::string(dtype_name(c.dtype)) + "_B" + std::to_string(c.batch) + "_T" +
                     std::to_string(c.steps) + (c.fuse == FuseProducts::Always ? "_fused" : c.fuse == FuseProducts::Never ? "_cublas" : "_auto");
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

void PrintTo(const Case& c, std::ostream* os) { *os << case_name(c); }

class StandardCellsEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(StandardCellsEmulated, MatchTheInterpreter) {
  const Case& c = GetParam();
  Cell cell = cells::by_spec(c.spec, c.dtype);
  CudaOptions options;
  options.program.fuse = c.fuse;
  options.loop = LoopStrategy::Graph;
  auto compiled = emulated_cell(cell, c.batch, options);
  EXPECT_EQ(compiled->device_name(), "cellfuse fake GPU (host emulation)");
  EXPECT_EQ(compiled->architecture(), "sm_90");
  EXPECT_FALSE(compiled->persistent());
  const std::string what = case_name(c);
  const auto seed = 3 + static_cast<std::uint64_t>(c.steps);
  if (c.dtype == DType::f32) check_runs<float>(*compiled, cell, c.steps, c.batch, seed, what);
  else check_runs<double>(*compiled, cell, c.steps, c.batch, seed, what);
  // The persistent loop kernel (one cooperative launch for all steps), from the same module.
  if (c.batch <= TargetOptions{}.persistent_limit) {
    options.loop = LoopStrategy::Persistent;
    CudaCell persistent(cell, c.batch, options);
    ASSERT_TRUE(persistent.persistent()) << what << ": " << persistent.loop_strategy_reason();
    EXPECT_THAT(persistent.describe(), HasSubstr("# loop strategy: persistent"));
    if (c.dtype == DType::f32) check_runs<float>(persistent, cell, c.steps, c.batch, seed, what + " persistent");
    else check_runs<double>(persistent, cell, c.steps, c.batch, seed, what + " persistent");
  }
  // The block-resident loop kernel (one block, every weight in its shared memory), at any batch.
  options.loop = LoopStrategy::Resident;
  CudaCell resident(cell, c.batch, options);
  ASSERT_EQ(resident.loop_plan(), LoopStrategy::Resident) << what << ": " << resident.loop_strategy_reason();
  EXPECT_FALSE(resident.persistent());
  EXPECT_THAT(resident.describe(), HasSubstr("# loop strategy: resident (asked for): one block of "));
  if (c.dtype == DType::f32) check_runs<float>(resident, cell, c.steps, c.batch, seed, what + " resident");
  else check_runs<double>(resident, cell, c.steps, c.batch, seed, what + " resident");
}

INSTANTIATE_TEST_SUITE_P(
    OddSizes, StandardCellsEmulated,
    ::testing::Values(Case{"lstm:1,1", DType::f32, 1, 1, FuseProducts::Auto}, Case{"lstm:5,7", DType::f32, 1, 37, FuseProducts::Always},
                      Case{"lstm:5,7", DType::f32, 3, 2, FuseProducts::Never}, Case{"lstm:33,33", DType::f32, 64, 3, FuseProducts::Auto},
                      Case{"lstm:33,33", DType::f64, 3, 4, FuseProducts::Always}, Case{"gru:4,33", DType::f32, 3, 5, FuseProducts::Always},
                      Case{"gru:7,1", DType::f64, 64, 2, FuseProducts::Auto}, Case{"gru:4,33", DType::f32, 64, 3, FuseProducts::Auto},
                      Case{"lnlstm:5,7", DType::f32, 1, 5, FuseProducts::Always}, Case{"lnlstm:33,1", DType::f32, 64, 2, FuseProducts::Auto},
                      Case{"lnlstm:5,7", DType::f64, 3, 2, FuseProducts::Never}, Case{"lnlstm:33,33", DType::f32, 3, 3, FuseProducts::Always},
                      Case{"elman:3,33", DType::f32, 1, 37, FuseProducts::Always}, Case{"elman:5,1", DType::f32, 64, 2, FuseProducts::Auto},
                      Case{"elman_proj:5,7,3", DType::f32, 3, 4, FuseProducts::Never},
                      Case{"elman_proj:5,7,3", DType::f64, 2, 4, FuseProducts::Always},
                      Case{"peephole:7,33", DType::f32, 64, 2, FuseProducts::Auto}, Case{"peephole:3,7", DType::f64, 1, 3, FuseProducts::Always}),
    [](const auto& param_info) { return case_name(param_info.param); });

// Scratch too large for shared memory lives in global memory, a region per block.
// (A small shared-memory limit stands in for a wide cell, some scratch in each place; lnlstm:8,3000
// would overflow the default 46 KB.)
TEST(CudaEmulated, GlobalScratch) {
  Cell cell = cells::lnlstm(8, 33);
  CudaOptions options;
  options.program.fuse = FuseProducts::Always;
  options.program.emit.shared_limit = 1600;  // the reduction tree takes 1 KB of it
  for (std::int64_t batch : {1, 5}) {
    auto compiled = emulated_cell(cell, batch, options);
    EXPECT_NE(compiled->source().find("(global scratch)"), std::string::npos);
    EXPECT_NE(compiled->source().find("(shared memory)"), std::string::npos);
    check_runs<float>(*compiled, cell, 3, batch, 5, "lnlstm:8,33 fused, shared limit 1 KB, B=" + std::to_string(batch));
  }
}

TEST(CudaEmulated, RandomCells) {
  for (std::uint64_t seed = 1; seed <= 8; ++seed) {
    const DType dtype = seed % 2 ? DType::f32 : DType::f64;
    Cell cell = testing_support::random_cell(seed, dtype, 12);
    const std::int64_t batch = seed % 3 == 0 ? 1 : seed % 3 == 1 ? 3 : 17;
    const std::string what = "random seed " + std::to_string(seed) + " B=" + std::to_string(batch);
    std::unique_ptr<CudaCell> compiled;
    try {
      compiled = emulated_cell(cell, batch);
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find("NVRTC"), std::string::npos) << what << ": " << e.what();
      continue;  // a cell the compiled backends reject, with a reason
    }
    if (dtype == DType::f32) check_runs<float>(*compiled, cell, 4, batch, seed, what);
    else check_runs<double>(*compiled, cell, 4, batch, seed, what);
  }
}

// A sequence length that changes between runs reallocates the workspace and drops the graph.
TEST(CudaEmulated, ChangingLengthsAndGraphsOff) {
  Cell cell = cells::gru(6, 10);
  auto compiled = emulated_cell(cell, 4);
  for (std::int64_t steps : {3, 5, 3}) check_runs<float>(*compiled, cell, steps, 4, static_cast<std::uint64_t>(steps), "gru T=" + std::to_string(steps));
  EXPECT_EQ(compiled->graph_captures(), 3u);

  CudaOptions off;
  off.graphs = false;
  auto eager = emulated_cell(cell, 4, off);
  EXPECT_FALSE(eager->graphs());
  check_runs<float>(*eager, cell, 5, 4, 5, "gru, graphs off");
  EXPECT_EQ(eager->graph_captures(), 0u);
  ::setenv("CELLFUSE_CUDA_GRAPHS", "0", 1);
  auto env_off = emulated_cell(cell, 4);
  ::unsetenv("CELLFUSE_CUDA_GRAPHS");
  EXPECT_FALSE(env_off->graphs());
}

TEST(CudaEmulated, ZeroStepsLeaveTheStates) {
  Cell cell = cells::lstm(5, 7);
  auto compiled = emulated_cell(cell, 2);
  auto args = random_sequence_args<float>(cell, 1, 2, 3);
  args.inputs[0].shape[0] = 0;
  args.inputs[0].data.clear();
  auto result = compiled->run(args);
  EXPECT_EQ(result.outputs[0].shape, (std::vector<std::int64_t>{0, 2, 7}));
  EXPECT_EQ(result.final_states[0].data, args.states[0].data);
  EXPECT_EQ(result.final_states[1].data, args.states[1].data);
  EXPECT_EQ(fake_errors(), "");
}

TEST(CudaEmulated, RejectsArgumentsOfTheWrongShapeOrType) {
  Cell cell = cells::lstm(5, 7);
  auto compiled = emulated_cell(cell, 3);
  auto args = random_sequence_args<float>(cell, 4, 2, 1);  // batch 2, compiled for 3
  EXPECT_THAT([&] { compiled->run(args); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(HasSubstr("%x"), HasSubstr("[4,3,5]"), HasSubstr("[4,2,5]"))));
  auto f64_args = random_sequence_args<double>(cell, 4, 3, 1);
  EXPECT_THAT([&] { compiled->run(f64_args); }, ::testing::ThrowsMessage<Error>(HasSubstr("f32")));
  DeviceSequenceArgs missing;
  missing.steps = 2;
  EXPECT_THAT([&] { compiled->run_device(missing); }, ::testing::ThrowsMessage<Error>(HasSubstr("input(s)")));
}

// The device-pointer API on a stream of the caller's gives the host API's bits.
TEST(CudaEmulated, RunDeviceOnACallersStream) {
  Cell cell = cells::lnlstm(9, 21);
  const std::int64_t B = 3, T = 6;
  auto compiled = emulated_cell(cell, B);
  auto args = random_sequence_args<float>(cell, T, B, 5);
  auto host = compiled->run(args);
  {
    DeviceScratch scratch;
    DeviceSequenceArgs dev = device_sequence_args(scratch, args, host, T);
    for (int r = 0; r < 3; ++r) {
      compiled->run_device(dev, scratch.stream());
      EXPECT_TRUE(same_bits(download(scratch, dev, host), host)) << "run " << r;
    }
    EXPECT_EQ(compiled->graph_captures(), 1u);  // the host API ran once (direct); these: direct, capture, replay
  }
  EXPECT_EQ(fake_errors(), "");
}

// The harness itself: the fake driver reports copies out of bounds, and fresh memory reads NaN
// (so a kernel reading memory nothing wrote cannot pass by luck).
TEST(CudaEmulated, TheFakeDriverCatchesWhatItShould) {
  const cuda::Driver& d = cuda::driver();
  EXPECT_EQ(fake_errors(), "");
  cuda::DeviceMemory small(16);
  float host[5] = {1, 2, 3, 4, 5};
  EXPECT_THAT([&] { cuda::check(d.memcpy_htod_async(small.get(), host, sizeof host, nullptr), "cuMemcpyHtoDAsync"); },
              ::testing::ThrowsMessage<Error>(HasSubstr("cuMemcpyHtoDAsync failed")));
  EXPECT_THAT(fake_errors(), HasSubstr("not inside an allocation"));
  float back[4] = {0, 0, 0, 0};
  cuda::check(d.memcpy_dtoh_async(back, small.get(), sizeof back, nullptr), "cuMemcpyDtoHAsync");
  for (float v : back) EXPECT_TRUE(std::isnan(v));
  EXPECT_EQ(fake_errors(), "");
}

// Auto with timing (CELLFUSE_CUDA_PLAN_TIMING on): the first run of a length times every plan
// that fits on scratch results (the caller's results come from one real run and match the
// interpreter), keeps the winner, and writes a plan record that the next CudaCell of the same
// cell, batch and length class reads instead of timing; a corrupt record is timed again.
TEST(CudaEmulated, PlanTimingPicksOnceAndTheRecordServesTheNextCell) {
  ::setenv("CELLFUSE_CUDA_PLAN_TIMING", "1", 1);
  ::setenv("CELLFUSE_CUDA_PLANS", "graph,persistent,resident", 1);
  struct Restore {
    ~Restore() {
      ::setenv("CELLFUSE_CUDA_PLAN_TIMING", "0", 1);
      ::unsetenv("CELLFUSE_CUDA_PLANS");
    }
  } restore;
  Cell cell = cells::elman(5, 9);
  const std::int64_t B = 2, T = 6;
  auto program = compile_cuda_program(optimize(cell), B, cell.name);
  ASSERT_TRUE(program.persistent.ok() && program.resident.ok());
  ::setenv("CELLFUSE_FAKE_KERNELS", build_host_kernels(program).c_str(), 1);
  const fs::path plans = work_dir() / "cache" / "plans";
  fs::remove_all(plans);
  auto args = random_sequence_args<float>(cell, T, B, 21);
  const SequenceResult<double> want = interpret_sequence(as_f64(cell), convert<float, double>(args));
  auto records = [&] {
    std::vector<fs::path> found;
    if (fs::exists(plans))
      for (const auto& e : fs::directory_iterator(plans)) found.push_back(e.path());
    return found;
  };

  CudaCell first(cell, B);
  EXPECT_EQ(first.loop_plan(), LoopStrategy::Auto);
  expect_matches(first.run(args), want, 1e-5, "timed run");
  const LoopStrategy chosen = first.loop_plan();
  EXPECT_NE(chosen, LoopStrategy::Auto);
  EXPECT_THAT(first.loop_strategy_reason(), HasSubstr("lengths 5..8: "));
  EXPECT_THAT(first.loop_strategy_reason(), HasSubstr("(timed at T=6: graph "));
  EXPECT_THAT(first.loop_strategy_reason(), HasSubstr(" ms, persistent "));
  EXPECT_THAT(first.loop_strategy_reason(), HasSubstr(" ms, resident "));
  for (int r = 0; r < 2; ++r) expect_matches(first.run(args), want, 1e-5, "run after timing");
  ASSERT_EQ(records().size(), 1u);
  std::ifstream in(records()[0]);
  std::string magic, key, plan;
  std::getline(in, magic);
  std::getline(in, key);
  std::getline(in, plan);
  EXPECT_EQ(magic, "cellfuse-plan 1");
  EXPECT_THAT(key, HasSubstr("device=cellfuse fake GPU (host emulation) source="));
  EXPECT_THAT(key, HasSubstr(" plans=graph,persistent,resident"));
  EXPECT_EQ(plan, loop_strategy_name(chosen));

  CudaCell second(cell, B);
  expect_matches(second.run(args), want, 1e-5, "second cell");
  EXPECT_EQ(second.loop_plan(), chosen);
  EXPECT_THAT(second.loop_strategy_reason(), HasSubstr("timed by an earlier process"));
  // Another length class is timed on its own.
  auto longer = random_sequence_args<float>(cell, 9, B, 22);
  expect_matches(second.run(longer), interpret_sequence(as_f64(cell), convert<float, double>(longer)), 1e-5, "T=9");
  EXPECT_THAT(second.loop_strategy_reason(), HasSubstr("lengths 9..16: "));
  EXPECT_EQ(records().size(), 2u);

  std::ofstream(records()[0], std::ios::trunc) << "cellfuse-plan 1\ntruncated";
  std::ofstream(records()[1], std::ios::trunc) << "cellfuse-plan 1\ntruncated";
  CudaCell third(cell, B);
  expect_matches(third.run(args), want, 1e-5, "after a corrupt record");
  EXPECT_THAT(third.loop_strategy_reason(), HasSubstr("(timed at T=6: "));
  EXPECT_EQ(fake_errors(), "");

  // By default Auto times graph and persistent only (the resident kernel joins once verified on
  // a GPU), with a record of its own; a plan name it does not know is refused.
  ::unsetenv("CELLFUSE_CUDA_PLANS");
  CudaCell defaults(cell, B);
  expect_matches(defaults.run(args), want, 1e-5, "default plans");
  EXPECT_THAT(defaults.loop_strategy_reason(), HasSubstr("(timed at T=6: graph "));
  EXPECT_THAT(defaults.loop_strategy_reason(), ::testing::Not(HasSubstr("resident ")));
  EXPECT_NE(defaults.loop_plan(), LoopStrategy::Resident);
  ::setenv("CELLFUSE_CUDA_PLANS", "graph,cluster", 1);
  EXPECT_THAT([&] { CudaCell bad(cell, B); }, ::testing::ThrowsMessage<Error>(HasSubstr("'cluster' in 'graph,cluster'")));
  ::setenv("CELLFUSE_CUDA_PLANS", "resident", 1);
  CudaCell only(cell, B);
  EXPECT_EQ(only.loop_plan(), LoopStrategy::Resident);
  EXPECT_THAT(only.loop_strategy_reason(), HasSubstr("the only plan of CELLFUSE_CUDA_PLANS (resident) that fits"));
  ::setenv("CELLFUSE_CUDA_PLANS", "graph,persistent,resident", 1);
  // CELLFUSE_CUDA_LOOP still forces one, with no timing.
  ::setenv("CELLFUSE_CUDA_LOOP", "resident", 1);
  CudaCell forced(cell, B);
  ::unsetenv("CELLFUSE_CUDA_LOOP");
  EXPECT_EQ(forced.loop_plan(), LoopStrategy::Resident);
  EXPECT_THAT(forced.loop_strategy_reason(), HasSubstr("resident (asked for)"));
  ::setenv("CELLFUSE_CUDA_LOOP", "blocks", 1);
  EXPECT_THAT([&] { CudaCell bad(cell, B); }, ::testing::ThrowsMessage<Error>(HasSubstr("none of auto, persistent, graph, resident")));
  ::unsetenv("CELLFUSE_CUDA_LOOP");
}

// The resident kernel at a batch that leaves a tail row group (R = 8 rows a group), with the k
// of a column split unevenly between its threads (lstm:4,40: 160 columns, 6 threads each, 7 k
// apiece, the last one 5).
TEST(CudaEmulated, ResidentRowGroupsAndWideProducts) {
  CudaOptions options;
  options.loop = LoopStrategy::Resident;
  options.program.fuse = FuseProducts::Always;
  for (const auto& [spec, batch] : std::vector<std::pair<const char*, std::int64_t>>{{"gru:3,9", 11}, {"lstm:4,40", 11}}) {
    Cell cell = cells::by_spec(spec, DType::f32);
    auto compiled = emulated_cell(cell, batch, options);
    ASSERT_EQ(compiled->loop_plan(), LoopStrategy::Resident) << spec << ": " << compiled->loop_strategy_reason();
    check_runs<float>(*compiled, cell, 4, batch, 31, std::string(spec) + " B=" + std::to_string(batch) + " resident");
  }
}

TEST(CudaEmulated, TheInMemoryCacheCompilesOnce) {
  Cell cell = cells::elman(4, 6);
  auto program = compile_cuda_program(optimize(cell), 2, cell.name);
  ::setenv("CELLFUSE_FAKE_KERNELS", build_host_kernels(program).c_str(), 1);
  const auto before = cuda_compile_count();
  auto first = compile_cuda(cell, 2);
  EXPECT_EQ(compile_cuda(cells::elman(4, 6), 2).get(), first.get());
  EXPECT_EQ(cuda_compile_count(), before + 1);
  CudaOptions other;
  other.graphs = false;
  EXPECT_NE(compile_cuda(cell, 2, other).get(), first.get());
  EXPECT_EQ(cuda_compile_count(), before + 2);
  // The second CudaCell's cubin came from the disk cache.
  EXPECT_TRUE(compile_cuda(cell, 2, other)->cubin_from_cache());
}

// ---- training: CudaBptt (forward with its tape, backward step in reverse, parameter GEMMs) ----

// Three runs (direct, graph capture, replay) against the reference BPTT in f64.
template <class T>
void check_bptt(const CudaBptt& compiled, const Cell& cell, std::int64_t steps, std::int64_t batch, std::uint64_t seed,
                const std::string& what) {
  auto args = random_sequence_args<T>(cell, steps, batch, seed);
  auto seeds = random_loss_gradients<T>(cell, steps, batch, seed);
  BpttResult<double> want;
  if constexpr (std::is_same_v<T, float>)
    want = reference_bptt(differentiate(as_f64(cell)), convert<float, double>(args), convert_seeds<float, double>(seeds));
  else
    want = reference_bptt(differentiate(cell), args, seeds);
  const double tolerance = std::is_same_v<T, float> ? 1e-5 : 1e-12;
  std::vector<BpttResult<T>> runs;
  for (int r = 0; r < 3; ++r) {
    runs.push_back(compiled.run(args, seeds));
    expect_matches(runs.back().forward, want.forward, tolerance, what + " forward, run " + std::to_string(r));
    expect_grads(runs.back().grads, want.grads, tolerance, what + " run " + std::to_string(r));
  }
  EXPECT_TRUE(same_bits(runs[0], runs[1]) && same_bits(runs[1], runs[2])) << what << ": a graph replay differs";
  EXPECT_EQ(fake_errors(), "") << what;
}

class StandardCellsBpttEmulated : public ::testing::TestWithParam<Case> {};

TEST_P(StandardCellsBpttEmulated, MatchTheReferenceBptt) {
  const Case& c = GetParam();
  Cell cell = cells::by_spec(c.spec, c.dtype);
  CudaOptions options;
  options.program.fuse = c.fuse;
  auto compiled = emulated_bptt(cell, c.batch, options);
  const std::string what = case_name(c);
  if (c.dtype == DType::f32) check_bptt<float>(*compiled, cell, c.steps, c.batch, 11 + static_cast<std::uint64_t>(c.steps), what);
  else check_bptt<double>(*compiled, cell, c.steps, c.batch, 11 + static_cast<std::uint64_t>(c.steps), what);
  // Both training cells on the block-resident kernel: the forward with its tape, and the
  // backward step (its transposed recurrent product from the same resident layout) in reverse.
  options.loop = LoopStrategy::Resident;
  auto resident = emulated_bptt(cell, c.batch, options);
  ASSERT_EQ(resident->forward_cell().loop_plan(), LoopStrategy::Resident) << resident->forward_cell().loop_strategy_reason();
  ASSERT_EQ(resident->backward_step().loop_plan(), LoopStrategy::Resident) << resident->backward_step().loop_strategy_reason();
  if (c.dtype == DType::f32) check_bptt<float>(*resident, cell, c.steps, c.batch, 12 + static_cast<std::uint64_t>(c.steps), what + " resident");
  else check_bptt<double>(*resident, cell, c.steps, c.batch, 12 + static_cast<std::uint64_t>(c.steps), what + " resident");
}

INSTANTIATE_TEST_SUITE_P(
    OddSizes, StandardCellsBpttEmulated,
    ::testing::Values(Case{"elman:3,5", DType::f32, 1, 37, FuseProducts::Auto}, Case{"elman_proj:5,7,3", DType::f64, 3, 4, FuseProducts::Never},
                      Case{"lstm:5,7", DType::f32, 3, 5, FuseProducts::Always}, Case{"lstm:6,9", DType::f32, 64, 3, FuseProducts::Auto},
                      Case{"gru:4,33", DType::f64, 2, 3, FuseProducts::Auto}, Case{"lnlstm:5,7", DType::f32, 3, 2, FuseProducts::Always},
                      Case{"peephole:3,7", DType::f64, 1, 3, FuseProducts::Never}),
    [](const auto& param_info) { return case_name(param_info.param); });

TEST(CudaEmulatedBptt, RandomCells) {
  for (std::uint64_t seed = 1; seed <= 3; ++seed) {
    Cell cell = testing_support::random_cell(seed, DType::f64, 8);
    const std::string what = "random seed " + std::to_string(seed);
    std::unique_ptr<CudaBptt> compiled;
    try {
      compiled = emulated_bptt(cell, 3);
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()).find("NVRTC"), std::string::npos) << what << ": " << e.what();
      continue;  // a cell autodiff or the compiled backends reject, with a reason
    }
    check_bptt<double>(*compiled, cell, 4, 3, seed, what);
  }
}

// Reductions over concatenations (the backward step of random_cell(15, *, 12) sums a slice
// straddling a cat): lowering splits them at the pieces, each piece reduced by a block reduction
// of its own into a scratch row, then the row. tests/gpu/gpu_backward.cpp runs seed 15 on a GPU.
TEST(CudaEmulatedBptt, ReductionsOverConcatenations) {
  Cell cell = testing_support::random_cell(15, DType::f32, 12);
  for (std::int64_t batch : {1, 17}) {
    auto compiled = emulated_bptt(cell, batch);
    check_bptt<float>(*compiled, cell, 5, batch, 15, "random seed 15 f32 B=" + std::to_string(batch));
  }
  CellBuilder b("sum_of_sliced_cat");
  Val x = b.input("x", 3);
  Val h = b.state("h", 4);
  Val total = sum(slice(cat({x, h}), 1, 5));  // x[1..2], h[0..2]
  b.output("y", total);
  b.next(h, tanh(h - total));
  Cell small = std::move(b).finish();
  auto compiled = emulated_bptt(small, 3);
  check_bptt<float>(*compiled, small, 4, 3, 7, "sum_of_sliced_cat f32 B=3");
}

// Forward (three runs) and BPTT of `cell` on the emulated GPU against the reference.
void check_forward_and_bptt(const Cell& cell, std::int64_t batch, std::int64_t steps, std::uint64_t seed, const std::string& what) {
  auto forward = emulated_cell(cell, batch);
  auto backward = emulated_bptt(cell, batch);
  if (cell.graph.dtype() == DType::f32) {
    check_runs<float>(*forward, cell, steps, batch, seed, what);
    check_bptt<float>(*backward, cell, steps, batch, seed, what);
  } else {
    check_runs<double>(*forward, cell, steps, batch, seed, what);
    check_bptt<double>(*backward, cell, steps, batch, seed, what);
  }
}

// amax (the row maximum) in a stable softmax and over a slice straddling a concatenation: the
// persistent kernel (B=1) and the block reductions (B=17) combine with cf_max from -inf.
TEST(CudaEmulated, AmaxSoftmaxForwardAndBackward) {
  for (auto [dtype, batch] : {std::pair{DType::f32, std::int64_t{1}}, std::pair{DType::f64, std::int64_t{17}}})
    check_forward_and_bptt(testing_support::softmax_amax_cell(dtype, 5, 33), batch, 4, 11,
                           std::string("softmax_amax ") + std::string(dtype_name(dtype)) + " B=" + std::to_string(batch));
}

// The composite ops (hardsigmoid, softsign): their formulas emitted as CUDA C, forward and BPTT.
TEST(CudaEmulated, CompositeOpsForwardAndBackward) {
  for (auto [dtype, batch] : {std::pair{DType::f64, std::int64_t{1}}, std::pair{DType::f32, std::int64_t{17}}})
    check_forward_and_bptt(testing_support::composite_cell(dtype, 4, 33), batch, 3, 13,
                           std::string("composite ") + std::string(dtype_name(dtype)) + " B=" + std::to_string(batch));
}

// A weight used twice (and a bias broadcast twice): several parameter terms add into one
// gradient, the first overwriting, the others accumulating.
Cell tied_cell(DType dtype) {
  CellBuilder b("tied", dtype);
  Val x = b.input("x", 6);
  Val h = b.state("h", 6);
  Val W = b.param("W", {6, 6});
  Val bias = b.param("b", {6});
  Val z = linear(x, W, bias);
  Val u = linear(h, W, bias);
  Val h_next = tanh(z + u);
  b.output("h", h_next);
  b.next(h, h_next);
  return std::move(b).finish();
}

TEST(CudaEmulatedBptt, TiedWeightsAccumulateTheirTerms) {
  for (DType dtype : {DType::f32, DType::f64}) {
    Cell cell = tied_cell(dtype);
    std::map<int, int> terms;
    for (const auto& t : differentiate(cell).param_terms) ++terms[t.param];
    EXPECT_EQ(terms[0], 2);
    EXPECT_EQ(terms[1], 2);
    auto compiled = emulated_bptt(cell, 3);
    if (dtype == DType::f32) check_bptt<float>(*compiled, cell, 5, 3, 4, "tied f32");
    else check_bptt<double>(*compiled, cell, 5, 3, 4, "tied f64");
  }
}

// Length 0: the final-state gradients pass through, the parameter gradients are zero (written,
// not left as they were: fresh device memory is NaN here).
TEST(CudaEmulatedBptt, ZeroStepsPassTheStateGradientsThrough) {
  Cell cell = cells::lstm(3, 4);
  auto compiled = emulated_bptt(cell, 2);
  auto args = random_sequence_args<float>(cell, 1, 2, 1);
  args.inputs[0].shape[0] = 0;
  args.inputs[0].data.clear();
  auto seeds = random_loss_gradients<float>(cell, 0, 2, 1);
  auto result = compiled->run(args, seeds);
  EXPECT_EQ(result.grads.states[0].data, seeds.final_states[0].data);
  EXPECT_EQ(result.grads.states[1].data, seeds.final_states[1].data);
  EXPECT_EQ(result.forward.final_states[0].data, args.states[0].data);
  for (const auto& p : result.grads.params)
    for (float v : p.data) EXPECT_EQ(v, 0.0f);
  EXPECT_EQ(fake_errors(), "");
}

// The device-pointer API on a caller's stream, with the tape in the caller's memory: the host
// API's bits, and gradients overwritten (a second backward gives the same, not twice as much).
TEST(CudaEmulatedBptt, DeviceApiOnACallersStream) {
  Cell cell = cells::gru(5, 6);
  const std::int64_t B = 3, T = 4;
  auto compiled = emulated_bptt(cell, B);
  auto args = random_sequence_args<float>(cell, T, B, 2);
  auto seeds = random_loss_gradients<float>(cell, T, B, 2);
  auto host = compiled->run(args, seeds);
  EXPECT_EQ(compiled->tape_widths().size(), compiled->backward_cell().saved_outputs.size() + 1);
  {
    DeviceScratch scratch;
    DeviceTrainingArgs dev = device_training_args(scratch, args, seeds, host, compiled->tape_widths(), T, B);
    compiled->forward_device(dev, scratch.stream());
    for (int r = 0; r < 3; ++r) {
      compiled->backward_device(dev, scratch.stream());
      EXPECT_TRUE(same_bits(download(scratch, dev, host), host)) << "backward " << r;
    }
  }
  EXPECT_EQ(fake_errors(), "");
}

TEST(CudaEmulatedBptt, RejectsMissingOrMisshapenArguments) {
  Cell cell = cells::lstm(3, 4);
  auto compiled = emulated_bptt(cell, 2);
  auto args = random_sequence_args<float>(cell, 5, 2, 1);
  auto seeds = random_loss_gradients<float>(cell, 4, 2, 1);
  EXPECT_THAT([&] { compiled->run(args, seeds); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(HasSubstr("[4,2,4]"), HasSubstr("[5,2,4]"))));
  DeviceTrainingArgs missing;
  missing.steps = 2;
  EXPECT_THAT([&] { compiled->backward_device(missing); }, ::testing::ThrowsMessage<Error>(HasSubstr("input(s)")));
}

// Two sets of device buffers used in turn (what a caching allocator does to a training loop's
// outputs) each get their own graph: two captures, then replays, the same bits every time.
TEST(CudaEmulated, AlternatingBuffersEachKeepTheirGraph) {
  Cell cell = cells::gru(5, 7);
  const std::int64_t B = 2, T = 4;
  auto compiled = emulated_cell(cell, B);
  auto args = random_sequence_args<float>(cell, T, B, 11);
  auto host = compiled->run(args);
  {
    DeviceScratch scratch;
    DeviceSequenceArgs sets[2] = {device_sequence_args(scratch, args, host, T),
                                  device_sequence_args(scratch, args, host, T)};
    const auto captures_before = compiled->graph_captures();
    const Counters before = fake_counters();
    for (int r = 0; r < 6; ++r) {
      const DeviceSequenceArgs& dev = sets[r % 2];
      compiled->run_device(dev, scratch.stream());
      EXPECT_TRUE(same_bits(download(scratch, dev, host), host)) << "run " << r;
    }
    // Runs 0 and 1 launch directly, 2 and 3 capture, 4 and 5 replay.
    EXPECT_EQ(compiled->graph_captures(), captures_before + 2);
    EXPECT_EQ(fake_counters().graph_launches - before.graph_launches, 4u);
  }
  EXPECT_EQ(fake_errors(), "");
}


// ---- 16-bit storage (CudaOptions::storage): bf16/f16 tensors, f32 math ----

// The conversion kernels, bit for bit against storage.h's host functions (which
// test_cuda_storage.cpp checks against independent oracles).
TEST(CudaEmulatedStorage, ConversionKernelsMatchTheHostRule) {
  const cuda::Driver& d = cuda::driver();
  auto compiled = emulated_cell(cells::elman(3, 4), 1);
  std::vector<float> values = {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 65504.0f, 65520.0f, -70000.0f, 3e-8f,
                               6.1e-5f, std::numeric_limits<float>::max(), std::numeric_limits<float>::infinity(),
                               std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::denorm_min()};
  std::mt19937 rng(9);
  for (int i = 0; i < 3000; ++i) values.push_back(std::bit_cast<float>(static_cast<std::uint32_t>(rng())));
  const auto n = static_cast<std::int64_t>(values.size());
  cuda::DeviceMemory wide(values.size() * 4), narrow(values.size() * 2), back(values.size() * 4);
  for (Storage format : {Storage::BF16, Storage::F16}) {
    const std::string what(storage_name(format));
    cuda::check(d.memcpy_htod_async(wide.get(), values.data(), values.size() * 4, nullptr), "HtoD");
    compiled->convert_storage(format, false, wide.get(), narrow.get(), n, nullptr);
    compiled->convert_storage(format, true, narrow.get(), back.get(), n, nullptr);
    std::vector<std::uint16_t> bits(values.size());
    std::vector<float> widened(values.size());
    cuda::check(d.memcpy_dtoh_async(bits.data(), narrow.get(), bits.size() * 2, nullptr), "DtoH");
    cuda::check(d.memcpy_dtoh_async(widened.data(), back.get(), widened.size() * 4, nullptr), "DtoH");
    cuda::check(d.stream_synchronize(nullptr), "sync");
    int bad = 0;
    for (std::size_t i = 0; i < values.size(); ++i) {
      const std::uint16_t want = to_storage_bits(values[i], format);
      const float want_back = from_storage_bits(want, format);
      const bool same = bits[i] == want && (std::bit_cast<std::uint32_t>(widened[i]) == std::bit_cast<std::uint32_t>(want_back) ||
                                           (std::isnan(widened[i]) && std::isnan(want_back)));
      if (!same && ++bad < 5) ADD_FAILURE() << what << " of " << values[i] << ": bits " << bits[i] << " want " << want;
    }
    EXPECT_EQ(bad, 0) << what;
  }
  EXPECT_EQ(fake_errors(), "");
}

struct StorageCase {
  const char* spec;
  Storage storage;
  std::int64_t batch, steps;
};

std::string storage_case_name(const StorageCase& c) {
  std::string name = std::string(c.spec) + "_" + std::string(storage_name(c.storage)) + "_B" + std::to_string(c.batch) + "_T" +
                     std::to_string(c.steps);
  for (char& ch : name)
    if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return name;
}

void PrintTo(const StorageCase& c, std::ostream* os) { *os << storage_case_name(c); }

class StandardCellsStorageEmulated : public ::testing::TestWithParam<StorageCase> {};

// Forward and backward of a standard cell with 16-bit tensors against the f64 reference on the
// same (rounded) arguments: within 1e-2, the bound for bf16 (the outputs themselves are
// rounded to 8 or 11 significant bits; the math in between is f32).
TEST_P(StandardCellsStorageEmulated, MatchTheReferenceWithinTheFormat) {
  const StorageCase& c = GetParam();
  const std::string what = std::string(c.spec) + " " + std::string(storage_name(c.storage)) + " B" + std::to_string(c.batch) +
                           " T" + std::to_string(c.steps);
  Cell cell = cells::by_spec(c.spec, DType::f32);
  CudaOptions options;
  options.storage = c.storage;
  auto args = rounded(random_sequence_args<float>(cell, c.steps, c.batch, 17), c.storage);
  auto seeds = rounded(random_loss_gradients<float>(cell, c.steps, c.batch, 18), c.storage);
  const Cell cell64 = as_f64(cell);
  const auto want = interpret_sequence(cell64, convert<float, double>(args));
  {
    auto compiled = emulated_cell(cell, c.batch, options);
    EXPECT_EQ(compiled->storage(), c.storage);
    for (int r = 0; r < 3; ++r) expect_matches(compiled->run(args), want, 1e-2, what + " forward run " + std::to_string(r));
    // The results are 16-bit values: rounding them again changes nothing.
    auto got = compiled->run(args);
    EXPECT_TRUE(same_bits(got, rounded(got, c.storage))) << what;
  }
  auto bptt = emulated_bptt(cell, c.batch, options);
  const auto want_grads =
      reference_bptt(differentiate(cell64), convert<float, double>(args), convert_seeds<float, double>(seeds));
  for (int r = 0; r < 2; ++r) {
    auto got = bptt->run(args, seeds);
    expect_matches(got.forward, want_grads.forward, 1e-2, what + " training forward");
    expect_grads(got.grads, want_grads.grads, 1e-2, what + " run " + std::to_string(r));
  }
  EXPECT_EQ(fake_errors(), "") << what;
}

INSTANTIATE_TEST_SUITE_P(
    OddSizes, StandardCellsStorageEmulated,
    ::testing::Values(StorageCase{"lstm:5,7", Storage::BF16, 3, 37}, StorageCase{"lstm:5,7", Storage::F16, 1, 2},
                      StorageCase{"gru:4,33", Storage::BF16, 1, 5}, StorageCase{"lnlstm:6,9", Storage::BF16, 3, 4},
                      StorageCase{"elman_proj:5,7,3", Storage::F16, 3, 6}, StorageCase{"peephole:4,5", Storage::BF16, 2, 3}),
    [](const ::testing::TestParamInfo<StorageCase>& c) { return storage_case_name(c.param); });

// The device API with 16-bit buffers on a caller's stream, run twice so that the inner f32 run is
// captured and replayed: the same bits as the host API.
TEST(CudaEmulatedStorage, DeviceApiTakes16BitBuffers) {
  const cuda::Driver& d = cuda::driver();
  Cell cell = cells::lstm(4, 6);
  const std::int64_t B = 2, T = 5;
  CudaOptions options;
  options.storage = Storage::BF16;
  auto compiled = emulated_cell(cell, B, options);
  auto args = rounded(random_sequence_args<float>(cell, T, B, 21), Storage::BF16);
  auto host = compiled->run(args);
  std::vector<cuda::DeviceMemory> memory;
  auto upload = [&](const HostTensor<float>& t) {
    std::vector<std::uint16_t> bits;
    for (float v : t.data) bits.push_back(f32_to_bf16(v));
    memory.emplace_back(bits.size() * 2);
    cuda::check(d.memcpy_htod_async(memory.back().get(), bits.data(), bits.size() * 2, nullptr), "HtoD");
    return static_cast<DevicePointer>(memory.back().get());
  };
  DeviceSequenceArgs dev;
  dev.steps = T;
  for (const auto& t : args.inputs) dev.inputs.push_back(upload(t));
  for (const auto& t : args.states) dev.states.push_back(upload(t));
  for (const auto& t : args.params) dev.params.push_back(upload(t));
  for (const auto& t : host.outputs) dev.outputs.push_back(upload(HostTensor<float>(t.shape)));
  for (const auto& t : host.final_states) dev.final_states.push_back(upload(HostTensor<float>(t.shape)));
  CUstream stream = nullptr;
  cuda::check(d.stream_create(&stream, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  for (int r = 0; r < 3; ++r) {
    compiled->run_device(dev, stream);
    std::vector<std::uint16_t> bits(host.outputs[0].data.size());
    cuda::check(d.memcpy_dtoh_async(bits.data(), dev.outputs[0], bits.size() * 2, stream), "DtoH");
    cuda::check(d.stream_synchronize(stream), "sync");
    for (std::size_t i = 0; i < bits.size(); ++i) ASSERT_EQ(bf16_to_f32(bits[i]), host.outputs[0].data[i]) << "run " << r << " element " << i;
  }
  EXPECT_GE(compiled->graph_captures(), 1u);
  memory.clear();
  cuda::check(d.stream_destroy(stream), "cuStreamDestroy");
  EXPECT_EQ(fake_errors(), "");
}

TEST(CudaEmulatedStorage, RejectsWhatItCannotStore) {
  CudaOptions options;
  options.storage = Storage::F16;
  Cell f64 = cells::lstm(3, 4, DType::f64);
  EXPECT_THAT([&] { CudaCell cell(f64, 2, options); },
              ::testing::ThrowsMessage<Error>(::testing::AllOf(HasSubstr("f16 storage needs an f32 cell"), HasSubstr("f64"))));
  EXPECT_THAT([&] { CudaBptt bptt(f64, 2, options); }, ::testing::ThrowsMessage<Error>(HasSubstr("f16 storage needs an f32 cell")));
  auto compiled = emulated_cell(cells::lstm(3, 4), 2, options);
  auto args = random_sequence_args<double>(cells::lstm(3, 4, DType::f64), 2, 2, 1);
  EXPECT_THAT([&] { compiled->run(args); }, ::testing::ThrowsMessage<Error>(HasSubstr("the cell is f32 but the arguments are f64")));
}

// The profiler on the GPU runner (runtime/profile, runtime/cuda/cuda_profile.h): every GEMM and
// kernel the runner launched while it was on is one host event and one device event (from CUDA
// events), and the fake driver's own counters of launches and cuBLAS calls agree; no graph is
// replayed under the profiler; the trace has the GPU track.
TEST(CudaEmulatedProfiler, EventsAreTheLaunchesTheDriverSaw) {
  for (std::int64_t batch : {2, 16}) {  // products fused into the loop kernel at 2, cuBLAS at 16
    const Cell cell = cells::lstm(5, 7);
    const std::int64_t T = 6;
    auto compiled = emulated_cell(cell, batch);
    const auto args = random_sequence_args<float>(cell, T, batch, 5);
    (void)compiled->run(args);
    (void)compiled->run(args);  // a graph is captured: profiling must not replay it
    const auto program = compile_cuda_program(optimize(cell), batch, cell.name);
    std::size_t biased = 0, transposed = 0;  // support launches: fill_rows per biased GEMM, weight transposes
    for (int s = 0; s < 3; ++s) {
      const std::int64_t calls = s == 1 ? T : 1;
      if (program.stages[s].program.steps.empty()) continue;
      std::set<std::uint32_t> seen;
      for (const auto& step : program.stages[s].program.steps) {
        if (step.kind == ProgramStep::Kind::Gemm) biased += step.gemm.bias.valid() ? calls : 0;
        else
          for (std::size_t b = 0; b < step.kernel.kernel.buffers.size(); ++b)
            if (step.kernel.kernel.buffers[b].transposed && seen.insert(step.kernel.buffers[b].index).second) ++transposed;
      }
    }
    Profiler profiler;
    const Counters before = fake_counters();
    SequenceResult<float> profiled = compiled->run(args);
    const Counters after = fake_counters();
    profiler.stop();
    const auto d = profiler.data();
    std::size_t host_kernels = 0, host_gemms = 0;
    for (const auto& e : d.host)
      if (e.site >= 0) (d.sites[e.site].kind == profile::CallKind::Gemm ? host_gemms : host_kernels) += 1;
    EXPECT_EQ(d.device.size(), host_kernels + host_gemms) << "batch " << batch;
    EXPECT_EQ(after.gemms - before.gemms, host_gemms) << "batch " << batch;
    EXPECT_EQ(after.launches - before.launches, host_kernels + biased + transposed) << "batch " << batch;
    EXPECT_EQ(after.graph_launches, before.graph_launches);
    for (const auto& e : d.device) EXPECT_LE(e.begin_ns, e.end_ns);
    std::map<int, int> per_step;
    for (const auto& e : d.device)
      if (e.step >= 0) ++per_step[e.step];
    EXPECT_EQ(per_step.size(), static_cast<std::size_t>(T));
    const ProfileReport report = build_report(d, MachineCeilings{"fake", 1, 1, 1, "", false});
    ASSERT_EQ(report.phases.size(), 1u);
    EXPECT_EQ(report.target, "cuda");
    EXPECT_GT(report.phases[0].device_us_per_step, 0);
    EXPECT_NE(profiler.trace_json().find("GPU (CUDA events)"), std::string::npos);
    // The profiled run computed what an unprofiled one does.
    EXPECT_TRUE(same_bits(profiled, compiled->run(args)));
  }
  EXPECT_EQ(fake_errors(), "");
}


// What Profiler::report() does after a profiled GPU run, as on a GPU: the ceilings measured on
// the device (machine_ceilings("cuda") -> measure_cuda_ceilings(): cuBLAS SGEMM and a device
// copy timed by CUDA events; the problems shrunk, the fake cuBLAS being a host loop), then kept
// in the cache directory and read back; then the report's text and JSON and the trace. The cell
// is compiled and its plans timed while the profiler is on, as cellfuse.profile's first call does.
struct ProfilerOnTheDevice {
  profile::CudaCeilingSizes saved = profile::cuda_ceiling_sizes();
  fs::path ceilings_dir;
  explicit ProfilerOnTheDevice(const std::string& name) : ceilings_dir(work_dir() / name) {
    profile::cuda_ceiling_sizes() = {48, std::size_t{3} << 20};
    fs::remove_all(ceilings_dir);
    // The kernel cache keeps the directory it was first given; only the ceilings move here.
    ::setenv("CELLFUSE_CACHE_DIR", ceilings_dir.c_str(), 1);
    ::unsetenv("CELLFUSE_CACHE");
    ::setenv("CELLFUSE_CUDA_PLAN_TIMING", "1", 1);
    ::setenv("CELLFUSE_CUDA_PLANS", "graph,persistent,resident", 1);
  }
  ~ProfilerOnTheDevice() {
    profile::cuda_ceiling_sizes() = saved;
    ::setenv("CELLFUSE_CACHE_DIR", (work_dir() / "cache").c_str(), 1);
    ::unsetenv("CELLFUSE_CACHE");
    ::setenv("CELLFUSE_CUDA_PLAN_TIMING", "0", 1);
    ::unsetenv("CELLFUSE_CUDA_PLANS");
  }
};

// The report of what `profiler` recorded, three times: measured (6 SGEMMs: a warm-up and five
// timed) and written to the cache, read back from it (no SGEMM), measured again with
// CELLFUSE_CACHE=0 (nothing written). Checks the figures, the text, the JSON and the trace.
void check_device_reports(const Profiler& profiler, const std::vector<std::string>& phases, const std::string& what) {
  const Counters before = fake_counters();
  const ProfileReport measured = profiler.report();
  EXPECT_EQ(fake_counters().gemms - before.gemms, 6u) << what << ": the ceilings were not measured on the device";
  const MachineCeilings& c = measured.ceilings;
  EXPECT_EQ(c.device, "cuda cellfuse fake GPU (host emulation)") << what;
  EXPECT_FALSE(c.from_cache) << what;
  for (double v : {c.gflops, c.gbytes, c.gbytes_cache}) EXPECT_TRUE(std::isfinite(v) && v > 0) << what << ": " << v;
  EXPECT_TRUE(fs::exists(c.cache_file)) << what << ": " << c.cache_file;
  ASSERT_EQ(measured.phases.size(), phases.size()) << what;
  for (std::size_t i = 0; i < phases.size(); ++i) {
    EXPECT_EQ(measured.phases[i].phase, phases[i]) << what;
    EXPECT_GT(measured.phases[i].device_us_per_step, 0) << what << " " << phases[i];
    EXPECT_GT(measured.phases[i].launches_per_step, 0) << what << " " << phases[i];
  }
  EXPECT_EQ(measured.target, "cuda") << what;
  const std::string text = measured.text(), json = measured.json();
  EXPECT_THAT(text, HasSubstr("machine: cuda cellfuse fake GPU (host emulation): ")) << what;
  EXPECT_THAT(text, HasSubstr("device us per step (CUDA events)")) << what;
  EXPECT_THAT(json, HasSubstr("\"device\": \"cuda cellfuse fake GPU (host emulation)\"")) << what;
  EXPECT_EQ(json.find("null"), std::string::npos) << what << ": a figure that is not a number\n" << json;
  const auto d = profiler.data();
  std::size_t calls = 0;
  for (const auto& e : d.host) calls += e.site >= 0 ? 1 : 0;
  EXPECT_EQ(d.device.size(), calls) << what << ": a launch without its device time";
  const std::string trace = profiler.trace_json();
  EXPECT_THAT(trace, HasSubstr("GPU (CUDA events)")) << what;
  EXPECT_EQ(trace.find("null"), std::string::npos) << what;

  const Counters cached_before = fake_counters();
  const ProfileReport cached = profiler.report();
  EXPECT_EQ(fake_counters().gemms, cached_before.gemms) << what << ": measured again despite the cache";
  EXPECT_TRUE(cached.ceilings.from_cache) << what;
  EXPECT_EQ(cached.ceilings.gflops, c.gflops) << what;
  EXPECT_EQ(cached.ceilings.gbytes, c.gbytes) << what;
  EXPECT_EQ(cached.json(), measured.json()) << what;

  ::setenv("CELLFUSE_CACHE", "0", 1);
  const Counters uncached_before = fake_counters();
  const ProfileReport uncached = profiler.report();
  ::unsetenv("CELLFUSE_CACHE");
  EXPECT_EQ(fake_counters().gemms - uncached_before.gemms, 6u) << what;
  EXPECT_FALSE(uncached.ceilings.from_cache) << what;
  EXPECT_EQ(uncached.ceilings.cache_file, "") << what;
  EXPECT_GT(uncached.ceilings.gflops, 0) << what;
}

TEST(CudaEmulatedProfiler, ReportsWithTheCeilingsMeasuredOnTheDevice) {
  for (std::int64_t batch : {1, 16}) {  // products fused into the loop kernel at 1, cuBLAS at 16
    const std::string what = "batch " + std::to_string(batch);
    ProfilerOnTheDevice setup("ceilings_cell_B" + std::to_string(batch));
    const Cell cell = cells::lstm(5, 7);
    const std::int64_t T = 7;
    const auto args = random_sequence_args<float>(cell, T, batch, 31);
    const SequenceResult<double> want = interpret_sequence(as_f64(cell), convert<float, double>(args));
    Profiler profiler;
    auto compiled = emulated_cell(cell, batch);  // compiled under the profiler
    expect_matches(compiled->run(args), want, 1e-5, what + " warm-up");  // times the plans, profiled
    {
      // Timing the plans is one compile-side event, not runs of the report: one run recorded,
      // each of its launches with its device time.
      const auto d = profiler.data();
      EXPECT_EQ(d.runs, 1) << what << ": the plan timing's runs were recorded";
      std::size_t calls = 0;
      for (const auto& e : d.host) calls += e.site >= 0 ? 1 : 0;
      EXPECT_EQ(d.device.size(), calls) << what;
      EXPECT_TRUE(std::any_of(d.compile.begin(), d.compile.end(),
                              [](const profile::CompileEvent& e) { return e.name.rfind("timing the loop plans", 0) == 0; }))
          << what;
      EXPECT_NE(compiled->loop_plan(), LoopStrategy::Auto) << what;
    }
    profiler.discard_runs();
    for (int r = 0; r < 2; ++r) expect_matches(compiled->run(args), want, 1e-5, what + " profiled");
    profiler.stop();
    check_device_reports(profiler, {"forward"}, what);
    const ProfileReport report = profiler.report();
    EXPECT_EQ(report.phases[0].steps, 2 * T) << what;
    EXPECT_EQ(report.phases[0].runs, 2) << what;
  }
  EXPECT_EQ(fake_errors(), "");
}

TEST(CudaEmulatedProfiler, TrainingReportsWithTheCeilingsMeasuredOnTheDevice) {
  for (std::int64_t batch : {1, 16}) {
    const std::string what = "training, batch " + std::to_string(batch);
    ProfilerOnTheDevice setup("ceilings_bptt_B" + std::to_string(batch));
    const Cell cell = cells::gru(4, 6);
    const std::int64_t T = 5;
    auto args = random_sequence_args<float>(cell, T, batch, 41);
    auto seeds = random_loss_gradients<float>(cell, T, batch, 41);
    const BpttResult<double> want =
        reference_bptt(differentiate(as_f64(cell)), convert<float, double>(args), convert_seeds<float, double>(seeds));
    Profiler profiler;
    auto compiled = emulated_bptt(cell, batch);  // both cells compiled under the profiler
    auto check = [&](const BpttResult<float>& got, const std::string& run) {
      expect_matches(got.forward, want.forward, 1e-5, what + " " + run);
      expect_grads(got.grads, want.grads, 1e-5, what + " " + run);
    };
    check(compiled->run(args, seeds), "warm-up");
    profiler.discard_runs();
    check(compiled->run(args, seeds), "profiled");
    profiler.stop();
    check_device_reports(profiler, {"forward", "backward"}, what);
  }
  EXPECT_EQ(fake_errors(), "");
}


// The loop kernel of the persistent and resident plans is one launch for the whole sequence:
// its call site's cost is per length, so runs of two lengths are two sites, the longer costing
// proportionally more (one site for both reported the first length's cost for the second).
TEST(CudaEmulatedProfiler, TheLoopKernelsCostIsPerLength) {
  const Cell cell = cells::elman(4, 6);
  for (LoopStrategy plan : {LoopStrategy::Persistent, LoopStrategy::Resident}) {
    CudaOptions options;
    options.loop = plan;
    auto compiled = emulated_cell(cell, 2, options);
    ASSERT_EQ(compiled->loop_plan(), plan) << compiled->loop_strategy_reason();
    Profiler profiler;
    for (std::int64_t T : {3, 6, 3}) {
      const auto args = random_sequence_args<float>(cell, T, 2, 50 + static_cast<std::uint64_t>(T));
      expect_matches(compiled->run(args), interpret_sequence(as_f64(cell), convert<float, double>(args)), 1e-5,
                     std::string(loop_strategy_name(plan)) + " T=" + std::to_string(T));
    }
    profiler.stop();
    const auto d = profiler.data();
    std::map<std::string, std::vector<double>> flops_by_name;  // the loop kernel's sites, in call order
    std::set<int> seen;
    for (const auto& e : d.host)
      if (e.site >= 0 && d.sites[e.site].stage.find("all steps") != std::string::npos && seen.insert(e.site).second)
        flops_by_name[d.sites[e.site].name].push_back(d.sites[e.site].flops);
    ASSERT_EQ(flops_by_name.size(), 1u) << loop_strategy_name(plan);
    const std::vector<double>& flops = flops_by_name.begin()->second;
    ASSERT_EQ(flops.size(), 2u) << loop_strategy_name(plan) << ": T=3 and T=6 share a site";
    EXPECT_GT(flops[0], 0);
    EXPECT_DOUBLE_EQ(flops[1], 2 * flops[0]) << loop_strategy_name(plan);
  }
  EXPECT_EQ(fake_errors(), "");
}


// Every entry point does its work with the device's context current (the fake driver checks
// each launch and cuBLAS call) and gives the calling thread back the context it had: PyTorch
// keeps its current device there, and a context left switched would send its next work to
// another device. Here the thread holds another context throughout.
TEST(CudaEmulated, EntryPointsGiveTheCallersContextBack) {
  static int callers_context_object;
  const CUcontext callers = reinterpret_cast<CUcontext>(&callers_context_object);
  const cuda::Driver& d = cuda::driver();
  auto current = [&] {
    CUcontext c = nullptr;
    cuda::check(d.ctx_get_current(&c), "cuCtxGetCurrent");
    return c;
  };
  cuda::check(d.ctx_set_current(callers), "cuCtxSetCurrent");
  struct Restore {
    ~Restore() { (void)cuda::driver().ctx_set_current(nullptr); }
  } restore;
  const Cell cell = cells::gru(3, 5);
  const std::int64_t B = 2, T = 4;
  auto compiled = emulated_cell(cell, B);
  EXPECT_EQ(current(), callers) << "CudaCell's constructor";
  const auto args = random_sequence_args<float>(cell, T, B, 7);
  const auto host = compiled->run(args);
  EXPECT_EQ(current(), callers) << "CudaCell::run";
  {
    DeviceScratch scratch;
    DeviceSequenceArgs dev = device_sequence_args(scratch, args, host, T);
    compiled->run_device(dev, scratch.stream());
    EXPECT_EQ(current(), callers) << "CudaCell::run_device";
    EXPECT_TRUE(same_bits(download(scratch, dev, host), host));
  }
  auto bptt = emulated_bptt(cell, B);
  EXPECT_EQ(current(), callers) << "CudaBptt's constructor";
  (void)bptt->run(args, random_loss_gradients<float>(cell, T, B, 7));
  EXPECT_EQ(current(), callers) << "CudaBptt::run";
  {
    ProfilerOnTheDevice setup("ceilings_context");
    Profiler profiler;
    (void)compiled->run(args);
    profiler.stop();
    EXPECT_GT(profiler.report().ceilings.gflops, 0);  // measured: an SGEMM and a copy on the device
    EXPECT_EQ(current(), callers) << "the ceilings' measurement";
  }
  EXPECT_EQ(fake_errors(), "");
}

}  // namespace
}  // namespace cellfuse
