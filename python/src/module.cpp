// cellfuse._C: the C++ side of the Python package. It binds the cell builder (for tracing) and
// the compiled programs, which take tensors as raw pointers (data_ptr()) so that the extension
// needs no libtorch: the package checks shapes, dtypes and devices before it passes a pointer.
#include <pybind11/pybind11.h>

#include "compiler/ir/error.h"
#include "python/src/bindings.h"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "cellfuse native module (builder, CPU and CUDA programs)";
  // Bad input (shapes, ops, arguments) arrives as cellfuse.CellfuseError, a ValueError; an
  // internal invariant broken is a RuntimeError naming itself as a cellfuse bug.
  // Never destroyed: a static py::object would be released after the interpreter is gone (at
  // exit), touching a freed type object.
  static auto& error = *new py::exception<cellfuse::Error>(m, "CellfuseError", PyExc_ValueError);
  error.attr("__doc__") =
      "What cellfuse raises for bad input: an op the tracer does not support, shapes that do not\n"
      "fit, a cell that cannot compile, arguments of the wrong dtype or device. A ValueError; the\n"
      "message names the op, the value and the shapes (and, when tracing, your source line).\n\n"
      ">>> import torch, cellfuse\n"
      ">>> rnn = cellfuse.compile(lambda x, h: torch.tanh(x + h), (torch.zeros(2, 3), torch.zeros(2, 3)))\n"
      ">>> try:\n"
      "...     rnn(torch.zeros(5, 2, 4))          # 4 input features, the cell takes 3\n"
      "... except cellfuse.CellfuseError as e:\n"
      "...     print(e)  # doctest: +ELLIPSIS\n"
      "cellfuse RNN: X has 4 input features ..., the cell takes 3 ...\n";
  // Local to this module: pybind11's global translators are shared with every module of the same
  // pybind11 internals (PyTorch's among them), which would then run ours on their exceptions.
  py::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const cellfuse::Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });
  // The id of this module's pybind11 internals (python/CMakeLists.txt makes it cellfuse's own).
  m.attr("_pybind11_internals_id") = PYBIND11_INTERNALS_ID;
  cellfuse::python::bind_builder(m);
  cellfuse::python::bind_cpu(m);
  cellfuse::python::bind_cuda(m);
  cellfuse::python::bind_generate(m);
  cellfuse::python::bind_cli(m);
  cellfuse::python::bind_profile(m);
}
