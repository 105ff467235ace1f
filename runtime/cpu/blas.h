#pragma once
// The large matrix products, through OpenBLAS: out[m,n] = x[m,k] * W (+ bias), with W given as
// [n,k] (transposed, nn.Linear's layout) or [k,n].
#include <cstdint>

namespace cellfuse::cpu {

class Team;

// Large products are shared among the team by columns, each part one single-threaded BLAS call:
// OpenBLAS's own threads would spin against the team's. The parts depend on the product's shape
// only (blas.cpp: split_columns), so results do not depend on the thread count.
template <class T>
void gemm(Team& team, const T* x, const T* weight, bool weight_is_n_by_k, const T* bias, T* out,
          std::int64_t m, std::int64_t k, std::int64_t n);

// out[m, n] += a[rows, m]^T b[rows, n] (row-major; `out` accumulates): a parameter gradient over
// all T*B rows. Shared among the team by columns of `out`, like gemm().
template <class T>
void gemm_at_b(Team& team, const T* a, const T* b, T* out, std::int64_t m, std::int64_t n, std::int64_t rows);

// Keeps OpenBLAS to the calling thread (the team does the sharing). Idempotent.
void use_single_threaded_blas();

// Transposes a [rows, cols] matrix into [cols, rows].
template <class T>
void transpose(const T* in, T* out, std::int64_t rows, std::int64_t cols);

}  // namespace cellfuse::cpu
