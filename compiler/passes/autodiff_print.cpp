// What a BackwardCell costs and how it reads: bytes saved per row, the tape's widths, and the
// text form `cellfuse print --backward` shows.
#include "compiler/ir/text.h"
#include "compiler/passes/autodiff.h"

namespace cellfuse {
namespace {

std::string shape_bytes(const Shape& shape, DType dtype) {
  return std::to_string(shape.features() * static_cast<std::int64_t>(dtype_size(dtype)));
}

}  // namespace

std::int64_t saved_bytes_per_row(const BackwardCell& b) {
  std::int64_t bytes = 0;
  for (int o : b.saved_outputs)
    bytes +=
        b.forward.graph.node(b.forward.outputs[static_cast<std::size_t>(o)].value).shape.features();
  return bytes * static_cast<std::int64_t>(dtype_size(b.forward.graph.dtype()));
}

std::int64_t state_bytes_per_row(const BackwardCell& b) {
  std::int64_t bytes = 0;
  for (const StepInputSource& s : b.step_inputs)
    if (s.kind == StepInputSource::Kind::ForwardState)
      bytes += b.forward.graph.node(b.forward.states[static_cast<std::size_t>(s.index)])
                   .shape.features();
  return bytes * static_cast<std::int64_t>(dtype_size(b.forward.graph.dtype()));
}

std::vector<std::int64_t> tape_widths(const BackwardCell& b) {
  const Cell& f = b.forward;
  std::vector<std::int64_t> widths;
  for (std::size_t o = static_cast<std::size_t>(b.user_outputs); o < f.outputs.size(); ++o)
    widths.push_back(f.graph.node(f.outputs[o].value).shape.features());
  for (ValueId s : f.states) widths.push_back(f.graph.node(s).shape.features());
  return widths;
}

std::string print_backward(const BackwardCell& b) {
  const Cell& f = b.forward;
  const DType dtype = f.graph.dtype();
  std::string out = "# backward of cell " + f.name + " (" + std::string(dtype_name(dtype)) + ")\n";
  out += "# saved per step (forward outputs the backward reads; pointwise work is recomputed):\n";
  for (std::size_t k = 0; k < b.saved_outputs.size(); ++k) {
    const OutputRole& o = f.outputs[static_cast<std::size_t>(b.saved_outputs[k])];
    const Node& n = f.graph.node(o.value);
    out += "#   " + o.name + " = " + f.graph.ref(o.value) + " (" + std::string(op_name(n.op)) +
           ") " + to_string(n.shape) + ": " + shape_bytes(n.shape, dtype) + " bytes/row\n";
  }
  if (b.saved_outputs.empty()) out += "#   (nothing)\n";
  out += "# saved bytes per step per batch row: " + std::to_string(saved_bytes_per_row(b)) + "\n";
  out += "# forward states at t read by the backward (kept per step): " +
         std::to_string(state_bytes_per_row(b)) + " bytes/row\n";
  out += "# backward step inputs:\n";
  for (std::size_t i = 0; i < b.step_inputs.size(); ++i) {
    const StepInputSource& s = b.step_inputs[i];
    const auto idx = static_cast<std::size_t>(s.index);
    std::string from;
    switch (s.kind) {
      case StepInputSource::Kind::ForwardInput:
        from = "forward input %" + std::string(f.leaf_name(f.inputs[idx])) + " at t";
        break;
      case StepInputSource::Kind::ForwardState:
        from = "forward state %" + std::string(f.leaf_name(f.states[idx])) + " at t";
        break;
      case StepInputSource::Kind::Saved:
        from =
            "save " + f.outputs[static_cast<std::size_t>(b.saved_outputs[idx])].name + " of step t";
        break;
      case StepInputSource::Kind::OutputGrad:
        from = "dL/d(output " + f.outputs[idx].name + ") at t";
        break;
    }
    out += "#   %" + std::string(b.step.leaf_name(b.step.inputs[i])) + " <- " + from + "\n";
  }
  out += "# parameter gradients, after the loop over all T*B rows:\n";
  auto value = [&](const StepValue& v) {
    return v.kind == StepValue::Kind::Input
               ? "%" +
                     std::string(b.step.leaf_name(b.step.inputs[static_cast<std::size_t>(v.index)]))
               : "output " + b.step.outputs[static_cast<std::size_t>(v.index)].name;
  };
  for (const ParamGradTerm& t : b.param_terms) {
    std::string p(f.leaf_name(f.params[static_cast<std::size_t>(t.param)]));
    out += "#   d" + p + " += " +
           (t.kind == ParamGradTerm::Kind::GemmAtB
                ? "(" + value(t.a) + ")^T (" + value(t.b) + ")  [GEMM]"
                : "rowsum(" + value(t.a) + ")") +
           "\n";
  }
  if (b.param_terms.empty()) out += "#   (none)\n";
  out += "# forward with saves\n" + print_cell(f) + "# backward step\n" + print_cell(b.step);
  return out;
}

}  // namespace cellfuse
