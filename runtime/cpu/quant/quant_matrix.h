#pragma once
// Weight matrices for the matrix-vector products of generation (one token per stream per step),
// stored in the format a user picked and quantized once, at load time, from fp32:
//
//   F32   the weights as they are
//   BF16  the upper half of each fp32 (rounded to nearest even): half the bytes
//   Int8  symmetric, one scale per output row; activations quantized per row of x at every call
//   Int4  groups of 32 along k, one fp16 scale each (values -8..7, as ggml's Q4_0: 4.5 bits a
//         weight); activations quantized to int8 per group of 32, each with its scale (Q8_0)
//
// At batch 1 these products only stream the weights (100 MB of fp32 for a 3-layer LSTM of 1024),
// so fewer bytes per weight is the speed-up. A weight is [n, k] (nn.Linear's layout, n output
// rows). Activations (and the stored form of a matrix) pad each row with zeros to a multiple of
// 32; the kernels' panels keep k rounded up to what they step by (panel_k): every kernel reads
// whole vectors, and a product of k = 100 reads 104 columns of fp32 weights, not 128.
//
// The kernels are picked at run time for the CPU: AVX-512 (F, BW, VL and VNNI: Intel since
// Cascade Lake, AMD Zen 4), AVX2 + FMA, or plain C++. Every output element is summed by one
// thread in a fixed order, so results do not depend on the thread count.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace cellfuse::cpu {
class Team;
}

namespace cellfuse::cpu::quant {

enum class Format : std::uint8_t { F32 = 0, BF16 = 1, Int8 = 2, Int4 = 3 };
enum class Isa : std::uint8_t { Scalar = 0, Avx2 = 1, Avx512 = 2 };

const char* format_name(Format f);
// "fp32"/"f32", "bf16", "int8", "int4"; anything else is an Error naming the accepted ones.
Format parse_format(std::string_view name);

// The best kernel set this CPU runs, and the one in use (tests force lower ones to run them all).
Isa host_isa();
Isa active_isa();
// Uses `isa` (at most host_isa(), else Error) until reset with host_isa(). Not thread-safe
// against running products: for tests and benchmarks.
void force_isa(Isa isa);
const char* isa_name(Isa isa);

constexpr std::int64_t kGroup = 32;  // int4 group size; every row is padded to a multiple of it
inline std::int64_t padded(std::int64_t k) { return (k + kGroup - 1) / kGroup * kGroup; }
// The k per row of a matrix's panels: F32 and BF16 round up to 4 (the kernels take 4 k a step),
// Int8 and Int4 to padded(k) (16 k a step; int4's groups of 32).
inline std::int64_t panel_k(Format f, std::int64_t k) {
  return f == Format::F32 || f == Format::BF16 ? (k + 3) / 4 * 4 : padded(k);
}

// Weights are kept in panels of 16 rows (n padded with zero rows to whole panels), interleaved
// so that one 64-byte vector holds the 16 rows at 1 (fp32), 2 (bf16) or 4 (int8, int4: twice)
// consecutive k: a kernel multiplies it by x broadcast and accumulates 16 outputs in 16 lanes
// (no horizontal sums, one sequential stream of weights). Files keep the row-major layout
// (raw_data()).
constexpr std::int64_t kPanel = 16;
inline std::int64_t panel_rows(std::int64_t n) { return (n + kPanel - 1) / kPanel * kPanel; }
// Fp32: element [r, i] is [r / 16][i][r % 16]; bf16: [r / 16][i / 2][r % 16][i % 2]. `kpad`
// in these helpers is the panels' k per row (panel_k).
inline std::size_t f32_panel_at(std::int64_t kpad, std::int64_t r, std::int64_t i) {
  return static_cast<std::size_t>(((r / kPanel) * kpad + i) * kPanel + r % kPanel);
}
inline std::size_t bf16_panel_at(std::int64_t kpad, std::int64_t r, std::int64_t i) {
  return static_cast<std::size_t>((((r / kPanel) * (kpad / 2) + i / 2) * kPanel + r % kPanel) * 2 + i % 2);
}
// Int8: the byte of weight [r, i] is [r / 16][i / 4][r % 16][i % 4].
inline std::size_t int8_panel_at(std::int64_t kpad, std::int64_t r, std::int64_t i) {
  return static_cast<std::size_t>((r / kPanel) * kPanel * kpad + (i / 4) * 64 + (r % kPanel) * 4 + i % 4);
}
// Int4: group g = i / 32 of panel r / 16 is 4 vectors of 64 bytes; in vector c = (i % 32) / 8,
// byte (r % 16) * 4 + i % 4 holds k = 32g + 8c + i % 4 in its low nibble and that k + 4 in its
// high one. Then the fp16 group scales, [r / 16][g][r % 16].
inline std::size_t int4_panel_at(std::int64_t groups, std::int64_t r, std::int64_t i) {
  return static_cast<std::size_t>(((r / kPanel) * groups + i / kGroup) * 256 + (i % kGroup) / 8 * 64 +
                                  (r % kPanel) * 4 + i % 4);
}
// Which nibble of its byte holds k = i: 0 (low) or 4 (high). A separate function, not an out
// parameter of int4_panel_at: `(w[int4_panel_at(.., shift)] >> shift)` reads shift before the
// call under GCC 12's -fsanitize=undefined, which instruments the shift.
inline int int4_shift(std::int64_t i) { return i % 8 >= 4 ? 4 : 0; }
inline std::size_t int4_scale_at(std::int64_t groups, std::int64_t r, std::int64_t g) {  // in halves
  return static_cast<std::size_t>(((r / kPanel) * groups + g) * kPanel + r % kPanel);
}

// IEEE half precision (int4's group scales), nearest-even; Error when |v| exceeds its range.
std::uint16_t float_to_half(float v);
float half_to_float(std::uint16_t h);

// Activations x [rows, k] prepared for one matrix format: padded (and quantized) once per call,
// reused by every matrix of that format and k that reads the same x.
struct Activations {
  Format format = Format::F32;
  std::int64_t rows = 0, k = 0, kpad = 0;
  std::vector<float> f;           // F32/BF16: [rows, kpad]
  std::vector<std::int8_t> q;     // Int8/Int4: [rows, kpad]
  std::vector<float> scale;       // Int8: [rows]; Int4: [rows, kpad / 32]
  std::vector<std::int32_t> sum;  // Int8: sum of q per row [rows]; Int4: per group [rows, kpad / 32]
  std::vector<float> offset;      // Int4: 8 * scale * sum per group (what the levels' -8 takes away)
  // Fills this for x (row stride ldx >= k); reuses the memory of earlier calls.
  void prepare(Format format, const float* x, std::int64_t rows, std::int64_t k, std::int64_t ldx);
};

class QuantMatrix {
 public:
  QuantMatrix() = default;
  // W as [n, k] (n_by_k) or [k, n], quantized to `format`. Throws Error on non-finite weights
  // (a NaN would poison a whole int8 row's scale silently).
  static QuantMatrix quantize(const float* w, bool n_by_k, std::int64_t k, std::int64_t n, Format format);
  // Rebuilds a matrix from stored bytes (what raw_* return), checking their sizes.
  static QuantMatrix from_raw(Format format, std::int64_t k, std::int64_t n, std::vector<std::uint8_t> data,
                              std::vector<float> scales);

  // Output rows are shared among threads in blocks of this many (the kernels' widest tile).
  static constexpr std::int64_t kRowBlock = 16;

  // out[r, :] = x[r, :] W^T (+ bias) for r < x.rows, out rows `ldo` apart. With a team, the
  // output rows are shared among its members when the product is large enough.
  void multiply(const Activations& x, const float* bias, float* out, std::int64_t ldo, Team* team = nullptr) const;
  // Only the output columns [r0, r1) (rows of W; r0 a multiple of kRowBlock): one thread's share.
  void multiply_rows(const Activations& x, const float* bias, float* out, std::int64_t ldo, std::int64_t r0,
                     std::int64_t r1) const;

  Format format() const { return format_; }
  std::int64_t k() const { return k_; }
  std::int64_t n() const { return n_; }
  std::int64_t kpad() const { return kpad_; }  // padded(k): the activations' and the stored rows' length
  std::int64_t kpanel() const { return kpanel_; }  // panel_k(format, k): the panels' (at() is 0 past it)
  // The weight the kernels use, as a double (the test oracle).
  double at(std::int64_t row, std::int64_t col) const;
  // Bytes a product reads (the weight-streaming floor's numerator).
  std::size_t bytes() const { return data_.size() + scales_.size() * sizeof(float); }
  // The stored form (a generator file): F32/BF16 [n, kpad] elements; Int8 [n, kpad] bytes and
  // [n] f32 row scales; Int4 [n, kpad/32, 16] bytes (byte i: element i low nibble, i + 16 high),
  // then [n, kpad/32] fp16 scales, no separate scales.
  std::vector<std::uint8_t> raw_data() const;
  std::vector<float> raw_scales() const;

 private:
  void derive();  // the kernels' layout (panels)
  void check(const Activations& x) const;  // x prepared for this matrix, else Error
  const std::uint16_t* int4_scales() const {
    return reinterpret_cast<const std::uint16_t*>(data_.data() + panel_rows(n_) * (kpanel_ / kGroup) * 16);
  }
  Format format_ = Format::F32;
  std::int64_t k_ = 0, n_ = 0, kpad_ = 0, kpanel_ = 0;
  // In panels of panel_rows(n) rows (f32_panel_at, bf16_panel_at, int8_panel_at, int4_panel_at).
  std::vector<std::uint8_t> data_;
  std::vector<float> scales_;  // Int8: [panel_rows(n)], zero past n
};

// The kernels of one instruction set: rows [r0, r1) of out for all rows of x. `kpad` is the k
// per row of w's panels (QuantMatrix::kpanel()); rows of x are x.kpad apart (>= kpad, the columns
// past kpad zero).
struct KernelSet {
  void (*f32)(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
              const float* bias, float* out, std::int64_t ldo);
  void (*bf16)(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0,
               std::int64_t r1, const float* bias, float* out, std::int64_t ldo);
  void (*int8)(const std::int8_t* w, const float* scales, std::int64_t kpad,
               const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
               std::int64_t ldo);
  void (*int4)(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
               std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo);
  // x[0, span) (zero from `valid` on) to q: levels round(x * 127 / amax) within +-127, nearest
  // even, the same bits in every set. Returns the scale amax / 127; *total = the sum of q.
  float (*quantize)(const float* x, std::int64_t valid, std::int64_t span, std::int8_t* q, std::int32_t* total);
};
float quantize_scalar(const float* x, std::int64_t valid, std::int64_t span, std::int8_t* q, std::int32_t* total);
const KernelSet& scalar_kernels();
const KernelSet& avx2_kernels();
const KernelSet& avx512_kernels();

}  // namespace cellfuse::cpu::quant
