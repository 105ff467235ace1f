// `cellfuse profile`: runs a cell over a random sequence with the profiler on (runtime/profile)
// and prints the overhead report; --trace writes the Chrome trace, --json the report as JSON.
// The first run (compile, warm-up) is recorded for its compile phases and dropped from the
// per-step figures; then --runs N runs (default 3) are profiled.
#include <cstdio>
#include <iostream>

#include "compiler/ir/error.h"
#include "frontend/cli/cli.h"
#include "runtime/backend.h"
#include "runtime/profile/profiler.h"
#include "runtime/random_args.h"

namespace cellfuse::cli {
namespace {

template <class T>
void profile_runs(const Cell& cell, std::int64_t steps, const TargetOptions& o, std::uint64_t seed, const std::string& target,
                  bool backward, std::int64_t runs, Profiler& profiler) {
  SequenceArgs<T> args = random_sequence_args<T>(cell, steps, o.batch, seed);
  if (backward) {
    LossGradients<T> seeds = random_loss_gradients<T>(cell, steps, o.batch, seed);
    auto program = backend(target).compile_training(cell, o);
    (void)program->run(args, seeds);  // warm-up: workspaces, packed weights, CUDA graphs
    profiler.discard_runs();
    for (std::int64_t r = 0; r < runs; ++r) (void)program->run(args, seeds);
  } else {
    auto program = backend(target).compile(cell, o);
    (void)program->run(args);
    profiler.discard_runs();
    for (std::int64_t r = 0; r < runs; ++r) (void)program->run(args);
  }
}

}  // namespace

int profile_command(const Options& o) {
  const std::string target = o.values.count("target") ? o.values.at("target") : std::string(target_name(compiled_target_option(o)));
  if (target != "cpu" && target != "cuda") throw Error("profile: --target must be cpu or cuda, not '" + target + "'");
  if (o.values.count("png"))
    throw Error("profile --png draws with matplotlib from Python: run `python -m cellfuse profile ...` (the pip package's "
                "command, which adds --png), or write --json FILE and run `python -m cellfuse.plot_profile FILE OUT.png`");
  const std::int64_t steps = int_option(o, "seq", std::nullopt);
  TargetOptions options;
  options.batch = int_option(o, "batch", std::nullopt);
  if (options.batch < 1) throw Error("profile: --batch must be at least 1");
  const std::int64_t runs = int_option(o, "runs", 3);
  if (runs < 1) throw Error("profile: --runs must be at least 1");
  const auto seed = static_cast<std::uint64_t>(int_option(o, "seed", 0));
  const Cell cell = load(o);
  Profiler profiler;
  if (cell.graph.dtype() == DType::f64)
    profile_runs<double>(cell, steps, options, seed, target, o.backward, runs, profiler);
  else
    profile_runs<float>(cell, steps, options, seed, target, o.backward, runs, profiler);
  profiler.stop();
  const ProfileReport report = profiler.report();
  std::printf("cell: %s, T=%lld, B=%lld, target=%s%s, %lld profiled run(s)\n", cell.name.c_str(),
              static_cast<long long>(steps), static_cast<long long>(options.batch), target.c_str(),
              o.backward ? ", forward+backward" : "", static_cast<long long>(runs));
  std::cout << report.text();
  if (auto it = o.values.find("trace"); it != o.values.end()) {
    profiler.write_trace(it->second);
    std::printf("trace: %s (open in ui.perfetto.dev or chrome://tracing)\n", it->second.c_str());
  }
  if (auto it = o.values.find("json"); it != o.values.end()) {
    write_text_file(it->second, report.json());
    std::printf("report: %s\n", it->second.c_str());
  }
  return 0;
}

}  // namespace cellfuse::cli
