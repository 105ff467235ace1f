#pragma once
// The graph optimization stage of compile() (compiler/pipeline.h): simplify, CSE and DCE run to
// a fixed point, with the verifier after every pass. The whole pipeline, stage by stage, is
// compiler/pipeline.h; this is its first graph stage, also used on its own by autodiff and tests.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

// One entry of a stage log (this stage's passes, and compile()'s stages).
struct StageLog {
  std::string name;  // "simplify (round 1)", "forward: fuse", ...
  double ms = 0;     // wall time of the stage
  std::string text;  // its result in text form (empty when not asked for)
  // steady_clock time (ns since its epoch) the stage began: the profiler's trace places it
  // there (runtime/profile). 0 for entries that are no stage of their own ("input").
  std::int64_t start_ns = 0;
};

// Runs simplify, CSE and DCE to a fixed point (at most a few rounds). When `log` is given, each
// pass's name and wall time are appended to it, with the cell after it as text when `text` is set.
Cell optimize(const Cell& cell, std::vector<StageLog>* log = nullptr, bool text = true);

}  // namespace cellfuse
