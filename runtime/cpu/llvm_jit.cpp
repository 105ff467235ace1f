#include "runtime/cpu/llvm_jit.h"

#include <llvm/Analysis/TargetTransformInfo.h>
#include <llvm/Config/llvm-config.h>
#include <llvm/ExecutionEngine/Orc/ExecutionUtils.h>
#include <llvm/ExecutionEngine/Orc/JITTargetMachineBuilder.h>
#include <llvm/ExecutionEngine/Orc/LLJIT.h>
#include <llvm/ExecutionEngine/Orc/ThreadSafeModule.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Passes/PassBuilder.h>
#include <llvm/Support/raw_ostream.h>
#include <llvm/Target/TargetMachine.h>

#include "compiler/codegen/llvm/host_target.h"
#include "compiler/ir/error.h"

namespace cellfuse {
namespace {

std::string message(llvm::Error error) {
  std::string out;
  llvm::raw_string_ostream os(out);
  os << error;
  return os.str();
}

llvm::orc::JITTargetMachineBuilder host_machine_builder() {
  const auto& host = llvm_codegen::host_target();
  llvm::orc::JITTargetMachineBuilder builder{llvm::Triple(host.triple)};
  builder.setCPU(host.cpu);
  llvm::SubtargetFeatures features(host.features);
  builder.addFeatures(features.getFeatures());
  builder.setCodeGenOptLevel(llvm::CodeGenOpt::Aggressive);
  return builder;
}

std::unique_ptr<llvm::TargetMachine> host_machine() {
  auto tm = host_machine_builder().createTargetMachine();
  if (!tm) throw Error("LLVM: cannot create a target machine: " + message(tm.takeError()));
  return std::move(*tm);
}

}  // namespace

void optimize_module(llvm::Module& module) {
  auto tm = host_machine();
  module.setDataLayout(tm->createDataLayout());
  module.setTargetTriple(tm->getTargetTriple().str());
  llvm::LoopAnalysisManager lam;
  llvm::FunctionAnalysisManager fam;
  llvm::CGSCCAnalysisManager cgam;
  llvm::ModuleAnalysisManager mam;
  llvm::PassBuilder pb(tm.get());
  pb.registerModuleAnalyses(mam);
  pb.registerCGSCCAnalyses(cgam);
  pb.registerFunctionAnalyses(fam);
  pb.registerLoopAnalyses(lam);
  pb.crossRegisterProxies(lam, fam, cgam, mam);
  llvm::ModulePassManager mpm = pb.buildPerModuleDefaultPipeline(llvm::OptimizationLevel::O3);
  mpm.run(module, mam);
}

LlvmJit::LlvmJit() {
  auto jit = llvm::orc::LLJITBuilder().setJITTargetMachineBuilder(host_machine_builder()).create();
  if (!jit) throw Error("LLVM: cannot create the JIT: " + message(jit.takeError()));
  jit_ = std::move(*jit);
  // LLVM turns some loops into calls of memset or memcpy; they resolve in this process.
  auto process = llvm::orc::DynamicLibrarySearchGenerator::GetForCurrentProcess(
      jit_->getDataLayout().getGlobalPrefix());
  if (!process) throw Error("LLVM: cannot search this process's symbols: " + message(process.takeError()));
  jit_->getMainJITDylib().addGenerator(std::move(*process));
}

LlvmJit::~LlvmJit() = default;

void LlvmJit::add_module(std::unique_ptr<llvm::Module> module,
                         std::unique_ptr<llvm::LLVMContext> context) {
  std::string problems;
  llvm::raw_string_ostream os(problems);
  if (llvm::verifyModule(*module, &os))
    throw InternalError("generated LLVM IR does not verify: " + os.str());
  optimize_module(*module);
  auto err = jit_->addIRModule(llvm::orc::ThreadSafeModule(std::move(module), std::move(context)));
  if (err) throw Error("LLVM: cannot add the module: " + message(std::move(err)));
}

void* LlvmJit::lookup(const std::string& name) {
  auto symbol = jit_->lookup(name);
  if (!symbol) throw Error("LLVM: no function '" + name + "': " + message(symbol.takeError()));
#if LLVM_VERSION_MAJOR >= 15
  return symbol->toPtr<void*>();  // LLVM 15 made lookups return an ExecutorAddr
#else
  return reinterpret_cast<void*>(symbol->getAddress());
#endif
}

}  // namespace cellfuse
