#pragma once
// compile(): the one way from a captured cell to what a backend runs. Every stage is a named
// function below, in the order the driver runs them:
//
//   verify -> optimize (simplify/CSE/DCE to a fixed point) -> [training: differentiate ->
//   forward_with_tape] -> then for each program (the cell; training: the forward with its tape
//   and the backward step):
//     optimize -> hoist -> fuse -> lower (kernel IR) -> rewrite_kernels (target hints) ->
//     generate (LLVM module for the CPU, CUDA C for NVRTC)
//
// with the verifier after every graph stage. The driver logs each stage's name, wall time and,
// when TargetOptions::stage_text is set, its result as text (`cellfuse print --stages`, the
// profiler). The runtime only loads and runs what this returns: it calls no pass and never edits
// kernel IR.
#include <array>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "compiler/codegen/cuda/cuda_program.h"
#include "compiler/ir/graph.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/lower.h"  // StageLog, optimize
#include "compiler/passes/autodiff.h"
#include "compiler/passes/fusion.h"
#include "compiler/passes/hoist.h"
#include "compiler/target.h"

namespace llvm {
class LLVMContext;
class Module;
}  // namespace llvm

namespace cellfuse {

// The CPU target's artifact: one LLVM module with every kernel of a program, not yet optimized
// (runtime/cpu/llvm_jit.h optimizes it for the host at -O3 and JIT-compiles it).
struct LlvmModule {
  std::unique_ptr<llvm::LLVMContext> context;
  std::unique_ptr<llvm::Module> module;
  LlvmModule();
  ~LlvmModule();
};

// How the fusion stage cut one stage of the plan.
struct StageFusion {
  FusionPlan plan;
  bool products_fused = false;  // small products were allowed into the loop kernel
  std::string note;             // appended to the stage's notes after lowering (why not fused)
};

using StagePrograms = std::array<StageProgram, 3>;  // pre, loop, post (no steps: no such stage)

// One cell compiled for one target.
struct CompiledProgram {
  Cell cell;           // after the graph stages
  SequencePlan plan;   // its pre / loop / post stages
  StagePrograms stages;
  std::array<bool, 3> products_fused{};
  std::shared_ptr<LlvmModule> llvm;               // Target::Cpu
  std::optional<cuda_codegen::CudaProgram> cuda;  // Target::Cuda: kernels, source, persistent loop
};

struct CompiledCell {
  TargetOptions options;  // as asked, with dtype filled in
  // The cell; when training, the forward with its tape (forward_with_tape) whose outputs after
  // the user outputs are the tape.
  CompiledProgram forward;
  std::optional<BackwardCell> backward;          // training: the derivation (saves, param terms)
  std::optional<CompiledProgram> backward_step;  // training: backward->step compiled
  std::vector<StageLog> log;
};

// Runs every stage in order. Throws Error for what the target cannot compile (naming the op,
// the value and the shapes), or for options that do not fit the cell.
CompiledCell compile(const Cell& cell, const TargetOptions& options);

// The log as text: "# after <name> (<ms> ms)" then the stage's text, for every stage.
std::string print_stage_log(const std::vector<StageLog>& log);

// ---- The stages, each a function of what the previous one returned. ----

// Checks every invariant later stages rely on (compiler/ir/verifier.h) and that `options` fit
// the cell (batch, dtype, storage); returns the cell unchanged.
Cell verify_stage(const Cell& cell, const TargetOptions& options);
// simplify, CSE and DCE to a fixed point (compiler/lower.h).
Cell optimize_stage(const Cell& cell);
// The backward step of BPTT (compiler/passes/autodiff.h).
BackwardCell differentiate_stage(const Cell& cell);
// `backward.forward` (user outputs, then the saves) plus one output per state: the value each
// step starts from. Its outputs after the user outputs are the tape the backward reads.
Cell forward_with_tape(const BackwardCell& backward);
// Pre / loop / post stages (hoist.h). The CPU recomputes input-only pointwise work where it is
// read; the GPU hoists everything (one wide launch, latency-bound loop).
SequencePlan hoist_stage(const Cell& cell, const TargetOptions& options);
// GEMMs vs fused kernels for each stage (fusion.h); small products of the loop stage fuse up to
// options.fusion_limit rows (CUDA Auto: only while every fused weight is small; never when
// batch_agnostic or fuse = Never).
std::array<StageFusion, 3> fuse_stage(const SequencePlan& plan, const TargetOptions& options);
// Kernel IR for every kernel group (stage_program.h); `name` prefixes the kernels' names.
StagePrograms lower_stage(const SequencePlan& plan, const std::array<StageFusion, 3>& fusion, const std::string& name);
// Target-specific rewrites of the kernel IR: the loop stage's kernels always cover the whole
// batch (rows_hint; not when batch_agnostic); on the CPU, fused products read transposed weights in panels of the host's
// vector width (kernel::Buffer::panel).
StagePrograms rewrite_kernels_stage(StagePrograms programs, const TargetOptions& options);
// Code generation for the CPU: every kernel into one LLVM module.
std::shared_ptr<LlvmModule> generate_llvm_stage(const StagePrograms& programs, const std::string& name);
// The module's LLVM IR as text (for the stage log).
std::string print_llvm_module(const LlvmModule& module);
// Code generation for the GPU: one CUDA translation unit (kernels, persistent loop, support
// kernels).
cuda_codegen::CudaProgram generate_cuda_stage(const Cell& cell, const SequencePlan& plan, const StagePrograms& programs,
                                              const std::array<bool, 3>& products_fused,
                                              const TargetOptions& options, const std::string& name);

// The C identifier the kernels' names start with: "cf_" and `text` with every other character
// an underscore (deterministic, so the CUDA disk cache hits across processes).
std::string kernel_prefix(const std::string& text);

}  // namespace cellfuse
