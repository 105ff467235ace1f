#pragma once
// What the host CPU offers the code generator: its name, its feature string and the widest
// vector the kernels should use. Asked from LLVM once; kernels are compiled for this CPU only.
#include <string>

namespace cellfuse::llvm_codegen {

struct HostTarget {
  std::string triple;
  std::string cpu;       // e.g. "cascadelake"
  std::string features;  // e.g. "+avx2,+fma,+avx512f,..."
  int vector_bits;       // 512 with AVX-512, 256 with AVX2, else 128

  int lanes(int element_bytes) const { return vector_bits / (8 * element_bytes); }
};

// Initializes LLVM's native target on first use.
const HostTarget& host_target();

}  // namespace cellfuse::llvm_codegen
