#pragma once
// Delta debugging of a failing cell: rewrite it into something smaller that still fails the same
// way, groups of nodes first (halves, quarters, ... down to one node: a large cell loses most of
// its nodes in a few dozen candidates), until no single rewrite keeps the failure. What a failure prints, so
// that a bug report is a dozen lines of cell text instead of a hundred.
#include <functional>

#include "compiler/ir/graph.h"

namespace cellfuse::stress {

// `still_fails(candidate)` says whether a smaller candidate shows the same failure (the caller
// decides what "the same" means: the same target and phase). Rewrites tried, each kept when the
// candidate still fails and is no larger: groups of outputs dropped (one is kept); groups of next
// states replaced by the state itself; groups of nodes each replaced by its first operand of the
// same shape or by a constant; then single nodes replaced by another operand, a state or an input
// of their shape. Dead nodes are dropped after every rewrite. At most `max_tries` candidates.
Cell shrink_cell(const Cell& failing, const std::function<bool(const Cell&)>& still_fails, int max_tries = 2000);

// The cell without the nodes that no output or next state reads (leaves with a role are kept).
Cell drop_dead_nodes(const Cell& cell);

}  // namespace cellfuse::stress
