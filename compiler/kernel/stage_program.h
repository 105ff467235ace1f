#pragma once
// How one stage of a cell (see hoist.h) runs: the GEMMs and kernels in order, and which values
// live in memory between them. Built by fusion (plan_fusion) and kernel lowering (lower_kernel);
// executed by the backends' runners.
#include <string>
#include <vector>

#include "compiler/ir/graph.h"
#include "compiler/kernel/kernel.h"

namespace cellfuse {

struct FusionPlan;  // compiler/passes/fusion.h

struct GemmStep {
  ValueId x;          // [rows, k], in memory
  ValueId weight;     // a param: [n, k] for linear (x W^T), [k, n] for matmul (x W)
  ValueId bias;       // a param [n], or invalid
  ValueId out;        // [rows, n]
  bool transposed;    // true for linear
  std::int64_t k, n;
};

struct KernelStep {
  kernel::Kernel kernel;
  std::vector<ValueId> buffers;  // the value each kernel buffer holds; invalid for scratch
};

struct ProgramStep {
  enum class Kind { Gemm, Kernel };
  Kind kind;
  GemmStep gemm;
  KernelStep kernel;
};

struct StageProgram {
  std::vector<ProgramStep> steps;
  // Non-leaf values the steps leave in memory (GEMM and kernel outputs), all batched: the
  // runner gives each a [rows, cols] array.
  std::vector<ValueId> temporaries;
  std::vector<std::string> notes;  // fusion and scratch decisions, with reasons
};

// Lowers a fused stage to its program: every kernel group becomes kernel IR (lower_kernel.h),
// every GEMM group a GemmStep. `name` prefixes the kernels' names (they must be unique among
// everything one JIT or one CUDA module holds).
StageProgram lower_stage(const Cell& stage, const FusionPlan& plan, const std::string& name);

// plan_fusion, then lower_stage: the two pipeline stages in one call (for tests).
StageProgram compile_stage(const Cell& stage, bool fuse_small_products, const std::string& name);

std::string print_program(const Cell& stage, const StageProgram& program);

}  // namespace cellfuse
