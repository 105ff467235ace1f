#pragma once
// The CUDA runners (CudaCell, CudaBptt) on a machine without a GPU: the fake driver and cuBLAS
// (fake_cuda.cpp) in place of libcuda.so.1 and libcublas.so, and each cell's generated CUDA C
// compiled for the host by the C++ compiler (cuda_emulation.h). Shared by test_cuda_emulated and
// the random-cell differential driver (tests/stress, `--backend cuda --fake-cuda`), library
// `cellfuse_cuda_emulation`.
//
// use_fake_cuda() must run before anything loads the CUDA driver (the runtime loads it once per
// process): test_cuda_emulated calls it from a static initializer, cellfuse_differential while
// parsing its arguments.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>

#include "compiler/codegen/cuda/cuda_program.h"
#include "runtime/cuda/cuda_bptt.h"
#include "runtime/cuda/cuda_cell.h"

namespace cellfuse::testing_support {

// Points the runtime at the fake driver and cuBLAS, its kernel cache at a scratch directory of
// this process, and makes the loop plan follow its fixed rule (CELLFUSE_CUDA_PLAN_TIMING=0: what
// is checked does not depend on timing); clears CELLFUSE_CUDA_GRAPHS and CELLFUSE_CUDA_LOOP.
void use_fake_cuda();

// The process's scratch directory (the kernel cache, the host builds of the kernels), made on
// first use and removed when the process exits normally.
const std::filesystem::path& emulation_work_dir();

// What the fake driver saw go wrong since the last call (guard bytes overwritten, a launch of an
// unknown kernel, ...), then cleared; "" when nothing did.
std::string fake_errors();

struct FakeCounters {
  unsigned long long launches, gemms, graph_launches, captures;
};
FakeCounters fake_counters();

// The program's CUDA C source plus, for every kernel, the entry points the fake driver calls.
std::string host_source(const cuda_codegen::CudaProgram& program);

// Compiles the program's kernels for the host; returns the shared library's path. Throws
// std::runtime_error with the compiler's log when that fails.
std::string build_host_kernels(const cuda_codegen::CudaProgram& program);

// A CudaCell whose module is the host build of its own source (CELLFUSE_FAKE_KERNELS). Throws
// std::logic_error when the runner compiled another source than the one built for the host.
std::unique_ptr<CudaCell> emulated_cell(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});

// A CudaBptt whose two modules are host builds of its two cells' sources (the fake driver
// searches both libraries; kernel names differ between the cells). Throws like emulated_cell.
std::unique_ptr<CudaBptt> emulated_bptt(const Cell& cell, std::int64_t batch, const CudaOptions& options = {});

}  // namespace cellfuse::testing_support
