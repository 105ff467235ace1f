#pragma once
// QuantCell's insides, shared by quant_cell.cpp (compile, weights, the batched run) and
// quant_cell_step.cpp (one generation step run by a team). Not part of the API.
#include <memory>
#include <vector>

#include "compiler/codegen/llvm/kernel_codegen.h"
#include "compiler/pipeline.h"
#include "runtime/cpu/llvm_jit.h"
#include "runtime/cpu/team.h"
#include "runtime/generate/quant_cell.h"

namespace cellfuse::generate::detail {

constexpr std::int64_t kRowChunk = 64;  // rows per kernel call; scratch is sized for this many

inline std::int64_t features(const Cell& c, ValueId v) { return c.graph.node(v).shape.features(); }
inline std::int64_t elements(const Shape& s) {
  std::int64_t n = 1;
  for (int i = 0; i < s.rank; ++i) n *= s.dims[static_cast<std::size_t>(i)];
  return n;
}

// One stage's program and the memory its runs use (grown to the most rows seen).
struct StageExec {
  const SequenceStage* stage = nullptr;
  StageProgram program;
  std::vector<llvm_codegen::KernelFunction> functions;  // per step; null for a product
  std::vector<int> matrix_param;                        // per step: the cell param of a quantized weight, or -1
  std::vector<const cpu::quant::QuantMatrix*> matrix;   // per step: that weight
  std::vector<float*> where;                            // per stage value
  std::vector<std::vector<float>> temporaries;          // per program temporary
  // Per step, per set: a kernel's buffers. Set p is member p's when a step's kernel runs on
  // several members at once (split by rows, or each member all rows on its own copies); set 0
  // otherwise. Each set has its own scratch.
  std::vector<std::vector<std::vector<void*>>> pointers;
  std::vector<std::vector<float>> scratch;
  std::vector<std::vector<float>> exports;  // per stage output, [rows, cols]
  std::int64_t capacity = 0;
};

// Member p >= 1's memory in a replicated step (see QuantCell::bind_step): its own copy of every
// value that a kernel or a weightless product writes, of the states and of the output; the
// outputs of products with a weight stay shared (each member writes its share of their rows).
struct Replica {
  std::vector<float*> where[3];                  // per stage, per stage value (as StageExec::where)
  std::vector<std::vector<float>> own;           // the values this member writes itself
  std::vector<std::vector<float>> states, next;  // per state, [rows, n]
  std::vector<float> output;                     // [rows, output width]
};

}  // namespace cellfuse::generate::detail

namespace cellfuse::generate {

struct QuantCell::Impl {
  Cell cell;
  SequencePlan plan;
  detail::StageExec stages[3];
  std::unique_ptr<LlvmJit> jit;
  LayerWeights weights;
  cpu::quant::Activations activations;
  std::vector<std::vector<float>> current, next;  // the loop's states
  // The step path (bind_step / step): rows, where the states and the output live, each member's
  // activations (one per program step) and its team of one (for products of two per-step values),
  // whether the step is replicated and the members bound for it, members 1.. 's replicas.
  std::int64_t step_rows = 0;
  std::vector<float*> step_states;
  float* step_output = nullptr;
  std::vector<std::vector<cpu::quant::Activations>> member_activations[3];
  std::vector<std::unique_ptr<cpu::Team>> alone;
  bool replicated = false;
  int step_parts = 1;
  std::vector<detail::Replica> replicas;

  void compile(const Cell& user_cell);
  std::vector<bool> fp32_needed() const;
  void check_weights() const;
  void resolve_matrices();
  void grow(detail::StageExec& se, std::int64_t rows, int sets);
  void run_kernel(detail::StageExec& se, std::size_t i, std::int64_t r0, std::int64_t r1, int set,
                  const std::vector<float*>& where);
  void run_stage(detail::StageExec& se, std::int64_t rows, std::int64_t export_row, cpu::Team& team);
  void bind_replicas(const std::vector<const float*>& inputs);
  std::vector<float*>& where_of(int part, int stage) {
    return part == 0 ? stages[stage].where : replicas[static_cast<std::size_t>(part - 1)].where[stage];
  }
};

}  // namespace cellfuse::generate
