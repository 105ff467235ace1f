#pragma once
// The stress generator's random cells (issue 20): one integer seed gives one cell, the same on
// every machine (SplitMix64, no std distributions). A cell has 1-4 states and 1-2 inputs of mixed
// widths (1 to 300, small most of the time so that many cells run per second), and draws its
// operations from the whole op table of compiler/ir/ops.def, plus the builder's composites (chunk,
// split, LayerNorm with and without affine parameters), constants, value reuse, dead values,
// products that depend on the state and products that do not (the hoisted ones), products of
// weights computed from parameters (the Python front end's prelude), f32 and f64.
//
// Values are kept bounded (a value that could exceed 8 in magnitude is squashed by tanh) and every
// math op inside its domain (log and sqrt of softplus(x) + 0.1, division by |x| + 0.5), so f32 and
// f64 never overflow and a mismatch means a wrong result, not a different infinity.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse::stress {

struct CellShapeLimits {
  std::int64_t max_width = 300;  // widest input, state or product output
  int min_ops = 4, max_ops = 24; // random operations after the first products
  int max_states = 4;
  int max_inputs = 2;
  // Weights computed from parameters (W * sigmoid(M) * 2): the Python front end runs such work
  // in its prelude; the C++ backends take parameter weights only (an Error says so), so the
  // C++ driver leaves them out and the Python driver's cells have them.
  bool computed_weights = false;
};

// A random cell of `dtype` (f32 or f64) from `seed`.
Cell random_cell(std::uint64_t seed, DType dtype, const CellShapeLimits& limits = {});

// f32 or f64, chosen by the seed (half of each).
DType random_dtype(std::uint64_t seed);

// How many nodes of each OpKind a cell has (indexed by the enum), to report op coverage.
std::vector<std::int64_t> op_histogram(const Cell& cell);

// The longest chain of computing nodes (not leaves, not layout) from a leaf to an output or a
// next state: what the driver's tolerances grow with.
int cell_depth(const Cell& cell);

}  // namespace cellfuse::stress
