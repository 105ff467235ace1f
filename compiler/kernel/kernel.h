#pragma once
// The kernel IR: what fusion produces and what the code generators (LLVM for the CPU, CUDA C for
// the GPU) consume. Independent of any target.
//
// A kernel runs over a range of batch rows. Its arguments are buffers, each a row-major
// [rows, cols] array: batched buffers have one row per batch row, unbatched ones (parameter
// vectors, weight matrices) a fixed number of rows. The body is a list of statements, each run
// over every row of the range before the next one starts:
//
//   Loop    an element loop j in [0, extent) over an SSA list of element instructions: loads at
//           a column offset (col = offset + j, or a fixed column for a "uniform" load of a
//           per-row scalar), constants, pointwise ops; then stores (col = offset + j) and
//           reductions (a per-row sum, scaled, or maximum, written to one column of a buffer).
//   MatVec  out[r, n] = sum_k x[r, x_offset + k] * Wt[k, n] (+ bias[n]): a small-batch matrix
//           product fused into the kernel, with the weight in K-major (transposed) layout.
//
// Slices and concatenations never appear: fusion has turned them into column offsets.
#include <cstdint>
#include <string>
#include <vector>

#include "compiler/ir/op.h"
#include "compiler/ir/types.h"

namespace cellfuse::kernel {

enum class BufferRole : std::uint8_t {
  Input,    // read: a stage input, a state, or a value another kernel or a GEMM produced
  Param,    // read: a parameter (vector or matrix), the same for every row
  Output,   // written: read by another kernel or GEMM, or a stage output / next state
  Scratch,  // written and read inside this kernel only: [row block, cols], allocated per thread
};

struct Buffer {
  std::string name;  // for printing and for messages
  BufferRole role;
  bool batched;      // one row per batch row; else `rows` fixed rows
  std::int64_t rows; // for unbatched buffers
  std::int64_t cols;
  bool transposed = false;  // a Param holding the parameter transposed (a MatVec weight)
  // A MatVec weight [k, n] stored in panels: the first (n / panel) * panel columns as
  // consecutive [k, panel] blocks, the rest as one [k, n % panel] block after them. Each part of
  // a product split by columns then reads one contiguous stretch of memory, which stays in its
  // core's cache from step to step. 0: plain row-major [k, n].
  std::int64_t panel = 0;
};

struct Inst {
  enum class Kind : std::uint8_t { Load, Const, Compute };
  Kind kind = Kind::Const;
  OpKind op = OpKind::add;    // Compute: a pointwise op
  std::vector<int> args;      // Compute: earlier instructions of the same loop
  int buffer = -1;            // Load
  std::int64_t offset = 0;    // Load: column = offset + j, or offset alone when uniform
  bool uniform = false;       // Load: the same column for every j (a per-row scalar)
  double value = 0;           // Const
};

struct Store {
  int buffer;
  std::int64_t offset;  // column = offset + j
  int value;            // instruction index
};

struct Reduction {
  int buffer;           // written at column `column` of the row
  std::int64_t column;
  int value;            // instruction index combined over j
  double scale;         // 1 for a sum, 1/extent for a mean; 1 (unused) for a maximum
  // How values meet: add (a sum, starting from 0) or max (the maximum, starting from -inf, NaN
  // wins as in the pointwise max). Code generators combine with the pointwise op itself and in a
  // fixed order, so the result is the same on every run.
  OpKind combine = OpKind::add;
};

// The value a reduction starts from: 0 for add, -inf for max.
double reduction_identity(OpKind combine);

struct Loop {
  std::int64_t extent;
  std::vector<Inst> insts;
  std::vector<Store> stores;
  std::vector<Reduction> reductions;
};

struct MatVec {
  int x;                 // batched buffer holding the left operand
  std::int64_t x_offset; // first column of the operand inside x
  std::int64_t k;        // inner dimension
  int weight;            // unbatched [k, n] buffer (K-major)
  int bias = -1;         // optional unbatched [1, n] buffer
  int out;               // batched buffer, written at columns [out_offset, out_offset + n)
  std::int64_t out_offset;
  std::int64_t n;
};

struct Statement {
  enum class Kind : std::uint8_t { Loop, MatVec };
  Kind kind;
  Loop loop;
  MatVec matvec;
};

struct Kernel {
  std::string name;
  DType dtype;
  std::vector<Buffer> buffers;
  std::vector<Statement> body;
  // The number of rows every call covers, when the caller knows it (the time loop's batch);
  // 0 when calls cover any number. Code generators may specialize for it.
  std::int64_t rows_hint = 0;
};

// Readable text of a kernel (for `cellfuse print --kernels` and tests).
std::string print_kernel(const Kernel& kernel);

// Checks indices, extents and offsets against the buffers; throws InternalError when broken
// (a kernel is always produced by cellfuse, so a broken one is a cellfuse bug).
void verify_kernel(const Kernel& kernel);

}  // namespace cellfuse::kernel
