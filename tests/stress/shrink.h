#pragma once
// Delta debugging of a failing cell: rewrite it one node at a time into something smaller that
// still fails the same way, until no single rewrite keeps the failure. What a failure prints, so
// that a bug report is a dozen lines of cell text instead of a hundred.
#include <functional>

#include "compiler/ir/graph.h"

namespace cellfuse::stress {

// `still_fails(candidate)` says whether a smaller candidate shows the same failure (the caller
// decides what "the same" means: the same target and phase). Rewrites tried, each kept when the
// candidate still fails: a node replaced by one of its operands of the same shape, by a state or
// input of its shape, or by a constant; an output dropped (one is kept); a next state replaced by
// the state itself. Dead nodes are dropped after every rewrite. At most `max_tries` candidates.
Cell shrink_cell(const Cell& failing, const std::function<bool(const Cell&)>& still_fails, int max_tries = 2000);

// The cell without the nodes that no output or next state reads (leaves with a role are kept).
Cell drop_dead_nodes(const Cell& cell);

}  // namespace cellfuse::stress
