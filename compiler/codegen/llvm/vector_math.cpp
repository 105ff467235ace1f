#include "compiler/codegen/llvm/vector_math.h"

#include <bit>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include <llvm/IR/Constants.h>
#include <llvm/IR/DerivedTypes.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Intrinsics.h>
#include <llvm/Support/raw_ostream.h>

#include "compiler/ir/error.h"

// How the approximations were made (nothing here is taken from a math library):
//
// exp-like functions reduce x = n*ln2 + r with n = rint(x/ln2), |r| <= ln2/2. ln2 is split
// Cody-Waite style into hi + lo where hi = ln2 rounded to a multiple of 2^-16 (f32) or 2^-42
// (f64), so that n*hi is exact for every n the clamped inputs produce (|n| < 2^8, resp. 2^11)
// and x - n*hi is exact; lo = ln2 - hi rounded to the type. rint is done with the
// "add 1.5*2^p, subtract it again" trick, whose bit pattern also holds n as an integer.
// Then expm1(r) = r + r^2 * P(r), P a weighted minimax polynomial (Remez exchange, run in
// mpmath at 60 digits, weight r^2/expm1(r) so the relative error of expm1(r) is what is
// minimized) on [-ln2/2, ln2/2] with 0.01% slack: degree 4 for f32 (max relative error of
// expm1(r) with the coefficients rounded to float: 1.7e-8), degree 9 for f64 (3.4e-17).
// exp(x) = (1 + expm1(r)) * 2^n1 * 2^n2 with n1 = n >> 1, n2 = n - n1: each factor is a normal
// power of two built from the exponent bits, and the second product rounds once into the
// subnormal range, so results near underflow are correctly scaled.
//
// log splits x = 2^e * m with m in [sqrt(1/2), sqrt(2)), s = (m-1)/(m+1), and
// log(m) = 2*atanh(s) = 2s + s^3 * Q(s^2), Q a weighted minimax polynomial in z = s^2 on
// [0, ((sqrt2-1)/(sqrt2+1))^2] (same Remez program, weight s^3/log(m)): degree 2 for f32
// (relative error of log(m) 8.3e-10), degree 6 for f64 (1.5e-18).
//
// erf is odd; with a = |x|:
//   a < 1:    erf(a) = a * P(a^2), P(z) = 2/sqrt(pi) + z * Q(z) in z = a^2 on [0, 1], Q minimax
//             for the relative error of erf(sqrt z)/sqrt z with P(0) held at 2/sqrt(pi): near 0
//             this is a times 2/sqrt(pi) correctly rounded, one rounding, so tiny and subnormal
//             x come out right (within one unit of the smallest subnormal).
//   a >= 1:   erf(a) = 1 - e^(-a^2) * G(a - c), G a polynomial in u = a - c for erfcx(a) =
//             e^(a^2) erfc(a) (an entire function, so polynomials converge fast) on [1, sat),
//             weighted by e^(-a^2)/erf(a): what is minimized is G's error's share of the
//             relative error of erf (erfc itself is only as accurate as erf needs).
//             e^(-a^2) is the exp above; the rounding of a*a costs at most a^2 * 2^-p relative
//             in erfc, times erfc(a)/erf(a) <= 0.19, far below the bounds.
//   a >= sat: exactly 1 (erf rounds to 1 from 3.9192 on in f32, 5.9216 in f64).
// f32: P degree 6 (error 1.4e-8 with float coefficients), G degree 6 around c = 2.5 on
// [1, 3.92) (8.0e-8). f64 meets the same 1e-14 contract as the other f64 functions by higher
// degrees of the same form rather than a second algorithm: P degree 11 (2.4e-17), G degree
// 18 around c = 3.5 on [1, 5.93) (2.3e-16). Measured over the whole range (the test): max
// relative error 1.8e-7 in f32, 3.6e-16 in f64.
// (tools/fit_vector_math.py erf_small / erf_big32 / erf_big64.)
// The coefficients are written as hex floats, exactly the values used.

namespace cellfuse::llvm_codegen {
namespace {

using llvm::Value;

struct Format {
  unsigned bits;         // width of the float and of the matching integer
  int64_t mant_bits;     // explicit mantissa bits
  int64_t bias;          // exponent bias
  int64_t expm1_cap;     // the largest n for which 2^n - 1 is exact
  double log2e;          // 1/ln2
  double ln2_hi, ln2_lo;  // Cody-Waite split of ln2
  double shifter;        // 1.5 * 2^mant_bits: adding and subtracting it rounds to an integer
  double exp_lo;         // exp(x) rounds to +0 below this
  double exp_hi;         // exp(x) is +inf above this
  double exp_ovf;        // the largest x whose exp rounds to a finite number
  double expm1_lo;       // expm1(x) rounds to -1 below this
  double tanh_sat;       // tanh(x) rounds to 1 for x >= this
  double sqrt2;
  double max_finite;
  double min_normal;
  std::span<const double> expm1_p;  // expm1(r) = r + r^2 * P(r), constant term first
  std::span<const double> log_q;    // log(m) = 2s + s^3 * Q(s^2)
  double erf_sat;                   // erf(x) rounds to 1 for x >= this
  double erf_centre;                // G's expansion point
  std::span<const double> erf_p;    // erf(a) = a * P(a^2) for a < 1
  std::span<const double> erf_g;    // erf(a) = 1 - e^(-a^2) * G(a - centre) for 1 <= a < sat
};

constexpr double kExpm1F32[] = {0x1.fffffep-2, 0x1.5554bp-3, 0x1.555674p-5, 0x1.122776p-7,
                                0x1.6bec06p-10};
constexpr double kLogF32[] = {0x1.55557ap-1, 0x1.995eccp-2, 0x1.31e138p-2};
constexpr double kExpm1F64[] = {
    0x1.0000000000005p-1,  0x1.5555555555539p-3,  0x1.55555555522b8p-5, 0x1.1111111118fa9p-7,
    0x1.6c16c17edba42p-10, 0x1.a01a017515664p-13, 0x1.a019a76f56f91p-16, 0x1.71de88058d787p-19,
    0x1.28a1dfeb6446cp-22, 0x1.ae6ba9c908993p-26};
constexpr double kLogF64[] = {0x1.5555555555592p-1, 0x1.999999997fea9p-2, 0x1.24924941e4968p-2,
                              0x1.c71c5212f94d4p-3, 0x1.74663d0cdcd13p-3, 0x1.39a1e7e484388p-3,
                              0x1.2f03b66aa59b4p-3};
constexpr double kErfPF32[] = {0x1.20dd76p+0,  -0x1.81274p-2,   0x1.ce2d4ep-4,  -0x1.b7fdaep-6,
                               0x1.54247ap-8,  -0x1.a4bb4ap-11, 0x1.4b4b98p-14};
constexpr double kErfGF32[] = {0x1.afa606p-3, -0x1.317678p-4, 0x1.997dacp-6, -0x1.8964dcp-8,
                               0x1.ac911p-8,  0x1.5b7b6cp-9,  0x1.646192p-10};
constexpr double kErfPF64[] = {
    0x1.20dd750429b6dp+0,  -0x1.812746b0379cbp-2,  0x1.ce2f21a0412ccp-4,  -0x1.b82ce3120bc34p-6,
    0x1.565bccfaf4e0cp-8,  -0x1.c02db077e9253p-11, 0x1.f9a2bf6353060p-14, -0x1.f4ca8e021c3f5p-17,
    0x1.b98212daf68fep-20, -0x1.5c13b63fcd41ap-23, 0x1.d76b2343c9687p-27, -0x1.ac8c50d6a4b4fp-31};
constexpr double kErfGF64[] = {
    0x1.3e0a99a27227fp-3,  -0x1.5285d2dd70ffep-5,  0x1.5d580bd9f9330p-7,  -0x1.5e5df262907c1p-9,
    0x1.562fb293ee1edp-11, -0x1.45f7081ec53acp-13, 0x1.30bf31b83f152p-15, -0x1.0ebb295440271p-17,
    0x1.ec45ecd0c4cd1p-20, -0x1.50615a1f073b4p-21, -0x1.7d6bedc297b7ap-23, -0x1.27475c4da72eep-23,
    0x1.090d80dc24f00p-25, 0x1.2bef31140adafp-24,  0x1.91ce85dda0720p-25,  0x1.2c2e8c19b771fp-26,
    0x1.15d0907f12959p-28, 0x1.28c2dfffaebf2p-31,  0x1.252c51e41439ep-35};

const Format kF32{
    32, 23, 127, 24,
    0x1.715476p+0,                   // log2(e)
    0x1.62e4p-1, 0x1.7f7d1cp-20,     // ln2 = hi + lo
    0x1.8p+23,                       // 1.5 * 2^23
    -104.0, 89.0, 0x1.62e42ep+6,     // exp range; exp_ovf = 88.7228317
    -20.0, 10.0,                     // expm1 -> -1, tanh -> 1
    0x1.6a09e6p+0, 0x1.fffffep+127, 0x1p-126,
    kExpm1F32, kLogF32,
    3.92, 2.5, kErfPF32, kErfGF32,
};

const Format kF64{
    64, 52, 1023, 53,
    0x1.71547652b82fep+0,
    0x1.62e42fefa38p-1, 0x1.ef35793c7673p-45,
    0x1.8p+52,
    -746.0, 710.0, 0x1.62e42fefa39efp+9,  // exp_ovf = 709.782712893384
    -40.0, 20.0,
    0x1.6a09e667f3bcdp+0, 0x1.fffffffffffffp+1023, 0x1p-1022,
    kExpm1F64, kLogF64,
    5.93, 3.5, kErfPF64, kErfGF64,
};

std::string type_name(llvm::Type* type) {
  std::string out;
  llvm::raw_string_ostream os(out);
  type->print(os);
  return os.str();
}

// Emits the building blocks for one float type (scalar or fixed vector).
class Math {
 public:
  Math(llvm::IRBuilderBase& b, Value* x, const char* what)
      : b_(b), guard_(b), ft_(x->getType()), f_(pick(ft_, what)) {
    b_.clearFastMathFlags();
    b_.setDefaultFPMathTag(nullptr);  // no reduced-precision fdiv either
    llvm::Type* ielem = b_.getIntNTy(f_.bits);
    if (auto* vt = llvm::dyn_cast<llvm::FixedVectorType>(ft_))
      it_ = llvm::FixedVectorType::get(ielem, vt->getNumElements());
    else
      it_ = ielem;
  }

  const Format& format() const { return f_; }

  // --- constants and plain operations -------------------------------------------------------
  Value* c(double v) { return llvm::ConstantFP::get(ft_, v); }
  Value* ci(int64_t v) { return llvm::ConstantInt::get(it_, static_cast<uint64_t>(v), true); }
  Value* inf(bool negative = false) { return llvm::ConstantFP::getInfinity(ft_, negative); }
  Value* nan() { return llvm::ConstantFP::getNaN(ft_); }

  Value* add(Value* a, Value* v) { return b_.CreateFAdd(a, v); }
  Value* sub(Value* a, Value* v) { return b_.CreateFSub(a, v); }
  Value* mul(Value* a, Value* v) { return b_.CreateFMul(a, v); }
  Value* div(Value* a, Value* v) { return b_.CreateFDiv(a, v); }
  // a*v + w, fused where the target has FMA (never a libm call).
  Value* fma(Value* a, Value* v, Value* w) {
    return b_.CreateIntrinsic(llvm::Intrinsic::fmuladd, {ft_}, {a, v, w});
  }
  Value* fabs(Value* a) { return b_.CreateUnaryIntrinsic(llvm::Intrinsic::fabs, a); }
  Value* copysign(Value* mag, Value* sign) {
    return b_.CreateBinaryIntrinsic(llvm::Intrinsic::copysign, mag, sign);
  }
  // min and max for clamping: `v` when `a` is NaN (every caller replaces NaN results at the end).
  // A compare and select, which x86 does in one minps/maxps; llvm.minnum would add NaN fixups.
  Value* fmin(Value* a, Value* v) { return select(b_.CreateFCmpOLT(a, v), a, v); }
  Value* fmax(Value* a, Value* v) { return select(b_.CreateFCmpOGT(a, v), a, v); }
  Value* select(Value* cond, Value* a, Value* v) { return b_.CreateSelect(cond, a, v); }
  Value* is_nan(Value* a) { return b_.CreateFCmpUNO(a, a); }
  Value* keep_nan(Value* x, Value* result) { return select(is_nan(x), x, result); }

  Value* bits(Value* a) { return b_.CreateBitCast(a, it_); }
  Value* from_bits(Value* i) { return b_.CreateBitCast(i, ft_); }
  int64_t bits_of(double v) {
    return f_.bits == 32 ? static_cast<int64_t>(std::bit_cast<uint32_t>(static_cast<float>(v)))
                         : std::bit_cast<int64_t>(v);
  }

  // Horner's scheme; coefficients from the constant term up.
  Value* poly(Value* z, std::span<const double> coeffs) {
    Value* acc = c(coeffs.back());
    for (size_t i = coeffs.size() - 1; i-- > 0;) acc = fma(acc, z, c(coeffs[i]));
    return acc;
  }

  // 2^n for an integer n (in the float's integer type) within the normal exponent range.
  Value* pow2(Value* n) {
    return from_bits(b_.CreateShl(b_.CreateAdd(n, ci(f_.bias)), ci(f_.mant_bits)));
  }
  // p * 2^n for n up to twice the normal exponent range, rounding once (into subnormals too).
  Value* scale(Value* p, Value* n) {
    Value* n1 = b_.CreateAShr(n, ci(1));
    Value* n2 = b_.CreateSub(n, n1);
    return mul(mul(p, pow2(n1)), pow2(n2));
  }
  // The float value of a small integer, through the shifter's bit pattern (exact, no cvt).
  Value* int_to_float(Value* n) {
    return sub(from_bits(b_.CreateAdd(n, ci(bits_of(f_.shifter)))), c(f_.shifter));
  }

  // --- kernels --------------------------------------------------------------------------------
  struct Reduced {
    Value* n;  // integer, x = n*ln2 + r
    Value* r;
  };
  // x must be finite and clamped so that |x/ln2| stays far below 2^(mant_bits-1).
  Reduced reduce(Value* x) {
    Value* t = fma(x, c(f_.log2e), c(f_.shifter));
    Value* nf = sub(t, c(f_.shifter));
    Value* n = b_.CreateSub(bits(t), ci(bits_of(f_.shifter)));
    Value* r = fma(nf, c(-f_.ln2_hi), x);  // exact
    r = fma(nf, c(-f_.ln2_lo), r);
    return {n, r};
  }
  // expm1(r) for |r| <= ln2/2 (exact for r = +-0 up to the sign of zero).
  Value* expm1_kernel(Value* r) { return fma(mul(r, r), poly(r, f_.expm1_p), r); }

  // exp of a clamped x in [exp_lo, exp_hi]: overflows to inf, underflows through subnormals.
  Value* exp_clamped(Value* x) {
    Reduced red = reduce(x);
    return scale(add(expm1_kernel(red.r), c(1.0)), red.n);
  }

  // e^x - 1 for x clamped to [expm1_lo, exp_hi].
  Value* expm1_clamped(Value* x, bool may_be_large) {
    Reduced red = reduce(x);
    Value* em = expm1_kernel(red.r);
    // 2^n*em + (2^n - 1): both 2^n*em and 2^n - 1 are exact while n <= expm1_cap.
    Value* t = pow2(red.n);
    Value* small = fma(t, em, sub(t, c(1.0)));
    if (!may_be_large) return small;
    // Larger n: (1 + em) * 2^n - 1, scaled in two steps so that it reaches +inf (the pow2
    // above is garbage there but not used).
    Value* large = sub(scale(add(em, c(1.0)), red.n), c(1.0));
    return select(b_.CreateICmpSGT(red.n, ci(f_.expm1_cap)), large, small);
  }

  // log(u) for u > 0 finite (u = 0, negative, inf or NaN give garbage the caller replaces).
  Value* log_finite(Value* u, bool subnormals) {
    Value* e_adjust = nullptr;
    if (subnormals) {
      // Bring subnormals into the normal range by 2^(mant_bits + 1).
      Value* tiny = b_.CreateFCmpOLT(u, c(f_.min_normal));
      const double up = static_cast<double>(int64_t{1} << (f_.mant_bits + 1));
      u = select(tiny, mul(u, c(up)), u);
      e_adjust = select(tiny, ci(-(f_.mant_bits + 1)), ci(0));
    }
    Value* ub = bits(u);
    Value* e = b_.CreateSub(b_.CreateLShr(ub, ci(f_.mant_bits)), ci(f_.bias));
    const int64_t mant_mask = (int64_t{1} << f_.mant_bits) - 1;
    Value* m = from_bits(b_.CreateOr(b_.CreateAnd(ub, ci(mant_mask)), ci(bits_of(1.0))));
    // m in [1, 2); fold [sqrt2, 2) down to [sqrt(1/2), 1).
    Value* big = b_.CreateFCmpOGE(m, c(f_.sqrt2));
    m = select(big, mul(m, c(0.5)), m);
    e = b_.CreateAdd(e, b_.CreateZExt(big, it_));
    if (e_adjust) e = b_.CreateAdd(e, e_adjust);
    Value* ef = int_to_float(e);
    Value* f = sub(m, c(1.0));  // exact (Sterbenz)
    Value* s = div(f, add(f, c(2.0)));
    Value* z = mul(s, s);
    Value* log_m = fma(mul(s, z), poly(z, f_.log_q), add(s, s));
    return fma(ef, c(f_.ln2_hi), fma(ef, c(f_.ln2_lo), log_m));
  }

  // log(1 + x) for x > -1 finite: u*log(1+u)/((1+u)-1) (Goldberg/Kahan), exact for tiny x.
  Value* log1p_finite(Value* x) {
    Value* u = add(x, c(1.0));
    Value* d = sub(u, c(1.0));
    Value* l = mul(log_finite(u, false), div(x, d));
    return select(b_.CreateFCmpOEQ(d, c(0.0)), x, l);
  }

  // e^-|x| from a = |x| (NaN gives garbage).
  Value* exp_neg(Value* a) { return exp_clamped(fmax(b_.CreateFNeg(a), c(f_.exp_lo))); }

  // Clamps results of exp and expm1 at the overflow edge: +inf exactly where the rounded true
  // result is, never a spurious inf below.
  Value* overflow_edge(Value* x, Value* result) {
    return select(b_.CreateFCmpOGT(x, c(f_.exp_ovf)), inf(), fmin(result, c(f_.max_finite)));
  }

  // An odd function that is exactly 1 from `sat` on (tanh, erf): `of(a, ac)` computes it for
  // a = |x| and ac = a clamped to `sat` (inf and NaN give a finite garbage value there); the
  // result is 1 from `sat` on, takes the sign of x (copysign also keeps the sign of zero), and is
  // NaN for NaN.
  Value* odd_saturating(Value* x, double sat, const std::function<Value*(Value* a, Value* ac)>& of) {
    Value* a = fabs(x);
    Value* r = of(a, fmin(a, c(sat)));
    r = select(b_.CreateFCmpOGE(a, c(sat)), c(1.0), r);
    return keep_nan(x, copysign(r, x));
  }

  llvm::IRBuilderBase& builder() { return b_; }

 private:
  static const Format& pick(llvm::Type* type, const char* what) {
    llvm::Type* elem = type->getScalarType();
    const bool fixed = !type->isVectorTy() || llvm::isa<llvm::FixedVectorType>(type);
    if (fixed && elem->isFloatTy()) return kF32;
    if (fixed && elem->isDoubleTy()) return kF64;
    throw InternalError(std::string(what) + ": vector math needs float or double (or a fixed " +
                        "vector of them), got " + type_name(type));
  }

  llvm::IRBuilderBase& b_;
  llvm::IRBuilderBase::FastMathFlagGuard guard_;
  llvm::Type* ft_;
  const Format& f_;
  llvm::Type* it_ = nullptr;
};

}  // namespace

llvm::Value* emit_exp(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "exp");
  const Format& f = m.format();
  Value* e = m.exp_clamped(m.fmax(m.fmin(x, m.c(f.exp_hi)), m.c(f.exp_lo)));
  return m.keep_nan(x, m.overflow_edge(x, e));
}

llvm::Value* emit_expm1(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "expm1");
  const Format& f = m.format();
  Value* e = m.expm1_clamped(m.fmax(m.fmin(x, m.c(f.exp_hi)), m.c(f.expm1_lo)), true);
  // expm1 has the sign of x; copysign also gives expm1(-0) = -0.
  return m.keep_nan(x, m.copysign(m.overflow_edge(x, e), x));
}

llvm::Value* emit_log(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "log");
  auto& ir = m.builder();
  Value* r = m.log_finite(x, true);
  r = m.select(ir.CreateFCmpOEQ(x, m.inf()), x, r);
  r = m.select(ir.CreateFCmpOLT(x, m.c(0.0)), m.nan(), r);
  r = m.select(ir.CreateFCmpOEQ(x, m.c(0.0)), m.inf(true), r);
  return m.keep_nan(x, r);
}

llvm::Value* emit_log1p(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "log1p");
  auto& ir = m.builder();
  Value* r = m.log1p_finite(x);
  r = m.select(ir.CreateFCmpOEQ(x, m.inf()), x, r);
  r = m.select(ir.CreateFCmpOLT(x, m.c(-1.0)), m.nan(), r);
  r = m.select(ir.CreateFCmpOEQ(x, m.c(-1.0)), m.inf(true), r);
  return m.keep_nan(x, r);
}

llvm::Value* emit_tanh(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "tanh");
  // tanh|x| = e / (e + 2) with e = expm1(2|x|); saturated to 1 where that rounds to 1.
  return m.odd_saturating(x, m.format().tanh_sat, [&](Value*, Value* ac) {
    Value* e = m.expm1_clamped(m.add(ac, ac), false);
    return m.div(e, m.add(e, m.c(2.0)));
  });
}

llvm::Value* emit_sigmoid(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "sigmoid");
  // e = e^-|x|, s = 1/(1+e): sigmoid(x) = s for x >= 0, e*s = e^x/(1+e^x) for x < 0, which
  // stays accurate (no 1 - s cancellation) down to underflow.
  Value* e = m.exp_neg(m.fabs(x));
  Value* s = m.div(m.c(1.0), m.add(m.c(1.0), e));
  Value* r = m.select(m.builder().CreateFCmpOGE(x, m.c(0.0)), s, m.mul(e, s));
  return m.keep_nan(x, r);
}

llvm::Value* emit_softplus(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "softplus");
  // max(x, 0) + log1p(e^-|x|), never overflowing.
  Value* l = m.log1p_finite(m.exp_neg(m.fabs(x)));
  Value* r = m.add(m.fmax(x, m.c(0.0)), l);
  return m.keep_nan(x, r);
}

llvm::Value* emit_erf(llvm::IRBuilderBase& b, llvm::Value* x) {
  Math m(b, x, "erf");
  const Format& f = m.format();
  auto& ir = m.builder();
  // erf(a) = a P(a^2) below 1, 1 - e^(-a^2) G(a - c) above; 1 from sat on.
  return m.odd_saturating(x, f.erf_sat, [&](Value* a, Value* ac) {
    Value* z = m.mul(ac, ac);
    Value* small = m.mul(ac, m.poly(z, f.erf_p));
    Value* g = m.poly(m.sub(ac, m.c(f.erf_centre)), f.erf_g);
    Value* complement = m.mul(m.exp_clamped(ir.CreateFNeg(z)), g);  // erfc(a) for a >= 1
    return m.select(ir.CreateFCmpOLT(a, m.c(1.0)), small, m.sub(m.c(1.0), complement));
  });
}

}  // namespace cellfuse::llvm_codegen
