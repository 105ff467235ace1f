#pragma once
// Kernel IR -> CUDA C source, compiled at run time by NVRTC (runtime/cuda/nvrtc.h). A pure
// function from a kernel to text: no CUDA header is needed to emit, print or test the source.
//
// Each kernel becomes
//
//   extern "C" __global__ void __launch_bounds__(THREADS)
//   NAME(T* or const T* b<i> for every non-scratch buffer i, in buffer order,
//        long long rows, T* cf_scratch)
//
// launched as blocks(rows) blocks of `threads` threads. Block x covers the batch rows
// [x * R, min(rows, x * R + R)) with R = rows_per_block, and runs every statement of the kernel
// over those rows, in order:
//
//   Loop     threads take (row, column) elements, each computing the element's instructions and
//            stores; a loop with reductions gives each row a group of threads/R threads that sum
//            their columns in a fixed order and combine the partial sums by a fixed shared-memory
//            tree, so a result never depends on timing;
//   MatVec   threads take (row, output column) elements and run k in order with fused
//            multiply-adds, reading the K-major weight across threads (coalesced).
//
// Statements that touch a buffer an earlier statement (since the last barrier) wrote, or write
// one it read, are separated by __syncthreads(). Scratch buffers live in shared memory while
// they fit (one [R, cols] array per block), else in `cf_scratch`: global memory of
// global_scratch_per_block elements per block, at cf_scratch + blockIdx.x * that.
//
// Every block runs the same statements over rows of its own, so the kernel computes what
// kernel_codegen.h's CPU kernel computes over the same rows (the row split of a kernel never
// changes a result; the order of a reduction's sum is the only difference from the CPU).
//
// The scalar meaning of every op is compiler/ir/pointwise_math.h's, NaN handling included, with
// CUDA's accurate device functions (expf, tanhf, log1pf ...; never the __ intrinsics); the helper
// functions that spell it out are cuda_prelude(), which a translation unit puts first.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/kernel/kernel.h"

namespace cellfuse::cuda_codegen {

struct EmitOptions {
  int max_threads = 256;                  // threads per block (a power of two, 32..1024)
  std::int64_t shared_limit = 46 * 1024;  // bytes of static shared memory a kernel may use
};

struct CudaKernel {
  std::string name;    // of the extern "C" __global__ function
  std::string source;  // the function alone (see cuda_translation_unit)
  DType dtype = DType::f32;
  int threads = 0;                 // blockDim.x
  std::int64_t rows_per_block = 0; // R
  // Kernel buffer of each pointer parameter, in order (every buffer that is not scratch).
  std::vector<int> pointer_buffers;
  std::int64_t global_scratch_per_block = 0;  // elements of cf_scratch each block uses
  std::int64_t shared_bytes = 0;              // static shared memory
  int barriers = 0;                           // __syncthreads() between statements
  std::vector<std::string> notes;             // where each scratch buffer lives, and why

  std::int64_t blocks(std::int64_t rows) const { return (rows + rows_per_block - 1) / rows_per_block; }
};

CudaKernel emit_cuda_kernel(const kernel::Kernel& kernel, const EmitOptions& options = {});

// The device helper functions the kernels call (cf_sigmoid, cf_min, ...), f32 and f64.
std::string cuda_prelude();

// Small kernels the runtime launches around the generated ones, for T in {f32, f64}:
//   cf_transpose_T(const T* src, T* dst, long long rows, long long cols)   dst = src^T
//   cf_fill_rows_T(T* dst, const T* row, long long rows, long long cols)   every row of dst = row
// and, for S in {bf16, f16} (16-bit storage, runtime/cuda/storage.h; n = rows * cols elements):
//   cf_widen_S(const unsigned short* src, float* dst, long long rows, long long cols)
//   cf_narrow_S(const float* src, unsigned short* dst, long long rows, long long cols)
// launched with any grid of any block size (grid-stride loops).
std::string cuda_support_kernels();

// One translation unit: the prelude, the kernels, then the support kernels. `title` goes into
// the first comment line.
std::string cuda_translation_unit(const std::vector<const CudaKernel*>& kernels, const std::string& title);

// The expression of pointwise op `op` over argument expressions `a` (pointwise_math.h's meaning).
std::string cuda_pointwise(OpKind op, const std::vector<std::string>& a, DType dtype);

// The statement that folds `value` into the accumulator `target` of a reduction combining with
// `combine` (kernel::Reduction): "t += v;" for add, "t = cf_max(t, v);" for max.
std::string cuda_combine(OpKind combine, const std::string& target, const std::string& value, DType dtype);

// A C literal of `value` in `dtype` that reads back exactly (infinities and NaN included).
std::string cuda_literal(double value, DType dtype);

}  // namespace cellfuse::cuda_codegen
