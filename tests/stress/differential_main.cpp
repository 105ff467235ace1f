// cellfuse_differential: random cells (random_cell.h) through a backend (the CPU by default)
// against the f64 reference interpreter, forward and BPTT, for a time budget or a number of cells.
//
//   cellfuse_differential --seconds 60 [--seed 1] [--threads 1] [--no-bptt] [--max-width 300]
//   cellfuse_differential --backend cuda --cells 100     CUDA on the machine's GPU (device 0)
//   cellfuse_differential --backend cuda --fake-cuda ... CUDA on the fake driver, kernels built
//                                                        for the host (no GPU needed; slow)
//   ... --backend cuda --cuda-loop resident              every cell's time loop on that plan where
//                                                        it fits (auto, graph, persistent, resident)
//   cellfuse_differential --cells 1000 --seed 5000
//   cellfuse_differential --check 1234          one seed, shrunk when it fails
//   cellfuse_differential --print 1234          the cell of a seed, as text
//   cellfuse_differential --emit 100 --seed 7   100 cells' texts (the Python path reads them)
//
// Seeds run in order from --seed; a failure prints the seed, what differed, and the cell shrunk
// to the smallest one that still fails the same way, then exits 1 (or goes on with
// --keep-going). --require-all-ops fails unless every op of ops.def appeared in some cell.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <string>

#include "compiler/ir/error.h"
#include "compiler/ir/op.h"
#include "compiler/ir/text.h"
#include "differential.h"
#include "random_args_shapes.h"
#include "random_cell.h"
#include "shrink.h"

namespace {

using namespace cellfuse;
using namespace cellfuse::stress;

struct Options {
  double seconds = 0;
  std::int64_t cells = 0;
  std::uint64_t seed = 1;
  CheckOptions check;
  CellShapeLimits limits;
  std::int64_t print = -1, check_one = -1, emit = 0;
  bool keep_going = false, require_all_ops = false, shrink = true;
  bool expect_failure = false;  // --check: exit 0 when the seed fails and shrinks by the contract
  double min_caught = 0;         // --min-caught F: fail unless each kind of mutant is caught at least this often
  std::string failures_dir;
  std::optional<DType> dtype;  // every cell in this dtype instead of the seed's
  std::string backend = "cpu";  // --backend cpu|cuda
  bool fake_cuda = false;       // --fake-cuda: the CUDA backend on the fake driver
  std::string cuda_loop = "auto";  // --cuda-loop: the loop plan asked of the CUDA backend
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "cellfuse_differential: %s\nusage: cellfuse_differential [--seconds S | --cells N] [--seed S] "
               "[--threads N] [--no-bptt] [--no-forward] [--max-width W] [--keep-going] [--no-shrink] [--require-all-ops] "
               "[--failures DIR] [--backend cpu|cuda [--fake-cuda] [--cuda-loop auto|graph|persistent|resident]] [--dtype f32|f64] [--mutants] [--tolerance-scale X] [--explain] [--min-caught F] | --check SEED [--expect-failure] | --print SEED | --emit N\n",
               why);
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(("missing value after " + a).c_str());
      return argv[++i];
    };
    if (a == "--seconds") o.seconds = std::stod(value());
    else if (a == "--cells") o.cells = std::stoll(value());
    else if (a == "--seed") o.seed = std::stoull(value());
    else if (a == "--threads") o.check.threads = std::stoi(value());
    else if (a == "--no-bptt") o.check.bptt = false;
    else if (a == "--no-forward") o.check.forward = false;
    else if (a == "--max-width") o.limits.max_width = std::stoll(value());
    else if (a == "--keep-going") o.keep_going = true;
    else if (a == "--no-shrink") o.shrink = false;
    else if (a == "--require-all-ops") o.require_all_ops = true;
    else if (a == "--failures") o.failures_dir = value();
    else if (a == "--check") o.check_one = std::stoll(value());
    else if (a == "--print") o.print = std::stoll(value());
    else if (a == "--emit") o.emit = std::stoll(value());
    else if (a == "--computed-weights") o.limits.computed_weights = true;
    else if (a == "--mutants") o.check.mutants = true;
    else if (a == "--explain") o.check.explain = true;
    else if (a == "--min-caught") {
      o.min_caught = std::stod(value());
      o.check.mutants = true;
    }
    else if (a == "--tolerance-scale") o.check.tolerance_scale = std::stod(value());
    else if (a == "--expect-failure") o.expect_failure = true;
    else if (a == "--backend") {
      o.backend = value();
      if (o.backend != "cpu" && o.backend != "cuda") usage(("--backend takes cpu or cuda, not " + o.backend).c_str());
    }
    else if (a == "--fake-cuda") o.fake_cuda = true;
    else if (a == "--cuda-loop") o.cuda_loop = value();
    else if (a == "--dtype") {
      const std::string d = value();
      if (d != "f32" && d != "f64") usage(("--dtype takes f32 or f64, not " + d).c_str());
      o.dtype = d == "f32" ? DType::f32 : DType::f64;
    }
    else usage(("unknown argument " + a).c_str());
  }
  if ((o.fake_cuda || o.cuda_loop != "auto") && o.backend != "cuda") usage("--fake-cuda and --cuda-loop go with --backend cuda");
  return o;
}

// Checks one seed; on failure prints it with the shrunk cell and returns false.
bool run_seed(const BackendUnderTest& backend, std::uint64_t seed, const Options& o, CheckCounts& counts,
              std::vector<std::int64_t>& ops) {
  const Cell cell = random_cell(seed, o.dtype.value_or(random_dtype(seed)), o.limits);
  const auto hist = op_histogram(cell);
  for (std::size_t k = 0; k < hist.size(); ++k) ops[k] += hist[k];
  const auto shapes = random_run_shapes(seed);
  CheckOptions check = o.check;
  check.arg_seed = seed;
  const auto failure = check_cell(backend, cell, shapes, check, counts);
  if (!failure) return true;
  std::printf("\nFAIL seed %llu: %s: %s\n", static_cast<unsigned long long>(seed), failure->where.c_str(),
              failure->detail.c_str());
  const std::string reproduce = "cellfuse_differential --check " + std::to_string(seed) +
                                (o.backend == "cpu" ? "" : o.fake_cuda ? " --backend cuda --fake-cuda" : " --backend cuda") +
                                (o.cuda_loop != "auto" ? " --cuda-loop " + o.cuda_loop : "");
  if (!o.shrink) std::printf("reproduce and shrink: %s\n", reproduce.c_str());
  std::fflush(stdout);
  if (!o.shrink) return false;
  // The same failure: the same check and the same tensor ("cpu bptt" + "d param 2"), so that
  // shrinking does not drift to another problem. Each candidate runs only what failed: the
  // failing shape with its arguments, and only the forward or only the BPTT programs (each
  // candidate compiles its programs at -O3: the inference program is not needed for a BPTT
  // failure, nor the training ones for a forward failure).
  auto signature = [](const Failure& f) { return f.where + "|" + f.detail.substr(0, f.detail.find(':')); };
  CheckCounts scratch;
  const std::string wanted = signature(*failure);
  CheckOptions narrow = check;
  narrow.mutants = false;
  std::vector<RunShape> narrow_shapes = shapes;
  if (failure->shape >= 0) {
    narrow_shapes = {shapes[static_cast<std::size_t>(failure->shape)]};
    narrow.arg_seed = check.arg_seed + static_cast<std::uint64_t>(failure->shape) * kArgSeedStride;
  }
  if (failure->where.rfind(backend.name() + " bptt", 0) == 0) narrow.forward = false;
  if (failure->where.rfind(backend.name() + " forward", 0) == 0) narrow.bptt = false;
  const auto started = std::chrono::steady_clock::now();
  int candidates = 0;
  Cell small = shrink_cell(cell, [&](const Cell& candidate) {
    ++candidates;
    const auto f = check_cell(backend, candidate, narrow_shapes, narrow, scratch);
    return f && signature(*f) == wanted;
  });
  const double shrink_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  const auto again = check_cell(backend, small, narrow_shapes, narrow, scratch);
  // The shrinker's contract: the cell it returns fails the same check and is no larger.
  if (!again || signature(*again) != wanted || small.graph.size() > cell.graph.size()) {
    std::printf("shrink contract broken: the shrunk cell (%zu nodes, from %zu) %s\n", small.graph.size(),
                cell.graph.size(), again ? ("fails otherwise: " + again->where + ": " + again->detail).c_str() : "passes");
    std::exit(3);
  }
  std::printf("shrunk in %.1f s (%d candidates checked)\n", shrink_seconds, candidates);
  const std::string text = print_cell(small);
  std::printf("minimized (%zu of %zu nodes; %s):\n%s\n", small.graph.size(), cell.graph.size(),
              again ? again->detail.c_str() : "?", text.c_str());
  std::printf("reproduce: %s\n", reproduce.c_str());
  if (!o.failures_dir.empty()) {
    std::ofstream(o.failures_dir + "/seed-" + std::to_string(seed) + ".cell")
        << "# cellfuse_differential seed " << seed << ": " << failure->where << ": " << failure->detail << "\n"
        << text;
  }
  std::fflush(stdout);
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  if (o.print >= 0) {
    const auto seed = static_cast<std::uint64_t>(o.print);
    std::printf("%s", print_cell(random_cell(seed, random_dtype(seed), o.limits)).c_str());
    return 0;
  }
  if (o.emit > 0) {
    for (std::int64_t i = 0; i < o.emit; ++i) {
      const std::uint64_t seed = o.seed + static_cast<std::uint64_t>(i);
      std::printf("#### seed %llu\n%s", static_cast<unsigned long long>(seed),
                  print_cell(random_cell(seed, random_dtype(seed), o.limits)).c_str());
    }
    return 0;
  }
  // The backend, or a clear message why it cannot run here (no silent skip: exit 2).
  std::unique_ptr<BackendUnderTest> backend;
  try {
    backend = o.backend == "cuda" ? cuda_backend(o.fake_cuda, o.cuda_loop) : cpu_backend(o.check.threads);
  } catch (const Error& e) {
    std::fprintf(stderr, "cellfuse_differential: --backend %s: %s\n", o.backend.c_str(), e.what());
    return 2;
  }
  const std::string target = o.backend + (o.fake_cuda ? " (fake driver)" : "") +
                             (o.cuda_loop != "auto" ? ", loop plan " + o.cuda_loop + " asked" : "");
  std::vector<std::int64_t> ops(static_cast<std::size_t>(op_count()), 0);
  CheckCounts counts;
  if (o.check_one >= 0) {
    const bool passed = run_seed(*backend, static_cast<std::uint64_t>(o.check_one), o, counts, ops);
    if (passed) std::printf("seed %lld passes on %s\n", static_cast<long long>(o.check_one), target.c_str());
    if (o.expect_failure) return passed ? 1 : 0;
    return passed ? 0 : 1;
  }
  if (o.seconds <= 0 && o.cells <= 0) usage("give --seconds or --cells");

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::int64_t failures = 0;
  std::uint64_t seed = o.seed;
  for (;; ++seed) {
    if (o.cells > 0 && counts.cells >= o.cells) break;
    if (o.seconds > 0 && elapsed() >= o.seconds) break;
    if (!run_seed(*backend, seed, o, counts, ops)) {
      ++failures;
      if (!o.keep_going) break;
    }
  }
  const double s = elapsed();
  std::printf("cellfuse_differential on %s: seeds %llu..%llu: %lld cells, %lld forward runs, %lld BPTT runs, %lld tensors "
              "compared (%lld at a tolerance widened by the f32 probe, %lld not compared), worst error/tolerance %.3g, "
              "%lld failures, %.1f s, %.2f cells/s\n",
              target.c_str(), static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(o.seed + static_cast<std::uint64_t>(std::max<std::int64_t>(counts.cells, 1)) - 1),
              static_cast<long long>(counts.cells), static_cast<long long>(counts.forward_runs),
              static_cast<long long>(counts.bptt_runs), static_cast<long long>(counts.tensors),
              static_cast<long long>(counts.loose), static_cast<long long>(counts.skipped), counts.worst_ratio,
              static_cast<long long>(failures), s, static_cast<double>(counts.cells) / s);
  std::printf("gradients with a fan-in estimate: %lld, %lld tensors at it (BPTT runs without: %lld), "
              "worst error/estimate where it exceeds the depth rule %.3g\n",
              static_cast<long long>(counts.with_estimate), static_cast<long long>(counts.fan_in),
              static_cast<long long>(counts.without_estimate), counts.worst_fan_in_ratio);
  if (!counts.loop_plans.empty()) {  // what the CUDA backend ran: an asked plan that does not fit runs the graph
    std::printf("loop plans (cells):");
    for (const auto& [plan, n] : counts.loop_plans) std::printf(" %s %lld;", plan.c_str(), static_cast<long long>(n));
    std::printf("\n");
  }
  if (o.check.mutants) {
    for (const auto& [what, m] : {std::pair{"one element off by 1e-3 of the norm", counts.element_mutants},
                                  std::pair{"a parameter gradient without batch row 0", counts.row_mutants}})
      std::printf("mutants (%s): %lld made, %lld caught (%lld without the fan-in estimates)\n", what,
                  static_cast<long long>(m.made), static_cast<long long>(m.caught),
                  static_cast<long long>(m.caught_by_value_rule));
  }
  bool mutants_escaped = false;
  // No mutant made at all is a failure too: --min-caught would otherwise pass without checking.
  for (const MutantCounts* m : {&counts.element_mutants, &counts.row_mutants})
    if (o.min_caught > 0 && (m->made == 0 || static_cast<double>(m->caught) < o.min_caught * static_cast<double>(m->made)))
      mutants_escaped = true;
  if (mutants_escaped) std::printf("FAIL: a kind of mutant was caught less often than --min-caught %g, or none was made\n", o.min_caught);
  std::string missing;
  for (int k = 0; k < op_count(); ++k)
    if (ops[static_cast<std::size_t>(k)] == 0) missing += " " + std::string(op_name(static_cast<OpKind>(k)));
  std::printf("op coverage: %s\n", missing.empty() ? "every op of ops.def appeared" : ("never generated:" + missing).c_str());
  if (o.require_all_ops && !missing.empty()) return 1;
  return failures || mutants_escaped ? 1 : 0;
}
