#include "compiler/codegen/llvm/host_target.h"

#include <llvm/ADT/StringMap.h>
#include <llvm/Support/Host.h>
#include <llvm/Support/TargetSelect.h>

namespace cellfuse::llvm_codegen {

const HostTarget& host_target() {
  static const HostTarget target = [] {
    llvm::InitializeNativeTarget();
    llvm::InitializeNativeTargetAsmPrinter();
    HostTarget t;
    t.triple = llvm::sys::getProcessTriple();
    t.cpu = llvm::sys::getHostCPUName().str();
    llvm::StringMap<bool> features;
    t.vector_bits = 128;
    if (llvm::sys::getHostCPUFeatures(features)) {
      for (const auto& f : features) {
        if (!t.features.empty()) t.features += ",";
        t.features += (f.getValue() ? "+" : "-") + f.getKey().str();
      }
      if (features.lookup("avx2") && features.lookup("fma")) t.vector_bits = 256;
      // 512-bit vectors only where the whole AVX-512 foundation and the DQ/BW/VL parts exist.
      if (features.lookup("avx512f") && features.lookup("avx512dq") && features.lookup("avx512vl"))
        t.vector_bits = 512;
    }
    return t;
  }();
  return target;
}

}  // namespace cellfuse::llvm_codegen
