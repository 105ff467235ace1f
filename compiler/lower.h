#pragma once
// The one pipeline from a captured cell to what the backends consume, stage by stage, with the
// verifier between stages. Later issues add autodiff, hoisting, fusion and code generation here.
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

struct Stage {
  std::string name;  // "input", "simplify", "cse", "dce", ...
  std::string text;  // the cell after that stage, in text form
};

// Runs simplify, CSE and DCE to a fixed point (at most a few rounds). When `log` is given, each
// stage's result is appended to it.
Cell optimize(const Cell& cell, std::vector<Stage>* log = nullptr);

}  // namespace cellfuse
