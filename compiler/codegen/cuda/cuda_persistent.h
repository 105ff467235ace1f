#pragma once
// The persistent strategy of the loop stage: ONE cooperative kernel runs all T steps. Each block
// owns a fixed slice of the output columns of every fused product (MatVec) and keeps that slice
// of the weight in shared memory for the whole sequence; every statement of a step is spread
// over the whole grid (elements of a loop over all threads, each row of a reduction loop on one
// block, product columns on their owner), and the blocks meet at a grid-wide barrier wherever a
// statement needs what another block wrote (always at the end of a step). Pure text, like the
// emitter; runtime/cuda/cuda_cell.cpp launches it with cuLaunchCooperativeKernel.
//
//   extern "C" __global__ void __launch_bounds__(threads) NAME(
//       const T* in<i>     every loop-stage input: [T,B,n], step t at t*B*n
//       const T* init<s>   every state: the initial [B,n]
//       const T* param<p>  every loop-stage param, in its declared layout
//       T* out<o>          every loop-stage output: [T,B,n]
//       T* final<s>        every state: the final [B,n]
//       T* cf_ws           workspace of workspace_elements
//       unsigned* cf_bar   two zeroed words (the barrier; left zeroed)
//       long long steps, long long reverse)
//
// launched cooperatively on any grid (every block co-resident) with shared_bytes(grid) bytes of
// dynamic shared memory.
//
// The block-resident variant (compile_resident_loop, scope Block) has the same parameters and
// runs on ONE block: every product's whole weight, the states, the step's temporaries, the
// outputs of the step and the next step's inputs (loaded while this step computes) live in shared
// memory, and the steps meet at __syncthreads() only. Batch rows share the resident weights. It
// ignores cf_ws and cf_bar. Launched (cooperatively, grid 1) with shared_bytes(1) bytes, which
// needs the opt-in shared memory limit (cuFuncSetAttribute) when above 48 KB.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/graph.h"
#include "compiler/kernel/stage_program.h"

namespace cellfuse::cuda_codegen {

enum class LoopScope : std::uint8_t {
  Grid,   // every block of a cooperative grid, grid-wide barriers (weights split over blocks)
  Block,  // one block, whole weights in its shared memory, __syncthreads() between steps
};

struct PersistentLoop {
  std::string name;    // of the kernel; empty when the loop stage does not fit (see reason)
  std::string reason;  // why not, when name is empty
  std::string source;  // the kernel, its barrier helper first
  StageProgram program;  // the loop stage with every product fused, which the kernel runs
  DType dtype = DType::f32;
  LoopScope scope = LoopScope::Grid;
  int threads = 256;
  std::int64_t batch = 0;
  std::int64_t workspace_elements = 0;
  struct Product {
    std::int64_t k, n;
  };
  std::vector<Product> products;  // every MatVec, in order
  std::int64_t max_k = 0;         // widest operand staged in shared memory
  int reductions = 0;             // most reductions of one loop
  int barriers_per_step = 0;      // grid barriers a step (the last one included)
  std::int64_t weight_elements = 0;  // of every fused weight together
  std::int64_t block_shared_elements = 0;  // Block: every shared array together

  bool ok() const { return !name.empty(); }
  // Bytes of dynamic shared memory one block needs on a grid of `grid` blocks (Block: grid 1).
  std::int64_t shared_bytes(std::int64_t grid) const;
};

// The loop stage `stage` (cell->inputs/states/params/outputs as its SequenceStage has them) for
// batch `batch`; `name` prefixes the kernel's name.
PersistentLoop compile_persistent_loop(const Cell& stage, std::int64_t batch, const std::string& name, int threads = 256);

// The most shared memory a block may have on any GPU cellfuse targets (sm_90's opt-in limit):
// a resident loop that needs more is not generated.
constexpr std::int64_t kMaxBlockSharedBytes = 227 * 1024;

// The block-resident loop kernel of the same stage (scope Block; see above). `threads` 0 picks
// them from the widest product (128 to 1024).
PersistentLoop compile_resident_loop(const Cell& stage, std::int64_t batch, const std::string& name, int threads = 0);

}  // namespace cellfuse::cuda_codegen
