#pragma once
// The measurements behind machine_ceilings() (profiler.h), one file per target:
// ceilings_cpu.cpp (the packed GEMM kernel and a copy on the thread team), ceilings_cuda.cpp
// (cuBLAS and a device-to-device copy timed by CUDA events). A build without the target says so.
#include <string>

#include "runtime/profile/profiler.h"

namespace cellfuse::profile {

std::string cpu_description();  // "cpu <model> x<threads>"
MachineCeilings measure_cpu_ceilings();
std::string cuda_description();  // "cuda <device name>"
MachineCeilings measure_cuda_ceilings();

}  // namespace cellfuse::profile
