#include "compiler/codegen/cuda/cuda_persistent.h"

#include <algorithm>
#include <map>
#include <set>

#include "compiler/codegen/cuda/cuda_loop_emitter.h"
#include "compiler/ir/error.h"

namespace cellfuse::cuda_codegen {
namespace loop_detail {

// The barrier every launch of a persistent kernel meets at: a counter of arrivals and a
// generation. The last block to arrive resets the counter and starts the next generation; the
// others wait for it. Fences on both sides make every block's writes before the barrier visible
// to every block after it (reads of such data go through L2: __ldcg). The host build of the
// kernels (tests/cpp/fake_cuda) defines CF_EMULATION and its own cf_grid_sync.
const char* const kLoopPrelude = R"(#ifndef CF_LOOP_PRELUDE
#define CF_LOOP_PRELUDE
#ifndef CF_EMULATION
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
#endif
)";

void PersistentEmitter::emit_matvec(std::size_t ki, const kernel::MatVec& m, int p) {
  if (block_) return emit_block_matvec(ki, m, p);
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

void PersistentEmitter::emit() {
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
  if (block_) {
    line("// resident loop " + name_ + ": all steps in ONE block of " + th +
         " threads; every weight, state and temporary in shared memory, __syncthreads() between steps");
  } else {
    line("// persistent loop " + name_ + ": all steps in one cooperative launch, " + th +
         " threads a block; block x owns columns [N x / G, N (x+1) / G) of every product, its weights in shared memory");
  }
  line("extern \"C\" __global__ void __launch_bounds__(" + th + ")");
  line(name_ + "(" + params + ") {");
  indent_ = 1;
  line("CF_DYNAMIC_SHARED(" + T_ + ", cf_smem);");
  line("(void)cf_ws;");
  // Products, in order, with their weights' layout.
  std::vector<Mv> mvs;
  for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki)
    for (const auto& st : out_.program.steps[ki].kernel.kernel.body)
      if (st.kind == kernel::Statement::Kind::MatVec) mvs.push_back({ki, st.matvec});
  if (block_) return emit_block(mvs);
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
  emit_statements();
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
  out_.source = std::string(kLoopPrelude) + src_;
}
}  // namespace loop_detail

using loop_detail::PersistentEmitter;


std::int64_t PersistentLoop::shared_bytes(std::int64_t grid) const {
  if (scope == LoopScope::Block) return block_shared_elements * static_cast<std::int64_t>(dtype_size(dtype));
  std::int64_t elements = 0;
  for (const auto& p : products) elements += (p.n + grid - 1) / grid * p.k;
  elements += batch * std::max<std::int64_t>(max_k, 1) + threads + static_cast<std::int64_t>(std::max(reductions, 1)) * threads;
  return elements * static_cast<std::int64_t>(dtype_size(dtype));
}

PersistentLoop compile_persistent_loop(const Cell& stage, std::int64_t batch, const std::string& name, int threads) {
  return PersistentEmitter(stage, batch, name, threads, LoopScope::Grid).run();
}

PersistentLoop compile_resident_loop(const Cell& stage, std::int64_t batch, const std::string& name, int threads) {
  return PersistentEmitter(stage, batch, name, threads, LoopScope::Block).run();
}

}  // namespace cellfuse::cuda_codegen
