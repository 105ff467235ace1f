#pragma once
// Op kinds and their static traits, generated from ops.def.
#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace cellfuse {

enum class OpKind : std::uint8_t {
#define CELLFUSE_OP(id, min_arity, max_arity, kind, attrs, grad) id,
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
  std::string_view grad_rule;
};

const OpInfo& op_info(OpKind op);
std::string_view op_name(OpKind op);
std::optional<OpKind> parse_op(std::string_view name);
int op_count();

inline bool is_leaf(OpKind op) { return op_info(op).op_class == OpClass::Leaf; }
inline bool is_pointwise(OpKind op) { return op_info(op).op_class == OpClass::Pointwise; }
bool is_commutative(OpKind op);

}  // namespace cellfuse
