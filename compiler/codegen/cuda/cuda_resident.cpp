// The block-resident loop kernel (cuda_persistent.h, LoopScope::Block): the parts of the loop
// emitter (cuda_loop_emitter.h) that only one block needs.
#include <algorithm>

#include "compiler/codegen/cuda/cuda_loop_emitter.h"
#include "compiler/codegen/cuda/cuda_resident_matvec.h"

namespace cellfuse::cuda_codegen::loop_detail {
namespace {

// One block: the next step's inputs a thread holds in registers at most (else it loads them after
// the step's statements, waiting for the load).
constexpr std::int64_t kMaxPrefetch = 8;

}  // namespace

int PersistentEmitter::block_threads() const {
  std::int64_t want = 1;
  for (const auto& step : out_.program.steps)
    for (const auto& st : step.kernel.kernel.body)
      if (st.kind == kernel::Statement::Kind::MatVec) want = std::max(want, st.matvec.n * std::min<std::int64_t>(st.matvec.k, 8));
  int threads = 128;
  while (threads < want && threads < 1024) threads *= 2;
  return threads;
}

void PersistentEmitter::stage_params() {
  auto stage = [&](std::size_t ki, int b) {
    const ValueId v = out_.program.steps[ki].kernel.buffers[static_cast<std::size_t>(b)];
    auto it = role_.find(v.index);
    if (it == role_.end() || it->second.first != 'p') return;
    staged_.insert(it->second.second);
    staged_sizes_[it->second.second] = g_.node(v).shape.elements(1);
  };
  for (std::size_t ki = 0; ki < out_.program.steps.size(); ++ki)
    for (const auto& st : out_.program.steps[ki].kernel.kernel.body) {
      if (st.kind == kernel::Statement::Kind::MatVec) {
        if (st.matvec.bias >= 0) stage(ki, st.matvec.bias);
        continue;
      }
      for (const auto& in : st.loop.insts)
        if (in.kind == kernel::Inst::Kind::Load && is_param(ki, in.buffer)) stage(ki, in.buffer);
    }
}

int PersistentEmitter::product_splits(const kernel::MatVec& m) const {
  ResidentProduct r;
  r.k = m.k;
  r.n = m.n;
  r.batch = B_;
  r.threads = out_.threads;
  return r.splits();
}

void PersistentEmitter::emit_block_matvec(std::size_t ki, const kernel::MatVec& m, int p) {
  const auto& bufs = out_.program.steps[ki].kernel.kernel.buffers;
  ResidentProduct r;
  r.k = m.k;
  r.n = m.n;
  r.batch = B_;
  r.threads = out_.threads;
  r.dtype = out_.dtype;
  r.weight = "cf_w" + str(p);
  r.x = "(" + base(ki, m.x) + " + " + str(m.x_offset) + ")";
  r.x_stride = bufs[static_cast<std::size_t>(m.x)].cols;
  r.out = "(" + base(ki, m.out) + " + " + str(m.out_offset) + ")";
  r.out_stride = bufs[static_cast<std::size_t>(m.out)].cols;
  r.part = "cf_part";
  if (m.bias >= 0) r.bias = [this, ki, b = m.bias](const std::string& col) { return load(ki, b, col); };
  emit_resident_product([this](const std::string& text) { line(text); }, r);
}

void PersistentEmitter::emit_block(const std::vector<Mv>& mvs) {
  const std::string th = str(out_.threads);
  std::int64_t at = 0;  // elements of shared memory laid out so far
  auto array = [&](const std::string& name, std::int64_t elements) {
    line(T_ + "* const " + name + " = cf_smem + " + str(at) + ";");
    at += elements;
  };
  std::int64_t part = 1;
  for (std::size_t p = 0; p < mvs.size(); ++p) {
    const auto& m = mvs[p].m;
    out_.products.push_back({m.k, m.n});
    out_.max_k = std::max(out_.max_k, m.k);
    out_.weight_elements += m.k * m.n;
    const auto& wb = out_.program.steps[mvs[p].ki].kernel.kernel.buffers[static_cast<std::size_t>(m.weight)];
    const std::string P = str(static_cast<std::int64_t>(p)), K = str(m.k), N = str(m.n);
    const std::string W = "param" + str(param_index(mvs[p].ki, m.weight));
    array("cf_w" + P, m.k * m.n);
    // Element e = k * N + n; a transposed buffer holds a param [n, k] (linear), else [k, n].
    const std::string from = wb.transposed ? W + "[static_cast<long long>(e % " + N + ") * " + K + " + e / " + N + "]" : W + "[e]";
    line("for (int e = threadIdx.x; e < " + str(m.k * m.n) + "; e += " + th + ") cf_w" + P + "[e] = " + from + ";");
    ResidentProduct r;
    r.k = m.k;
    r.n = m.n;
    r.batch = B_;
    r.threads = out_.threads;
    part = std::max(part, r.part_elements());
  }
  for (const auto& [p, elements] : staged_sizes_) {
    const std::string P = str(p);
    array("cf_sp" + P, elements);
    line("for (int e = threadIdx.x; e < " + str(elements) + "; e += " + th + ") cf_sp" + P + "[e] = param" + P + "[e];");
  }
  // The inputs in two slots each (spilled: read where they are).
  const std::size_t staged_inputs = spill_ ? 0 : c_.inputs.size();
  for (std::size_t i = 0; i < staged_inputs; ++i) array("cf_in" + str(static_cast<std::int64_t>(i)), 2 * B_ * cols(c_.inputs[i]));
  array("cf_sws", block_temps_);
  array("cf_part", part);
  line(T_ + "* const cf_red = cf_smem + " + str(at) + ";");
  line("(void)cf_sws; (void)cf_part; (void)cf_red; (void)cf_bar;");
  line("if (steps > 0) {  // step 0's inputs");
  line("  const long long t = reverse ? steps - 1 : 0;");
  for (std::size_t i = 0; i < staged_inputs; ++i) {
    const std::string I = str(static_cast<std::int64_t>(i)), n = str(B_ * cols(c_.inputs[i]));
    line("  for (int e = threadIdx.x; e < " + n + "; e += " + th + ") cf_in" + I + "[e] = in" + I + "[t * " + n + " + e];");
  }
  line("}");
  line("__syncthreads();");
  for (std::size_t s = 0; s < c_.states.size(); ++s)
    line("const " + T_ + "* cf_st" + str(static_cast<std::int64_t>(s)) + " = init" + str(static_cast<std::int64_t>(s)) + ";");
  line("for (long long k = 0; k < steps; ++k) {");
  ++indent_;
  line("const long long t = reverse ? steps - 1 - k : k;");
  line("const long long t_next = reverse ? steps - 2 - k : k + 1;");
  line("const bool more = k + 1 < steps;");
  line("(void)t; (void)t_next;");
  // The next step's inputs: loaded into registers now, stored into the other slot after this
  // step's statements, so that the load's latency hides behind them.
  std::vector<std::int64_t> held(c_.inputs.size(), 0);
  for (std::size_t i = 0; i < staged_inputs; ++i) {
    const std::int64_t n = B_ * cols(c_.inputs[i]), per = (n + out_.threads - 1) / out_.threads;
    if (per > kMaxPrefetch) continue;
    held[i] = per;
    const std::string I = str(static_cast<std::int64_t>(i));
    for (std::int64_t j = 0; j < per; ++j) {
      const std::string e = "threadIdx.x + " + str(j * out_.threads);
      line(T_ + " cf_pf" + I + "_" + str(j) + " = more && " + e + " < " + str(n) + " ? in" + I + "[t_next * " + str(n) + " + " + e +
           "] : " + T_ + "(0);");
    }
  }
  emit_statements();
  // Outputs that are the step's own state or input (a training forward's tape), before the
  // barrier: the next step overwrites the slot the state was read from.
  auto copy_out = [&](bool leaves) {
    for (std::size_t o = 0; o < c_.outputs.size(); ++o) {
      const ValueId v = c_.outputs[o].value;
      if (is_leaf(g_.node(v).op) != leaves) continue;
      const std::string O = str(static_cast<std::int64_t>(o)), n = str(B_ * cols(v));
      line("for (int e = threadIdx.x; e < " + n + "; e += " + th + ") out" + O + "[t * " + n + " + e] = " + value_base(v) + "[e];");
    }
  };
  copy_out(true);
  line("if (more) {");
  for (std::size_t i = 0; i < staged_inputs; ++i) {
    const std::int64_t n = B_ * cols(c_.inputs[i]);
    const std::string I = str(static_cast<std::int64_t>(i)), slot = "cf_in" + I + " + ((k + 1) & 1) * " + str(n);
    for (std::int64_t j = 0; j < held[i]; ++j) {
      const std::string e = "threadIdx.x + " + str(j * out_.threads);
      line("  if (" + e + " < " + str(n) + ") (" + slot + ")[" + e + "] = cf_pf" + I + "_" + str(j) + ";");
    }
    if (!held[i])
      line("  for (int e = threadIdx.x; e < " + str(n) + "; e += " + th + ") (" + slot + ")[e] = in" + I + "[t_next * " + str(n) + " + e];");
  }
  line("}");
  line("__syncthreads();");  // the next step reads what this one wrote
  ++out_.barriers_per_step;
  copy_out(false);
  for (std::size_t s = 0; s < c_.states.size(); ++s)
    line("cf_st" + str(static_cast<std::int64_t>(s)) + " = " + value_base(c_.next_states[s]) + ";");
  --indent_;
  line("}");
  for (std::size_t s = 0; s < c_.states.size(); ++s) {
    const std::string S = str(static_cast<std::int64_t>(s)), n = str(B_ * cols(c_.states[s]));
    line("for (int e = threadIdx.x; e < " + n + "; e += " + th + ") final" + S + "[e] = cf_st" + S + "[e];");
  }
  indent_ = 0;
  line("}");
  at += static_cast<std::int64_t>(std::max(out_.reductions, 1)) * out_.threads;
  out_.block_shared_elements = at;
  out_.source = std::string(kLoopPrelude) + src_;
}
}  // namespace cellfuse::cuda_codegen::loop_detail
