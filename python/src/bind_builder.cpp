// The cell builder for Python: what the tracer (cellfuse/_trace.py) calls while the user's
// PyTorch step runs on stand-in values. Shapes, broadcasting and every shape error come from the
// C++ builder, so a traced cell and a C++-built one are the same graph.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "compiler/ir/error.h"
#include "compiler/ir/text.h"
#include "compiler/ir/verifier.h"
#include "compiler/pipeline.h"
#include "frontend/builder.h"
#include "python/src/bindings.h"

namespace py = pybind11;

namespace cellfuse::python {
namespace {

// A builder whose cell Python can hand on once finished. Vals point into the builder's cell, so
// finish() hands out a verified copy and the builder's own cell lives as long as the builder (the
// tracer keeps the builder alive as long as any traced value).
struct PyBuilder {
  std::unique_ptr<CellBuilder> builder;
  PyBuilder(const std::string& name, const std::string& dtype)
      : builder(std::make_unique<CellBuilder>(name, dtype_from(dtype))) {}
  CellBuilder& live() {
    if (!builder) throw Error("this cell builder has already finished its cell");
    return *builder;
  }
};

std::vector<std::int64_t> val_shape(const Val& v) {
  const Shape& s = v.shape();
  if (s.rank == 1) return {s.dims[0]};
  return {s.dims[0], s.dims[1]};
}

Shape shape_from(const std::vector<std::int64_t>& dims) {
  if (dims.size() == 1) return Shape::vector(dims[0]);
  if (dims.size() == 2) return Shape::matrix(dims[0], dims[1]);
  throw Error("a cellfuse parameter has rank 1 or 2, not " + std::to_string(dims.size()));
}

// cellfuse._C.op_table(): ops.def for Python (the tracer's op list, cellfuse.SUPPORTED_OPS).
py::list op_table() {
  static const char* kinds[] = {"leaf", "pointwise", "contraction", "reduction", "layout"};
  py::list out;
  for (int i = 0; i < op_count(); ++i) {
    const auto op = static_cast<OpKind>(i);
    const OpInfo& info = op_info(op);
    py::dict row;
    row["name"] = std::string(info.name);
    row["min_arity"] = info.min_arity;
    row["max_arity"] = info.max_arity;
    row["kind"] = kinds[static_cast<int>(info.op_class)];
    row["pointwise"] = info.op_class == OpClass::Pointwise;
    row["unary"] = is_unary_function(op);
    py::list torch;
    for (std::string_view name : info.torch_names) torch.append(std::string(name));
    row["torch"] = torch;
    out.append(row);
  }
  return out;
}

}  // namespace

DType dtype_from(const std::string& name) {
  if (name == "f32" || name == "float32") return DType::f32;
  if (name == "f64" || name == "float64") return DType::f64;
  throw Error("cellfuse supports float32 and float64 cells, not " + name);
}

void bind_builder(py::module_& m) {
  py::class_<Val>(m, "Val")
      .def_property_readonly("shape", &val_shape, "(rows, features); rows is -1 for the batch")
      .def_property_readonly("features", &Val::features)
      .def_property_readonly("batched", [](const Val& v) { return v.shape().is_batched(); })
      .def("__repr__", [](const Val& v) { return "<cellfuse.Val " + v.cell().graph.describe(v.id()) + ">"; });

  py::class_<PyBuilder>(m, "Builder")
      .def(py::init<const std::string&, const std::string&>(), py::arg("name"), py::arg("dtype"))
      .def("input", [](PyBuilder& b, const std::string& n, std::int64_t f) { return b.live().input(n, f); })
      .def("state", [](PyBuilder& b, const std::string& n, std::int64_t f) { return b.live().state(n, f); })
      .def("param", [](PyBuilder& b, const std::string& n, const std::vector<std::int64_t>& dims) {
        return b.live().param(n, shape_from(dims));
      })
      .def("output", [](PyBuilder& b, const std::string& n, const Val& v) { b.live().output(n, v); })
      .def("next", [](PyBuilder& b, const Val& s, const Val& v) { b.live().next(s, v); })
      .def("finish", [](PyBuilder& b) {
        Cell cell = b.live().cell();
        verify(cell);
        return cell;
      });

  // Binary arithmetic broadcasts like PyTorch (the builder inserts broadcast/expand); numbers
  // become constants of the other operand's shape.
  m.def("add", [](const Val& a, const Val& b) { return a + b; });
  m.def("add", [](const Val& a, double b) { return a + b; });
  m.def("add", [](double a, const Val& b) { return a + b; });
  m.def("sub", [](const Val& a, const Val& b) { return a - b; });
  m.def("sub", [](const Val& a, double b) { return a - b; });
  m.def("sub", [](double a, const Val& b) { return a - b; });
  m.def("mul", [](const Val& a, const Val& b) { return a * b; });
  m.def("mul", [](const Val& a, double b) { return a * b; });
  m.def("mul", [](double a, const Val& b) { return a * b; });
  m.def("div", [](const Val& a, const Val& b) { return a / b; });
  m.def("div", [](const Val& a, double b) { return a / b; });
  m.def("div", [](double a, const Val& b) { return a / b; });
  m.def("minimum", &minimum);
  m.def("maximum", &maximum);
  m.def("greater", &greater);
  m.def("greater_equal", &greater_equal);
  m.def("less", &less);
  m.def("less_equal", &less_equal);
  m.def("where", &where);
  m.def("constant_like", &constant_like);
  // _C.<op>(x) for every unary op of ops.def (pointwise ops of one operand, reductions over the
  // features): a new one is bound here without an edit.
  for (int i = 0; i < op_count(); ++i) {
    const auto op = static_cast<OpKind>(i);
    if (is_unary_function(op))
      m.def(std::string(op_name(op)).c_str(), [op](const Val& x) { return apply(op, {x}); });
  }
  m.def("op_table", &op_table,
        "every op of the IR (compiler/ir/ops.def) as a dict: name, min_arity, max_arity (-1: any), "
        "kind (leaf, pointwise, contraction, reduction, layout), pointwise, unary (bound as _C.<name>), "
        "torch (the PyTorch names the tracer maps to it)");
  m.def("linear", [](const Val& x, const Val& W, std::optional<Val> b) { return b ? linear(x, W, *b) : linear(x, W); },
        py::arg("x"), py::arg("W"), py::arg("b") = py::none());
  m.def("matmul", &matmul);
  m.def("broadcast", &broadcast);
  m.def("expand", &expand);
  m.def("cat", &cat);
  m.def("slice", &slice);
  m.def("layer_norm", [](const Val& x, std::optional<Val> g, std::optional<Val> b, double eps) {
    if (g && b) return layer_norm(x, *g, *b, eps);
    Val y = layer_norm(x, eps);
    if (g) y = y * *g;
    if (b) y = y + *b;
    return y;
  });

  py::class_<Cell>(m, "Cell")
      .def_static("parse", [](const std::string& text) { return parse_cell(text); })
      .def_property_readonly("name", [](const Cell& c) { return c.name; })
      .def_property_readonly("dtype", [](const Cell& c) { return std::string(dtype_name(c.graph.dtype())); })
      .def_property_readonly("hash", &cell_hash)
      .def("tape_widths", [](const Cell& c) { return tape_widths(differentiate_stage(c)); },
           "the widths of the tensors a training forward keeps for the backward")
      .def("text", &print_cell)
      .def("__str__", &print_cell);
}

}  // namespace cellfuse::python
