#include "runtime/cpu/quant/quant_matrix.h"

#include <cpuid.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>

#include "compiler/ir/error.h"
#include "runtime/cpu/team.h"

namespace cellfuse::cpu::quant {
namespace {

// F16C from CPUID (leaf 1, ECX bit 29): clang 14 (the fuzz build's compiler) does not know
// __builtin_cpu_supports("f16c").
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}

Isa detect() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni"))
    return Isa::Avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c())
    return Isa::Avx2;
  return Isa::Scalar;
}

const Isa kHost = detect();
std::atomic<Isa> g_active{kHost};

// Products below this many weight elements run on the caller: waking the team costs more.
constexpr std::int64_t kMinShared = 128 * 1024;

std::uint16_t to_bf16(float v) {
  std::uint32_t u = std::bit_cast<std::uint32_t>(v);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // nearest, ties to even
  return static_cast<std::uint16_t>(u >> 16);
}

float from_bf16(std::uint16_t h) { return std::bit_cast<float>(static_cast<std::uint32_t>(h) << 16); }

// --- The plain C++ kernels: the reference for the vector ones, and what a CPU without AVX2 runs.

void f32_scalar(const float* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const float* xr = x.f.data() + b * x.kpad;
      float s = 0;
      for (std::int64_t i = 0; i < kpad; ++i) s += w[f32_panel_at(kpad, r, i)] * xr[i];
      out[b * ldo + r] = s + (bias ? bias[r] : 0.0f);
    }
}

void bf16_scalar(const std::uint16_t* w, std::int64_t kpad, const Activations& x, std::int64_t r0, std::int64_t r1,
                 const float* bias, float* out, std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const float* xr = x.f.data() + b * x.kpad;
      float s = 0;
      for (std::int64_t i = 0; i < kpad; ++i) s += from_bf16(w[bf16_panel_at(kpad, r, i)]) * xr[i];
      out[b * ldo + r] = s + (bias ? bias[r] : 0.0f);
    }
}

void int8_scalar(const std::int8_t* w, const float* scales, std::int64_t kpad,
                 const Activations& x, std::int64_t r0, std::int64_t r1, const float* bias, float* out,
                 std::int64_t ldo) {
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t b = 0; b < x.rows; ++b) {
      const std::int8_t* xr = x.q.data() + b * x.kpad;
      std::int32_t s = 0;
      for (std::int64_t i = 0; i < kpad; ++i) s += w[int8_panel_at(kpad, r, i)] * xr[i];
      out[b * ldo + r] = static_cast<float>(s) * (scales[r] * x.scale[b]) + (bias ? bias[r] : 0.0f);
    }
}

void int4_scalar(const std::uint8_t* w, const std::uint16_t* scales, std::int64_t kpad, const Activations& x,
                 std::int64_t r0, std::int64_t r1, const float* bias, float* out, std::int64_t ldo) {
  const std::int64_t groups = kpad / kGroup;
  for (std::int64_t r = r0; r < r1; ++r)
    for (std::int64_t b = 0; b < x.rows; ++b) {
      float s = 0;
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::int8_t* xg = x.q.data() + b * x.kpad + g * kGroup;
        std::int32_t d = 0;
        for (int i = 0; i < kGroup; ++i) {
          d += ((w[int4_panel_at(groups, r, g * kGroup + i)] >> int4_shift(i)) & 15) * xg[i];
        }
        d -= 8 * x.sum[static_cast<std::size_t>(b * groups + g)];
        s += static_cast<float>(d) *
             (half_to_float(scales[int4_scale_at(groups, r, g)]) * x.scale[static_cast<std::size_t>(b * groups + g)]);
      }
      out[b * ldo + r] = s + (bias ? bias[r] : 0.0f);
    }
}

}  // namespace

float quantize_scalar(const float* x, std::int64_t valid, std::int64_t span, std::int8_t* q, std::int32_t* total) {
  float amax = 0;
  for (std::int64_t i = 0; i < valid; ++i) amax = std::max(amax, std::fabs(x[i]));
  const float s = amax / 127.0f, inv = amax > 0 ? 127.0f / amax : 0.0f;
  // Adding and taking away 1.5 * 2^23 rounds |v| < 2^22 to the nearest integer, ties to even (as
  // nearbyint, without its library call).
  constexpr float kRound = 12582912.0f;
  std::int32_t sum = 0;
  for (std::int64_t i = 0; i < span; ++i) {
    const float v = i < valid ? x[i] * inv : 0.0f;
    const auto qi = static_cast<std::int8_t>(std::clamp((v + kRound) - kRound, -127.0f, 127.0f));
    q[i] = qi;
    sum += qi;
  }
  *total = sum;
  return s;
}

std::uint16_t float_to_half(float v) {
  const std::uint32_t bits = std::bit_cast<std::uint32_t>(v);
  const auto sign = static_cast<std::uint16_t>((bits >> 16) & 0x8000u);
  const float a = std::fabs(v);
  if (!(a < 65520.0f))  // beyond the largest half after rounding, or NaN
    throw Error("int4: a group scale of " + std::to_string(v) + " is outside fp16's range (weights beyond 5e5)");
  std::uint32_t u = bits & 0x7fffffffu;
  if (u >= 0x38800000u) {  // a normal half: round the mantissa at bit 13, rebias the exponent
    u += 0x0fffu + ((u >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((u - 0x38000000u) >> 13));
  }
  return static_cast<std::uint16_t>(sign | static_cast<std::uint16_t>(std::nearbyint(a * 0x1.0p24f)));  // subnormal
}

float half_to_float(std::uint16_t h) {
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const float a = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -24)
                                : std::ldexp(static_cast<float>(1024 + mantissa), exponent - 25);
  return (h & 0x8000) ? -a : a;
}

const KernelSet& scalar_kernels() {
  static const KernelSet set{f32_scalar, bf16_scalar, int8_scalar, int4_scalar, quantize_scalar};
  return set;
}

const char* format_name(Format f) {
  switch (f) {
    case Format::F32: return "fp32";
    case Format::BF16: return "bf16";
    case Format::Int8: return "int8";
    case Format::Int4: return "int4";
  }
  return "?";
}

Format parse_format(std::string_view name) {
  if (name == "fp32" || name == "f32") return Format::F32;
  if (name == "bf16") return Format::BF16;
  if (name == "int8") return Format::Int8;
  if (name == "int4") return Format::Int4;
  throw Error("weight format '" + std::string(name) + "' is not one of fp32, bf16, int8, int4");
}

Isa host_isa() { return kHost; }
Isa active_isa() { return g_active.load(); }
const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx512: return "avx512-vnni";
  }
  return "?";
}
void force_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(kHost))
    throw Error(std::string("quantized kernels: this CPU cannot run ") + isa_name(isa) + " (best: " +
                isa_name(kHost) + ")");
  g_active.store(isa);
}

void Activations::prepare(Format fmt, const float* x, std::int64_t n_rows, std::int64_t n_k, std::int64_t ldx) {
  format = fmt, rows = n_rows, k = n_k, kpad = padded(n_k);
  if (fmt == Format::F32 || fmt == Format::BF16) {
    f.resize(static_cast<std::size_t>(rows * kpad));
    for (std::int64_t r = 0; r < rows; ++r) {
      std::memcpy(f.data() + r * kpad, x + r * ldx, static_cast<std::size_t>(k) * sizeof(float));
      std::fill(f.data() + r * kpad + k, f.data() + (r + 1) * kpad, 0.0f);
    }
    return;
  }
  q.resize(static_cast<std::size_t>(rows * kpad));
  // Int8: one scale per row of x (the whole vector); Int4: one per group of 32.
  const std::int64_t span = fmt == Format::Int8 ? kpad : kGroup, groups = kpad / span;
  scale.resize(static_cast<std::size_t>(rows * groups));
  sum.resize(static_cast<std::size_t>(rows * groups));
  if (fmt == Format::Int4) offset.resize(sum.size());
  const Isa isa = active_isa();
  const auto quantize = (isa == Isa::Avx512 ? avx512_kernels() : scalar_kernels()).quantize;
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t g = 0; g < groups; ++g) {
      const std::int64_t lo = g * span, valid = std::max<std::int64_t>(0, std::min(k, lo + span) - lo);
      std::int32_t total = 0;
      std::int8_t* dst = q.data() + r * kpad;
      const float s = quantize(x + r * ldx + lo, valid, span, dst + lo, &total);
      scale[static_cast<std::size_t>(r * groups + g)] = s;
      sum[static_cast<std::size_t>(r * groups + g)] = total;
      if (fmt == Format::Int4) {
        offset[static_cast<std::size_t>(r * groups + g)] = 8.0f * s * static_cast<float>(total);
      }
    }
}

QuantMatrix QuantMatrix::quantize(const float* w, bool n_by_k, std::int64_t k, std::int64_t n, Format format) {
  if (k < 1 || n < 1)
    throw Error("quantize: a weight of " + std::to_string(n) + " x " + std::to_string(k) + " is empty");
  QuantMatrix m;
  m.format_ = format, m.k_ = k, m.n_ = n, m.kpad_ = padded(k), m.kpanel_ = panel_k(format, k);
  const std::int64_t kpad = m.kpad_;
  std::vector<float> row(static_cast<std::size_t>(kpad));
  auto load_row = [&](std::int64_t r) {
    for (std::int64_t i = 0; i < kpad; ++i) {
      const float v = i >= k ? 0.0f : n_by_k ? w[r * k + i] : w[i * n + r];
      if (!std::isfinite(v))
        throw Error("quantize: weight [" + std::to_string(r) + ", " + std::to_string(i) + "] of a " +
                    std::to_string(n) + " x " + std::to_string(k) + " matrix is not finite (" + std::to_string(v) +
                    ")");
      row[static_cast<std::size_t>(i)] = v;
    }
  };
  switch (format) {
    case Format::F32:
      m.data_.resize(static_cast<std::size_t>(n * kpad) * 4);
      for (std::int64_t r = 0; r < n; ++r) {
        load_row(r);
        std::memcpy(m.data_.data() + r * kpad * 4, row.data(), static_cast<std::size_t>(kpad) * 4);
      }
      break;
    case Format::BF16:
      m.data_.resize(static_cast<std::size_t>(n * kpad) * 2);
      for (std::int64_t r = 0; r < n; ++r) {
        load_row(r);
        for (std::int64_t i = 0; i < kpad; ++i) {
          const std::uint16_t h = to_bf16(row[static_cast<std::size_t>(i)]);
          std::memcpy(m.data_.data() + (r * kpad + i) * 2, &h, 2);
        }
      }
      break;
    case Format::Int8:
      m.data_.resize(static_cast<std::size_t>(n * kpad));
      m.scales_.resize(static_cast<std::size_t>(n));
      for (std::int64_t r = 0; r < n; ++r) {
        load_row(r);
        float amax = 0;
        for (float v : row) amax = std::max(amax, std::fabs(v));
        const float inv = amax > 0 ? 127.0f / amax : 0.0f;
        m.scales_[static_cast<std::size_t>(r)] = amax / 127.0f;
        for (std::int64_t i = 0; i < kpad; ++i)
          m.data_[static_cast<std::size_t>(r * kpad + i)] = static_cast<std::uint8_t>(static_cast<std::int8_t>(
              std::clamp(std::nearbyint(row[static_cast<std::size_t>(i)] * inv), -127.0f, 127.0f)));
      }
      break;
    case Format::Int4: {
      const std::int64_t groups = kpad / kGroup;
      m.data_.resize(static_cast<std::size_t>(n * groups * 18));
      std::uint8_t* halves = m.data_.data() + n * groups * 16;
      for (std::int64_t r = 0; r < n; ++r) {
        load_row(r);
        for (std::int64_t g = 0; g < groups; ++g) {
          // The element of largest magnitude maps to -8 exactly, so the group uses all 16 levels
          // (with scale = amax / 7 one of them would go unused).
          const float* v = row.data() + g * kGroup;
          float extreme = 0;
          for (int i = 0; i < kGroup; ++i)
            if (std::fabs(v[i]) > std::fabs(extreme)) extreme = v[i];
          // The levels are taken against the scale as stored (rounded to fp16).
          const std::uint16_t h = float_to_half(extreme / -8.0f);
          std::memcpy(halves + (r * groups + g) * 2, &h, 2);
          const float d = half_to_float(h), inv = d != 0 ? 1.0f / d : 0.0f;
          std::uint8_t* dst = m.data_.data() + (r * groups + g) * 16;
          auto level = [&](int i) {
            return static_cast<std::uint8_t>(std::clamp(std::nearbyint(v[i] * inv) + 8.0f, 0.0f, 15.0f));
          };
          // Byte i holds element i (low nibble) and element i + 16 (high): one load and two
          // masks give the group's 32 values in order.
          for (int i = 0; i < 16; ++i) dst[i] = static_cast<std::uint8_t>(level(i) | (level(i + 16) << 4));
        }
      }
      break;
    }
  }
  m.derive();
  return m;
}

QuantMatrix QuantMatrix::from_raw(Format format, std::int64_t k, std::int64_t n, std::vector<std::uint8_t> data,
                                  std::vector<float> scales) {
  QuantMatrix m;
  m.format_ = format, m.k_ = k, m.n_ = n, m.kpad_ = padded(k), m.kpanel_ = panel_k(format, k);
  const std::int64_t kpad = m.kpad_;
  std::size_t want_data = 0, want_scales = 0;
  switch (format) {
    case Format::F32: want_data = static_cast<std::size_t>(n * kpad * 4); break;
    case Format::BF16: want_data = static_cast<std::size_t>(n * kpad * 2); break;
    case Format::Int8: want_data = static_cast<std::size_t>(n * kpad), want_scales = static_cast<std::size_t>(n); break;
    case Format::Int4: want_data = static_cast<std::size_t>(n * kpad / kGroup * 18); break;
  }
  if (k < 1 || n < 1 || data.size() != want_data || scales.size() != want_scales)
    throw Error("quantized matrix " + std::to_string(n) + " x " + std::to_string(k) + " (" + format_name(format) +
                "): expected " + std::to_string(want_data) + " bytes and " + std::to_string(want_scales) +
                " scales, got " + std::to_string(data.size()) + " and " + std::to_string(scales.size()));
  m.data_ = std::move(data);
  m.scales_ = std::move(scales);
  m.derive();
  return m;
}

// Weights arrive row-major (quantize, a file) and go into panels here.
void QuantMatrix::derive() {
  const std::int64_t npad = panel_rows(n_), groups = kpad_ / kGroup;
  if (format_ == Format::F32 || format_ == Format::BF16) {
    // The panels keep k rounded up to 4 (what the kernels step by), not to 32: the row-major
    // form's padding is zeros a product would only multiply by zeros.
    const std::size_t size = format_ == Format::F32 ? 4 : 2;
    std::vector<std::uint8_t> panels(static_cast<std::size_t>(npad * kpanel_) * size, 0);
    for (std::int64_t r = 0; r < n_; ++r)
      for (std::int64_t i = 0; i < std::min(k_, kpanel_); ++i)
        std::memcpy(panels.data() + (size == 4 ? f32_panel_at(kpanel_, r, i) : bf16_panel_at(kpanel_, r, i)) * size,
                    data_.data() + static_cast<std::size_t>(r * kpad_ + i) * size, size);
    data_ = std::move(panels);
  } else if (format_ == Format::Int8) {
    std::vector<std::uint8_t> panels(static_cast<std::size_t>(npad * kpad_), 0);
    for (std::int64_t r = 0; r < n_; ++r)
      for (std::int64_t i = 0; i < kpad_; ++i) panels[int8_panel_at(kpad_, r, i)] = data_[static_cast<std::size_t>(r * kpad_ + i)];
    data_ = std::move(panels);
    scales_.resize(static_cast<std::size_t>(npad), 0.0f);
  } else if (format_ == Format::Int4) {
    // Padding rows: level 8 (zero) with a zero scale.
    std::vector<std::uint8_t> panels(static_cast<std::size_t>(npad * groups * 18), 0x88);
    auto* halves = reinterpret_cast<std::uint16_t*>(panels.data() + npad * groups * 16);
    std::fill(halves, halves + npad * groups, std::uint16_t{0});
    for (std::int64_t r = 0; r < n_; ++r)
      for (std::int64_t g = 0; g < groups; ++g) {
        const std::uint8_t* src = data_.data() + (r * groups + g) * 16;
        for (int i = 0; i < kGroup; ++i) {
          const int level = (src[i % 16] >> (i < 16 ? 0 : 4)) & 15;
          const int shift = int4_shift(i);
          std::uint8_t& byte = panels[int4_panel_at(groups, r, g * kGroup + i)];
          byte = static_cast<std::uint8_t>((byte & ~(15 << shift)) | (level << shift));
        }
        std::memcpy(halves + int4_scale_at(groups, r, g), data_.data() + n_ * groups * 16 + (r * groups + g) * 2, 2);
      }
    data_ = std::move(panels);
  }
}

std::vector<std::uint8_t> QuantMatrix::raw_data() const {
  const std::int64_t groups = kpad_ / kGroup;
  if (format_ == Format::Int8) {
    std::vector<std::uint8_t> out(static_cast<std::size_t>(n_ * kpad_));
    for (std::int64_t r = 0; r < n_; ++r)
      for (std::int64_t i = 0; i < kpad_; ++i) out[static_cast<std::size_t>(r * kpad_ + i)] = data_[int8_panel_at(kpad_, r, i)];
    return out;
  }
  if (format_ == Format::Int4) {
    std::vector<std::uint8_t> out(static_cast<std::size_t>(n_ * groups * 18), 0);
    for (std::int64_t r = 0; r < n_; ++r)
      for (std::int64_t g = 0; g < groups; ++g) {
        std::uint8_t* dst = out.data() + (r * groups + g) * 16;
        for (int i = 0; i < kGroup; ++i) {
          const int level = (data_[int4_panel_at(groups, r, g * kGroup + i)] >> int4_shift(i)) & 15;
          dst[i % 16] = static_cast<std::uint8_t>(dst[i % 16] | (level << (i < 16 ? 0 : 4)));
        }
        std::memcpy(out.data() + n_ * groups * 16 + (r * groups + g) * 2, int4_scales() + int4_scale_at(groups, r, g), 2);
      }
    return out;
  }
  const std::size_t size = format_ == Format::F32 ? 4 : 2;
  std::vector<std::uint8_t> out(static_cast<std::size_t>(n_ * kpad_) * size, 0);  // zeros from k on
  for (std::int64_t r = 0; r < n_; ++r)
    for (std::int64_t i = 0; i < k_; ++i)
      std::memcpy(out.data() + static_cast<std::size_t>(r * kpad_ + i) * size,
                  data_.data() + (size == 4 ? f32_panel_at(kpanel_, r, i) : bf16_panel_at(kpanel_, r, i)) * size, size);
  return out;
}

std::vector<float> QuantMatrix::raw_scales() const {
  if (format_ != Format::Int8) return {};
  return {scales_.begin(), scales_.begin() + n_};
}

double QuantMatrix::at(std::int64_t row, std::int64_t col) const {
  if (col >= kpanel_) return 0;  // padding the panels leave out
  switch (format_) {
    case Format::F32: {
      float v;
      std::memcpy(&v, data_.data() + f32_panel_at(kpanel_, row, col) * 4, 4);
      return v;
    }
    case Format::BF16: {
      std::uint16_t h;
      std::memcpy(&h, data_.data() + bf16_panel_at(kpanel_, row, col) * 2, 2);
      return from_bf16(h);
    }
    case Format::Int8:
      return static_cast<double>(static_cast<std::int8_t>(data_[int8_panel_at(kpad_, row, col)])) *
             scales_[static_cast<std::size_t>(row)];
    case Format::Int4: {
      const std::int64_t groups = kpad_ / kGroup;
      const int level = (data_[int4_panel_at(groups, row, col)] >> int4_shift(col)) & 15;
      return static_cast<double>(level - 8) * half_to_float(int4_scales()[int4_scale_at(groups, row, col / kGroup)]);
    }
  }
  return 0;
}

void QuantMatrix::check(const Activations& x) const {
  if (x.format != format_ || x.k != k_)
    throw Error(std::string("quantized product: activations prepared for ") + format_name(x.format) + " with k = " +
                std::to_string(x.k) + ", but the matrix is " + format_name(format_) + " " + std::to_string(n_) +
                " x " + std::to_string(k_));
}

void QuantMatrix::multiply_rows(const Activations& x, const float* bias, float* out, std::int64_t ldo, std::int64_t r0,
                                std::int64_t r1) const {
  check(x);
  if (r0 < 0 || r1 > n_ || r0 % kRowBlock != 0)
    throw InternalError("quantized product: rows [" + std::to_string(r0) + ", " + std::to_string(r1) + ") of " +
                        std::to_string(n_));
  if (x.rows == 0 || r0 >= r1) return;
  const Isa isa = active_isa();
  const KernelSet& ks = isa == Isa::Avx512 ? avx512_kernels() : isa == Isa::Avx2 ? avx2_kernels() : scalar_kernels();
  switch (format_) {
    case Format::F32:
      return ks.f32(reinterpret_cast<const float*>(data_.data()), kpanel_, x, r0, r1, bias, out, ldo);
    case Format::BF16:
      return ks.bf16(reinterpret_cast<const std::uint16_t*>(data_.data()), kpanel_, x, r0, r1, bias, out, ldo);
    case Format::Int8:
      return ks.int8(reinterpret_cast<const std::int8_t*>(data_.data()), scales_.data(), kpad_, x, r0,
                     r1, bias, out, ldo);
    case Format::Int4: return ks.int4(data_.data(), int4_scales(), kpad_, x, r0, r1, bias, out, ldo);
  }
}

void QuantMatrix::multiply(const Activations& x, const float* bias, float* out, std::int64_t ldo, Team* team) const {
  check(x);
  if (!team || team->size() == 1 || n_ * kpad_ < kMinShared || n_ < 2 * team->size())
    return multiply_rows(x, bias, out, ldo, 0, n_);
  const std::int64_t blocks = (n_ + kRowBlock - 1) / kRowBlock;
  team->run([&](int part, int parts) {
    const std::int64_t b0 = blocks * part / parts, b1 = blocks * (part + 1) / parts;
    if (b0 < b1) multiply_rows(x, bias, out, ldo, b0 * kRowBlock, std::min(n_, b1 * kRowBlock));
  });
}

}  // namespace cellfuse::cpu::quant
