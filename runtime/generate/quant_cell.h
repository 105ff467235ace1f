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

  // One step of `rows` rows run by a whole team inside one Team::run, so that a generation step
  // wakes the team once instead of once per product: bind() (on the caller, before the run) fixes
  // the memory; then every member calls step(), which shares each product's output rows among
  // the members and runs the pointwise kernels (on member 0, or split by rows when there are
  // enough), with a barrier only where one member reads what another wrote (`sync`, carried
  // from layer to layer). Same results, bit for bit, as run() with steps = 1.
  void bind_step(std::int64_t rows, const float* input, const std::vector<float*>& states, float* output, int parts);
  void step(int part, int parts, cpu::Team& team, StepSync& sync);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellfuse::generate
