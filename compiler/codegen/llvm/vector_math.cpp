#include "compiler/codegen/llvm/vector_math.h"

#include <bit>
#include <cstdint>
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

const Format kF32{
    32, 23, 127, 24,
    0x1.715476p+0,                   // log2(e)
    0x1.62e4p-1, 0x1.7f7d1cp-20,     // ln2 = hi + lo
    0x1.8p+23,                       // 1.5 * 2^23
    -104.0, 89.0, 0x1.62e42ep+6,     // exp range; exp_ovf = 88.7228317
    -20.0, 10.0,                     // expm1 -> -1, tanh -> 1
    0x1.6a09e6p+0, 0x1.fffffep+127, 0x1p-126,
    kExpm1F32, kLogF32,
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
  const Format& f = m.format();
  // tanh|x| = e / (e + 2) with e = expm1(2|x|); saturated to 1 where that rounds to 1.
  Value* a = m.fabs(x);
  Value* ac = m.fmin(a, m.c(f.tanh_sat));
  Value* e = m.expm1_clamped(m.add(ac, ac), false);
  Value* t = m.div(e, m.add(e, m.c(2.0)));
  t = m.select(m.builder().CreateFCmpOGE(a, m.c(f.tanh_sat)), m.c(1.0), t);
  return m.keep_nan(x, m.copysign(t, x));
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

}  // namespace cellfuse::llvm_codegen
