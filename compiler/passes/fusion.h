#pragma once
// The fusion pass: partitions one stage of a cell (see hoist.h) into the kernels and matrix
// products it runs as, in execution order. Every decision not to fuse carries a reason.
//
// A large matrix product (a GEMM over all batch rows) goes to BLAS: it needs every row of its
// operand, so it ends the kernel before it and starts a new one. Everything else (pointwise ops,
// slices, concatenations, broadcasts, reductions over the features, and small-batch products
// when `fuse_small_products` is set) fuses into the kernel between two such GEMMs. Work that
// depends only on parameters and constants belongs to no kernel: it is recomputed inline
// wherever it is used.
#include <string>
#include <vector>

#include "compiler/ir/graph.h"

namespace cellfuse {

struct FusionGroup {
  enum class Kind { Gemm, Kernel };
  Kind kind;
  std::vector<ValueId> nodes;  // in definition order; one contraction for a Gemm
};

struct FusionPlan {
  std::vector<FusionGroup> groups;  // in execution order
  std::vector<std::string> reasons; // why each boundary exists
};

struct FusionOptions {
  // Fuse matrix products into the kernels as matrix-vector loops (worth it for a few rows,
  // where a BLAS call costs more than the product).
  bool fuse_small_products = false;
};

FusionPlan plan_fusion(const Cell& stage, const FusionOptions& options);

// True for values that depend on no batched leaf: parameters, constants and what is computed
// from them alone.
std::vector<bool> invariant_values(const Cell& stage);

std::string print_fusion(const Cell& stage, const FusionPlan& plan);

}  // namespace cellfuse
