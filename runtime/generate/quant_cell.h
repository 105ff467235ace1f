#pragma once
// One layer of a generator: any cell the CPU backend compiles, run over a few rows at a time with
// the matrix products whose weight is a parameter reading that weight in a chosen format
// (runtime/cpu/quant). The cell is hoisted (pre/loop/post) and fused like compile_cpu's, but
// without products fused into kernels: each product is a QuantMatrix call, each fused pointwise
// kernel (the products' epilogue: gates, layer norms) a generated LLVM function that reads the
// product's output while it is still in L1.
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

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace cellfuse::generate
