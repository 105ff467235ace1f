#pragma once
// The smallest honest use of ORC LLJIT: add an LLVM module, look up its functions. Code is
// compiled for the host CPU (its features included), at -O3.
#include <memory>
#include <string>

namespace llvm {
class LLVMContext;
class Module;
namespace orc {
class LLJIT;
}
}  // namespace llvm

namespace cellfuse {

class LlvmJit {
 public:
  LlvmJit();
  ~LlvmJit();
  LlvmJit(const LlvmJit&) = delete;
  LlvmJit& operator=(const LlvmJit&) = delete;

  // Optimizes `module` for the host and adds it; throws Error on failure (with LLVM's message).
  void add_module(std::unique_ptr<llvm::Module> module, std::unique_ptr<llvm::LLVMContext> context);
  // The address of a function of an added module; throws Error when it is not there.
  void* lookup(const std::string& name);

 private:
  std::unique_ptr<llvm::orc::LLJIT> jit_;
};

// Runs the standard -O3 pipeline over `module` for the host CPU (also used to inspect the
// optimized IR in tests).
void optimize_module(llvm::Module& module);

}  // namespace cellfuse
