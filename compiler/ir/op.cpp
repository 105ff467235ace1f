#include "compiler/ir/op.h"

#include <string>

#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

// "start:i,len:i" -> {{"start", Int}, {"len", Int}}
std::vector<AttrSpec> parse_attr_specs(std::string_view spec) {
  std::vector<AttrSpec> out;
  while (!spec.empty()) {
    auto comma = spec.find(',');
    std::string_view item = spec.substr(0, comma);
    auto colon = item.find(':');
    if (colon == std::string_view::npos || colon + 2 != item.size())
      throw InternalError("bad attribute spec in ops.def: " + std::string(item));
    AttrKind kind = item[colon + 1] == 'i'   ? AttrKind::Int
                    : item[colon + 1] == 'f' ? AttrKind::Float
                                             : AttrKind::String;
    out.push_back({item.substr(0, colon), kind});
    spec = comma == std::string_view::npos ? std::string_view{} : spec.substr(comma + 1);
  }
  return out;
}

// "erf special_erf" -> {"erf", "special_erf"}
std::vector<std::string_view> split_names(std::string_view names) {
  std::vector<std::string_view> out;
  while (!names.empty()) {
    auto space = names.find(' ');
    if (space != 0) out.push_back(names.substr(0, space));
    names = space == std::string_view::npos ? std::string_view{} : names.substr(space + 1);
  }
  return out;
}

const std::vector<OpInfo>& table() {
  static const std::vector<OpInfo> infos = {
#define CELLFUSE_OP(id, min_arity, max_arity, kind, attrs, cost, torch, grad, math, cuda) \
  OpInfo{#id, min_arity, max_arity, OpClass::kind, parse_attr_specs(attrs), cost, split_names(torch), grad, cuda},
#include "compiler/ir/ops.def"
#undef CELLFUSE_OP
  };
  return infos;
}

}  // namespace

const OpInfo& op_info(OpKind op) { return table().at(static_cast<std::size_t>(op)); }
std::string_view op_name(OpKind op) { return op_info(op).name; }
int op_count() { return static_cast<int>(table().size()); }

std::optional<OpKind> parse_op(std::string_view name) {
  const auto& t = table();
  for (std::size_t i = 0; i < t.size(); ++i)
    if (t[i].name == name) return static_cast<OpKind>(i);
  return std::nullopt;
}

bool is_commutative(OpKind op) {
  switch (op) {
    case OpKind::add:
    case OpKind::mul:
    case OpKind::min:
    case OpKind::max: return true;
    default: return false;
  }
}

}  // namespace cellfuse
