#pragma once
// The matrix product of the block-resident loop kernel (cuda_persistent.h, Scope::Block): one
// thread block computes out[r, n] = bias[n] + sum_k x[r, k] W[k, n] for every batch row r with
// the whole weight resident in shared memory, stored K-major (w[k * N + n]) so that the threads
// of a warp, which take consecutive columns n, read consecutive words (no bank conflicts) while
// x[r, k] is one broadcast word. Each thread owns a column n and a contiguous stretch of k (S
// threads a column when N is small next to the block), keeps one accumulator per row of a
// group of R rows (the weight word is read once for R rows), and with S > 1 the S partial sums
// meet in shared memory in a fixed order: the result never depends on timing. Internal to
// compiler/codegen/cuda.
#include <cstdint>
#include <functional>
#include <string>

#include "compiler/ir/types.h"

namespace cellfuse::cuda_codegen {

struct ResidentProduct {
  std::int64_t k = 0, n = 0, batch = 0;
  int threads = 0;
  DType dtype = DType::f32;
  std::string weight;      // shared-memory pointer to w[k * n + col]
  std::string x;           // pointer expression to row 0, column 0 of the operand
  std::int64_t x_stride = 0;
  std::string out;         // pointer expression to row 0, column 0 of the result
  std::int64_t out_stride = 0;
  std::string part;        // shared-memory scratch of part_elements() elements
  // The bias element at column expression `col` (empty: no bias).
  std::function<std::string(const std::string&)> bias;

  int splits() const;                 // S: threads that share one column
  std::int64_t rows_per_group() const;  // R
  std::int64_t part_elements() const;   // 0 when S == 1
};

// Appends the product's statements (balanced braces; every thread of the block runs them and
// meets the same barriers) through `line`.
void emit_resident_product(const std::function<void(const std::string&)>& line, const ResidentProduct& p);

}  // namespace cellfuse::cuda_codegen
