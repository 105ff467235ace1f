// The vector math library of the LLVM code generator (compiler/codegen/llvm/vector_math.h):
// every function, in f32 and f64, JIT-compiled into a loop over host-width vectors with a scalar
// tail, checked against a long double reference over the whole input range, and the optimized
// IR inspected for vector math and the absence of libm calls.
#include <gtest/gtest.h>

#include <llvm/IR/BasicBlock.h>
#include <llvm/IR/Constants.h>
#include <llvm/IR/DerivedTypes.h>
#include <llvm/IR/Function.h>
#include <llvm/IR/IRBuilder.h>
#include <llvm/IR/Instructions.h>
#include <llvm/IR/IntrinsicInst.h>
#include <llvm/IR/LLVMContext.h>
#include <llvm/IR/Metadata.h>
#include <llvm/IR/Module.h>
#include <llvm/IR/Verifier.h>
#include <llvm/Support/raw_ostream.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "compiler/codegen/llvm/host_target.h"
#include "compiler/codegen/llvm/vector_math.h"
#include "compiler/ir/error.h"
#include "compiler/ir/op.h"
#include "compiler/ir/pointwise_math.h"
#include "runtime/cpu/llvm_jit.h"

namespace {

namespace cg = cellfuse::llvm_codegen;
using Emit = llvm::Value* (*)(llvm::IRBuilderBase&, llvm::Value*);

// The sweeps are lighter where the test code itself runs unoptimized (Debug, sanitizers).
#ifdef NDEBUG
constexpr uint64_t kF32Stride = 127;       // every 127th bit pattern: 33.8 M floats per function
constexpr size_t kF64Count = 2'000'000;    // random doubles per function
#else
constexpr uint64_t kF32Stride = 127 * 9;   // 3.8 M floats per function
constexpr size_t kF64Count = 200'000;
#endif
constexpr uint64_t kVariantEvery = 32;  // the other widths (scalar, odd, half) see 1/32 of them

enum class Fn { exp, expm1, log, log1p, tanh, sigmoid, softplus, erf };
struct FnInfo {
  Fn fn;
  const char* name;
  Emit emit;
};
const FnInfo kFns[] = {
    {Fn::exp, "exp", cg::emit_exp},
    {Fn::expm1, "expm1", cg::emit_expm1},
    {Fn::log, "log", cg::emit_log},
    {Fn::log1p, "log1p", cg::emit_log1p},
    {Fn::tanh, "tanh", cg::emit_tanh},
    {Fn::sigmoid, "sigmoid", cg::emit_sigmoid},
    {Fn::softplus, "softplus", cg::emit_softplus},
    {Fn::erf, "erf", cg::emit_erf},
};

long double reference(Fn fn, long double x) {
  switch (fn) {
    case Fn::exp: return std::exp(x);
    case Fn::expm1: return std::expm1(x);
    case Fn::log: return std::log(x);
    case Fn::log1p: return std::log1p(x);
    case Fn::tanh: return std::tanh(x);
    case Fn::sigmoid: return 1.0L / (1.0L + std::exp(-x));
    case Fn::softplus: return std::fmax(x, 0.0L) + std::log1p(std::exp(-std::fabs(x)));
    case Fn::erf: return std::erf(x);
  }
  return 0;
}

// Where the rounded true result is known exactly without a reference call (saturation), the
// result must be exactly that value. Returns false where the reference is needed.
template <class T>
bool saturated(Fn fn, T x, T& expected) {
  constexpr bool f32 = std::is_same_v<T, float>;
  const T inf = std::numeric_limits<T>::infinity();
  const T exp_hi = f32 ? T(89) : T(710);     // e^x rounds to +inf above
  const T exp_lo = f32 ? T(-105) : T(-746);  // e^x rounds to +0 below
  switch (fn) {
    case Fn::exp:
      if (x > exp_hi) return expected = inf, true;
      if (x < exp_lo) return expected = 0, true;
      return false;
    case Fn::expm1:
      if (x > exp_hi) return expected = inf, true;
      if (x < (f32 ? T(-20) : T(-40))) return expected = -1, true;
      return false;
    case Fn::log:
      if (x < 0) return expected = std::numeric_limits<T>::quiet_NaN(), true;
      return false;
    case Fn::log1p:
      if (x < -1) return expected = std::numeric_limits<T>::quiet_NaN(), true;
      return false;
    case Fn::tanh:
      if (std::fabs(x) >= (f32 ? T(10) : T(20))) return expected = std::copysign(T(1), x), true;
      return false;
    case Fn::sigmoid:
      if (x >= (f32 ? T(20) : T(40))) return expected = 1, true;
      if (x < exp_lo) return expected = 0, true;
      return false;
    case Fn::softplus:
      if (x > (f32 ? T(100) : T(1000))) return expected = x, true;
      if (x < exp_lo) return expected = 0, true;
      return false;
    case Fn::erf:  // erf rounds to +-1 from 3.9192 (f32), 5.9216 (f64) on
      if (std::fabs(x) >= (f32 ? T(3.92) : T(5.93))) return expected = std::copysign(T(1), x), true;
      return false;
  }
  return false;
}

// ---- code generation ------------------------------------------------------------------------

llvm::MDNode* no_vectorize_loop(llvm::LLVMContext& ctx) {
  llvm::Metadata* vectorize[] = {
      llvm::MDString::get(ctx, "llvm.loop.vectorize.enable"),
      llvm::ConstantAsMetadata::get(llvm::ConstantInt::getFalse(ctx))};
  llvm::Metadata* interleave[] = {
      llvm::MDString::get(ctx, "llvm.loop.interleave.count"),
      llvm::ConstantAsMetadata::get(llvm::ConstantInt::get(llvm::Type::getInt32Ty(ctx), 1))};
  llvm::Metadata* ops[] = {nullptr, llvm::MDNode::get(ctx, vectorize),
                           llvm::MDNode::get(ctx, interleave)};
  llvm::MDNode* loop = llvm::MDNode::getDistinct(ctx, ops);
  loop->replaceOperandWith(0, loop);
  return loop;
}

// void NAME(const T* in, T* out, int64_t n): out[i] = fn(in[i]), `lanes` at a time as
// <lanes x T> vectors, then a scalar tail (kept scalar). lanes = 1: the scalar loop only.
void emit_kernel(llvm::Module& module, const std::string& name, Emit emit, bool f64,
                 unsigned lanes) {
  llvm::LLVMContext& ctx = module.getContext();
  llvm::IRBuilder<> b(ctx);
  llvm::Type* elem = f64 ? b.getDoubleTy() : b.getFloatTy();
  llvm::Type* i64 = b.getInt64Ty();
  llvm::Type* ptr = elem->getPointerTo();
  auto* type = llvm::FunctionType::get(b.getVoidTy(), {ptr, ptr, i64}, false);
  auto* fn = llvm::Function::Create(type, llvm::Function::ExternalLinkage, name, module);
  llvm::Value* in = fn->getArg(0);
  llvm::Value* out = fn->getArg(1);
  llvm::Value* n = fn->getArg(2);
  const llvm::Align align(f64 ? 8 : 4);

  auto* entry = llvm::BasicBlock::Create(ctx, "entry", fn);
  auto* thead = llvm::BasicBlock::Create(ctx, "thead", fn);
  auto* tbody = llvm::BasicBlock::Create(ctx, "tbody", fn);
  auto* done = llvm::BasicBlock::Create(ctx, "done", fn);
  b.SetInsertPoint(entry);
  llvm::Value* start = b.getInt64(0);  // of the scalar tail
  llvm::BasicBlock* tail_from = entry;
  if (lanes > 1) {
    auto* vhead = llvm::BasicBlock::Create(ctx, "vhead", fn, thead);
    auto* vbody = llvm::BasicBlock::Create(ctx, "vbody", fn, thead);
    llvm::Value* width = b.getInt64(lanes);
    llvm::Value* nvec = b.CreateSub(n, b.CreateSRem(n, width), "nvec");
    b.CreateBr(vhead);

    b.SetInsertPoint(vhead);
    llvm::PHINode* i = b.CreatePHI(i64, 2, "i");
    i->addIncoming(b.getInt64(0), entry);
    b.CreateCondBr(b.CreateICmpSLT(i, nvec), vbody, thead);

    b.SetInsertPoint(vbody);
    llvm::Type* vt = llvm::FixedVectorType::get(elem, lanes);
    llvm::Value* src = b.CreatePointerCast(b.CreateGEP(elem, in, i), vt->getPointerTo());
    llvm::Value* dst = b.CreatePointerCast(b.CreateGEP(elem, out, i), vt->getPointerTo());
    b.CreateAlignedStore(emit(b, b.CreateAlignedLoad(vt, src, align)), dst, align);
    i->addIncoming(b.CreateAdd(i, width), vbody);
    b.CreateBr(vhead);
    start = i;
    tail_from = vhead;
  } else {
    b.CreateBr(thead);
  }

  b.SetInsertPoint(thead);
  llvm::PHINode* j = b.CreatePHI(i64, 2, "j");
  j->addIncoming(start, tail_from);
  b.CreateCondBr(b.CreateICmpSLT(j, n), tbody, done);

  b.SetInsertPoint(tbody);
  llvm::Value* x = b.CreateAlignedLoad(elem, b.CreateGEP(elem, in, j), align);
  b.CreateAlignedStore(emit(b, x), b.CreateGEP(elem, out, j), align);
  j->addIncoming(b.CreateAdd(j, b.getInt64(1)), tbody);
  b.CreateBr(thead)->setMetadata(llvm::LLVMContext::MD_loop, no_vectorize_loop(ctx));

  b.SetInsertPoint(done);
  b.CreateRetVoid();
}

std::string kernel_name(const FnInfo& f, bool f64, unsigned lanes) {
  return std::string(f.name) + (f64 ? "_f64_x" : "_f32_x") + std::to_string(lanes);
}

template <class T>
using Kernel = void (*)(const T*, T*, int64_t);

// Compiles every function for both types in all the widths once, shared by the tests.
class Compiled {
 public:
  static Compiled& get() {
    static Compiled compiled;
    return compiled;
  }
  template <class T>
  Kernel<T> kernel(const FnInfo& f, unsigned lanes) {
    return reinterpret_cast<Kernel<T>>(
        jit_.lookup(kernel_name(f, std::is_same_v<T, double>, lanes)));
  }
  // The host's width first, then the scalar loop, an odd width and half the host's width.
  static std::vector<unsigned> widths(bool f64) {
    const auto host = static_cast<unsigned>(cg::host_target().lanes(f64 ? 8 : 4));
    std::vector<unsigned> w = {host, 1, 3};
    if (host / 2 > 3) w.push_back(host / 2);
    return w;
  }
  double compile_seconds = 0;

 private:
  Compiled() {
    auto start = std::chrono::steady_clock::now();
    auto ctx = std::make_unique<llvm::LLVMContext>();
    auto module = std::make_unique<llvm::Module>("vector_math_test", *ctx);
    for (bool f64 : {false, true})
      for (unsigned lanes : widths(f64))
        for (const FnInfo& f : kFns)
          emit_kernel(*module, kernel_name(f, f64, lanes), f.emit, f64, lanes);
    jit_.add_module(std::move(module), std::move(ctx));
    compile_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  cellfuse::LlvmJit jit_;
};

// ---- checking -------------------------------------------------------------------------------

template <class T>
std::string show(T v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*g (%a)", std::is_same_v<T, float> ? 9 : 17,
                static_cast<double>(v), static_cast<double>(v));
  return buf;
}

template <class T>
struct Stats {
  long double max_rel = 0;  // where the true result is a normal number
  T worst_x = 0;
  long double max_sub = 0;  // absolute error, in units of the smallest subnormal, below that
  uint64_t checked = 0, failures = 0;
  std::vector<std::string> messages;

  void fail(const char* fn, T x, T y, const std::string& why) {
    ++failures;
    if (messages.size() < 8)
      messages.push_back(std::string(fn) + "(" + show(x) + ") = " + show(y) + ": " + why);
  }
  void merge(const Stats& o) {
    if (o.max_rel > max_rel) max_rel = o.max_rel, worst_x = o.worst_x;
    max_sub = std::max(max_sub, o.max_sub);
    checked += o.checked;
    failures += o.failures;
    for (const auto& m : o.messages)
      if (messages.size() < 8) messages.push_back(m);
  }
};

template <class T>
void check(const FnInfo& f, T x, T y, Stats<T>& st) {
  using L = std::numeric_limits<T>;
  constexpr long double bound = std::is_same_v<T, float> ? 2e-6L : 1e-14L;
  ++st.checked;
  if (std::isnan(x)) {
    if (!std::isnan(y)) st.fail(f.name, x, y, "NaN in, not NaN out");
    return;
  }
  T expected;
  if (saturated(f.fn, x, expected)) {
    const bool ok = std::isnan(expected)
                        ? std::isnan(y)
                        : y == expected && std::signbit(y) == std::signbit(expected);
    if (!ok) st.fail(f.name, x, y, "expected exactly " + show(expected));
    return;
  }
  const long double ref = reference(f.fn, x);
  if (std::isnan(ref)) {
    if (!std::isnan(y)) st.fail(f.name, x, y, "expected NaN");
    return;
  }
  const T rounded = static_cast<T>(ref);
  if (std::isinf(rounded) || ref == 0) {
    if (y != rounded || std::signbit(y) != std::signbit(rounded))
      st.fail(f.name, x, y, "expected exactly " + show(rounded));
    return;
  }
  if (!std::isfinite(y)) return st.fail(f.name, x, y, "expected " + show(rounded));
  const long double err = std::fabs(static_cast<long double>(y) - ref);
  if (std::fabs(ref) < L::min()) {  // subnormal true result: absolute error
    st.max_sub = std::max(st.max_sub, err / L::denorm_min());
    if (err > L::min()) st.fail(f.name, x, y, "expected " + show(rounded));
    return;
  }
  const long double magnitude = std::fabs(ref);
  if (err <= st.max_rel * magnitude) return;  // the common case, without a division
  const long double rel = err / magnitude;
  if (rel > st.max_rel) st.max_rel = rel, st.worst_x = x;
  if (rel > bound) st.fail(f.name, x, y, "expected " + show(rounded) + ", relative error " +
                                             std::to_string(static_cast<double>(rel)));
}

template <class T>
void check_all(const FnInfo& f, Kernel<T> kernel, const std::vector<T>& in, std::vector<T>& out,
               Stats<T>& st) {
  out.assign(in.size(), T(0));
  kernel(in.data(), out.data(), static_cast<int64_t>(in.size()));
  // The long double reference is the slow part: split it over the cores.
  const size_t parts = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 4);
  std::vector<Stats<T>> part_stats(parts);
  std::vector<std::thread> threads;
  for (size_t p = 0; p < parts; ++p)
    threads.emplace_back([&, p] {
      const size_t begin = p * in.size() / parts, end = (p + 1) * in.size() / parts;
      Stats<T>& mine = part_stats[p];
      for (size_t k = begin; k < end; ++k) check(f, in[k], out[k], mine);
    });
  for (auto& t : threads) t.join();
  for (const auto& ps : part_stats) st.merge(ps);
}

// Values that every sweep includes: specials and 1-ulp neighbourhoods of the tricky points.
template <class T>
std::vector<T> special_values() {
  using L = std::numeric_limits<T>;
  constexpr bool f32 = std::is_same_v<T, float>;
  std::vector<T> v = {0,          L::infinity(), L::quiet_NaN(), L::signaling_NaN(),
                      L::min(),   L::denorm_min(), L::max(),     L::epsilon(),
                      T(1e-40),   T(3e-39),       T(1e-310),    T(0.5),
                      T(1),       T(2),           T(10),        T(88.7),
                      T(103),     T(1e30),        T(1e-30)};
  const long double ln2 = std::log(2.0L);
  // Points where the approximations switch: reduction boundaries (odd multiples of ln2/2),
  // overflow and underflow edges, the tanh/sigmoid/expm1 saturation points, log's sqrt(2) fold.
  std::vector<long double> centres = {0,
                                      ln2 / 2,
                                      ln2,
                                      3 * ln2 / 2,
                                      ln2 / 4,  // tanh: 2|x| = ln2/2
                                      1,
                                      std::sqrt(2.0L),
                                      std::sqrt(0.5L),
                                      std::sqrt(2.0L) - 1,
                                      std::sqrt(0.5L) - 1,
                                      f32 ? 88.72283172607422L : 709.782712893384L,
                                      f32 ? 88.7228394L : 709.7827128933840L,
                                      f32 ? 103.972077L : 745.1332191019412L,
                                      f32 ? 103.278929L : 744.4400719213812L,
                                      f32 ? 87.3365448L : 708.3964185322641L,
                                      f32 ? 9.01091290L : 19.06154746539849L,
                                      f32 ? 10.0L : 20.0L,
                                      f32 ? 20.0L : 40.0L,
                                      f32 ? 17.3286795L : 37.42994775023705L,
                                      f32 ? 26 * ln2 : 55 * ln2,  // expm1's large-n switch
                                      f32 ? 100 : 1000,
                                      f32 ? 104.0L : 746.0L,
                                      f32 ? 105.0L : 747.0L,
                                      // erf: where it starts to round to 1 and saturates
                                      f32 ? 3.91920584L : 5.92158719579451L,
                                      f32 ? 3.92L : 5.93L};
  for (long double c : centres) {
    T x = static_cast<T>(c);
    T lo = x, hi = x;
    for (int k = 0; k < 300; ++k) {
      v.push_back(lo);
      v.push_back(hi);
      lo = std::nextafter(lo, -L::infinity());
      hi = std::nextafter(hi, L::infinity());
    }
  }
  using Bits = std::conditional_t<f32, uint32_t, uint64_t>;
  for (Bits k = 0; k < 2000; ++k) v.push_back(std::bit_cast<T>(k));  // the smallest subnormals
  std::vector<T> both;
  for (T x : v) {
    both.push_back(x);
    both.push_back(-x);
  }
  return both;
}

// Each function's exact special results, beyond what the sweep checks against the reference.
template <class T>
void check_exact_specials(const FnInfo& f, Kernel<T> kernel) {
  using L = std::numeric_limits<T>;
  const T inf = L::infinity(), nan = L::quiet_NaN();
  struct Case {
    T x, y;
  };
  std::vector<Case> cases;
  const T zero = 0, minus_zero = T(-0.0), big = L::max(), tiny = L::denorm_min();
  switch (f.fn) {
    case Fn::exp:
      cases = {{inf, inf}, {-inf, 0}, {zero, 1}, {minus_zero, 1}, {big, inf}, {-big, 0}};
      break;
    case Fn::expm1:
      cases = {{inf, inf},         {-inf, -1}, {zero, zero}, {minus_zero, minus_zero},
               {tiny, tiny},       {big, inf}, {-big, -1}};
      break;
    case Fn::log:
      cases = {{inf, inf}, {-inf, nan}, {zero, -inf}, {minus_zero, -inf},
               {1, 0},     {-1, nan},   {-big, nan},  {-tiny, nan}};
      break;
    case Fn::log1p:
      cases = {{inf, inf},   {-inf, nan}, {zero, zero}, {minus_zero, minus_zero},
               {tiny, tiny}, {-1, -inf},  {-2, nan},    {-big, nan}};
      break;
    case Fn::tanh:
      cases = {{inf, 1},     {-inf, -1},    {zero, zero}, {minus_zero, minus_zero},
               {tiny, tiny}, {-tiny, -tiny}, {big, 1},    {-big, -1}};
      break;
    case Fn::sigmoid:
      cases = {{inf, 1}, {-inf, 0}, {zero, T(0.5)}, {minus_zero, T(0.5)}, {big, 1}, {-big, 0}};
      break;
    case Fn::softplus:
      cases = {{inf, inf}, {-inf, 0}, {big, big}, {-big, 0}};
      break;
    case Fn::erf:
      cases = {{inf, 1},     {-inf, -1},     {zero, zero}, {minus_zero, minus_zero},
               {tiny, tiny}, {-tiny, -tiny}, {big, 1},     {-big, -1}};
      break;
  }
  cases.push_back({nan, nan});
  cases.push_back({-nan, nan});
  // Vector lanes and the scalar tail: pad to several vectors plus an odd tail, same value.
  for (const Case& c : cases) {
    std::vector<T> in(37, c.x), out(37, T(7));
    kernel(in.data(), out.data(), 37);
    for (size_t k = 0; k < in.size(); ++k) {
      const bool ok = std::isnan(c.y) ? std::isnan(out[k])
                                      : out[k] == c.y && std::signbit(out[k]) == std::signbit(c.y);
      EXPECT_TRUE(ok) << f.name << "(" << show(c.x) << ") = " << show(out[k]) << ", expected "
                      << show(c.y) << " (element " << k << ")";
    }
  }
}

template <class T>
void report(const char* what, const FnInfo& f, const Stats<T>& st) {
  constexpr bool f32 = std::is_same_v<T, float>;
  constexpr long double bound = f32 ? 2e-6L : 1e-14L;
  const long double ulp = std::numeric_limits<T>::epsilon();
  std::printf("  %-8s %s %-7s max rel error %.3Le (%.2Lf ulp of 1) at x = %s; subnormal abs error "
              "<= %.2Lf denorm_min; %llu values\n",
              f.name, f32 ? "f32" : "f64", what, st.max_rel, st.max_rel / ulp,
              show(st.worst_x).c_str(), st.max_sub, static_cast<unsigned long long>(st.checked));
  std::string examples;
  for (const auto& m : st.messages) examples += "\n  " + m;
  EXPECT_EQ(st.failures, 0u) << f.name << " " << what << ": " << st.failures << " failures, e.g."
                             << examples;
  EXPECT_LE(st.max_rel, bound);
  // Stricter than the FLT_MIN / DBL_MIN allowance: subnormal results are scaled in one rounding.
  EXPECT_LE(st.max_sub, 1.0L) << f.name << " " << what;
}

// ---- the tests ------------------------------------------------------------------------------

TEST(LlvmVectorMath, F32WholeRangeSweep) {
  Compiled& jit = Compiled::get();
  std::printf("  compile (all kernels, -O3): %.2f s; host vector: %d bits\n", jit.compile_seconds,
              cg::host_target().vector_bits);
  const std::vector<unsigned> widths = Compiled::widths(false);
  const std::vector<float> specials = special_values<float>();
  for (const FnInfo& f : kFns) {
    auto start = std::chrono::steady_clock::now();
    Stats<float> main_stats, variant_stats;
    std::vector<float> in, out, sub;
    in.reserve(1 << 20);
    auto flush = [&] {
      check_all(f, jit.kernel<float>(f, widths[0]), in, out, main_stats);
      sub.clear();
      for (size_t k = 0; k < in.size(); k += kVariantEvery) sub.push_back(in[k]);
      for (size_t w = 1; w < widths.size(); ++w)
        check_all(f, jit.kernel<float>(f, widths[w]), sub, out, variant_stats);
      in.clear();
    };
    in = specials;
    flush();
    for (uint64_t bits = 0; bits <= 0xffffffffu; bits += kF32Stride) {
      in.push_back(std::bit_cast<float>(static_cast<uint32_t>(bits)));
      if (in.size() == (1u << 20)) flush();
    }
    flush();
    report("sweep", f, main_stats);
    report("others", f, variant_stats);
    check_exact_specials(f, jit.kernel<float>(f, widths[0]));
    check_exact_specials(f, jit.kernel<float>(f, 1));
    std::printf("           %.2f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

TEST(LlvmVectorMath, F64RandomSweep) {
  Compiled& jit = Compiled::get();
  const std::vector<unsigned> widths = Compiled::widths(true);
  const std::vector<double> specials = special_values<double>();
  for (const FnInfo& f : kFns) {
    auto start = std::chrono::steady_clock::now();
    std::mt19937_64 rng(12345);
    std::uniform_real_distribution<double> mantissa(1.0, 2.0);
    std::uniform_int_distribution<int> full_exp(-1074, 1023), mid_exp(-40, 11);
    std::uniform_real_distribution<double> linear(-760.0, 760.0);
    std::vector<double> in = specials, out, sub;
    while (in.size() < kF64Count) {
      double x;
      switch (in.size() % 3) {
        case 0: x = std::ldexp(mantissa(rng), full_exp(rng)); break;  // log-uniform, all of it
        case 1: x = std::ldexp(mantissa(rng), mid_exp(rng)); break;   // log-uniform, 2^-40..2^12
        default: x = linear(rng); break;                               // where exp is finite
      }
      in.push_back(rng() & 1 ? -x : x);
    }
    Stats<double> main_stats, variant_stats;
    check_all(f, jit.kernel<double>(f, widths[0]), in, out, main_stats);
    for (size_t k = 0; k < in.size(); k += kVariantEvery) sub.push_back(in[k]);
    for (size_t w = 1; w < widths.size(); ++w)
      check_all(f, jit.kernel<double>(f, widths[w]), sub, out, variant_stats);
    report("random", f, main_stats);
    report("others", f, variant_stats);
    check_exact_specials(f, jit.kernel<double>(f, widths[0]));
    check_exact_specials(f, jit.kernel<double>(f, 1));
    std::printf("           %.2f s\n",
                std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
}

// erf's curved part, |x| < 6, is a sliver of the log-uniform sweep above: here densely, in both
// types (every argument of the f64 sweep is also rounded to float).
TEST(LlvmVectorMath, ErfDenseWhereItIsNotSaturated) {
  Compiled& jit = Compiled::get();
  const FnInfo& f = *std::find_if(std::begin(kFns), std::end(kFns),
                                  [](const FnInfo& i) { return i.fn == Fn::erf; });
  std::mt19937_64 rng(2024);
  std::uniform_real_distribution<double> near(-6.5, 6.5);
  std::vector<double> in64;
  for (size_t k = 0; k < kF64Count; ++k) in64.push_back(near(rng));
  std::vector<float> in32(in64.begin(), in64.end());
  std::vector<double> out64;
  std::vector<float> out32;
  Stats<double> s64;
  Stats<float> s32;
  check_all(f, jit.kernel<double>(f, Compiled::widths(true)[0]), in64, out64, s64);
  check_all(f, jit.kernel<float>(f, Compiled::widths(false)[0]), in32, out32, s32);
  report("dense", f, s64);
  report("dense", f, s32);
}

// The interpreter's scalar meaning (compiler/ir/pointwise_math.h) and the JIT agree: the same
// NaN, inf and zero results, and values within the two sides' error bounds (sigmoid is the one
// expected difference: the interpreter's 1/(1+exp(-x)) flushes to 0 where exp(-x) overflows,
// the vector version keeps the subnormal result; both are within FLT_MIN / DBL_MIN of the truth).
template <class T>
void check_against_interpreter() {
  using L = std::numeric_limits<T>;
  constexpr long double bound = 2 * (std::is_same_v<T, float> ? 2e-6L : 1e-14L);
  const struct {
    Fn fn;
    cellfuse::OpKind op;
  } ops[] = {{Fn::exp, cellfuse::OpKind::exp},         {Fn::log, cellfuse::OpKind::log},
             {Fn::tanh, cellfuse::OpKind::tanh},       {Fn::sigmoid, cellfuse::OpKind::sigmoid},
             {Fn::softplus, cellfuse::OpKind::softplus}, {Fn::erf, cellfuse::OpKind::erf}};
  std::vector<T> in = special_values<T>();
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> wide(-800.0, 800.0), narrow(-12.0, 12.0);
  for (int k = 0; k < 20000; ++k) {
    in.push_back(static_cast<T>(wide(rng)));
    in.push_back(static_cast<T>(narrow(rng)));
  }
  const unsigned lanes = static_cast<unsigned>(cg::host_target().lanes(sizeof(T)));
  for (const auto& [fn, op] : ops) {
    const FnInfo& f = *std::find_if(std::begin(kFns), std::end(kFns),
                                    [fn = fn](const FnInfo& i) { return i.fn == fn; });
    std::vector<T> out(in.size());
    Compiled::get().kernel<T>(f, lanes)(in.data(), out.data(), static_cast<int64_t>(in.size()));
    int mismatches = 0;
    for (size_t k = 0; k < in.size(); ++k) {
      const T want = cellfuse::pointwise_value<T>(op, in[k]), got = out[k];
      bool ok;
      if (std::isnan(want) || std::isnan(got)) {
        ok = std::isnan(want) && std::isnan(got);
      } else if (std::isinf(want) || std::isinf(got) || want == 0 || got == 0) {
        ok = want == got || std::fabs(static_cast<long double>(want) - got) <= L::min();
      } else {
        const long double err = std::fabs(static_cast<long double>(want) - got);
        ok = err <= bound * std::fabs(static_cast<long double>(want)) ||
             (std::fabs(static_cast<long double>(want)) < L::min() && err <= L::min());
      }
      if (!ok && ++mismatches <= 5)
        ADD_FAILURE() << f.name << "(" << show(in[k]) << "): jit " << show(got)
                      << ", interpreter " << show(want);
    }
    EXPECT_EQ(mismatches, 0) << f.name;
  }
}

TEST(LlvmVectorMath, MatchesTheInterpreterSemantics) {
  check_against_interpreter<float>();
  check_against_interpreter<double>();
}

// A function of one host-width vector for each math function, as the code generator would emit.
std::unique_ptr<llvm::Module> vector_functions(llvm::LLVMContext& ctx, bool f64,
                                               std::vector<std::string>& names) {
  auto module = std::make_unique<llvm::Module>("vector_math_ir", ctx);
  llvm::IRBuilder<> b(ctx);
  llvm::Type* elem = f64 ? b.getDoubleTy() : b.getFloatTy();
  auto* vt = llvm::FixedVectorType::get(
      elem, static_cast<unsigned>(cg::host_target().lanes(f64 ? 8 : 4)));
  for (const FnInfo& f : kFns) {
    const std::string name = std::string("v_") + f.name + (f64 ? "_f64" : "_f32");
    auto* fn = llvm::Function::Create(llvm::FunctionType::get(vt, {vt}, false),
                                      llvm::Function::ExternalLinkage, name, *module);
    b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
    b.CreateRet(f.emit(b, fn->getArg(0)));
    names.push_back(fn->getName().str());
  }
  return module;
}

std::string print(const llvm::Module& module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module.print(os, nullptr);
  return os.str();
}

TEST(LlvmVectorMath, GeneratedIrIsVectorMathWithoutLibmCalls) {
  for (bool f64 : {false, true}) {
    const int lanes = cg::host_target().lanes(f64 ? 8 : 4);
    const std::string vec = "<" + std::to_string(lanes) + " x " + (f64 ? "double" : "float") + ">";
    llvm::LLVMContext ctx;
    std::vector<std::string> names;
    auto module = vector_functions(ctx, f64, names);
    // The loop kernels of the sweep tests too, where the optimizer sees a loop.
    for (const FnInfo& f : kFns)
      emit_kernel(*module, kernel_name(f, f64, static_cast<unsigned>(lanes)), f.emit, f64,
                  static_cast<unsigned>(lanes));
    std::string problems;
    llvm::raw_string_ostream os(problems);
    ASSERT_FALSE(llvm::verifyModule(*module, &os)) << os.str();
    cellfuse::optimize_module(*module);
    const std::string ir = print(*module);

    for (const std::string& name : names) {
      const llvm::Function* fn = module->getFunction(name);
      ASSERT_NE(fn, nullptr) << name;
      // Straight-line vector code: one block, the vector type throughout.
      EXPECT_EQ(fn->size(), 1u) << name;
      EXPECT_EQ(fn->getReturnType()->isVectorTy(), true) << name;
    }
    EXPECT_NE(ir.find(vec), std::string::npos) << vec << " not in the optimized IR";
    // No calls at all except LLVM intrinsics that lower to instructions.
    int intrinsic_calls = 0;
    for (const llvm::Function& fn : *module) {
      for (const llvm::BasicBlock& block : fn)
        for (const llvm::Instruction& inst : block)
          if (const auto* call = llvm::dyn_cast<llvm::CallBase>(&inst)) {
            const llvm::Function* callee = call->getCalledFunction();
            ASSERT_NE(callee, nullptr) << "indirect call in " << fn.getName().str();
            EXPECT_TRUE(callee->isIntrinsic())
                << fn.getName().str() << " calls " << callee->getName().str();
            ++intrinsic_calls;
          }
      if (fn.isDeclaration()) {
        EXPECT_TRUE(fn.isIntrinsic()) << "declares " << fn.getName().str();
      }
    }
    EXPECT_GT(intrinsic_calls, 0);  // fmuladd & co. are there (the check above is not vacuous)
    for (const char* libm : {"exp", "expf", "expm1", "expm1f", "log", "logf", "log1p", "log1pf",
                             "tanh", "tanhf", "erf", "erff", "exp2", "exp2f", "pow", "powf",
                             "fma", "fmaf", "rint", "rintf", "floor", "floorf", "ldexp", "ldexpf"}) {
      EXPECT_EQ(ir.find(std::string("@") + libm + "("), std::string::npos) << "calls " << libm;
      EXPECT_EQ(ir.find(std::string("@llvm.") + libm + "."), std::string::npos)
          << "uses llvm." << libm << " (may lower to a libm call)";
    }
    // The vector bodies really compute on vectors: fmuladd on the vector type is there.
    const std::string fmuladd = "@llvm.fmuladd.v" + std::to_string(lanes) + (f64 ? "f64" : "f32");
    EXPECT_NE(ir.find(fmuladd), std::string::npos) << fmuladd << " not in the optimized IR";
  }
}

TEST(LlvmVectorMath, RejectsNonFloatTypes) {
  llvm::LLVMContext ctx;
  llvm::Module module("m", ctx);
  llvm::IRBuilder<> b(ctx);
  auto* fn = llvm::Function::Create(llvm::FunctionType::get(b.getVoidTy(), {b.getInt32Ty()}, false),
                                    llvm::Function::ExternalLinkage, "f", module);
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
  EXPECT_THROW(cg::emit_exp(b, fn->getArg(0)), cellfuse::InternalError);
  EXPECT_THROW(cg::emit_tanh(b, llvm::UndefValue::get(b.getHalfTy())), cellfuse::InternalError);
}

TEST(LlvmVectorMath, KeepsTheCallersFastMathFlags) {
  llvm::LLVMContext ctx;
  llvm::Module module("m", ctx);
  llvm::IRBuilder<> b(ctx);
  auto* type = llvm::FunctionType::get(b.getFloatTy(), {b.getFloatTy()}, false);
  auto* fn = llvm::Function::Create(type, llvm::Function::ExternalLinkage, "f", module);
  b.SetInsertPoint(llvm::BasicBlock::Create(ctx, "entry", fn));
  llvm::FastMathFlags fast;
  fast.setFast();
  b.setFastMathFlags(fast);
  llvm::Value* y = cg::emit_tanh(b, fn->getArg(0));
  // Nothing emitted inside carries fast-math flags (they would break the NaN and rounding tricks)
  for (const llvm::Instruction& inst : fn->getEntryBlock())
    if (llvm::isa<llvm::FPMathOperator>(&inst)) {
      EXPECT_FALSE(inst.getFastMathFlags().any()) << inst.getOpcodeName();
    }
  // and the caller's flags are back afterwards.
  EXPECT_TRUE(b.getFastMathFlags().isFast());
  b.CreateRet(y);
}

}  // namespace
