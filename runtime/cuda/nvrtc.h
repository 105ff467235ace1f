#pragma once
// NVRTC: CUDA C source -> cubin for one GPU architecture, in process. NVRTC ships with the CUDA
// toolkit and needs no GPU, so compilation works (and is tested) on machines without one.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/error.h"

namespace cellfuse::cuda {

// A compilation NVRTC rejected: the message says so and carries NVRTC's log and the numbered
// source; both are also kept apart.
class CompileError : public Error {
 public:
  CompileError(const std::string& message, std::string log, std::string source)
      : Error(message), log_(std::move(log)), source_(std::move(source)) {}
  const std::string& log() const { return log_; }
  const std::string& source() const { return source_; }

 private:
  std::string log_, source_;
};

// "13.0"
std::string nvrtc_version();

// The architectures this NVRTC can compile for, as numbers (75, 80, 90, ...).
std::vector<int> nvrtc_architectures();

// The "sm_XY" to compile for on a device of compute capability major.minor: the device's own
// when NVRTC knows it, else the newest one NVRTC knows of the same major version (a cubin runs on
// later minor versions of its major). Throws Error when there is none.
std::string architecture_for(int major, int minor);

// The options every cellfuse compilation passes besides the architecture: IEEE division and
// square root, denormals kept (the semantics of pointwise_math.h). Part of the cache key.
std::vector<std::string> default_options();

// Compiles `source` (a whole translation unit; `name` names it in messages) for `architecture`
// ("sm_90") with default_options() plus `extra_options`. Returns the cubin. Throws CompileError
// on failure. Thread-safe.
std::vector<char> compile_to_cubin(const std::string& source, const std::string& architecture,
                                   const std::vector<std::string>& extra_options = {},
                                   const std::string& name = "cellfuse.cu");

// How many compilations compile_to_cubin has run in this process (for tests of the caches).
std::size_t nvrtc_compile_count();

}  // namespace cellfuse::cuda
