// Prints a cell in its text form. Intermediate values are numbered in definition order, so two
// structurally equal cells print identically.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <unordered_map>

#include "compiler/ir/text.h"

namespace cellfuse {

std::string format_number(double value, DType dtype) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  // %.17g always reads back exactly; fewer digits usually do, and read better. The check goes
  // the way the parser reads: decimal -> double (-> float, for f32). "%g" keeps the sign of -0.
  auto same = [&](double parsed) {
    return dtype == DType::f32 ? static_cast<float>(parsed) == static_cast<float>(value)
                               : parsed == value;
  };
  char buf[40];
  for (int precision = 6; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, value);
    if (same(std::strtod(buf, nullptr))) break;
  }
  return buf;
}

namespace {

std::string format_attr(const AttrValue& value, DType dtype) {
  if (auto* i = std::get_if<std::int64_t>(&value)) return std::to_string(*i);
  if (auto* d = std::get_if<double>(&value)) return format_number(*d, dtype);
  std::string out = "\"";
  for (char c : std::get<std::string>(value)) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

std::string print_cell(const Cell& cell) {
  const Graph& g = cell.graph;
  std::unordered_map<std::uint32_t, std::string> names;
  std::uint32_t counter = 0;
  // A broken cell (one the verifier would reject) still prints, so that it can be looked at.
  auto name_of = [&](ValueId id) {
    auto it = names.find(id.index);
    return it == names.end() ? std::string("%<invalid>") : it->second;
  };

  std::string out = "cell " + cell.name + " " + std::string(dtype_name(g.dtype())) + " {\n";
  for (std::uint32_t i = 0; i < g.size(); ++i) {
    const Node& n = g.nodes()[i];
    const OpInfo& info = op_info(n.op);
    std::string leaf(n.leaf_name());
    names[i] = "%" + (leaf.empty() ? std::to_string(counter++) : leaf);
    out += "  " + names[i] + " = " + std::string(info.name);
    for (std::size_t k = 0; k < n.inputs.size(); ++k)
      out += (k ? ", " : " ") + name_of(n.inputs[k]);
    if (leaf.empty() && !n.attrs.empty()) {
      out += " {";
      for (std::size_t k = 0; k < n.attrs.size(); ++k)
        out += (k ? ", " : "") + std::string(info.attrs[k].name) + "=" +
               format_attr(n.attrs[k], g.dtype());
      out += "}";
    }
    out += " : " + to_string(n.shape) + "\n";
  }
  for (const auto& o : cell.outputs) out += "  output " + o.name + " = " + name_of(o.value) + "\n";
  for (std::size_t s = 0; s < cell.states.size(); ++s)
    if (s < cell.next_states.size() && cell.next_states[s].valid())
      out += "  next " + std::string(cell.leaf_name(cell.states[s])) + " = " +
             name_of(cell.next_states[s]) + "\n";
  return out + "}\n";
}

}  // namespace cellfuse
