#include "runtime/cpu/packed_gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <new>
#include <utility>

#include "runtime/cpu/team.h"

// The kernels are compiled for their instruction sets with target attributes, not for the whole
// file, so that nothing else here (or an inline function this file instantiates) can use an
// instruction the CPU lacks; which kernel runs is decided once, at run time.

namespace cellfuse::cpu {
namespace {

using Isa = PackedWeights::Isa;

Isa detect_isa() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
  return Isa::None;
}

const Isa kIsa = detect_isa();
std::atomic<bool> g_avx2_for_testing{false};

// A tile is up to kMaxRows rows of x by one panel: 2 vectors of W's columns, 2 * rows
// accumulators in registers (AVX-512: 16 of 32; AVX2: 12 of 16), and each step of k loads two
// vectors of W and broadcasts one element of x per row.
constexpr std::int64_t panel_width(Isa isa) { return isa == Isa::Avx512 ? 32 : 16; }
constexpr int max_tile_rows(Isa isa) { return isa == Isa::Avx512 ? 12 : 6; }

// Rows of x one pass over the panels covers: a block of x small enough to stay in L2 while every
// panel of the part streams past it.
constexpr std::int64_t kBlockBytes = 256 * 1024;
// Products below this many multiply-adds run on the caller: waking the team costs more.
constexpr std::int64_t kMinShared = 64 * 1024;

// out[rows, cols] = a panel[k, 32] (+ bias), cols <= 32, where `a` is the tile's rows of x packed
// k-major (a[kk * Rows + r] = x[r, kk]): the broadcasts read one short contiguous stream, where
// rows of x a power of two apart would all fall into the same few L1 sets.
template <int Rows>
__attribute__((target("avx512f"))) void tile_avx512(const float* x, std::int64_t k, const float* panel,
                                                    const float* bias, float* out, std::int64_t ldo, int cols) {
  __m512 acc[Rows][2];
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const __m512 w0 = _mm512_load_ps(panel + kk * 32), w1 = _mm512_load_ps(panel + kk * 32 + 16);
#pragma GCC unroll 12
    for (int r = 0; r < Rows; ++r) {
      const __m512 a = _mm512_set1_ps(x[kk * Rows + r]);
      acc[r][0] = _mm512_fmadd_ps(a, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(a, w1, acc[r][1]);
    }
  }
  const __mmask16 m0 = cols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << cols) - 1);
  const __mmask16 m1 = cols >= 32 ? 0xFFFF : cols <= 16 ? 0 : static_cast<__mmask16>((1u << (cols - 16)) - 1);
  __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
  if (bias) b0 = _mm512_maskz_loadu_ps(m0, bias), b1 = _mm512_maskz_loadu_ps(m1, bias + 16);
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    _mm512_mask_storeu_ps(out + r * ldo, m0, _mm512_add_ps(acc[r][0], b0));
    _mm512_mask_storeu_ps(out + r * ldo + 16, m1, _mm512_add_ps(acc[r][1], b1));
  }
}

// The same with 8-wide vectors: out[rows, cols] = x panel[k, 16] (+ bias), cols <= 16.
__attribute__((target("avx2"))) __m256i first_lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

template <int Rows>
__attribute__((target("avx2,fma"))) void tile_avx2(const float* x, std::int64_t k, const float* panel,
                                                   const float* bias, float* out, std::int64_t ldo, int cols) {
  __m256 acc[Rows][2];
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (std::int64_t kk = 0; kk < k; ++kk) {
    const __m256 w0 = _mm256_load_ps(panel + kk * 16), w1 = _mm256_load_ps(panel + kk * 16 + 8);
#pragma GCC unroll 12
    for (int r = 0; r < Rows; ++r) {
      const __m256 a = _mm256_broadcast_ss(x + kk * Rows + r);
      acc[r][0] = _mm256_fmadd_ps(a, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(a, w1, acc[r][1]);
    }
  }
  const __m256i m0 = first_lanes(cols), m1 = first_lanes(cols - 8);
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  if (bias) b0 = _mm256_maskload_ps(bias, m0), b1 = _mm256_maskload_ps(bias + 8, m1);
#pragma GCC unroll 12
  for (int r = 0; r < Rows; ++r) {
    _mm256_maskstore_ps(out + r * ldo, m0, _mm256_add_ps(acc[r][0], b0));
    _mm256_maskstore_ps(out + r * ldo + 8, m1, _mm256_add_ps(acc[r][1], b1));
  }
}

using TileFn = void (*)(const float*, std::int64_t, const float*, const float*, float*, std::int64_t, int);

template <template <int> class Pick, std::size_t... R>
constexpr auto make_table(std::index_sequence<R...>) {
  return std::array<TileFn, sizeof...(R)>{Pick<static_cast<int>(R) + 1>::fn...};
}
template <int Rows>
struct Avx512Tile {
  static constexpr TileFn fn = &tile_avx512<Rows>;
};
template <int Rows>
struct Avx2Tile {
  static constexpr TileFn fn = &tile_avx2<Rows>;
};

// tiles(isa)[rows - 1] computes a tile of `rows` rows.
const TileFn* tiles(Isa isa) {
  static const auto avx512 = make_table<Avx512Tile>(std::make_index_sequence<max_tile_rows(Isa::Avx512)>());
  static const auto avx2 = make_table<Avx2Tile>(std::make_index_sequence<max_tile_rows(Isa::Avx2)>());
  return isa == Isa::Avx512 ? avx512.data() : avx2.data();
}

}  // namespace

void PackedWeights::Deleter::operator()(float* p) const { std::free(p); }

bool PackedWeights::supported() { return kIsa != Isa::None; }

void PackedWeights::use_avx2_for_testing(bool on) { g_avx2_for_testing.store(on); }

void PackedWeights::pack(const float* w, bool n_by_k, std::int64_t k, std::int64_t n) {
  isa_ = kIsa == Isa::Avx512 && g_avx2_for_testing.load() ? Isa::Avx2 : kIsa;
  const std::int64_t width = panel_width(isa_);
  k_ = k, n_ = n, panels_ = (n + width - 1) / width;
  const std::size_t size = static_cast<std::size_t>(std::max<std::int64_t>(1, panels_ * k * width));
  if (size > capacity_) {
    const std::size_t bytes = (size * sizeof(float) + 63) / 64 * 64;
    data_.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
    if (!data_) throw std::bad_alloc();
    capacity_ = size;
  }
  float* out = data_.get();
  for (std::int64_t p = 0; p < panels_; ++p)
    for (std::int64_t c = 0; c < width; ++c) {
      const std::int64_t col = p * width + c;
      float* dst = out + p * k * width + c;
      if (col >= n) {
        for (std::int64_t kk = 0; kk < k; ++kk) dst[kk * width] = 0.0f;
      } else if (n_by_k) {
        const float* src = w + col * k;  // W's row `col`, read straight through
        for (std::int64_t kk = 0; kk < k; ++kk) dst[kk * width] = src[kk];
      } else {
        for (std::int64_t kk = 0; kk < k; ++kk) dst[kk * width] = w[kk * n + col];
      }
    }
}

namespace {

// Tile t of `count` tiles over `rows` rows: its first row and its size (sizes differ by one at
// most, so that no tile is left with too few accumulators to hide the FMA latency).
std::pair<std::int64_t, std::int64_t> tile_rows(std::int64_t rows, std::int64_t count, std::int64_t t) {
  const std::int64_t small = rows / count, extra = rows % count;
  return {t * small + std::min(t, extra), small + (t < extra ? 1 : 0)};
}

// Packs tile t of `count` over rows [0, rows) of x (k long), k-major, into its place in `a`.
void pack_tile(const float* x, std::int64_t rows, std::int64_t k, std::int64_t count, std::int64_t t, float* a) {
  const auto [first, size] = tile_rows(rows, count, t);
  float* dst = a + first * k;
  // Written in order, read from `size` rows at once (a few cache lines in flight).
  const float* src = x + first * k;
  for (std::int64_t kk = 0; kk < k; ++kk)
    for (std::int64_t r = 0; r < size; ++r) dst[kk * size + r] = src[r * k + kk];
}

}  // namespace

void PackedWeights::multiply(Team& team, const float* x, const float* bias, float* out, std::int64_t m) {
  if (m == 0 || n_ == 0) return;
  const std::int64_t width = panel_width(isa_);
  const int max_rows = max_tile_rows(isa_);
  const TileFn* tile = tiles(isa_);
  const std::int64_t block =
      std::max<std::int64_t>(max_rows, kBlockBytes / (std::max<std::int64_t>(k_, 1) * 4) / max_rows * max_rows);
  const int members = m * k_ * n_ < kMinShared ? 1 : team.size();
  if (packed_rows_.size() < static_cast<std::size_t>(members)) packed_rows_.resize(static_cast<std::size_t>(members));

  // Rows [r0, r0 + rows) (packed in `a`) times panels [p0, p1).
  auto panels = [&](const float* a, std::int64_t r0, std::int64_t rows, std::int64_t p0, std::int64_t p1) {
    const std::int64_t count = (rows + max_rows - 1) / max_rows;
    for (std::int64_t p = p0; p < p1; ++p) {
      const int cols = static_cast<int>(std::min(width, n_ - p * width));
      const float* panel = data_.get() + p * k_ * width;
      const float* b = bias ? bias + p * width : nullptr;
      for (std::int64_t t = 0; t < count; ++t) {
        const auto [first, size] = tile_rows(rows, count, t);
        tile[size - 1](a + first * k_, k_, panel, b, out + (r0 + first) * n_ + p * width, n_, cols);
      }
    }
  };
  auto scratch = [&](int member, std::int64_t rows) {
    auto& v = packed_rows_[static_cast<std::size_t>(member)];
    if (v.size() < static_cast<std::size_t>(rows * k_)) v.resize(static_cast<std::size_t>(rows * k_));
    return v.data();
  };

  if (m <= block) {
    // A step's product: x packed once (its tiles shared among the team), then the panels shared.
    float* a = scratch(0, m);
    const std::int64_t tiles = (m + max_rows - 1) / max_rows;
    if (members == 1 || panels_ == 1) {
      for (std::int64_t t = 0; t < tiles; ++t) pack_tile(x, m, k_, tiles, t, a);
      return panels(a, 0, m, 0, panels_);
    }
    team.run([&](int member, int count) {
      for (std::int64_t t = member; t < tiles; t += count) pack_tile(x, m, k_, tiles, t, a);
      team.barrier();
      panels(a, 0, m, panels_ * member / count, panels_ * (member + 1) / count);
    });
    return;
  }
  // Many rows: blocks of rows shared among the team, each member packing its own.
  const std::int64_t blocks = (m + block - 1) / block;
  auto run_blocks = [&](int member, int count) {
    float* a = scratch(member, block);
    for (std::int64_t b = member; b < blocks; b += count) {
      const std::int64_t r0 = b * block, rows = std::min(block, m - r0);
      const std::int64_t tiles = (rows + max_rows - 1) / max_rows;
      for (std::int64_t t = 0; t < tiles; ++t) pack_tile(x + r0 * k_, rows, k_, tiles, t, a);
      panels(a, r0, rows, 0, panels_);
    }
  };
  if (members == 1) return run_blocks(0, 1);
  for (int member = 0; member < members; ++member) scratch(member, block);  // no allocation in the team
  team.run(run_blocks);
}

}  // namespace cellfuse::cpu
