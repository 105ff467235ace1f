#pragma once
// The differential check of one cell: the CPU backend (forward over whole sequences, and BPTT:
// outputs, final states and every gradient) against the f64 reference interpreter, on the same
// random arguments. Tolerances grow with the cell's depth and the sequence length, and with the
// cell's conditioning at these arguments: the f32 reference interpreter is run too, and a cell
// whose f32 evaluation is itself far from f64 (a comparison near a tie, a cancellation) gets a
// tolerance of a few times that distance instead of a false alarm. Such cases are counted.
#include <cstdint>
#include <optional>
#include <string>

#include "compiler/ir/graph.h"

namespace cellfuse::stress {

struct RunShape {
  std::int64_t steps = 3, batch = 2;
};

struct CheckOptions {
  bool forward = true;
  bool bptt = true;
  int threads = 1;           // the CPU backend's team
  std::uint64_t arg_seed = 1;
};

struct CheckCounts {
  std::int64_t cells = 0;
  std::int64_t forward_runs = 0, bptt_runs = 0;
  std::int64_t loose = 0;      // tensors compared at a tolerance widened by the f32 probe
  std::int64_t tensors = 0;    // tensors compared
  std::int64_t skipped = 0;    // tensors not compared: the f32 probe is not finite where f64 is
  double worst_ratio = 0;      // the largest error / tolerance seen (below 1 when all passed)
};

struct Failure {
  // "cpu forward", "cpu bptt" (a wrong result); "cpu compile error", "cpu forward run error", ...
  // (a cellfuse::Error); "... crash" (any other exception); "reference ...": what shrinking keeps
  std::string where;
  std::string detail;
};

// Compiles `cell` once for shape.batch (forward and training programs, not cached: the driver
// makes a new cell each time), runs `shapes` (each with its own arguments) and compares.
std::optional<Failure> check_cpu(const Cell& cell, const std::vector<RunShape>& shapes, const CheckOptions& options,
                                 CheckCounts& counts);

}  // namespace cellfuse::stress
