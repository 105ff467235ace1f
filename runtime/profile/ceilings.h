#pragma once
// The measurements behind machine_ceilings() (profiler.h), one file per target:
// ceilings_cpu.cpp (the packed GEMM kernel and a copy on the thread team), ceilings_cuda.cpp
// (cuBLAS and a device-to-device copy timed by CUDA events). A build without the target says so.
#include <cstddef>
#include <string>

#include "runtime/profile/profiler.h"

namespace cellfuse::profile {

std::string cpu_description();  // "cpu <model> x<threads>"
MachineCeilings measure_cpu_ceilings();
std::string cuda_description();  // "cuda <device name>"
MachineCeilings measure_cuda_ceilings();

// The problems measure_cuda_ceilings() times: an n x n x n SGEMM and a device-to-device copy.
// The defaults reach a GPU's peak; the fake driver's tests (tests/cpp/test_cuda_emulated.cpp),
// whose cuBLAS is a host loop, shrink them so that the real measurement path still runs there.
struct CudaCeilingSizes {
  int gemm_n = 4096;
  std::size_t copy_bytes = std::size_t{512} << 20;
};
// The sizes the next measurements use; tests only (not thread-safe against a measurement).
CudaCeilingSizes& cuda_ceiling_sizes();

}  // namespace cellfuse::profile
