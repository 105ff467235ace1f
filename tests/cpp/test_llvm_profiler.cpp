// The profiler (runtime/profile) on the CPU backend: the events it records are the calls the
// runner makes (checked against the compiled program that compile() gives independently), they
// nest as the trace format needs, the report's counts are the fusion plan's, the compile phases
// are the pipeline's stages, and the command line writes what it says.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"
#include "frontend/cells.h"
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#include "runtime/profile/profiler.h"
#include "runtime/random_args.h"
#include "runtime/reference/bptt.h"

namespace fs = std::filesystem;
using namespace cellfuse;

namespace {

// Steps of each stage (pre, loop, post) of the program compile() makes for the CPU.
struct StageSteps {
  std::size_t count[3] = {0, 0, 0};
  int kernels[3] = {0, 0, 0}, gemms[3] = {0, 0, 0};
  std::vector<std::string> names[3];
};

StageSteps stage_steps(const CompiledProgram& p) {
  StageSteps s;
  for (int i = 0; i < 3; ++i) {
    s.count[i] = p.stages[i].steps.size();
    for (const auto& step : p.stages[i].steps) {
      if (step.kind == ProgramStep::Kind::Gemm) ++s.gemms[i];
      else ++s.kernels[i], s.names[i].push_back(step.kernel.kernel.name);
    }
  }
  return s;
}

TargetOptions cpu_options(std::int64_t batch, bool training) {
  TargetOptions o;
  o.target = Target::Cpu;
  o.batch = batch;
  o.training = training;
  return o;
}

// Every call lies inside a step or stage span, every step inside a loop span, every span inside
// a sequence span or an outer span of its own: what the trace viewer's nesting shows.
void expect_nested(const profile::Recorder::Data& d) {
  std::vector<const profile::HostEvent*> spans;
  for (const auto& e : d.host)
    if (e.site < 0) spans.push_back(&e);
  auto inside = [](const profile::HostEvent& in, const profile::HostEvent& out) {
    return &in != &out && out.begin_ns <= in.begin_ns && in.end_ns <= out.end_ns;
  };
  for (const auto& e : d.host) {
    ASSERT_LE(e.begin_ns, e.end_ns);
    bool contained = false;
    for (const auto* s : spans) contained = contained || inside(e, *s);
    const std::string what = e.site >= 0 ? d.sites[e.site].name : d.labels[e.label];
    if (e.site >= 0 || what == "step" || what == "loop") EXPECT_TRUE(contained) << what << " is not inside any span";
    if (what == "step") {
      bool in_loop = false;
      for (const auto* s : spans) in_loop = in_loop || (d.labels[s->label] == "loop" && inside(e, *s));
      EXPECT_TRUE(in_loop) << "step " << e.step << " outside the loop span";
    }
  }
}

TEST(Profiler, OffByDefaultAndOneAtATime) {
  EXPECT_EQ(profile::active(), nullptr);
  {
    Profiler p;
    EXPECT_NE(profile::active(), nullptr);
    EXPECT_THROW(Profiler second, Error);
  }
  EXPECT_EQ(profile::active(), nullptr);
  // Runs with no profiler record nothing anywhere (and still work).
  const Cell cell = cells::lstm(5, 7);
  auto program = compile_cpu(cell, 3);
  auto result = program->run(random_sequence_args<float>(cell, 4, 3, 1));
  EXPECT_EQ(result.outputs[0].shape, (std::vector<std::int64_t>{4, 3, 7}));
}

TEST(Profiler, ForwardEventsAreTheRunnersCalls) {
  // Batch 3 fuses the loop's products into its kernel; batch 33 leaves them as GEMMs.
  for (std::int64_t batch : {3, 33}) {
    const Cell cell = cells::lnlstm(6, 9);
    const std::int64_t T = 11;
    const StageSteps plan = stage_steps(compile(cell, cpu_options(batch, false)).forward);
    Profiler profiler;
    auto program = std::make_shared<CpuCell>(cell, batch);
    const auto args = random_sequence_args<float>(cell, T, batch, 2);
    (void)program->run(args);
    profiler.discard_runs();
    for (int r = 0; r < 2; ++r) (void)program->run(args);
    profiler.stop();
    const auto d = profiler.data();
    std::map<int, std::size_t> per_step;
    std::size_t outside_loop = 0;
    std::set<std::string> kernel_names;
    for (const auto& e : d.host) {
      if (e.site < 0) continue;
      if (e.step >= 0) ++per_step[e.step];
      else ++outside_loop;
      if (d.sites[e.site].kind == profile::CallKind::Kernel) kernel_names.insert(d.sites[e.site].name);
    }
    ASSERT_EQ(per_step.size(), static_cast<std::size_t>(T)) << "batch " << batch;
    for (const auto& [step, calls] : per_step) EXPECT_EQ(calls, 2 * plan.count[1]) << "step " << step;
    EXPECT_EQ(outside_loop, 2 * (plan.count[0] + plan.count[2]));
    std::set<std::string> expected;
    for (int s = 0; s < 3; ++s) expected.insert(plan.names[s].begin(), plan.names[s].end());
    EXPECT_EQ(kernel_names, expected);
    expect_nested(d);

    const ProfileReport report = build_report(d, MachineCeilings{"test", 100, 10, 10, "", false});
    ASSERT_EQ(report.phases.size(), 1u);
    const PhaseReport& p = report.phases[0];
    EXPECT_EQ(p.loop_kernels, plan.kernels[1]);
    EXPECT_EQ(p.loop_gemms, plan.gemms[1]);
    EXPECT_EQ(p.batch_kernels, plan.kernels[0] + plan.kernels[2]);
    EXPECT_EQ(p.batch_gemms, plan.gemms[0] + plan.gemms[2]);
    EXPECT_EQ(p.steps, 2 * T);
    EXPECT_EQ(p.runs, 2);
    EXPECT_DOUBLE_EQ(p.launches_per_step,
                     static_cast<double>(2 * (T * plan.count[1] + plan.count[0] + plan.count[2])) / (2.0 * T));
    EXPECT_GT(p.host_us_per_step, 0);
    EXPECT_LE(p.gemm_us_per_step + p.pointwise_us_per_step, p.host_us_per_step * 1.0001);
    EXPECT_GT(p.flops_per_step, 0);
    EXPECT_GT(p.bytes_per_step, 0);
    EXPECT_NE(report.summary.find("host"), std::string::npos);
    EXPECT_NE(report.text().find("fusion boundaries"), std::string::npos);
  }
}

TEST(Profiler, CompilePhasesAndCacheLookups) {
  const Cell cell = cells::gru(4, 13);  // a size no other test compiles: a cache miss first
  Profiler profiler;
  (void)compile_cpu(cell, 5);
  (void)compile_cpu(cell, 5);
  profiler.stop();
  const auto d = profiler.data();
  ASSERT_EQ(d.caches.size(), 2u);
  EXPECT_FALSE(d.caches[0].hit);
  EXPECT_TRUE(d.caches[1].hit);
  // Every stage of the pipeline's own log, once (the second lookup compiled nothing).
  const CompiledCell reference = compile(cell, cpu_options(5, false));
  std::multiset<std::string> names;
  for (const auto& e : d.compile) names.insert(e.name);
  for (const auto& s : reference.log)
    if (s.name != "input") EXPECT_EQ(names.count(s.name), 1u) << s.name;
  EXPECT_EQ(names.count("LLVM JIT (-O3, native code)"), 1u);
  for (const auto& e : d.compile) EXPECT_LE(e.begin_ns, e.end_ns);
  const ProfileReport report = build_report(d, MachineCeilings{"test", 1, 1, 1, "", false});
  EXPECT_EQ(report.cache_hits, 1);
  EXPECT_EQ(report.cache_misses, 1);
  EXPECT_GT(report.compile_ms, 0);
}

TEST(Profiler, BackwardEventsAreTheRunnersCalls) {
  const Cell cell = cells::lstm(5, 8);
  const std::int64_t T = 6, B = 3;
  const CompiledCell plan = compile(cell, cpu_options(B, true));
  const StageSteps fwd = stage_steps(plan.forward), bwd = stage_steps(*plan.backward_step);
  const std::size_t terms = plan.backward->param_terms.size();
  Profiler profiler;
  CpuBptt bptt(cell, B);
  const auto args = random_sequence_args<float>(cell, T, B, 3);
  const auto seeds = random_loss_gradients<float>(cell, T, B, 3);
  (void)bptt.run(args, seeds);
  profiler.discard_runs();
  (void)bptt.run(args, seeds);
  profiler.stop();
  const auto d = profiler.data();
  std::size_t forward_calls = 0, backward_calls = 0, grad_calls = 0;
  for (const auto& e : d.host) {
    if (e.site < 0) continue;
    if (d.sites[e.site].stage == "param grads") ++grad_calls;
    else (e.phase == profile::Phase::Forward ? forward_calls : backward_calls) += 1;
  }
  EXPECT_EQ(forward_calls, T * fwd.count[1] + fwd.count[0] + fwd.count[2]);
  EXPECT_EQ(backward_calls, T * bwd.count[1] + bwd.count[0] + bwd.count[2]);
  EXPECT_EQ(grad_calls, terms);
  expect_nested(d);
  const ProfileReport report = build_report(d, MachineCeilings{"test", 100, 10, 10, "", false});
  ASSERT_EQ(report.phases.size(), 2u);
  EXPECT_EQ(report.phases[1].phase, "backward");
  EXPECT_EQ(report.phases[1].loop_kernels, bwd.kernels[1]);
  EXPECT_EQ(report.phases[1].loop_gemms, bwd.gemms[1]);
  EXPECT_EQ(report.phases[1].steps, T);
}

TEST(Profiler, TraceHasAnEventPerCallAndSpan) {
  const Cell cell = cells::elman(3, 4);
  Profiler profiler;
  auto program = compile_cpu(cell, 2);
  (void)program->run(random_sequence_args<float>(cell, 5, 2, 4));
  profiler.stop();
  const auto d = profiler.data();
  const std::string trace = profiler.trace_json();
  auto count = [&](const std::string& needle) {
    std::size_t n = 0;
    for (std::size_t at = trace.find(needle); at != std::string::npos; at = trace.find(needle, at + 1)) ++n;
    return n;
  };
  EXPECT_EQ(count("\"ph\": \"X\""), d.host.size() + d.compile.size());
  EXPECT_EQ(count("\"ph\": \"i\""), d.caches.size());
  EXPECT_EQ(count("\"cat\": \"step\""), 5u);
  EXPECT_EQ(trace.rfind("{\"displayTimeUnit\"", 0), 0u);
}

TEST(Profiler, CeilingsAreMeasuredOnceAndCached) {
  char pattern[] = "/tmp/cellfuse_profiler_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const std::string dir = pattern;
  const char* old = std::getenv("CELLFUSE_CACHE_DIR");
  const std::string saved = old ? old : "";
  setenv("CELLFUSE_CACHE_DIR", dir.c_str(), 1);
  const MachineCeilings first = machine_ceilings("cpu");
  const MachineCeilings second = machine_ceilings("cpu");
  if (old) setenv("CELLFUSE_CACHE_DIR", saved.c_str(), 1);
  else unsetenv("CELLFUSE_CACHE_DIR");
  EXPECT_GT(first.gflops, 0.1);
  EXPECT_GT(first.gbytes, 0.1);
  EXPECT_GT(first.gbytes_cache, 0.1);
  EXPECT_DOUBLE_EQ(first.gbytes_cache, second.gbytes_cache);
  EXPECT_FALSE(first.from_cache);
  EXPECT_TRUE(second.from_cache);
  EXPECT_DOUBLE_EQ(first.gflops, second.gflops);
  EXPECT_TRUE(fs::exists(first.cache_file));
  EXPECT_EQ(fs::path(first.cache_file).parent_path(), fs::path(dir));
  EXPECT_THROW(machine_ceilings("tpu"), Error);
  fs::remove_all(dir);
}

std::string run_cli(const std::string& args, int& status) {
  const std::string command = std::string("'") + CELLFUSE_CLI + "' " + args + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  std::string out;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, pipe)) out.append(buf, n);
  status = WEXITSTATUS(pclose(pipe));
  return out;
}

TEST(Profiler, CommandLineWritesTraceAndReport) {
  char pattern[] = "/tmp/cellfuse_profile_cli_XXXXXX";
  ASSERT_NE(mkdtemp(pattern), nullptr);
  const fs::path dir = pattern;
  int status = 0;
  const std::string out = run_cli("profile lstm:16,24 --seq 9 --batch 4 --backward --runs 2 --trace '" +
                                      (dir / "t.json").string() + "' --json '" + (dir / "r.json").string() + "'",
                                  status);
  EXPECT_EQ(status, 0) << out;
  EXPECT_NE(out.find("launches per step"), std::string::npos) << out;
  EXPECT_NE(out.find("summary: GEMMs"), std::string::npos) << out;
  std::ifstream report(dir / "r.json"), trace(dir / "t.json");
  std::stringstream r, t;
  r << report.rdbuf();
  t << trace.rdbuf();
  EXPECT_NE(r.str().find("\"phase\": \"backward\""), std::string::npos);
  EXPECT_NE(t.str().find("\"traceEvents\""), std::string::npos);
  const std::string bad = run_cli("profile lstm --seq 3 --batch 2 --png x.png", status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(bad.find("matplotlib"), std::string::npos) << bad;
  const std::string no_seq = run_cli("profile lstm --batch 2", status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(no_seq.find("--seq"), std::string::npos) << no_seq;
  fs::remove_all(dir);
}

}  // namespace
