#pragma once
// Op kinds and their static traits, generated from ops.def.
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

// For X-macro users of ops.def that want only the unary functions (is_unary_function below):
// CELLFUSE_IF_UNARY(kind, min_arity, text) is `text` for a unary pointwise op or a reduction,
// nothing for any other op.
#define CELLFUSE_IF_UNARY(kind, min_arity, ...) CELLFUSE_IF_UNARY_##kind##_##min_arity(__VA_ARGS__)
#define CELLFUSE_IF_UNARY_Pointwise_1(...) __VA_ARGS__
#define CELLFUSE_IF_UNARY_Reduction_1(...) __VA_ARGS__
#define CELLFUSE_IF_UNARY_Leaf_0(...)
#define CELLFUSE_IF_UNARY_Contraction_2(...)
#define CELLFUSE_IF_UNARY_Pointwise_2(...)
#define CELLFUSE_IF_UNARY_Pointwise_3(...)
#define CELLFUSE_IF_UNARY_Layout_1(...)
// CELLFUSE_IF_POINTWISE(kind, text) is `text` for a pointwise op, nothing for any other op.
#define CELLFUSE_IF_POINTWISE(kind, ...) CELLFUSE_IF_POINTWISE_##kind(__VA_ARGS__)
#define CELLFUSE_IF_POINTWISE_Pointwise(...) __VA_ARGS__
#define CELLFUSE_IF_POINTWISE_Leaf(...)
#define CELLFUSE_IF_POINTWISE_Contraction(...)
#define CELLFUSE_IF_POINTWISE_Reduction(...)
#define CELLFUSE_IF_POINTWISE_Layout(...)

namespace cellfuse {

enum class OpKind : std::uint8_t {
#define CELLFUSE_OP(id, ...) id,
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
};

enum class OpClass : std::uint8_t { Leaf, Pointwise, Contraction, Reduction, Layout };

enum class AttrKind : std::uint8_t { Int, Float, String };

struct AttrSpec {
  std::string_view name;
  AttrKind kind;
};

struct OpInfo {
  std::string_view name;
  int min_arity;
  int max_arity;  // -1: variadic
  OpClass op_class;
  std::vector<AttrSpec> attrs;
  int cost;                                  // fusion's cost of one element computed inline
  std::vector<std::string_view> torch_names; // what the Python tracer maps to this op
  std::string_view grad_rule;
  std::string_view cuda;  // a pointwise op's CUDA C expression template ("" if composite or none)
};

const OpInfo& op_info(OpKind op);
std::string_view op_name(OpKind op);
std::optional<OpKind> parse_op(std::string_view name);
int op_count();

inline bool is_leaf(OpKind op) { return op_info(op).op_class == OpClass::Leaf; }
inline bool is_pointwise(OpKind op) { return op_info(op).op_class == OpClass::Pointwise; }
// A builder function of one operand and no attributes: every unary pointwise op and every
// reduction (frontend/builder.h declares them from ops.def, the Python module binds them).
inline bool is_unary_function(OpKind op) {
  const OpInfo& i = op_info(op);
  return i.min_arity == 1 && i.max_arity == 1 && i.attrs.empty() &&
         (i.op_class == OpClass::Pointwise || i.op_class == OpClass::Reduction);
}
bool is_commutative(OpKind op);

}  // namespace cellfuse
