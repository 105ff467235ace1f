#pragma once
// A whole cell compiled for the GPU, up to source text: hoisted into pre/loop/post stages
// (hoist.h), each stage fused into GEMMs and kernels (stage_program.h), every kernel emitted as
// CUDA C (cuda_emitter.h), all of them in one translation unit for one NVRTC compilation.
// Pure, like the emitter: compile() (compiler/pipeline.h) runs the stages before this one, and
// runtime/cuda compiles the source and runs the program.
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/codegen/cuda/cuda_persistent.h"
#include "compiler/ir/graph.h"
#include "compiler/kernel/stage_program.h"
#include "compiler/passes/hoist.h"
#include "compiler/target.h"

namespace cellfuse::cuda_codegen {

// Small matrix products of the loop stage can run inside its kernel (a MatVec statement, one
// block per few rows) instead of as a cuBLAS call plus a kernel launch (TargetOptions::fuse).
using FuseProducts = cellfuse::FuseProducts;

// What the CUDA runtime's options ask of the generated code.
struct ProgramOptions {
  FuseProducts fuse = FuseProducts::Auto;
  EmitOptions emit;
};

// Auto fuses a product only while its weight stays this small (elements): one block reads the
// whole weight for its rows every step (a single SM's share of L2 bandwidth and latency), which
// beats a cuBLAS call (spread over many SMs) plus a separate kernel launch only for small weights.
// Measured on an H100 (bench_gpu --fuse, T=4096 B=2 elman_proj, W_hh 128x128 = 16384 elements):
// fused 35.1 ms forward / 110.6 ms forward+backward, cuBLAS 30.6 / 62.7; lstm:256 at B=1
// (262144 elements): fused 32.4 / 61.1, cuBLAS 5.7 / 12.4. So cuBLAS from 16K elements on; 4096
// (16 KB) keeps the tiny cells (H <= 32) fused, where a launch saved should still pay (not
// measured). The fusion stage of compile() (compiler/pipeline.h) applies it.
constexpr std::int64_t kMaxAutoFusedWeight = 4096;

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
  // The loop stage as one block-resident kernel (cuda_persistent.h, LoopScope::Block), at any
  // batch, when its shared memory fits a block; else resident.reason says why not.
  PersistentLoop resident;
  std::string source;   // the translation unit: prelude, every kernel, support kernels
};

// The code generation stage of compile() (compiler/pipeline.h): every kernel of the lowered
// `programs` (pre, loop, post, as the plan has them) emitted as CUDA C into one translation unit,
// and, for batches up to `persistent_limit`, the loop stage as one persistent kernel. A step's
// products there are matrix-vector products of a few rows, each block's weight slice read from
// shared memory once per row; beyond a few rows cuBLAS's GEMM wins. The kernels' names start
// with a C identifier made of `name` (deterministic: the same cell gives the same source, so the
// disk cache of compiled cubins hits across processes).
CudaProgram emit_cuda_program(const Cell& cell, const SequencePlan& plan, const std::array<StageProgram, 3>& programs,
                              const std::array<bool, 3>& products_fused, std::int64_t batch, const std::string& name,
                              const EmitOptions& emit, std::int64_t persistent_limit);

// The program's source with, before each stage's kernels, the stage's GEMMs and fusion notes as
// comments: what `cellfuse print --cuda` shows (the source part is exactly what NVRTC compiles).
std::string print_cuda_program(const CudaProgram& program);

}  // namespace cellfuse::cuda_codegen
