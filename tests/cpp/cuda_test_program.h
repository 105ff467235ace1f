#pragma once
// Shared by the CUDA tests: a cell's CUDA program as compile() makes it (compiler/pipeline.h),
// for tests that check the generated code without loading it.
#include <cstdint>
#include <string>

#include "compiler/pipeline.h"
#include "runtime/cuda/cuda_cell.h"

namespace cellfuse::testing_support {

// compile() for the CUDA target, the program only. `name` is unused (the kernels are named after
// the cell); it keeps the call sites readable.
inline cuda_codegen::CudaProgram compile_cuda_program(const Cell& cell, std::int64_t batch, const std::string& /*name*/,
                                                      const cuda_codegen::ProgramOptions& options = {}) {
  return *compile(cell, cuda_target(batch, options, Storage::Native)).forward.cuda;
}

}  // namespace cellfuse::testing_support
