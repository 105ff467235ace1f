#pragma once
// A whole cell compiled for the GPU, up to source text: hoisted into pre/loop/post stages
// (hoist.h), each stage fused into GEMMs and kernels (stage_program.h), every kernel emitted as
// CUDA C (cuda_emitter.h), all of them in one translation unit for one NVRTC compilation.
// Pure, like the emitter: runtime/cuda/cuda_cell.h compiles the source and runs the program.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/codegen/cuda/cuda_persistent.h"
#include "compiler/ir/graph.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/passes/hoist.h"

namespace cellfuse::cuda_codegen {

// Small matrix products of the loop stage can run inside its kernel (a MatVec statement, one
// block per few rows) instead of as a cuBLAS call plus a kernel launch.
enum class FuseProducts : std::uint8_t {
  Auto,    // when the batch is small and every fused weight is small (see cuda_program.cpp)
  Always,  // whenever the batch allows (<= kMaxFusedProductRows)
  Never,   // every product through cuBLAS
};

struct ProgramOptions {
  FuseProducts fuse = FuseProducts::Auto;
  EmitOptions emit;
};

struct CudaStage {
  StageProgram program;
  std::vector<CudaKernel> kernels;  // one per program step; empty (no name) for a GEMM step
  bool fused_products = false;
};

struct CudaProgram {
  Cell cell;            // the optimized cell
  SequencePlan plan;    // its stages
  CudaStage stages[3];  // pre, loop, post (no steps where the plan's stage has no cell)
  // The loop stage as one persistent cooperative kernel (cuda_persistent.h), when the batch is at
  // most kMaxPersistentRows and the stage fits; else persistent.reason says why not.
  PersistentLoop persistent;
  std::string source;   // the translation unit: prelude, every kernel, support kernels
};

// Largest batch for which the persistent loop kernel is generated: a step's products are
// matrix-vector products of a few rows, so each block's weight slice is read from shared memory
// once per row; beyond a few rows cuBLAS's GEMM (weights reused across rows in registers) wins.
constexpr std::int64_t kMaxPersistentRows = 8;

// Largest batch whose loop-stage products may be fused.
constexpr std::int64_t kMaxFusedProductRows = 8;

// `cell` must be optimized already (compiler/lower.h). The kernels' names start with a C
// identifier made of `name` (deterministic: the same cell gives the same source, so the disk
// cache of compiled cubins hits across processes).
CudaProgram compile_cuda_program(const Cell& cell, std::int64_t batch, const std::string& name,
                                 const ProgramOptions& options = {});

// The program's source with, before each stage's kernels, the stage's GEMMs and fusion notes as
// comments: what `cellfuse print --cuda` shows (the source part is exactly what NVRTC compiles).
std::string print_cuda_program(const CudaProgram& program);

}  // namespace cellfuse::cuda_codegen
