#pragma once
// The differential check of one cell: a backend (backend_under_test.h: the CPU, or CUDA on a GPU
// or the fake driver; forward over whole sequences, and BPTT: outputs, final states and every
// gradient) against the f64 reference interpreter, on the same random arguments. Tolerances grow with the cell's depth and the sequence length; with the
// cell's conditioning at these arguments (the f32 reference interpreter is run too, on the
// arguments and on the arguments moved by one ulp, and a cell whose f32 evaluation is itself far
// from f64 gets a tolerance of a few times that distance); and for gradients with the magnitude
// of the terms they are summed from (gradient_magnitude.h). Widened tensors are counted.
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "compiler/ir/graph.h"
#include "backend_under_test.h"

namespace cellfuse::stress {

struct RunShape {
  std::int64_t steps = 3, batch = 2;
};

struct CheckOptions {
  bool forward = true;
  bool bptt = true;
  int threads = 1;           // check_cpu: the CPU backend's team
  std::uint64_t arg_seed = 1;
  // Mutation testing of the check (cellfuse_differential --mutants): after each BPTT run that
  // passes, spoiled copies of its gradients are compared too and must fail (CheckCounts).
  bool mutants = false;
  // Every tolerance times this (--tolerance-scale): below 1, a way to make cells fail on purpose
  // (the shrinker's test).
  double tolerance_scale = 1;
  bool explain = false;  // print every tensor's error, tolerance and the rule that set it (--explain)
};

struct MutantCounts {
  std::int64_t made = 0, caught = 0;
  std::int64_t caught_by_value_rule = 0;  // caught when errors are measured against |value|
};

struct CheckCounts {
  std::int64_t cells = 0;
  std::int64_t forward_runs = 0, bptt_runs = 0;
  std::int64_t loose = 0;      // tensors compared at a tolerance widened by the f32 probe
  std::int64_t tensors = 0;    // tensors compared
  std::int64_t skipped = 0;    // tensors not compared: the f32 probe is not finite where f64 is
  std::int64_t fan_in = 0;            // tensors compared at the fan-in estimate (gradient_magnitude.h)
  std::int64_t with_estimate = 0;     // gradients that had a fan-in estimate
  std::int64_t without_estimate = 0;  // BPTT runs without (an adjoint under a nonlinear op)
  MutantCounts element_mutants;  // one element off by 1e-3 of the tensor's norm
  MutantCounts row_mutants;      // a parameter gradient without batch row 0's share
  double worst_ratio = 0;      // the largest error / tolerance seen (below 1 when all passed)
  double worst_fan_in_ratio = 0;  // the largest error / fan-in estimate where it exceeds the depth rule
  std::map<std::string, std::int64_t> loop_plans;  // cells per program and loop plan (CompiledPrograms::loop_plans)
};

struct Failure {
  // "cpu forward", "cpu bptt" (a wrong result); "cpu compile error", "cpu forward run error", ...
  // (a cellfuse::Error); "... crash" (any other exception); "reference ...": what shrinking keeps
  std::string where;
  std::string detail;
  int shape = -1;  // the index of the RunShape that failed (-1: compiling, before any ran)
};

// The arguments of shapes[k] come from options.arg_seed + k * kArgSeedStride.
inline constexpr std::uint64_t kArgSeedStride = 0x1000;

// Compiles `cell` once for shape.batch with `backend` (forward and training programs, not cached:
// the driver makes a new cell each time), runs `shapes` (each with its own arguments) and
// compares. Failure::where begins with backend.name().
std::optional<Failure> check_cell(const BackendUnderTest& backend, const Cell& cell, const std::vector<RunShape>& shapes,
                                  const CheckOptions& options, CheckCounts& counts);

// check_cell on the CPU backend with a team of options.threads.
std::optional<Failure> check_cpu(const Cell& cell, const std::vector<RunShape>& shapes, const CheckOptions& options,
                                 CheckCounts& counts);

}  // namespace cellfuse::stress
