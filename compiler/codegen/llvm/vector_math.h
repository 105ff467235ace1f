#pragma once
// Vector transcendental functions emitted inline as LLVM IR: no call to libm, only straight-line
// arithmetic, integer bit tricks on the float encoding, compares and selects, and intrinsics
// that always lower to instructions (llvm.fmuladd, llvm.fabs, llvm.copysign). No llvm.fma (a
// libm call on targets without FMA), no llvm.rint/floor (libm calls before SSE4.1).
//
// Each emit_* takes `x` of type float or double, or a fixed vector of either (<16 x float>,
// <8 x double>, <3 x float>, ...), and returns a value of the same type computed in the same
// precision. The meaning matches compiler/ir/pointwise_math.h (the interpreter's scalar libm
// semantics), special values included:
//   * NaN in gives NaN out (the input NaN itself), for every function;
//   * exp/expm1 overflow to +inf exactly where the rounded result is +inf, and exp underflows
//     through correctly scaled subnormals to +0; exp(-inf) = 0, expm1(-inf) = -1;
//   * log(+-0) = -inf, log(x < 0) = NaN, log(+inf) = +inf, subnormal x handled;
//     log1p(-1) = -inf, log1p(x < -1) = NaN, log1p(+inf) = +inf;
//   * tanh saturates to exactly +-1, sigmoid to exactly 0 and 1, softplus(x) = x for large x
//     and 0 for very negative x; the sign of zero is kept by tanh, expm1 and log1p;
//   * erf saturates to exactly +-1 (|x| >= 3.92 in f32, 5.93 in f64: where erf rounds to 1),
//     erf(+-inf) = +-1, and keeps the sign of zero.
// Accuracy, measured over the whole input range by tests/cpp/test_llvm_vector_math.cpp: f32
// relative error <= 2e-6 (a few ulp in practice), f64 <= 1e-14 (where the true result is a
// normal number; near underflow the error is below the smallest normal number).
//
// The emitted code relies on IEEE semantics in round-to-nearest mode: the caller must not put
// fast-math flags on it (the functions clear the builder's fast-math flags while they emit and
// restore them afterwards), nor run it with flush-to-zero or another rounding mode.
namespace llvm {
class IRBuilderBase;
class Value;
}  // namespace llvm

namespace cellfuse::llvm_codegen {

llvm::Value* emit_exp(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_expm1(llvm::IRBuilderBase& b, llvm::Value* x);  // e^x - 1
llvm::Value* emit_log(llvm::IRBuilderBase& b, llvm::Value* x);    // natural logarithm
llvm::Value* emit_log1p(llvm::IRBuilderBase& b, llvm::Value* x);  // log(1 + x)
llvm::Value* emit_tanh(llvm::IRBuilderBase& b, llvm::Value* x);
llvm::Value* emit_sigmoid(llvm::IRBuilderBase& b, llvm::Value* x);   // 1 / (1 + e^-x)
llvm::Value* emit_softplus(llvm::IRBuilderBase& b, llvm::Value* x);  // log(1 + e^x)
llvm::Value* emit_erf(llvm::IRBuilderBase& b, llvm::Value* x);       // the error function

}  // namespace cellfuse::llvm_codegen
