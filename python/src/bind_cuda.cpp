// The CUDA programs for Python: a compiled cell run on device memory given as addresses, on the
// caller's stream (PyTorch's current stream, passed as its handle). `storage` says what the
// addresses hold: "native" (the cell's dtype) or, for f32 cells, "bf16"/"f16" (16-bit tensors,
// f32 math inside; the training tape stays f32), as CudaOptions::storage.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/error.h"
#include "python/src/bindings.h"

#if CELLFUSE_HAVE_CUDA
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"
#include "runtime/cuda/driver.h"
#include "runtime/cuda/storage.h"
#endif

namespace py = pybind11;

namespace cellfuse::python {

constexpr const char* kCudaAvailableDoc =
    "cuda_available() -> (bool, str): whether cellfuse can run on a GPU here, and if not, why\n"
    "(no CUDA backend in this build, no driver, no device). Modules compiled by cellfuse.compile\n"
    "run on CUDA tensors only when this is True.\n\n"
    ">>> import cellfuse\n"
    ">>> ok, why = cellfuse.cuda_available()\n"
    ">>> isinstance(ok, bool) and (ok or len(why) > 0)\n"
    "True\n";

#if CELLFUSE_HAVE_CUDA
namespace {

using Addresses = std::vector<std::uintptr_t>;

std::vector<DevicePointer> device(const Addresses& a) { return {a.begin(), a.end()}; }

// The options of one compilation; an unknown storage name is the caller's mistake (an Error).
CudaOptions options_for(int device_index, const std::string& storage) {
  CudaOptions options;
  options.device = device_index;
  auto parsed = parse_storage(storage);
  if (!parsed) throw Error("unknown storage '" + storage + "': expected native, bf16 or f16");
  options.storage = *parsed;
  return options;
}

struct CudaProgram {
  std::shared_ptr<const CudaCell> cell;
  CudaProgram(const Cell& c, std::int64_t batch, int device_index, const std::string& storage) {
    CudaOptions options = options_for(device_index, storage);
    py::gil_scoped_release release;
    cell = compile_cuda(c, batch, options);
  }
  void forward(std::int64_t steps, const Addresses& in, const Addresses& st, const Addresses& pa,
               const Addresses& out, const Addresses& fin, std::uintptr_t stream) const {
    DeviceSequenceArgs a;
    a.steps = steps;
    a.inputs = device(in);
    a.states = device(st);
    a.params = device(pa);
    a.outputs = device(out);
    a.final_states = device(fin);
    py::gil_scoped_release release;
    cell->run_device(a, reinterpret_cast<CudaStream>(stream));
  }
};

// The training pair on the GPU: forward with its tape, then the backward, on the caller's stream.
struct CudaTrainer {
  std::shared_ptr<const CudaBptt> bptt;
  CudaTrainer(const Cell& c, std::int64_t batch, int device_index, const std::string& storage) {
    CudaOptions options = options_for(device_index, storage);
    py::gil_scoped_release release;
    bptt = compile_cuda_bptt(c, batch, options);
  }
  static DeviceTrainingArgs args(std::int64_t steps, const py::dict& a) {
    auto get = [&](const char* key) { return a.contains(key) ? device(a[key].cast<Addresses>()) : std::vector<DevicePointer>{}; };
    DeviceTrainingArgs d;
    d.steps = steps;
    d.inputs = get("inputs");
    d.states = get("states");
    d.params = get("params");
    d.outputs = get("outputs");
    d.final_states = get("final_states");
    d.tape = get("tape");
    d.output_grads = get("output_grads");
    d.final_state_grads = get("final_state_grads");
    d.input_grads = get("input_grads");
    d.state_grads = get("state_grads");
    d.param_grads = get("param_grads");
    return d;
  }
  void forward(std::int64_t steps, const py::dict& a, std::uintptr_t stream) const {
    DeviceTrainingArgs d = args(steps, a);
    py::gil_scoped_release release;
    bptt->forward_device(d, reinterpret_cast<CudaStream>(stream));
  }
  void backward(std::int64_t steps, const py::dict& a, std::uintptr_t stream) const {
    DeviceTrainingArgs d = args(steps, a);
    py::gil_scoped_release release;
    bptt->backward_device(d, reinterpret_cast<CudaStream>(stream));
  }
};

}  // namespace

void bind_cuda(py::module_& m) {
  m.attr("has_cuda_backend") = true;
  m.def(
      "cuda_available",
      [] {
        std::string why;
        bool ok = cuda::cuda_available(&why);
        return py::make_tuple(ok, why);
      },
      kCudaAvailableDoc);
  py::class_<CudaProgram>(m, "CudaProgram")
      .def(py::init<const Cell&, std::int64_t, int, const std::string&>(), py::arg("cell"), py::arg("batch"),
           py::arg("device"), py::arg("storage") = "native")
      .def("forward", &CudaProgram::forward, py::arg("steps"), py::arg("inputs"), py::arg("states"),
           py::arg("params"), py::arg("outputs"), py::arg("final_states"), py::arg("stream"))
      .def_property_readonly("compile_ms", [](const CudaProgram& p) { return p.cell->compile_ms(); })
      .def_property_readonly("storage", [](const CudaProgram& p) { return std::string(storage_name(p.cell->storage())); })
      .def("describe", [](const CudaProgram& p) { return p.cell->describe(); });
  py::class_<CudaTrainer>(m, "CudaTrainer")
      .def(py::init<const Cell&, std::int64_t, int, const std::string&>(), py::arg("cell"), py::arg("batch"),
           py::arg("device"), py::arg("storage") = "native")
      .def("tape_widths", [](const CudaTrainer& t) { return t.bptt->tape_widths(); })
      .def("forward", &CudaTrainer::forward, py::arg("steps"), py::arg("views"), py::arg("stream"))
      .def("backward", &CudaTrainer::backward, py::arg("steps"), py::arg("views"), py::arg("stream"))
      .def_property_readonly("compile_ms", [](const CudaTrainer& t) { return t.bptt->compile_ms(); })
      .def_property_readonly("storage", [](const CudaTrainer& t) { return std::string(storage_name(t.bptt->storage())); })
      .def("describe", [](const CudaTrainer& t) { return t.bptt->describe(); });
}
#else
void bind_cuda(py::module_& m) {
  m.attr("has_cuda_backend") = false;
  m.def("cuda_available", [] { return py::make_tuple(false, std::string("cellfuse was built without the CUDA backend")); },
        kCudaAvailableDoc);
}
#endif

}  // namespace cellfuse::python
