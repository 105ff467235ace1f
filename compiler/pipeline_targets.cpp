// The target-specific stages of compile() (pipeline.h): kernel rewrites and code generation.
// Each code generator is a separate library, built only when its toolkit is found; without it
// the stage says so.
#include <string>

#include "compiler/ir/error.h"
#include "compiler/pipeline.h"

#if CELLFUSE_PIPELINE_LLVM
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Module.h>
#include <llvm/Support/raw_ostream.h>

#include "compiler/codegen/llvm/host_target.h"
#include "compiler/codegen/llvm/kernel_codegen.h"
#endif

namespace cellfuse {

StagePrograms rewrite_kernels_stage(StagePrograms programs, const TargetOptions& o) {
  // Every call of a loop-stage kernel covers the whole batch (unless the runner picks the rows).
  if (!o.batch_agnostic)
    for (auto& step : programs[1].steps)
      if (step.kind == ProgramStep::Kind::Kernel) step.kernel.kernel.rows_hint = o.batch;
  if (o.target != Target::Cpu) return programs;
#if CELLFUSE_PIPELINE_LLVM
  // Fused products read their weight in panels (kernel::Buffer::panel) of the width one tile of
  // the product accumulates. Only the transposed copies the runner makes are packed; a weight
  // read in place (matmul's [k, n]) keeps its layout.
  for (auto& step : programs[1].steps) {
    if (step.kind != ProgramStep::Kind::Kernel) continue;
    auto& k = step.kernel.kernel;
    const int lanes = llvm_codegen::host_target().lanes(static_cast<int>(dtype_size(k.dtype)));
    for (const auto& st : k.body)
      if (st.kind == kernel::Statement::Kind::MatVec && k.buffers[st.matvec.weight].transposed)
        k.buffers[st.matvec.weight].panel = llvm_codegen::product_unroll(o.batch) * lanes;
  }
  return programs;
#else
  throw Error("CPU target: this build has no CPU code generator (configured without LLVM)");
#endif
}

#if CELLFUSE_PIPELINE_LLVM
LlvmModule::LlvmModule() = default;
LlvmModule::~LlvmModule() = default;

std::shared_ptr<LlvmModule> generate_llvm_stage(const StagePrograms& programs, const std::string& name) {
  auto out = std::make_shared<LlvmModule>();
  out->context = std::make_unique<llvm::LLVMContext>();
  out->module = std::make_unique<llvm::Module>("cellfuse_" + name, *out->context);
  for (const StageProgram& program : programs)
    for (const auto& step : program.steps)
      if (step.kind == ProgramStep::Kind::Kernel) llvm_codegen::emit_kernel(*out->module, step.kernel.kernel);
  return out;
}

std::string print_llvm_module(const LlvmModule& module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.module->print(os, nullptr);
  os.flush();
  return text;
}
#else
std::shared_ptr<LlvmModule> generate_llvm_stage(const StagePrograms&, const std::string&) {
  throw Error("CPU target: this build has no CPU code generator (configured without LLVM)");
}
std::string print_llvm_module(const LlvmModule&) { return {}; }
#endif

#if CELLFUSE_PIPELINE_CUDA
cuda_codegen::CudaProgram generate_cuda_stage(const Cell& cell, const SequencePlan& plan, const StagePrograms& programs,
                                              const std::array<bool, 3>& products_fused, const TargetOptions& o,
                                              const std::string& name) {
  cuda_codegen::EmitOptions emit;
  emit.max_threads = o.cuda_block_threads;
  emit.shared_limit = o.cuda_shared_limit;
  return cuda_codegen::emit_cuda_program(cell, plan, programs, products_fused, o.batch, name, emit, o.persistent_limit);
}
#else
cuda_codegen::CudaProgram generate_cuda_stage(const Cell&, const SequencePlan&, const StagePrograms&,
                                              const std::array<bool, 3>&, const TargetOptions&, const std::string&) {
  throw Error("CUDA target: this build has no CUDA code generator (configured without the CUDA toolkit)");
}
#endif

}  // namespace cellfuse
