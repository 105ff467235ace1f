#pragma once
// The verifier: checks every invariant of a cell that later stages rely on. The pipeline runs it
// between stages; the builder and the parser run it before handing a cell out.
#include "compiler/ir/graph.h"

namespace cellfuse {

// Throws Error describing the first broken invariant.
void verify(const Cell& cell);

}  // namespace cellfuse
