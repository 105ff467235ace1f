#pragma once
// The pieces of the cellfuse._C extension module, one file each.
#include <pybind11/pybind11.h>

#include <string>

#include "compiler/ir/types.h"

namespace cellfuse::python {

// "f32"/"float32" or "f64"/"float64"; anything else is an Error naming it.
DType dtype_from(const std::string& name);

void bind_builder(pybind11::module_& m);
void bind_cpu(pybind11::module_& m);
void bind_cuda(pybind11::module_& m);
void bind_generate(pybind11::module_& m);
void bind_cli(pybind11::module_& m);
void bind_profile(pybind11::module_& m);

}  // namespace cellfuse::python
