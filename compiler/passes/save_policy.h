#pragma once
// Which forward values the backward step reads from saves (SavePolicy::MinBytes, autodiff.h):
// the cheapest set, in bytes per batch row, from which everything the backward reads can be
// recomputed, contractions never being recomputed. A minimum cut, by max flow.
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse::autodiff_detail {

// Never recomputed in the backward step: the batched result of a contraction on a gradient path
// (a GEMM is not cheap to redo).
bool must_save(const Node& n, bool active);

// `f` is the optimized forward; `active[i]`: value i is on a gradient path; `needed[i]`: the
// backward's rules read value i. Returns which values to save.
std::vector<bool> min_bytes_saves(const Cell& f, const std::vector<bool>& active, const std::vector<bool>& needed);

}  // namespace cellfuse::autodiff_detail
