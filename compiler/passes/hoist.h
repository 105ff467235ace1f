#pragma once
// The hoisting pass: splits a cell's step into three stages so that the time loop does only the
// work that really depends on the recurrent state.
//
//   pre   work that depends on the per-step inputs but not on a state (x W_ih^T + b_ih): done
//         for all T steps at once, as one [T*B, n] batch, before the loop;
//   loop  work that the next states need and that depends on a state: the recurrence;
//   post  work that depends on a state but that no next state needs (an output projection
//         y = h' W_ho^T): done for all T steps at once, after the loop.
//
// Every op of the IR treats batch rows independently, so a stage run on T*B rows is exactly T
// steps' worth of that stage. Work that depends on neither inputs nor states (a broadcast bias,
// a constant) is copied into each stage that uses it rather than passed between stages.
#include <optional>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

enum class StageKind { Pre, Loop, Post };

// Where one input leaf of a stage gets its data.
struct StageInput {
  enum class From { CellInput, Pre, Loop };
  From from;
  int index;  // CellInput: index into the cell's inputs; Pre/Loop: that stage's output index
};

struct SequenceStage {
  std::optional<Cell> cell;         // empty when the stage has no work
  std::vector<StageInput> inputs;   // parallel to cell->inputs
  std::vector<int> params;          // the cell's param index of each of cell->params
};

struct SequencePlan {
  SequenceStage pre, loop, post;
  // For each output of the cell, the stage that computes it and its output index there.
  struct OutputSource {
    StageKind stage;
    int index;
  };
  std::vector<OutputSource> outputs;
};

struct HoistOptions {
  // Per-step-input work that is not a matrix product (pointwise ops, reductions: a layer norm's
  // statistics) and that only the loop and post stages read is computed in each of them, from
  // the inputs and hoisted products, instead of once before the loop: the same arithmetic (or
  // twice when both read it), but hoisted, each such value is a [T*B, n] array that the pre
  // stage writes to memory and the later stages read back, where recomputed it stays in cache.
  // Products stay hoisted (one large GEMM beats T small ones). The CPU backend sets it; on a GPU
  // the hoisted stage is one wide launch and the loop is latency-bound, so it is left off there.
  bool recompute_pointwise = false;
};

SequencePlan hoist(const Cell& cell, const HoistOptions& options = {});

// The plan in text form, one stage after the other (for `cellfuse print --hoist` and tests).
std::string print_plan(const SequencePlan& plan);

}  // namespace cellfuse
