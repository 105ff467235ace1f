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

void call_at_b(const float* a, const float* b, float* out, blasint m, blasint n, blasint rows, blasint lda, blasint ldb) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, rows, 1.0f, a, lda, b, ldb, 1.0f, out, ldb);
}
void call_at_b(const double* a, const double* b, double* out, blasint m, blasint n, blasint rows, blasint lda, blasint ldb) {
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, rows, 1.0, a, lda, b, ldb, 1.0, out, ldb);
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

// How a product of out[m, n] over k terms is cut into column parts: a function of the shape
// alone, never of the team's size, so that every part is the same BLAS call whatever the thread
// count. (OpenBLAS picks its kernels by the call's sizes: its small-matrix kernels sum in another
// order than its blocked ones, so a split that followed the thread count changed the last bits;
// measured on lstm:40,70 at batch 64.) Parts are multiples of 16 columns (the widest vector
// kernels), at most kMaxParts, none below kMinPart multiply-adds (not worth a thread); at most
// kMaxPartsLargeX when the left operand is large, since every part packs all of it again.
constexpr std::int64_t kMinPart = 256 * 1024;
constexpr std::int64_t kMaxParts = 8;
constexpr std::int64_t kMaxPartsLargeX = 4;
constexpr std::int64_t kLargeX = 1 << 20;  // elements

struct Split {
  std::int64_t parts, width;  // `parts` column ranges of `width` columns (the last one shorter)
};

Split split_columns(std::int64_t m, std::int64_t k, std::int64_t n) {
  const std::int64_t blocks = (n + 15) / 16;
  std::int64_t parts = std::min({blocks, m * k > kLargeX ? kMaxPartsLargeX : kMaxParts,
                                 std::max<std::int64_t>(1, m * k * n / kMinPart)});
  parts = std::max<std::int64_t>(parts, 1);
  const std::int64_t width = (blocks + parts - 1) / parts * 16;
  return {(n + width - 1) / width, width};
}

// Runs part(n0, n1) for every column range of the split, shared among the team: part p on member
// p mod size. The same calls whatever the team's size.
template <class F>
void for_parts(Team& team, std::int64_t m, std::int64_t k, std::int64_t n, F&& part) {
  const Split sp = split_columns(m, k, n);
  auto range = [&](std::int64_t p) { part(p * sp.width, std::min(n, (p + 1) * sp.width)); };
  if (team.size() == 1 || sp.parts == 1) {
    for (std::int64_t p = 0; p < sp.parts; ++p) range(p);
    return;
  }
  team.run([&](int member, int members) {
    for (std::int64_t p = member; p < sp.parts; p += members) range(p);
  });
}

}  // namespace

void use_single_threaded_blas() { openblas_set_num_threads(1); }

template <class T>
void gemm(Team& team, const T* x, const T* weight, bool weight_is_n_by_k, const T* bias, T* out,
          std::int64_t m, std::int64_t k, std::int64_t n) {
  if (m == 0) return;
  for_parts(team, m, k, n, [&](std::int64_t n0, std::int64_t n1) {
    gemm_columns(x, weight, weight_is_n_by_k, bias, out, m, k, n, n0, n1);
  });
}

template <class T>
void gemm_at_b(Team& team, const T* a, const T* b, T* out, std::int64_t m, std::int64_t n, std::int64_t rows) {
  if (rows == 0 || m == 0 || n == 0) return;
  auto product = [&](const T* a_part, const T* b_part, T* out_part, std::int64_t m_part, std::int64_t n_part) {
    call_at_b(a_part, b_part, out_part, static_cast<blasint>(m_part), static_cast<blasint>(n_part),
              static_cast<blasint>(rows), static_cast<blasint>(m), static_cast<blasint>(n));
  };
  // Every part packs the whole of one operand again: cut along the other one's columns, so that
  // the narrower operand is the one packed by every part (W2's dW_ih: b = x is 512 wide, a = dG
  // 2048 wide). Which way depends on the shape only.
  if (m > n) {
    for_parts(team, n, rows, m, [&](std::int64_t m0, std::int64_t m1) {
      if (m1 > m0) product(a + m0, b, out + m0 * n, m1 - m0, n);
    });
  } else {
    for_parts(team, m, rows, n, [&](std::int64_t n0, std::int64_t n1) {
      if (n1 > n0) product(a, b + n0, out + n0, m, n1 - n0);
    });
  }
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
template void gemm_at_b(Team&, const float*, const float*, float*, std::int64_t, std::int64_t, std::int64_t);
template void gemm_at_b(Team&, const double*, const double*, double*, std::int64_t, std::int64_t, std::int64_t);
template void transpose(const float*, float*, std::int64_t, std::int64_t);
template void transpose(const double*, double*, std::int64_t, std::int64_t);

}  // namespace cellfuse::cpu
