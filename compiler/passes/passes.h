#pragma once
// The graph-level passes. Each lives in its own file, is one function from cell to cell, and
// keeps the cell's roles (inputs, states, params, outputs) exactly as they were.
#include "compiler/ir/graph.h"

namespace cellfuse {

// Dead-code elimination: drops every node that no output and no next state depends on. Leaves
// stay even when unused, because they are the cell's calling convention.
Cell eliminate_dead_code(const Cell& cell);

// Common-subexpression elimination: merges identical nodes, treating the operands of commutative
// ops (add, mul, min, max) as unordered.
Cell eliminate_common_subexpressions(const Cell& cell);

// Algebraic simplification and constant folding: x*1, x+0, x-0, x/1, --x, slices of cat and of
// slice, cat of adjacent slices, whole-width slices, ops on constants. Rules that would change
// results for NaN or infinity (x*0 -> 0, x-x -> 0) are not applied; the sign of a zero result is
// not kept (x+0 -> x gives -0 where -0+0 gives +0), as in every fast-math compiler.
Cell simplify(const Cell& cell);

}  // namespace cellfuse
