#pragma once
// One layer of a generator: any cell the CPU backend compiles, run over a few rows at a time with
// the matrix products whose weight is a parameter reading that weight in a chosen format
// (runtime/cpu/quant). The cell goes through the one compile pipeline (compiler/pipeline.h)
// with batch-agnostic kernels and no product fused: each product is a QuantMatrix call, each
// fused pointwise kernel (the products' epilogue: gates, layer norms) a generated LLVM function
// that reads the product's output while it is still in L1.
//
// Runs take any number of steps and rows: a prime of T steps for B streams runs its hoisted
// products once over all T*B rows; a generation step runs 1 step of B rows.
#include <map>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "compiler/ir/graph.h"
#include "runtime/cpu/quant/quant_matrix.h"

namespace cellfuse::cpu {
class Team;
}

namespace cellfuse::generate {

// What the members of one Team::run have done since their last barrier. Every member takes the
// same decisions from the same program, so all of them call the barrier alike.
struct StepSync {
  int parts = 1;                      // members running the step (1: no barriers at all)
  std::vector<const float*> written;  // outputs of work split among the members
  bool opaque = false;                // split work whose outputs are not listed (a kernel's rows)
  bool solo = false;                  // work member 0 did alone
  int barriers = 0;                   // barriers taken so far (parts > 1)
  // Before work split among the members that reads `reads` (or null): a barrier when it may
  // read what another member wrote since the last one.
  void before_shared(cpu::Team& team, const float* reads);
  // Before work of member 0 alone (the others skip it): a barrier after split work, whose
  // outputs it may read or whose inputs it may overwrite.
  void before_solo(cpu::Team& team);
  void barrier(cpu::Team& team);
};

// The output rows [r0, r1) of part `part` of `parts` when `blocks` blocks of `unit` rows (the
// last one maybe short, `total` rows in all) are shared in order.
std::pair<std::int64_t, std::int64_t> share_rows(std::int64_t total, std::int64_t unit, int part, int parts);

// A product's weight: the cell's parameter index and whether it is read as [n, k] (linear).
using WeightKey = std::pair<int, bool>;

// What a layer keeps of its parameters: fp32 copies of those that anything but a product's
// weight reads (biases, layer-norm gains), the quantized products' weights.
struct LayerWeights {
  std::vector<std::optional<std::vector<float>>> fp32;  // per cell param
  std::map<WeightKey, cpu::quant::QuantMatrix> matrices;
};

class QuantCell {
 public:
  // `params`: the cell's parameters in declaration order, fp32, each its declared shape.
  QuantCell(const Cell& cell, const std::vector<const float*>& params, cpu::quant::Format format);
  // From stored weights (a generator file); Error when a piece the cell needs is missing or has
  // the wrong shape.
  QuantCell(const Cell& cell, LayerWeights weights);
  ~QuantCell();
  QuantCell(QuantCell&&) noexcept;

  const Cell& cell() const;
  const LayerWeights& weights() const;
  std::int64_t input_width() const;
  std::int64_t output_width() const;  // of output 0, the one the next layer and the decoder read
  std::vector<std::int64_t> state_widths() const;
  // Bytes of weights one step reads.
  std::size_t weight_bytes() const;

  // Runs `steps` steps of `rows` rows each: input [steps * rows, input_width]; states [rows, n]
  // each, read and overwritten with the final states; output [steps * rows, output_width].
  // The caller holds the team's user_mutex.
  void run(std::int64_t steps, std::int64_t rows, const float* input, const std::vector<float*>& states,
           float* output, cpu::Team& team);

  // One step of `rows` rows run by a team inside one Team::run, so that generation wakes the
  // team once for many steps: bind_step() (on the caller, before the runs) fixes the memory; then
  // every member calls step(), which shares each product's output rows among the members, with a
  // barrier only where one member reads what another wrote (`sync`, carried from layer to layer).
  // The pointwise kernels are split by rows when there are enough (rows >= 2 * parts); with fewer
  // the step is replicated: every member runs every kernel over all rows on its own copy of the
  // values kernels write, of the states and of the output (member 0's are `states` and `output`,
  // the others' live here), so that no barrier follows a kernel. `inputs`: member p's input
  // ([rows, input_width]; the layer below's step_output(p), or one shared array). Same results,
  // bit for bit, as run() with steps = 1, whatever the members.
  void bind_step(std::int64_t rows, const std::vector<const float*>& inputs, const std::vector<float*>& states,
                 float* output, int parts);
  // Member `part`'s output of the step (`output` for member 0), and whether the bound step is
  // replicated (else every member reads member 0's input and output).
  const float* step_output(int part) const;
  bool step_replicated() const;
  // Called by every member at the start of each run of steps, before its first barrier: a
  // replica takes member 0's states (runs on fewer members may have moved them on).
  void begin_steps(int part);
  // `parts`: the run's members, the bound number or 1 (the caller alone, on member 0's memory).
  void step(int part, int parts, cpu::Team& team, StepSync& sync);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellfuse::generate
