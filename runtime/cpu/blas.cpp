#include "runtime/cpu/blas.h"

#include <cblas.h>

#include <algorithm>

#include "runtime/cpu/team.h"

namespace cellfuse::cpu {
namespace {

void call(const float* x, const float* w, CBLAS_TRANSPOSE tw, float beta, float* out, blasint m,
          blasint n, blasint k, blasint ldw, blasint ldc) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, tw, m, n, k, 1.0f, x, k, w, ldw, beta, out, ldc);
}
void call(const double* x, const double* w, CBLAS_TRANSPOSE tw, double beta, double* out, blasint m,
          blasint n, blasint k, blasint ldw, blasint ldc) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, tw, m, n, k, 1.0, x, k, w, ldw, beta, out, ldc);
}

// Columns [n0, n1) of out = x W (+ bias), out's rows `n` long.
template <class T>
void gemm_columns(const T* x, const T* weight, bool weight_is_n_by_k, const T* bias, T* out,
                  std::int64_t m, std::int64_t k, std::int64_t n, std::int64_t n0, std::int64_t n1) {
  if (n1 <= n0) return;
  // The bias goes in first and the product is added to it (beta = 1): one pass over `out`.
  if (bias)
    for (std::int64_t r = 0; r < m; ++r) std::copy(bias + n0, bias + n1, out + r * n + n0);
  const T* w = weight_is_n_by_k ? weight + n0 * k : weight + n0;
  call(x, w, weight_is_n_by_k ? CblasTrans : CblasNoTrans, bias ? T(1) : T(0), out + n0,
       static_cast<blasint>(m), static_cast<blasint>(n1 - n0), static_cast<blasint>(k),
       static_cast<blasint>(weight_is_n_by_k ? k : n), static_cast<blasint>(n));
}

// Below this many multiply-adds a product is not worth waking the team for.
constexpr std::int64_t kMinSharedGemm = 256 * 1024;

}  // namespace

void use_single_threaded_blas() { openblas_set_num_threads(1); }

template <class T>
void gemm(Team& team, const T* x, const T* weight, bool weight_is_n_by_k, const T* bias, T* out,
          std::int64_t m, std::int64_t k, std::int64_t n) {
  if (m == 0) return;
  if (team.size() == 1 || m * n * k < kMinSharedGemm || n < 32) {
    gemm_columns(x, weight, weight_is_n_by_k, bias, out, m, k, n, 0, n);
    return;
  }
  // Split points on multiples of 16 columns, the widest vector BLAS kernels use.
  const std::int64_t blocks = (n + 15) / 16;
  team.run([&](int part, int parts) {
    std::int64_t n0 = std::min(n, blocks * part / parts * 16), n1 = std::min(n, blocks * (part + 1) / parts * 16);
    gemm_columns(x, weight, weight_is_n_by_k, bias, out, m, k, n, n0, n1);
  });
}

// Blocked, so that both the reads and the writes stay in cache lines already fetched.
template <class T>
void transpose(const T* in, T* out, std::int64_t rows, std::int64_t cols) {
  constexpr std::int64_t kBlock = 32;
  for (std::int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (std::int64_t c0 = 0; c0 < cols; c0 += kBlock)
      for (std::int64_t r = r0; r < std::min(rows, r0 + kBlock); ++r)
        for (std::int64_t c = c0; c < std::min(cols, c0 + kBlock); ++c) out[c * rows + r] = in[r * cols + c];
}

template void gemm(Team&, const float*, const float*, bool, const float*, float*, std::int64_t,
                   std::int64_t, std::int64_t);
template void gemm(Team&, const double*, const double*, bool, const double*, double*, std::int64_t,
                   std::int64_t, std::int64_t);
template void transpose(const float*, float*, std::int64_t, std::int64_t);
template void transpose(const double*, double*, std::int64_t, std::int64_t);

}  // namespace cellfuse::cpu
