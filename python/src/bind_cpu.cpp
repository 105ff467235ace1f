// The CPU programs for Python: a compiled cell (inference) and a compiled training pair
// (forward with a tape, then the backward), both on memory the caller owns, given as addresses.
// The GIL is released while native code runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <vector>

#include "compiler/ir/error.h"
#include "python/src/bindings.h"

#if CELLFUSE_HAVE_LLVM
#include "runtime/cpu/cpu_bptt.h"
#include "runtime/cpu/cpu_cell.h"
#endif

namespace py = pybind11;

namespace cellfuse::python {

using Addresses = std::vector<std::uintptr_t>;

#if CELLFUSE_HAVE_LLVM
namespace {

template <class P>
std::vector<P> as(const Addresses& addresses) {
  std::vector<P> out;
  out.reserve(addresses.size());
  for (auto a : addresses) out.push_back(reinterpret_cast<P>(a));
  return out;
}

struct CpuProgram {
  std::shared_ptr<const CpuCell> cell;
  CpuProgram(const Cell& c, std::int64_t batch) {
    py::gil_scoped_release release;
    cell = compile_cpu(c, batch);
  }
  template <class T>
  void run(std::int64_t steps, const Addresses& in, const Addresses& st, const Addresses& pa, const Addresses& out,
           const Addresses& fin) const {
    SequenceView<T> v;
    v.steps = steps;
    v.inputs = as<const T*>(in);
    v.states = as<const T*>(st);
    v.params = as<const T*>(pa);
    v.outputs = as<T*>(out);
    v.final_states = as<T*>(fin);
    py::gil_scoped_release release;
    cell->run_view(v);
  }
  void forward(std::int64_t steps, const Addresses& in, const Addresses& st, const Addresses& pa, const Addresses& out,
               const Addresses& fin) const {
    if (cell->dtype() == DType::f32)
      run<float>(steps, in, st, pa, out, fin);
    else
      run<double>(steps, in, st, pa, out, fin);
  }
};

struct CpuTrainer {
  std::shared_ptr<const CpuBptt> bptt;
  DType dtype;
  CpuTrainer(const Cell& c, std::int64_t batch) : dtype(c.graph.dtype()) {
    py::gil_scoped_release release;
    bptt = compile_cpu_bptt(c, batch);
  }
  template <class T>
  TrainingView<T> view(std::int64_t steps, const py::dict& a) const {
    auto get = [&](const char* key) { return a.contains(key) ? a[key].cast<Addresses>() : Addresses{}; };
    TrainingView<T> v;
    v.steps = steps;
    v.inputs = as<const T*>(get("inputs"));
    v.states = as<const T*>(get("states"));
    v.params = as<const T*>(get("params"));
    v.outputs = as<T*>(get("outputs"));
    v.final_states = as<T*>(get("final_states"));
    v.tape = as<T*>(get("tape"));
    v.output_grads = as<const T*>(get("output_grads"));
    v.final_state_grads = as<const T*>(get("final_state_grads"));
    v.input_grads = as<T*>(get("input_grads"));
    v.state_grads = as<T*>(get("state_grads"));
    v.param_grads = as<T*>(get("param_grads"));
    return v;
  }
  void forward(std::int64_t steps, const py::dict& a) const {
    if (dtype == DType::f32) {
      auto v = view<float>(steps, a);
      py::gil_scoped_release release;
      bptt->forward_view(v);
    } else {
      auto v = view<double>(steps, a);
      py::gil_scoped_release release;
      bptt->forward_view(v);
    }
  }
  void backward(std::int64_t steps, const py::dict& a) const {
    if (dtype == DType::f32) {
      auto v = view<float>(steps, a);
      py::gil_scoped_release release;
      bptt->backward_view(v);
    } else {
      auto v = view<double>(steps, a);
      py::gil_scoped_release release;
      bptt->backward_view(v);
    }
  }
};

}  // namespace

void bind_cpu(py::module_& m) {
  m.attr("has_cpu_backend") = true;
  py::class_<CpuProgram>(m, "CpuProgram")
      .def(py::init<const Cell&, std::int64_t>(), py::arg("cell"), py::arg("batch"))
      .def("forward", &CpuProgram::forward, py::arg("steps"), py::arg("inputs"), py::arg("states"),
           py::arg("params"), py::arg("outputs"), py::arg("final_states"))
      .def_property_readonly("compile_ms", [](const CpuProgram& p) { return p.cell->compile_ms(); })
      .def("describe", [](const CpuProgram& p) { return p.cell->describe(); });
  py::class_<CpuTrainer>(m, "CpuTrainer")
      .def(py::init<const Cell&, std::int64_t>(), py::arg("cell"), py::arg("batch"))
      .def("tape_widths", [](const CpuTrainer& t) { return t.bptt->tape_widths(); })
      .def("forward", &CpuTrainer::forward, py::arg("steps"), py::arg("views"))
      .def("backward", &CpuTrainer::backward, py::arg("steps"), py::arg("views"))
      .def_property_readonly("compile_ms", [](const CpuTrainer& t) { return t.bptt->compile_ms(); })
      .def("describe", [](const CpuTrainer& t) { return t.bptt->describe(); });
}
#else
void bind_cpu(py::module_& m) { m.attr("has_cpu_backend") = false; }
#endif

}  // namespace cellfuse::python
