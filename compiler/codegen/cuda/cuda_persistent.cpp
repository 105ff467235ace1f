#include "compiler/codegen/cuda/cuda_persistent.h"

#include <algorithm>
#include <map>
#include <set>

#include "compiler/codegen/cuda/cuda_emitter.h"
#include "compiler/codegen/cuda/cuda_text.h"
#include "compiler/ir/error.h"

namespace cellfuse::cuda_codegen {
namespace {

// The barrier every launch of a persistent kernel meets at: a counter of arrivals and a
// generation. The last block to arrive resets the counter and starts the next generation; the
// others wait for it. Fences on both sides make every block's writes before the barrier visible
// to every block after it (reads of such data go through L2: __ldcg). The host build of the
// kernels (tests/cpp/fake_cuda) defines CF_EMULATION and its own cf_grid_sync.
const char* kGridSync = R"(#ifndef CF_EMULATION
static __device__ __forceinline__ void cf_grid_sync(unsigned* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned* gen = bar + 1;
    const unsigned g = *gen;
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      while (*gen == g) {
      }
    }
    __threadfence();
  }
  __syncthreads();
}
#define CF_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) unsigned char cf_dynamic_shared[]; T* name = reinterpret_cast<T*>(cf_dynamic_shared)
#endif
)";

class PersistentEmitter : SourceText {
 public:
  PersistentEmitter(const Cell& stage, std::int64_t batch, const std::string& name, int threads)
      : c_(stage), g_(stage.graph), B_(batch) {
    out_.batch = batch;
    out_.threads = threads;
    out_.dtype = g_.dtype();
    T_ = out_.dtype == DType::f32 ? "float" : "double";
    name_ = name;
  }

  PersistentLoop run() {
    out_.program = compile_stage(c_, /*fuse_small_products=*/true, name_);
    if (!fits()) return std::move(out_);
    place();
    emit();
    out_.name = name_;
    return std::move(out_);
  }

 private:
  bool fail(const std::string& why) {
    out_.reason = why;
    return false;
  }

  bool fits() {
    for (const auto& step : out_.program.steps)
      if (step.kind == ProgramStep::Kind::Gemm)
        return fail("a product of the loop stage cannot be fused into a kernel (" + g_.describe(step.gemm.out) + ")");
    std::set<std::uint32_t> seen;
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) {
      ValueId v = c_.outputs[o].value;
      if (is_leaf(g_.node(v).op)) return fail("a loop output is a leaf (" + g_.describe(v) + "), not computed by a kernel");
      if (!seen.insert(v.index).second) return fail("two loop outputs are the same value");
    }
    for (ValueId v : c_.next_states)
      if (is_leaf(g_.node(v).op)) return fail("a next state is a leaf (" + g_.describe(v) + "), not computed by a kernel");
    for (const auto& step : out_.program.steps)
      for (const auto& st : step.kernel.kernel.body)
        if (st.kind == kernel::Statement::Kind::MatVec) {
          const auto& buf = step.kernel.kernel.buffers[static_cast<std::size_t>(st.matvec.weight)];
          if (buf.role != kernel::BufferRole::Param) return fail("a fused product's weight is not a parameter");
        }
    return true;
  }

  // Where every value and scratch buffer lives.
  void place() {
    for (std::size_t i = 0; i < c_.inputs.size(); ++i) role_[c_.inputs[i].index] = {'i', static_cast<int>(i)};
    for (std::size_t s = 0; s < c_.states.size(); ++s) role_[c_.states[s].index] = {'s', static_cast<int>(s)};
    for (std::size_t p = 0; p < c_.params.size(); ++p) role_[c_.params[p].index] = {'p', static_cast<int>(p)};
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) role_[c_.outputs[o].value.index] = {'o', static_cast<int>(o)};
    std::set<std::uint32_t> next;
    for (ValueId v : c_.next_states) next.insert(v.index);
    for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki) {
      const auto& step = out_.program.steps[ki].kernel;
      for (std::size_t b = 0; b < step.kernel.buffers.size(); ++b) {
        const auto& buf = step.kernel.buffers[b];
        if (buf.role == kernel::BufferRole::Scratch) {
          scratch_[{ki, b}] = out_.workspace_elements;
          out_.workspace_elements += (buf.batched ? B_ : buf.rows) * buf.cols;
          continue;
        }
        ValueId v = step.buffers[b];
        if (role_.count(v.index)) continue;
        const std::int64_t n = B_ * g_.node(v).shape.features();
        role_[v.index] = {next.count(v.index) ? 'n' : 't', 0};
        temp_[v.index] = out_.workspace_elements;
        out_.workspace_elements += next.count(v.index) ? 2 * n : n;
      }
    }
  }

  std::int64_t cols(ValueId v) const { return g_.node(v).shape.features(); }

  // A pointer expression to row 0 of value v in the step at (k, t).
  std::string value_base(ValueId v) const {
    auto [kind, index] = role_.at(v.index);
    const std::string n = str(B_ * cols(v));
    switch (kind) {
      case 'i': return "(in" + str(index) + " + t * " + n + ")";
      case 's': return "cf_st" + str(index);
      case 'p': return "param" + str(index);
      case 'o': return "(out" + str(index) + " + t * " + n + ")";
      case 'n': return "(cf_ws + " + str(temp_.at(v.index)) + " + (k & 1) * " + n + ")";
      default: return "(cf_ws + " + str(temp_.at(v.index)) + ")";
    }
  }

  std::string base(std::size_t ki, int b) const {
    const auto& step = out_.program.steps[ki].kernel;
    if (step.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Scratch)
      return "(cf_ws + " + str(scratch_.at({ki, static_cast<std::size_t>(b)})) + ")";
    return value_base(step.buffers[static_cast<std::size_t>(b)]);
  }

  // Memory identity of a buffer, for the barrier analysis.
  std::string identity(std::size_t ki, int b) const {
    const auto& step = out_.program.steps[ki].kernel;
    if (step.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Scratch)
      return "s" + str(static_cast<std::int64_t>(ki)) + "_" + str(b);
    return "v" + str(step.buffers[static_cast<std::size_t>(b)].index);
  }

  bool is_param(std::size_t ki, int b) const {
    return out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(b)].role == kernel::BufferRole::Param;
  }

  // Element (row, col) of buffer b of kernel ki, as an lvalue (store) or a load.
  std::string element(std::size_t ki, int b, const std::string& col) const {
    const auto& buf = out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(b)];
    const std::string index = buf.batched ? "row * " + str(buf.cols) + " + " + col : col;
    return base(ki, b) + "[" + index + "]";
  }
  std::string load(std::size_t ki, int b, const std::string& col) const {
    if (is_param(ki, b)) return element(ki, b, col);
    return "__ldcg(&" + element(ki, b, col) + ")";
  }

  std::vector<std::string> body(std::size_t ki, const kernel::Loop& loop) {
    return emit_element([this](const std::string& text) { line(text); }, loop, out_.dtype,
                        {[this, ki](int b, const std::string& col) { return load(ki, b, col); },
                         [this, ki](int b, const std::string& col) { return element(ki, b, col); }});
  }

  void accesses(std::size_t ki, const kernel::Statement& st, std::set<std::string>& reads, std::set<std::string>& writes) const {
    if (st.kind == kernel::Statement::Kind::MatVec) {
      reads.insert(identity(ki, st.matvec.x));
      writes.insert(identity(ki, st.matvec.out));
      return;
    }
    for (const auto& in : st.loop.insts)
      if (in.kind == kernel::Inst::Kind::Load && !is_param(ki, in.buffer)) reads.insert(identity(ki, in.buffer));
    for (const auto& s : st.loop.stores) writes.insert(identity(ki, s.buffer));
    for (const auto& r : st.loop.reductions) writes.insert(identity(ki, r.buffer));
  }

  void grid_sync() {
    line("cf_grid_sync(cf_bar);");
    ++out_.barriers_per_step;
  }

  void emit_loop(std::size_t ki, const kernel::Loop& loop) {
    const std::string th = str(out_.threads), E = str(loop.extent);
    line("for (long long e = static_cast<long long>(blockIdx.x) * " + th + " + threadIdx.x; e < " + str(B_ * loop.extent) +
         "; e += static_cast<long long>(gridDim.x) * " + th + ") {");
    ++indent_;
    line("const long long row = e / " + E + ";");
    line("const int j = static_cast<int>(e % " + E + ");");
    line("(void)row;");
    body(ki, loop);
    --indent_;
    line("}");
  }

  // One block a row: the block's threads sum their columns, then a fixed-order tree.
  void emit_reduction_loop(std::size_t ki, const kernel::Loop& loop) {
    const std::string th = str(out_.threads);
    line("for (long long row = blockIdx.x; row < " + str(B_) + "; row += gridDim.x) {");
    ++indent_;
    auto emit_line = [this](const std::string& text) { line(text); };
    declare_accumulators(emit_line, loop, out_.dtype, "0");
    line("for (int j = threadIdx.x; j < " + str(loop.extent) + "; j += " + th + ") {");
    ++indent_;
    fold_accumulators(emit_line, loop, body(ki, loop), out_.dtype);
    --indent_;
    line("}");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r)
      line("cf_red[" + str(static_cast<std::int64_t>(r) * out_.threads) + " + threadIdx.x] = acc" + str(static_cast<std::int64_t>(r)) + ";");
    line("__syncthreads();");
    line("for (int step = " + str(out_.threads / 2) + "; step > 0; step /= 2) {");
    ++indent_;
    line("if (threadIdx.x < step) {");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
      const std::string at = str(static_cast<std::int64_t>(r) * out_.threads) + " + threadIdx.x";
      line("  " + cuda_combine(loop.reductions[r].combine, "cf_red[" + at + "]", "cf_red[" + at + " + step]", out_.dtype));
    }
    line("}");
    line("__syncthreads();");
    --indent_;
    line("}");
    line("if (threadIdx.x == 0) {");
    for (std::size_t r = 0; r < loop.reductions.size(); ++r) {
      const auto& red = loop.reductions[r];
      line("  " + element(ki, red.buffer, str(red.column)) + " = cf_red[" + str(static_cast<std::int64_t>(r) * out_.threads) + "]" +
           (red.combine == OpKind::add ? " * " + cuda_literal(red.scale, out_.dtype) : "") + ";");
    }
    line("}");
    line("__syncthreads();");
    --indent_;
    line("}");
    out_.reductions = std::max(out_.reductions, static_cast<int>(loop.reductions.size()));
  }

  // Block x owns columns [N x / G, N (x+1) / G) of the product, its weight slice in shared
  // memory (cf_w<p>[c * K + k]); the operand's rows are staged in shared memory, each output is
  // summed by S threads over k = s, s + S, ... and a fixed-order tree.
  void emit_matvec(std::size_t ki, const kernel::MatVec& m, int p) {
    const std::string K = str(m.k), N = str(m.n), th = str(out_.threads);
    const auto& xb = out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(m.x)];
    const auto& ob = out_.program.steps[ki].kernel.kernel.buffers[static_cast<std::size_t>(m.out)];
    line("{  // product " + str(p) + ": out[r, " + column(m.out_offset, "n") + "] = x[r, " + column(m.x_offset, "k") +
         "] W[k, n]  (k < " + K + ", n < " + N + ")");
    ++indent_;
    line("const int c0 = static_cast<int>(" + N + "LL * blockIdx.x / gridDim.x);");
    line("const int nc = static_cast<int>(" + N + "LL * (blockIdx.x + 1) / gridDim.x) - c0;");
    line("for (int e = threadIdx.x; e < " + str(B_ * m.k) + "; e += " + th + ") {");
    line("  const int row = e / " + K + ";");
    line("  cf_x[e] = __ldcg(&" + base(ki, m.x) + "[row * " + str(xb.cols) + " + " + str(m.x_offset) + " + e % " + K + "]);");
    line("}");
    line("__syncthreads();");
    line("const int outs = " + str(B_) + " * nc;");
    line("int S = 1;");
    line("while (S * 2 * outs <= " + th + " && S * 2 <= " + K + ") S *= 2;");
    line("const int s = threadIdx.x % S;");
    line("for (int o0 = 0; o0 < outs; o0 += " + th + " / S) {");
    ++indent_;
    line("const int o = o0 + threadIdx.x / S;");
    line(T_ + " acc = 0;");
    line("if (o < outs) {");
    line("  const " + T_ + "* w = cf_w" + str(p) + " + (o % nc) * " + K + ";");
    line("  const " + T_ + "* xr = cf_x + (o / nc) * " + K + ";");
    line("  for (int k = s; k < " + K + "; k += S) acc = " + std::string(out_.dtype == DType::f32 ? "fmaf" : "fma") + "(xr[k], w[k], acc);");
    line("}");
    line("cf_part[threadIdx.x] = acc;");
    line("__syncthreads();");
    line("for (int step = S / 2; step > 0; step /= 2) {");
    line("  if (s < step) cf_part[threadIdx.x] += cf_part[threadIdx.x + step];");
    line("  __syncthreads();");
    line("}");
    line("if (s == 0 && o < outs) {");
    line("  const long long row = o / nc;");
    line("  const int n = c0 + o % nc;");
    const std::string bias = m.bias >= 0 ? load(ki, m.bias, "n") + " + " : "";
    line("  " + base(ki, m.out) + "[row * " + str(ob.cols) + " + " + column(m.out_offset, "n") + "] = " + bias + "cf_part[threadIdx.x];");
    line("}");
    line("__syncthreads();");
    --indent_;
    line("}");
    --indent_;
    line("}");
  }

  void emit() {
    std::string params;
    auto add = [&](const std::string& p) { params += (params.empty() ? "" : ", ") + p; };
    for (std::size_t i = 0; i < c_.inputs.size(); ++i) add("const " + T_ + "* in" + str(static_cast<std::int64_t>(i)));
    for (std::size_t s = 0; s < c_.states.size(); ++s) add("const " + T_ + "* init" + str(static_cast<std::int64_t>(s)));
    for (std::size_t p = 0; p < c_.params.size(); ++p) add("const " + T_ + "* param" + str(static_cast<std::int64_t>(p)));
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) add(T_ + "* out" + str(static_cast<std::int64_t>(o)));
    for (std::size_t s = 0; s < c_.states.size(); ++s) add(T_ + "* final" + str(static_cast<std::int64_t>(s)));
    add(T_ + "* cf_ws");
    add("unsigned* cf_bar");
    add("long long steps");
    add("long long reverse");
    const std::string th = str(out_.threads);
    line("// persistent loop " + name_ + ": all steps in one cooperative launch, " + th +
         " threads a block; block x owns columns [N x / G, N (x+1) / G) of every product, its weights in shared memory");
    line("extern \"C\" __global__ void __launch_bounds__(" + th + ")");
    line(name_ + "(" + params + ") {");
    indent_ = 1;
    line("CF_DYNAMIC_SHARED(" + T_ + ", cf_smem);");
    line("(void)cf_ws;");
    // Products, in order, with their weights' layout.
    struct Mv {
      std::size_t ki;
      kernel::MatVec m;
    };
    std::vector<Mv> mvs;
    for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki)
      for (const auto& st : out_.program.steps[ki].kernel.kernel.body)
        if (st.kind == kernel::Statement::Kind::MatVec) mvs.push_back({ki, st.matvec});
    line(T_ + "* cf_next = cf_smem;");
    for (std::size_t p = 0; p < mvs.size(); ++p) {
      const auto& m = mvs[p].m;
      out_.products.push_back({m.k, m.n});
      out_.max_k = std::max(out_.max_k, m.k);
      out_.weight_elements += m.k * m.n;
      const std::string P = str(static_cast<std::int64_t>(p)), K = str(m.k), N = str(m.n);
      const auto& wb = out_.program.steps[mvs[p].ki].kernel.kernel.buffers[static_cast<std::size_t>(m.weight)];
      const std::string W = base(mvs[p].ki, m.weight);
      line(T_ + "* const cf_w" + P + " = cf_next;");
      line("{");
      line("  const int c0 = static_cast<int>(" + N + "LL * blockIdx.x / gridDim.x);");
      line("  const int nc = static_cast<int>(" + N + "LL * (blockIdx.x + 1) / gridDim.x) - c0;");
      // A transposed buffer holds a param [n, k] (linear); else the param is [k, n].
      const std::string from = wb.transposed ? W + "[static_cast<long long>(c0 + e / " + K + ") * " + K + " + e % " + K + "]"
                                             : W + "[static_cast<long long>(e % " + K + ") * " + N + " + c0 + e / " + K + "]";
      line("  for (int e = threadIdx.x; e < nc * " + K + "; e += " + th + ") cf_w" + P + "[e] = " + from + ";");
      line("  cf_next += static_cast<long long>((" + N + " + gridDim.x - 1) / gridDim.x) * " + K + ";");
      line("}");
    }
    line(T_ + "* const cf_x = cf_next;");
    line(T_ + "* const cf_part = cf_x + " + str(B_ * std::max<std::int64_t>(out_.max_k, 1)) + ";");
    line(T_ + "* const cf_red = cf_part + " + th + ";");
    line("(void)cf_x; (void)cf_part; (void)cf_red;");
    line("__syncthreads();");
    for (std::size_t s = 0; s < c_.states.size(); ++s)
      line("const " + T_ + "* cf_st" + str(static_cast<std::int64_t>(s)) + " = init" + str(static_cast<std::int64_t>(s)) + ";");
    line("for (long long k = 0; k < steps; ++k) {");
    ++indent_;
    line("const long long t = reverse ? steps - 1 - k : k;");
    line("(void)t;");
    out_.barriers_per_step = 0;
    std::set<std::string> pending_reads, pending_writes;
    int p = 0;
    bool first = true;
    for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki) {
      for (const auto& st : out_.program.steps[ki].kernel.kernel.body) {
        std::set<std::string> reads, writes;
        accesses(ki, st, reads, writes);
        bool conflict = false;
        for (const auto& r : reads) conflict |= pending_writes.count(r) > 0;
        for (const auto& w : writes) conflict |= pending_writes.count(w) > 0 || pending_reads.count(w) > 0;
        if (conflict && !first) {
          grid_sync();
          pending_reads.clear();
          pending_writes.clear();
        }
        first = false;
        if (st.kind == kernel::Statement::Kind::MatVec) emit_matvec(ki, st.matvec, p++);
        else if (st.loop.reductions.empty()) emit_loop(ki, st.loop);
        else emit_reduction_loop(ki, st.loop);
        pending_reads.insert(reads.begin(), reads.end());
        pending_writes.insert(writes.begin(), writes.end());
      }
    }
    grid_sync();  // the next step reads what this one wrote
    for (std::size_t s = 0; s < c_.states.size(); ++s)
      line("cf_st" + str(static_cast<std::int64_t>(s)) + " = " + value_base(c_.next_states[s]) + ";");
    --indent_;
    line("}");
    for (std::size_t s = 0; s < c_.states.size(); ++s) {
      const std::string S = str(static_cast<std::int64_t>(s)), n = str(B_ * cols(c_.states[s]));
      line("for (long long e = static_cast<long long>(blockIdx.x) * " + th + " + threadIdx.x; e < " + n +
           "; e += static_cast<long long>(gridDim.x) * " + th + ") final" + S + "[e] = __ldcg(&cf_st" + S + "[e]);");
    }
    indent_ = 0;
    line("}");
    out_.source = std::string(kGridSync) + src_;
  }

  const Cell& c_;
  const Graph& g_;
  std::int64_t B_;
  std::string T_, name_;
  PersistentLoop out_;
  std::map<std::uint32_t, std::pair<char, int>> role_;
  std::map<std::uint32_t, std::int64_t> temp_;
  std::map<std::pair<std::size_t, std::size_t>, std::int64_t> scratch_;
};

}  // namespace

std::int64_t PersistentLoop::shared_bytes(std::int64_t grid) const {
  std::int64_t elements = 0;
  for (const auto& p : products) elements += (p.n + grid - 1) / grid * p.k;
  elements += batch * std::max<std::int64_t>(max_k, 1) + threads + static_cast<std::int64_t>(std::max(reductions, 1)) * threads;
  return elements * static_cast<std::int64_t>(dtype_size(dtype));
}

PersistentLoop compile_persistent_loop(const Cell& stage, std::int64_t batch, const std::string& name, int threads) {
  return PersistentEmitter(stage, batch, name, threads).run();
}

}  // namespace cellfuse::cuda_codegen
