#pragma once
// Internal to the autodiff pass: the local gradient rule of every op (grad_rules.cpp), written
// against a small context that the pass (autodiff.cpp) implements. A rule sees the node, the
// gradient dy of its result (a value of the backward step's graph), and through the context the
// node's forward values inside the backward step; it adds ops to the backward step's graph and
// hands each operand its contribution.
#include <cstdint>

#include "compiler/ir/graph.h"

namespace cellfuse::autodiff_detail {

class GradContext {
 public:
  virtual ~GradContext() = default;
  // The backward step's graph, where rules add their ops.
  virtual Graph& graph() = 0;
  // The forward value of operand k of the node, or of the node itself, inside the backward step
  // (recomputed there, or read from a step input).
  virtual ValueId operand(int k) = 0;
  virtual ValueId result() = 0;
  // The forward shape of operand k (no op is added).
  virtual const Shape& operand_shape(int k) const = 0;
  // False when operand k has no gradient path (it depends on no input, state or parameter): a
  // rule skips its contribution, so that no-gradient values cost nothing.
  virtual bool needs_grad(int k) const = 0;
  // Adds `grad` (operand k's shape) to operand k's gradient.
  virtual void add_grad(int k, ValueId grad) = 0;
  // Adds `grad` to the features [start, start + width of grad) of operand k's gradient.
  virtual void add_grad_slice(int k, std::int64_t start, ValueId grad) = 0;
  // Operand k is a contraction weight P: dP += a^T b summed over all rows of all steps.
  virtual void weight_grad(int k, ValueId a, ValueId b) = 0;
  // Operand k is a vector P (a bias, a broadcast vector): dP += the column sums of a over all
  // rows of all steps.
  virtual void vector_grad(int k, ValueId a) = 0;
};

// Applies the rule of `node`'s op (an exhaustive switch over OpKind). Leaves have nothing to do:
// their gradients are read by the pass. Throws Error naming the op when it has no rule.
void apply_grad_rule(const Node& node, ValueId dy, GradContext& context);

}  // namespace cellfuse::autodiff_detail
