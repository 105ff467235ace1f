// cellfuse_differential: random cells (random_cell.h) through the CPU backend against the f64
// reference interpreter, forward and BPTT, for a time budget or a number of cells.
//
//   cellfuse_differential --seconds 60 [--seed 1] [--threads 1] [--no-bptt] [--max-width 300]
//   cellfuse_differential --cells 1000 --seed 5000
//   cellfuse_differential --check 1234          one seed, shrunk when it fails
//   cellfuse_differential --print 1234          the cell of a seed, as text
//   cellfuse_differential --emit 100 --seed 7   100 cells' texts (the Python path reads them)
//
// Seeds run in order from --seed; a failure prints the seed, what differed, and the cell shrunk
// to the smallest one that still fails the same way, then exits 1 (or goes on with
// --keep-going). --require-all-ops fails unless every op of ops.def appeared in some cell.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

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
  std::string failures_dir;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "cellfuse_differential: %s\nusage: cellfuse_differential [--seconds S | --cells N] [--seed S] "
               "[--threads N] [--no-bptt] [--no-forward] [--max-width W] [--keep-going] [--no-shrink] [--require-all-ops] "
               "[--failures DIR] | --check SEED | --print SEED | --emit N\n",
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
    else usage(("unknown argument " + a).c_str());
  }
  return o;
}

// Checks one seed; on failure prints it with the shrunk cell and returns false.
bool run_seed(std::uint64_t seed, const Options& o, CheckCounts& counts, std::vector<std::int64_t>& ops) {
  const Cell cell = random_cell(seed, random_dtype(seed), o.limits);
  const auto hist = op_histogram(cell);
  for (std::size_t k = 0; k < hist.size(); ++k) ops[k] += hist[k];
  const auto shapes = random_run_shapes(seed);
  CheckOptions check = o.check;
  check.arg_seed = seed;
  const auto failure = check_cpu(cell, shapes, check, counts);
  if (!failure) return true;
  std::printf("\nFAIL seed %llu: %s: %s\n", static_cast<unsigned long long>(seed), failure->where.c_str(),
              failure->detail.c_str());
  std::fflush(stdout);
  if (!o.shrink) return false;
  // The same failure: the same check and the same tensor ("cpu bptt" + "d param 2"), so that
  // shrinking does not drift to another problem.
  auto signature = [](const Failure& f) { return f.where + "|" + f.detail.substr(0, f.detail.find(':')); };
  CheckCounts scratch;
  const std::string wanted = signature(*failure);
  Cell small = shrink_cell(cell, [&](const Cell& candidate) {
    const auto f = check_cpu(candidate, shapes, check, scratch);
    return f && signature(*f) == wanted;
  });
  const auto again = check_cpu(small, shapes, check, scratch);
  const std::string text = print_cell(small);
  std::printf("minimized (%zu of %zu nodes; %s):\n%s\n", small.graph.size(), cell.graph.size(),
              again ? again->detail.c_str() : "?", text.c_str());
  std::printf("reproduce: cellfuse_differential --check %llu\n", static_cast<unsigned long long>(seed));
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
  std::vector<std::int64_t> ops(static_cast<std::size_t>(op_count()), 0);
  CheckCounts counts;
  if (o.check_one >= 0) return run_seed(static_cast<std::uint64_t>(o.check_one), o, counts, ops) ? 0 : 1;
  if (o.seconds <= 0 && o.cells <= 0) usage("give --seconds or --cells");

  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  std::int64_t failures = 0;
  std::uint64_t seed = o.seed;
  for (;; ++seed) {
    if (o.cells > 0 && counts.cells >= o.cells) break;
    if (o.seconds > 0 && elapsed() >= o.seconds) break;
    if (!run_seed(seed, o, counts, ops)) {
      ++failures;
      if (!o.keep_going) break;
    }
  }
  const double s = elapsed();
  std::printf("cellfuse_differential: seeds %llu..%llu: %lld cells, %lld forward runs, %lld BPTT runs, %lld tensors "
              "compared (%lld at a tolerance widened by the f32 probe, %lld not compared), worst error/tolerance %.3g, "
              "%lld failures, %.1f s, %.2f cells/s\n",
              static_cast<unsigned long long>(o.seed), static_cast<unsigned long long>(seed - 1),
              static_cast<long long>(counts.cells), static_cast<long long>(counts.forward_runs),
              static_cast<long long>(counts.bptt_runs), static_cast<long long>(counts.tensors),
              static_cast<long long>(counts.loose), static_cast<long long>(counts.skipped), counts.worst_ratio,
              static_cast<long long>(failures), s, static_cast<double>(counts.cells) / s);
  std::string missing;
  for (int k = 0; k < op_count(); ++k)
    if (ops[static_cast<std::size_t>(k)] == 0) missing += " " + std::string(op_name(static_cast<OpKind>(k)));
  std::printf("op coverage: %s\n", missing.empty() ? "every op of ops.def appeared" : ("never generated:" + missing).c_str());
  if (o.require_all_ops && !missing.empty()) return 1;
  return failures ? 1 : 0;
}
