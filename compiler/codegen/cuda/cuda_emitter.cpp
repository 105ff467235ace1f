#include "compiler/codegen/cuda/cuda_emitter.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <functional>
#include <set>

#include "compiler/codegen/cuda/cuda_text.h"
#include "compiler/ir/composite_ops.h"
#include "compiler/ir/error.h"

namespace cellfuse::cuda_codegen {
namespace {

// Rows one block covers at most: enough to fill a block when rows are narrow.
constexpr std::int64_t kMaxRowsPerBlock = 32;

std::int64_t next_pow2(std::int64_t v) {
  std::int64_t p = 1;
  while (p < v) p *= 2;
  return p;
}

struct Names {
  const char* type;
  const char* fma;
};

Names names_of(DType dtype) {
  if (dtype == DType::f32) return {"float", "fmaf"};
  return {"double", "fma"};
}

enum class Place : std::uint8_t { Param, Shared, Global, Unused };

class Emitter : SourceText {
 public:
  Emitter(const kernel::Kernel& k, const EmitOptions& options)
      : k_(k), opt_(options), n_(names_of(k.dtype)), place_(k.buffers.size(), Place::Param) {}

  CudaKernel run() {
    out_.name = k_.name;
    out_.dtype = k_.dtype;
    shape_launch();
    place_buffers();
    emit_signature();
    for (std::size_t s = 0; s < k_.body.size(); ++s) {
      if (s > 0 && needs_barrier(k_.body[s])) {
        line("__syncthreads();");
        ++out_.barriers;
        pending_reads_.clear();
        pending_writes_.clear();
      }
      const kernel::Statement& st = k_.body[s];
      if (st.kind == kernel::Statement::Kind::MatVec) {
        emit_matvec(s, st.matvec);
      } else if (st.loop.reductions.empty()) {
        emit_loop(s, st.loop);
      } else {
        emit_reduction_loop(s, st.loop);
      }
      note_accesses(st);
    }
    indent_ = 0;
    line("}");
    out_.source = std::move(src_);
    return std::move(out_);
  }

 private:
  // ---- launch shape ------------------------------------------------------------------------

  // Threads cover the widest statement of one row; narrow kernels take several rows a block.
  void shape_launch() {
    std::int64_t width = 1;
    for (const auto& st : k_.body)
      width = std::max(width, st.kind == kernel::Statement::Kind::MatVec ? st.matvec.n : st.loop.extent);
    const std::int64_t max_threads = opt_.max_threads;
    if (max_threads < 32 || max_threads > 1024 || std::popcount(static_cast<std::uint64_t>(max_threads)) != 1)
      throw InternalError("CUDA emitter: max_threads must be a power of two in [32, 1024]");
    const std::int64_t per_row = std::min(next_pow2(width), max_threads);
    std::int64_t rows = std::min(kMaxRowsPerBlock, max_threads / per_row);
    if (k_.rows_hint > 0) rows = std::min(rows, next_pow2(k_.rows_hint));
    rows = std::max<std::int64_t>(rows, 1);
    out_.rows_per_block = rows;
    out_.threads = static_cast<int>(std::max<std::int64_t>(32, rows * per_row));
    for (const auto& st : k_.body)
      if (st.kind == kernel::Statement::Kind::Loop)
        reductions_ = std::max(reductions_, static_cast<int>(st.loop.reductions.size()));
  }

  // Scratch buffers go to shared memory in order while they fit, the rest to global scratch.
  void place_buffers() {
    std::set<int> used;
    for (const auto& st : k_.body) accesses(st, used, used);
    const auto elem = static_cast<std::int64_t>(dtype_size(k_.dtype));
    std::int64_t shared = static_cast<std::int64_t>(reductions_) * out_.threads * elem;
    scratch_offset_.assign(k_.buffers.size(), 0);
    for (std::size_t b = 0; b < k_.buffers.size(); ++b) {
      const kernel::Buffer& buf = k_.buffers[b];
      if (buf.role != kernel::BufferRole::Scratch) {
        out_.pointer_buffers.push_back(static_cast<int>(b));
        continue;
      }
      if (!used.count(static_cast<int>(b))) {
        place_[b] = Place::Unused;
        continue;
      }
      const std::int64_t elements = (buf.batched ? out_.rows_per_block : 1) * buf.cols;
      if (shared + elements * elem <= opt_.shared_limit) {
        place_[b] = Place::Shared;
        shared += elements * elem;
      } else {
        place_[b] = Place::Global;
        scratch_offset_[b] = out_.global_scratch_per_block;
        out_.global_scratch_per_block += elements;
        out_.notes.push_back("b" + str(static_cast<std::int64_t>(b)) + " " + buf.name +
                             ": global scratch (" + str(elements * elem) +
                             " bytes a block do not fit the shared memory left)");
      }
    }
    out_.shared_bytes = shared;
  }

  // ---- text --------------------------------------------------------------------------------

  std::string lit(double v) const { return cuda_literal(v, k_.dtype); }

  static std::string role_text(const kernel::Buffer& b) {
    switch (b.role) {
      case kernel::BufferRole::Input: return "in";
      case kernel::BufferRole::Param: return "param";
      case kernel::BufferRole::Output: return "out";
      case kernel::BufferRole::Scratch: return "scratch";
    }
    return "?";
  }

  std::string buffer_comment(std::size_t b) const {
    const kernel::Buffer& buf = k_.buffers[b];
    std::string text = "b" + str(static_cast<std::int64_t>(b)) + ": " + role_text(buf) + " " + buf.name + " [" +
                       (buf.batched ? std::string("rows") : str(buf.rows)) + "," + str(buf.cols) + "]";
    if (buf.transposed) text += " transposed (K-major)";
    return text;
  }

  void emit_signature() {
    const std::string T = n_.type;
    line("// kernel " + k_.name + ": " + str(out_.threads) + " threads a block, " + str(out_.rows_per_block) +
         (out_.rows_per_block == 1 ? " row" : " rows") + " a block");
    for (std::size_t b = 0; b < k_.buffers.size(); ++b) {
      std::string where;
      switch (place_[b]) {
        case Place::Param: where = ""; break;
        case Place::Shared: where = " (shared memory)"; break;
        case Place::Global: where = " (global scratch)"; break;
        case Place::Unused: where = " (unused)"; break;
      }
      line("//   " + buffer_comment(b) + where);
    }
    line("extern \"C\" __global__ void __launch_bounds__(" + str(out_.threads) + ")");
    std::string params;
    for (int b : out_.pointer_buffers) {
      const bool writes = k_.buffers[b].role == kernel::BufferRole::Output;
      params += (writes ? T + "* " : "const " + T + "* ") + "b" + str(b) + ", ";
    }
    line(k_.name + "(" + params + "long long rows, " + T + "* cf_scratch) {");
    indent_ = 1;
    line("const long long row0 = static_cast<long long>(blockIdx.x) * " + str(out_.rows_per_block) + ";");
    bool any_global = false;
    for (std::size_t b = 0; b < k_.buffers.size(); ++b) {
      const std::int64_t elements = (k_.buffers[b].batched ? out_.rows_per_block : 1) * k_.buffers[b].cols;
      if (place_[b] == Place::Shared) {
        line("__shared__ " + T + " b" + str(static_cast<std::int64_t>(b)) + "[" + str(elements) + "];");
      } else if (place_[b] == Place::Global) {
        any_global = true;
        line(T + "* const b" + str(static_cast<std::int64_t>(b)) + " = cf_scratch + static_cast<long long>(blockIdx.x) * " +
             str(out_.global_scratch_per_block) + " + " + str(scratch_offset_[b]) + ";");
      }
    }
    if (!any_global) line("(void)cf_scratch;");
    if (reductions_ > 0)
      line("__shared__ " + T + " cf_red[" + str(static_cast<std::int64_t>(reductions_) * out_.threads) + "];");
  }

  // Element (row, col) of buffer b; `col` is an expression. Batched buffers in global memory
  // are indexed by the batch row, scratch buffers by the row within the block, unbatched
  // buffers by the column alone.
  std::string at(int b, const std::string& col) const {
    const kernel::Buffer& buf = k_.buffers[static_cast<std::size_t>(b)];
    const std::string name = "b" + str(b);
    if (!buf.batched) return name + "[" + col + "]";
    std::string row;
    if (buf.role == kernel::BufferRole::Scratch) {
      if (out_.rows_per_block == 1) return name + "[" + col + "]";
      row = "lr";
    } else {
      row = out_.rows_per_block == 1 ? "row0" : "row";
    }
    std::string base = buf.cols == 1 ? row : row + " * " + str(buf.cols);
    if (col == "0") return name + "[" + base + "]";
    return name + "[" + base + " + " + col + "]";
  }

  // ---- barriers ----------------------------------------------------------------------------

  void accesses(const kernel::Statement& st, std::set<int>& reads, std::set<int>& writes) const {
    if (st.kind == kernel::Statement::Kind::MatVec) {
      reads.insert({st.matvec.x, st.matvec.weight});
      if (st.matvec.bias >= 0) reads.insert(st.matvec.bias);
      writes.insert(st.matvec.out);
      return;
    }
    for (const auto& in : st.loop.insts)
      if (in.kind == kernel::Inst::Kind::Load) reads.insert(in.buffer);
    for (const auto& s : st.loop.stores) writes.insert(s.buffer);
    for (const auto& r : st.loop.reductions) writes.insert(r.buffer);
  }

  // A statement must wait for the block when it reads what another thread may have written
  // since the last barrier, or writes what another thread may still read or write.
  bool needs_barrier(const kernel::Statement& st) const {
    std::set<int> reads, writes;
    accesses(st, reads, writes);
    for (int b : reads)
      if (pending_writes_.count(b)) return true;
    for (int b : writes)
      if (pending_writes_.count(b) || pending_reads_.count(b)) return true;
    return false;
  }

  void note_accesses(const kernel::Statement& st) {
    if (st.kind == kernel::Statement::Kind::Loop && !st.loop.reductions.empty()) {
      // A reduction loop ends with barriers of its own: only the sums, written after the last
      // one, are still pending.
      pending_reads_.clear();
      pending_writes_.clear();
      for (const auto& r : st.loop.reductions) pending_writes_.insert(r.buffer);
      return;
    }
    accesses(st, pending_reads_, pending_writes_);
  }

  // ---- statements --------------------------------------------------------------------------

  // The instructions and stores of one element at column j; returns each instruction's name.
  std::vector<std::string> emit_body(const kernel::Loop& loop) {
    auto at_column = [this](int b, const std::string& col) { return at(b, col); };
    return emit_element([this](const std::string& text) { line(text); }, loop, k_.dtype, {at_column, at_column});
  }

  std::string describe_stores(const kernel::Loop& loop) const {
    std::string text;
    for (const auto& s : loop.stores) text += " b" + str(s.buffer) + "[" + column(s.offset, "j") + "]";
    for (const auto& r : loop.reductions) text += " sum->b" + str(r.buffer) + "[" + str(r.column) + "]";
    return text;
  }

  // Elements (row, j) spread over the block's threads; with one row a block, threads over j.
  // `body` emits one element with `lr`/`row`/`j` (or the named column variable) defined.
  void for_elements(std::int64_t extent, const std::string& var, const std::function<void()>& body) {
    const std::string threads = str(out_.threads);
    if (out_.rows_per_block == 1) {
      line("for (int " + var + " = threadIdx.x; " + var + " < " + str(extent) + "; " + var + " += " + threads + ") {");
      ++indent_;
    } else {
      line("for (int e = threadIdx.x; e < " + str(out_.rows_per_block * extent) + "; e += " + threads + ") {");
      ++indent_;
      line("const int lr = e / " + str(extent) + ", " + var + " = e % " + str(extent) + ";");
      line("const long long row = row0 + lr;");
      line("if (row >= rows) break;");
    }
    body();
    --indent_;
    line("}");
  }

  void emit_loop(std::size_t s, const kernel::Loop& loop) {
    line("// s" + str(static_cast<std::int64_t>(s)) + ": loop j < " + str(loop.extent) + ", stores" + describe_stores(loop));
    for_elements(loop.extent, "j", [&] { emit_body(loop); });
  }

  // Each row gets `group` threads: thread `lane` sums columns lane, lane + group, ... in order;
  // then the partial sums meet in a tree in shared memory, always in the same order.
  void emit_reduction_loop(std::size_t s, const kernel::Loop& loop) {
    const std::int64_t rows = out_.rows_per_block, group = out_.threads / rows;
    const std::string T = n_.type, threads = str(out_.threads);
    line("// s" + str(static_cast<std::int64_t>(s)) + ": loop j < " + str(loop.extent) + " with reductions:" +
         describe_stores(loop) + " (" + str(group) + " threads a row, fixed-order tree)");
    line("{");
    ++indent_;
    if (rows == 1) {
      line("const int lane = threadIdx.x;");
      line("const bool live = true;");
    } else {
      line("const int lr = threadIdx.x / " + str(group) + ", lane = threadIdx.x % " + str(group) + ";");
      line("const long long row = row0 + lr;");
      line("const bool live = row < rows;");
    }
    auto emit_line = [this](const std::string& text) { line(text); };
    declare_accumulators(emit_line, loop, k_.dtype, lit(0));
    line("if (live) {");
    ++indent_;
    line("for (int j = lane; j < " + str(loop.extent) + "; j += " + str(group) + ") {");
    ++indent_;
    fold_accumulators(emit_line, loop, emit_body(loop), k_.dtype);
    --indent_;
    line("}");
    --indent_;
    line("}");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r)
      line(red_slot(r) + " = acc" + str(static_cast<std::int64_t>(r)) + ";");
    line("__syncthreads();");
    if (group > 1) {
      line("#pragma unroll");
      line("for (int step = " + str(group / 2) + "; step > 0; step /= 2) {");
      ++indent_;
      line("if (lane < step) {");
      ++indent_;
      for (std::size_t r = 0; r < loop.reductions.size(); ++r)
        line(cuda_combine(loop.reductions[r].combine, red_slot(r), red_slot(r, "step"), k_.dtype));
      --indent_;
      line("}");
      line("__syncthreads();");
      --indent_;
      line("}");
    }
    line("if (lane == 0 && live) {");
    ++indent_;
    for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
      const auto& red = loop.reductions[r];
      line(at(red.buffer, str(red.column)) + " = " + red_slot(r) + (red.combine == OpKind::add ? " * " + lit(red.scale) : "") + ";");
    }
    --indent_;
    line("}");
    --indent_;
    line("}");
  }

  // Thread threadIdx.x's slot of reduction r in cf_red, plus `plus` (an expression or empty).
  std::string red_slot(std::size_t r, const std::string& plus = "") const {
    std::string index = r == 0 ? "threadIdx.x" : str(static_cast<std::int64_t>(r) * out_.threads) + " + threadIdx.x";
    return "cf_red[" + index + (plus.empty() ? "" : " + " + plus) + "]";
  }

  void emit_matvec(std::size_t s, const kernel::MatVec& m) {
    const std::string T = n_.type;
    line("// s" + str(static_cast<std::int64_t>(s)) + ": matvec b" + str(m.out) + "[r, " + column(m.out_offset, "n") + "] = " +
         (m.bias >= 0 ? "b" + str(m.bias) + "[n] + " : "") + "sum_k b" + str(m.x) + "[r, " + column(m.x_offset, "k") +
         "] * b" + str(m.weight) + "[k, n]  (k < " + str(m.k) + ", n < " + str(m.n) + ")");
    for_elements(m.n, "n", [&] {
      line(T + " acc = " + (m.bias >= 0 ? at(m.bias, "n") : lit(0)) + ";");
      line("#pragma unroll 4");
      line("for (int k = 0; k < " + str(m.k) + "; ++k)");
      line("  acc = " + std::string(n_.fma) + "(" + at(m.x, column(m.x_offset, "k")) + ", b" + str(m.weight) + "[k * " +
           str(m.n) + " + n], acc);");
      line(at(m.out, column(m.out_offset, "n")) + " = acc;");
    });
  }

  const kernel::Kernel& k_;
  EmitOptions opt_;
  Names n_;
  std::vector<Place> place_;
  std::vector<std::int64_t> scratch_offset_;
  int reductions_ = 0;
  CudaKernel out_;
  std::set<int> pending_reads_, pending_writes_;
};

// CUDA C text as a domain of composite_ops.h: a composite op is emitted as its formula, each
// part parenthesized so that it composes with any operator around it.
struct CudaTextDomain {
  using Value = std::string;
  DType dtype;
  Value op(OpKind k, const Value& a) const { return "(" + cuda_pointwise(k, {a}, dtype) + ")"; }
  Value op(OpKind k, const Value& a, const Value& b) const { return "(" + cuda_pointwise(k, {a, b}, dtype) + ")"; }
  Value constant(double value, const Value&) const { return cuda_literal(value, dtype); }
};

}  // namespace

// The op's template from ops.def's cuda column, its placeholders filled in.
std::string cuda_pointwise(OpKind op, const std::vector<std::string>& a, DType dtype) {
  const std::string_view text = op_info(op).cuda;
  if (text.empty()) {
    if (!is_composite(op) || a.size() != 1) throw InternalError("no CUDA lowering for " + std::string(op_name(op)));
    CudaTextDomain d{dtype};
    return composite_value(d, op, a[0]);
  }
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const std::size_t close = text[i] == '{' ? text.find('}', i) : std::string_view::npos;
    if (close == std::string_view::npos) {
      out += text[i];
      continue;
    }
    const std::string_view key = text.substr(i + 1, close - i - 1);
    if (key == "f") out += dtype == DType::f32 ? "f" : "";
    else if (key == "zero") out += cuda_literal(0, dtype);
    else if (key == "one") out += cuda_literal(1, dtype);
    else if (key.size() == 1 && key[0] >= '0' && static_cast<std::size_t>(key[0] - '0') < a.size()) out += a[static_cast<std::size_t>(key[0] - '0')];
    else throw InternalError("bad CUDA template for " + std::string(op_name(op)) + ": " + std::string(text));
    i = close;
  }
  return out;
}

std::string cuda_combine(OpKind combine, const std::string& target, const std::string& value, DType dtype) {
  if (combine == OpKind::add) return target + " += " + value + ";";
  return target + " = " + cuda_pointwise(combine, {target, value}, dtype) + ";";
}

std::string cuda_literal(double value, DType dtype) {
  char buf[64];
  if (dtype == DType::f32) {
    const float f = static_cast<float>(value);
    if (std::isnan(f)) return "__int_as_float(0x7fc00000)";
    if (std::isinf(f)) return f > 0 ? "__int_as_float(0x7f800000)" : "__int_as_float(static_cast<int>(0xff800000u))";
    std::snprintf(buf, sizeof buf, "%.9g", static_cast<double>(f));
  } else {
    if (std::isnan(value)) return "__longlong_as_double(0x7ff8000000000000ll)";
    if (std::isinf(value))
      return value > 0 ? "__longlong_as_double(0x7ff0000000000000ll)"
                       : "__longlong_as_double(static_cast<long long>(0xfff0000000000000ull))";
    std::snprintf(buf, sizeof buf, "%.17g", value);
  }
  std::string text = buf;
  if (text.find_first_of(".e") == std::string::npos) text += ".0";
  if (dtype == DType::f32) text += "f";
  // A negative literal is parenthesized so that it composes with any operator.
  if (text[0] == '-') text = "(" + text + ")";
  return text;
}

CudaKernel emit_cuda_kernel(const kernel::Kernel& kernel, const EmitOptions& options) {
  kernel::verify_kernel(kernel);
  return Emitter(kernel, options).run();
}

std::string cuda_prelude() {
  return R"(// The scalar meaning of the pointwise ops, as compiler/ir/pointwise_math.h defines it: NaN in,
// NaN out (min, max and relu included); sigmoid accurate down to underflow; softplus that never
// overflows. Accurate CUDA device functions only (no __ intrinsics, no fast math).
#define CF_DEVICE static __device__ __forceinline__
CF_DEVICE float cf_relu(float a) { return a < 0.0f ? 0.0f : a; }
CF_DEVICE double cf_relu(double a) { return a < 0.0 ? 0.0 : a; }
// e = e^-|a|: 1 / (1 + e) for a >= 0, e / (1 + e) = e^a / (1 + e^a) for a < 0.
CF_DEVICE float cf_sigmoid(float a) {
  const float e = expf(-fabsf(a)), s = 1.0f / (1.0f + e);
  return a >= 0.0f ? s : e * s;
}
CF_DEVICE double cf_sigmoid(double a) {
  const double e = exp(-fabs(a)), s = 1.0 / (1.0 + e);
  return a >= 0.0 ? s : e * s;
}
// max(a, 0) + log1p(e^-|a|)
CF_DEVICE float cf_softplus(float a) { return (a < 0.0f ? 0.0f : a) + log1pf(expf(-fabsf(a))); }
CF_DEVICE double cf_softplus(double a) { return (a < 0.0 ? 0.0 : a) + log1p(exp(-fabs(a))); }
CF_DEVICE float cf_rsqrt(float a) { return 1.0f / sqrtf(a); }
CF_DEVICE double cf_rsqrt(double a) { return 1.0 / sqrt(a); }
// std::min / std::max, except that a NaN operand wins (the first one when both are NaN).
CF_DEVICE float cf_min(float a, float b) { return a != a ? a : b != b ? b : (b < a ? b : a); }
CF_DEVICE double cf_min(double a, double b) { return a != a ? a : b != b ? b : (b < a ? b : a); }
CF_DEVICE float cf_max(float a, float b) { return a != a ? a : b != b ? b : (a < b ? b : a); }
CF_DEVICE double cf_max(double a, double b) { return a != a ? a : b != b ? b : (a < b ? b : a); }
)";
}

std::string cuda_support_kernels() {
  std::string out = "// Support kernels the runtime launches around the generated ones.\n";
  // 16-bit storage (runtime/cuda/storage.h, whose host functions do the same integer arithmetic):
  // to 16 bits rounds to nearest even, overflows to inf, keeps NaN quiet; from 16 bits is exact.
  out += R"(CF_DEVICE float cf_bf16_to_f32(unsigned short h) { return __uint_as_float(static_cast<unsigned>(h) << 16); }
CF_DEVICE unsigned short cf_f32_to_bf16(float f) {
  unsigned u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<unsigned short>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<unsigned short>(u >> 16);
}
CF_DEVICE float cf_f16_to_f32(unsigned short h) {
  const unsigned sign = static_cast<unsigned>(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0x1fu) return __uint_as_float(sign | 0x7f800000u | (m << 13));
  if (e == 0u) {
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  return __uint_as_float(sign | ((e + 112u) << 23) | (m << 13));
}
CF_DEVICE unsigned short cf_f32_to_f16(float f) {
  const unsigned u = __float_as_uint(f), sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<unsigned short>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<unsigned short>(sign | 0x7c00u);
  if (a < 0x38800000u) return static_cast<unsigned short>(sign | static_cast<unsigned>(rintf(__uint_as_float(a) * 16777216.0f)));
  unsigned r = a - 0x38000000u;
  r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
  return static_cast<unsigned short>(sign | r);
}
)";
  for (const char* format : {"bf16", "f16"}) {
    const std::string f = format;
    out += "extern \"C\" __global__ void cf_widen_" + f +
           "(const unsigned short* src, float* dst, long long rows, long long cols) {\n"
           "  const long long n = rows * cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;\n"
           "  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)\n"
           "    dst[i] = cf_" + f + "_to_f32(src[i]);\n"
           "}\n"
           "extern \"C\" __global__ void cf_narrow_" + f +
           "(const float* src, unsigned short* dst, long long rows, long long cols) {\n"
           "  const long long n = rows * cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;\n"
           "  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)\n"
           "    dst[i] = cf_f32_to_" + f + "(src[i]);\n"
           "}\n";
  }
  for (const char* t : {"float", "double"}) {
    const std::string T = t, suffix = T == "float" ? "f32" : "f64";
    out += "extern \"C\" __global__ void cf_transpose_" + suffix + "(const " + T + "* src, " + T +
           "* dst, long long rows, long long cols) {\n"
           "  const long long n = rows * cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;\n"
           "  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)\n"
           "    dst[(i % cols) * rows + i / cols] = src[i];\n"
           "}\n"
           "extern \"C\" __global__ void cf_fill_rows_" + suffix + "(" + T + "* dst, const " + T +
           "* row, long long rows, long long cols) {\n"
           "  const long long n = rows * cols, stride = static_cast<long long>(gridDim.x) * blockDim.x;\n"
           "  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)\n"
           "    dst[i] = row[i % cols];\n"
           "}\n";
  }
  return out;
}

std::string cuda_translation_unit(const std::vector<const CudaKernel*>& kernels, const std::string& title) {
  std::string out = "// " + title + ": CUDA C generated by cellfuse (compiler/codegen/cuda)\n" + cuda_prelude() + "\n";
  for (const CudaKernel* k : kernels) out += k->source + "\n";
  out += cuda_support_kernels();
  return out;
}

}  // namespace cellfuse::cuda_codegen
